"""Answers the endpoint gives without any session: parse errors (with salvage), requests
outside a dialog, and the small helpers the endpoint's inbound path needs (RFC 3261 §8.2,
§18.2).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress

from sip.headers import Via, fast_via
from sip.locate import Target
from sip.message import SipParseError, SipRequest, SipResponse, make_response, new_branch
from sip.uri import SipUri

#: What we answer in Allow (§20.5): the methods the INVITE sessions handle.
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, PRACK"

# §8.2.1: methods we know of but do not serve outside a dialog get 405 with Allow.
_KNOWN_METHODS = ("REGISTER", "SUBSCRIBE", "MESSAGE", "NOTIFY", "PUBLISH", "REFER", "INFO", "UPDATE", "PRACK")

Address = tuple[str, int]


def plain_response(
    request: SipRequest, status: int, user_agent: str, reason: str | None = None, *, to_tag: str | None = None
) -> SipResponse:
    response = make_response(request, status, reason, to_tag=to_tag)
    response.add("User-Agent", user_agent)
    return response


def out_of_dialog_response(request: SipRequest, user_agent: str, *, in_dialog: bool = False) -> SipResponse:
    """§8.2 for a request no session takes, answered statelessly: 481 inside a dialog we do
    not hold (§12.2.2), else OPTIONS 200 (§11.2), INVITE 603 (we place calls, we do not take
    them unless asked), BYE 481, 405/501 with Allow. The To tag is derived from the request
    (§8.2.7: a stateless UAS answers a retransmission with the same tag)."""
    method = request.method
    if in_dialog or method == "BYE":
        return plain_response(request, 481, user_agent)
    if method == "OPTIONS":
        response = plain_response(request, 200, user_agent, to_tag=stateless_tag(request))
        response.add("Allow", ALLOW)
        response.add("Accept", "application/sdp")
        return response
    if method == "INVITE":
        return plain_response(
            request, 603, user_agent, "Decline (inbound calls are not served)", to_tag=stateless_tag(request)
        )
    response = plain_response(request, 405 if method in _KNOWN_METHODS else 501, user_agent, to_tag=stateless_tag(request))
    response.add("Allow", ALLOW)
    return response


def stateless_tag(request: SipRequest) -> str:
    """A To tag that is the same for every retransmission of ``request`` (§8.2.7)."""
    try:
        branch = request.top_via.params.get("branch") or ""
    except (ValueError, IndexError):
        branch = ""
    seed = "|".join((request.call_id or "", request.get("From") or "", branch, request.get("CSeq") or ""))
    return hashlib.sha1(seed.encode("utf-8", "replace")).hexdigest()[:16]


def response_address(request: SipRequest, transport: str, source: Address) -> Address:
    """§18.2.2 with RFC 3581: answer to the source address when rport was asked for (or on a
    stream), else to ``received`` and the Via port."""
    via = request.top_via
    if via.params.get("rport", "absent") != "absent" or transport != "udp":
        return source
    return (source[0], via.port or 5060)


def stamp_via(request: SipRequest, source: Address) -> None:
    """§18.2.1 + RFC 3581: record received= and rport= on the top Via."""
    headers = request.headers
    first = -1
    for i, (n, _) in enumerate(headers):
        if n == "Via":
            if first >= 0:
                first = -2  # several Via lines: the general path below
                break
            first = i
    via = fast_via(headers[first][1]) if first >= 0 else None
    if via is not None:
        # The common case: one Via line holding one element of the fast subset. Same result
        # as the general path (which moves the Via lines to the top), without splitting lists.
        if _stamp(via, source):
            value = str(via)
            del headers[first]
            headers.insert(0, ("Via", value))
            # The top Via's view, as reading it would build it again (a test checks this).
            request._cache["Via"] = (value, via)
        return
    vias = request.get_all("Via")
    if not vias:
        return
    via = Via.parse(vias[0])
    if _stamp(via, source):
        vias[0] = str(via)
        request.remove("Via")
        for value in reversed(vias):
            request.prepend("Via", value)


def _stamp(via: Via, source: Address) -> bool:
    """Add received= (and rport= when asked for) to ``via``; True when it changed."""
    changed = False
    if via.host.strip("[]") != source[0]:
        via.params["received"] = source[0]
        changed = True
    if "rport" in via.params and not via.params.get("rport"):
        via.params["rport"] = str(source[1])
        via.params["received"] = source[0]
        changed = True
    return changed


def error_answer(
    data: bytes, error: SipParseError, transport: str, source: Address, user_agent: str
) -> tuple[bytes, Address] | None:
    """RFC 3261 §16.3/§8.2: a malformed request gets 400 (with the reason) when we can
    address a response; a malformed response, an ACK or a keepalive get nothing."""
    if getattr(error, "status", 400) == 0:
        return None
    partial = getattr(error, "partial", None)
    if isinstance(partial, SipRequest):
        if partial.method == "ACK":
            return None  # §17: an ACK is never answered
        try:
            response = plain_response(partial, error.status, user_agent, error_phrase(error))
            return response.serialize(), response_address(partial, transport, source)
        except (SipParseError, ValueError, IndexError, AttributeError):
            pass  # not enough of it to address an answer: fall back to raw salvage
    if partial is not None:
        return None  # a malformed response is dropped
    raw = salvage_error_response(data, error)
    return (raw, source) if raw is not None else None


def pick_transport(uri: SipUri, target: Target | None, ports: dict[str, int]) -> str:
    """The transport for a request to ``target`` of ``uri``, among those we listen on.

    TLS is never traded for another transport: a ``sips:`` URI (RFC 5630 §3: TLS on every
    hop, whatever its ``transport`` parameter says) or ``transport=tls`` gives ``tls`` even
    when we have no TLS transport, so that the request fails rather than going out in clear.
    """
    if uri.scheme == "sips":
        return "tls"
    name = ((target.transport if target else None) or uri.transport or "udp").lower()
    if name == "tls":
        return name
    if name == "tcp" and "tcp" not in ports:
        name = "udp"
    if name == "udp" and "udp" not in ports:
        name = "tcp"
    return name


def canonical_address(address: Address) -> Address:
    """``(host, port)`` with an IP literal in canonical form (``[::0:1]`` and ``::1``,
    ``::ffff:10.0.0.1`` and ``10.0.0.1`` compare equal); names are left alone."""
    try:
        ip = ipaddress.ip_address(address[0].strip("[]").split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return (str(ip.ipv4_mapped), address[1])
    return (str(ip), address[1])


@functools.lru_cache(maxsize=1024)
def _is_ip_literal(host: str) -> bool:
    # Asked for every request we send, of a handful of peers: remembered (bounded).
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def targets_now(uri: SipUri) -> list[Target] | None:
    """IP literals resolve without waiting (RFC 3263 §4.2); names need the resolver (None)."""
    if not _is_ip_literal(uri.host.strip("[]")):
        return None
    transport = "tls" if uri.scheme == "sips" else (uri.transport or "udp").lower()
    port = uri.port or (5061 if transport == "tls" else 5060)
    return [Target(uri.host.strip("[]"), port, transport)]


def error_phrase(error: SipParseError) -> str:
    """Reason phrase for an error response: the standard phrase plus what was wrong."""
    status = error.status
    base = {400: "Bad Request", 413: "Request Entity Too Large", 414: "Request-URI Too Long",
            416: "Unsupported URI Scheme", 420: "Bad Extension", 505: "Version Not Supported"}.get(status, "Bad Request")
    reason = " ".join(str(getattr(error, "reason", "") or "").split())[:100]
    return f"{base} ({reason})" if reason and reason.lower() != base.lower() else base


def salvage_error_response(data: bytes, error: SipParseError) -> bytes | None:
    """Build a 4xx/5xx for a request we could not parse, from whatever header lines are
    readable (§8.2: the response needs Via, From, To, Call-ID, CSeq). ``None`` when the
    message is a response, or too broken to address an answer."""
    text = data.decode("latin-1", "replace")
    head = text.split("\r\n\r\n", 1)[0].split("\n\n", 1)[0]
    lines = head.replace("\r\n", "\n").split("\n")
    if not lines or lines[0].upper().startswith("SIP/"):
        return None
    wanted = {"via": "Via", "v": "Via", "from": "From", "f": "From", "to": "To", "t": "To",
              "call-id": "Call-ID", "i": "Call-ID", "cseq": "CSeq"}
    found: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        canonical = wanted.get(name.strip().lower())
        if canonical:
            found.append((canonical, value.strip()))
    names = {n for n, _ in found}
    if "Via" not in names:
        return None
    status = getattr(error, "status", 400) or 400
    reason = str(getattr(error, "reason", "") or error) or "Bad Request"
    reason = " ".join(reason.split())[:120]
    phrase = {400: "Bad Request", 413: "Request Entity Too Large", 416: "Unsupported URI Scheme", 505: "Version Not Supported"}.get(status, "Bad Request")
    if reason and reason != phrase:
        phrase = f"{phrase} ({reason})" if len(reason) < 100 else phrase
    out = [f"SIP/2.0 {status} {phrase}"]
    for name, value in found:
        if name == "To" and "tag=" not in value:
            value += ";tag=" + new_branch()[7:17]
        out.append(f"{name}: {value}")
    for name in ("From", "To", "Call-ID", "CSeq"):
        if name not in names:
            out.append(f"{name}: " + ("<sip:invalid@invalid>" if name in ("From", "To") else "0 INVALID" if name == "CSeq" else "invalid"))
    out.append("Content-Length: 0")
    return ("\r\n".join(out) + "\r\n\r\n").encode("utf-8", "replace")
