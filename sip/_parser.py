"""The SIP message parser (RFC 3261 §7, §18.3): bytes in, :class:`~sip.message.SipRequest` or
:class:`~sip.message.SipResponse` out.

:func:`parse_head` reads a start line and headers: lines end in CRLF (bare LF tolerated),
folded lines are unfolded (§7.3.1), compact and lower-case names are canonicalised
(:data:`sip._abnf.CANON`), and the message-level rules are checked (mandatory headers,
single-instance headers, CSeq method, Request-URI scheme). :func:`parse_message` adds the
body of one datagram. The TCP framer (:mod:`sip._framer`) shares :func:`parse_head`.

Malformed input raises :class:`~sip.message.SipParseError` carrying the status to answer
with (400, 413, 416, 505) and, once the headers could be read, the partial message so that a
UAS can still answer it.

The hot path is split first, build later: the header lines are split and their names
canonicalised in one loop (one dict lookup per name, no regex); Via, From, To, a request's
Contact and its Request-URI are *checked* with one regex each when they have the common
shape (a subset of their grammar, see the fast paths in :mod:`sip.headers` and
:mod:`sip.uri`) and their typed views are built only when read. Any other value is parsed
in full at once, so what is accepted and every error (status, reason, partial) are exactly
those of a parser that builds everything (tests/unit/test_sip_message.py checks the two
against each other).

Import :func:`parse_message` from :mod:`sip.message`; this module is where it lives.
"""

from __future__ import annotations

from itertools import islice

from sip._abnf import CANON, KNOWN_METHODS, SINGLE_HEADERS, SIP_VERSION_RE
from sip._message import SipParseError, SipRequest, SipResponse
from sip.headers import fast_name_addr, fast_via, is_token, simple_name_addr
from sip.uri import simple_sip_uri

__all__ = ["parse_head", "parse_content_length", "parse_message"]

# RFC 3261 §8.1.1: the headers every request carries (Max-Forwards is tolerated missing);
# responses copy the same ones (§8.2.6.2).
MANDATORY_HEADERS = frozenset(("Via", "From", "To", "Call-ID", "CSeq"))


#   Content-Length  =  ( "Content-Length" / "l" ) HCOLON 1*DIGIT
def parse_content_length(values: list[str]) -> int:
    """All Content-Length values must be the same non-negative integer."""
    length: int | None = None
    for raw in values:
        if not raw.isascii() or not raw.isdigit():
            raise SipParseError("Bad Request - bad Content-Length")
        value = int(raw)
        if length is not None and value != length:
            raise SipParseError("Bad Request - conflicting Content-Length")
        length = value
    assert length is not None
    return length


def parse_head(head: bytes) -> tuple[SipRequest | SipResponse, int | None]:
    """Parse the start line and headers (everything before the empty line).

    Returns the message (empty body) and the Content-Length, None when absent.
    """
    if b"\x00" in head and head.count(b"\x00") != head.count(b"\\\x00"):
        # NUL is only legal as a quoted-pair inside a quoted-string (RFC 4475 "intmeth").
        raise SipParseError("Bad Request - NUL in header")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # Headers are UTF-8 (§7.3.1); be tolerant of Latin-1 from old equipment.
        text = head.decode("latin-1")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        if "\r" in text:
            raise SipParseError("Bad Request - bare CR")
    lines = text.split("\n")

    # -- start line
    start = lines[0]
    version_error = False
    msg: SipRequest | SipResponse
    if start[:4].upper() == "SIP/":
        # Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF
        parts = start.split(" ", 2)
        if len(parts) < 2:
            raise SipParseError("Bad Request - malformed Status-Line")
        version, code = parts[0], parts[1]
        if version != "SIP/2.0" and version.upper() != "SIP/2.0":
            if not SIP_VERSION_RE.match(version):
                raise SipParseError("Bad Request - malformed Status-Line")
            version_error = True
        if (
            len(code) != 3
            or not code.isascii()
            or not code.isdigit()
            or not 100 <= int(code) <= 699
        ):
            raise SipParseError("Bad Request - bad Status-Code")
        msg = SipResponse(int(code), parts[2] if len(parts) == 3 else "")
    else:
        # Request-Line = Method SP Request-URI SP SIP-Version CRLF
        parts = start.split(" ")
        if len(parts) != 3 or not parts[0] or not parts[1]:
            # RFC 4475 "lwsstart", "trws", "lwsruri": exactly one SP between the elements.
            raise SipParseError("Bad Request - malformed Request-Line")
        method, uri, version = parts
        if version != "SIP/2.0" and version.upper() != "SIP/2.0":
            if not SIP_VERSION_RE.match(version):
                raise SipParseError("Bad Request - malformed Request-Line")
            version_error = True
        if method not in KNOWN_METHODS and not is_token(method):
            raise SipParseError("Bad Request - bad Method")
        msg = SipRequest(method, uri)

    # -- headers: message-header = header-name HCOLON header-value CRLF
    headers = _split_headers(lines)
    first = dict(reversed(headers))  # each name's first value (what ``msg.get`` returns)
    msg.headers = headers
    lengths = (
        [v for n, v in headers if n == "Content-Length"] if "Content-Length" in first else None
    )

    # -- checks. Errors from here on carry the partial message so a UAS can still answer.
    try:
        if version_error:
            raise SipParseError("Version Not Supported", 505)
        length = parse_content_length(lengths) if lengths is not None else None
        missing = MANDATORY_HEADERS - first.keys()
        if missing:
            raise SipParseError(f"Bad Request - missing {', '.join(sorted(missing))}")
        repeated = len(first) < len(headers)
        if repeated:
            seen: set[str] = set()
            for n, _ in headers:
                if n in SINGLE_HEADERS:
                    if n in seen:
                        raise SipParseError(f"Bad Request - multiple {n} headers")
                    seen.add(n)
        if len(first["Call-ID"].split()) != 1:
            raise SipParseError("Bad Request - bad Call-ID")
        seq_method = msg.cseq[1]
        # Via, From, To (and a request's Contact and Request-URI) are checked here but their
        # typed views are built only when read. A value of the common shape passes a one-regex
        # check (``simple_*``: a subset of the grammar, so it cannot fail later); any other
        # value is parsed in full now (and cached), which raises what it always raised.
        # The top Via and To are read for every message (transaction matching, dialog
        # matching): of the common shape they are built here at once, one regex each, and
        # cached as their views would be (what ``top_via``/``to_addr`` build, a test checks).
        raw = first["Via"]
        via = fast_via(raw)
        if via is None:
            msg.top_via  # noqa: B018
        else:
            msg._cache["Via"] = (raw, via)
        if not simple_name_addr(first["From"]):
            msg.from_addr  # noqa: B018  (before To: which error a bad message gets is unchanged)
        raw = first["To"]
        to = fast_name_addr(raw)
        if to is None:
            msg.to_addr  # noqa: B018
        else:
            msg._cache["To"] = (raw, to)
        if isinstance(msg, SipRequest):
            # A bad Contact in a request is answered with 400. In a response it is left for
            # the dialog layer to judge (``contacts`` raises then): dropping a carrier's 200
            # over an odd Contact parameter would fail the whole call.
            contact = first.get("Contact")
            if contact is not None and (repeated or not simple_name_addr(contact)):
                msg.contacts  # noqa: B018
            if seq_method != msg.method:
                # §8.1.1.5 (RFC 4475 "mismatch01/02"): the CSeq method matches the request.
                raise SipParseError("Bad Request - CSeq method does not match")
            if "Max-Forwards" in first:
                msg.max_forwards  # noqa: B018
            if not simple_sip_uri(msg.uri):
                msg.request_uri  # noqa: B018
    except SipParseError as exc:
        exc.partial = msg
        raise
    return msg, length


def _split_headers(lines: list[str]) -> list[tuple[str, str]]:
    """The header lines (``lines[1:]``) as ``(canonical name, value)`` pairs: unfolds
    continuation lines, canonicalises names, raises the precise error of a bad line. This
    loop is the hot path: one dict lookup per common header name and no regex (a
    comprehension-based split measured more instructions); keep it that way."""
    # HCOLON allows whitespace before ":"; a line starting with SP/HT continues the previous
    # one (LWS folding, §7.3.1) and is replaced by a single SP.
    headers: list[tuple[str, str]] = []
    append = headers.append
    canon_get = CANON.get
    for line in islice(lines, 1, None):
        if not line:
            raise SipParseError("Bad Request - empty header line")
        c = line[0]
        if c == " " or c == "\t":
            if not headers:
                raise SipParseError("Bad Request - continuation line before any header")
            n, v = headers[-1]
            s = line.strip(" \t")
            if s:
                headers[-1] = (n, f"{v} {s}" if v else s)
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise SipParseError("Bad Request - header line without colon")
        canon = canon_get(name)
        if canon is None:
            name = name.rstrip(" \t")
            canon = canon_get(name) or canon_get(name.lower())
            if canon is None:
                if not is_token(name):
                    raise SipParseError("Bad Request - bad header name")
                canon = name
        append((canon, value.strip(" \t")))
    return headers


def parse_message(data: bytes, *, max_size: int = 65535) -> SipRequest | SipResponse:
    """Parse one complete message, as received in a UDP datagram (RFC 3261 §18.3).

    Leading CRLFs are skipped; a datagram of only whitespace (a keepalive) raises
    :class:`SipParseError` with ``status == 0`` ("ignore"). Without Content-Length the body
    is the rest of the datagram; a larger Content-Length than the bytes received is a 400,
    a smaller one truncates the body (extra octets are discarded, RFC 4475 "dblreq").
    """
    if len(data) > max_size:
        raise SipParseError("Message Too Large", 413)
    if data[:1] in (b"\r", b"\n", b" ", b"\t"):
        data = data.lstrip(b"\r\n")
        if not data.strip():
            raise SipParseError("keepalive", 0)
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        head, rest = data[:end], data[end + 4 :]
    else:
        end = data.find(b"\n\n")
        if end >= 0:
            head, rest = data[:end], data[end + 2 :]
        else:
            # No empty line: tolerated on a datagram (it cannot be incomplete).
            head, rest = data.rstrip(b"\r\n"), b""
    msg, length = parse_head(head)
    if length is None:
        msg.body = rest
    elif length > len(rest):
        # RFC 4475 "clerr".
        raise SipParseError("Bad Request - Content-Length larger than the message", partial=msg)
    else:
        msg.body = rest[:length] if length < len(rest) else rest
    return msg
