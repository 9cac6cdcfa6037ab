"""SIP messages: parse and serialize (RFC 3261 §7, §18.3, §20, §25).

A message is a start line, an ordered list of ``(name, value)`` header pairs and a body.
Header names are canonicalised on the way in (compact forms expanded, case fixed for the
headers we know; unknown names keep their spelling and compare case-insensitively), values
are stripped and unfolded. Typed views (:class:`~sip.headers.Via`,
:class:`~sip.headers.NameAddr`, CSeq) are parsed on demand and cached against the raw value
they came from, so changing a header through :meth:`SipMessage.set` (or even by editing
``headers`` directly) never returns a stale view.

:func:`parse_message` parses one datagram; :class:`StreamFramer` cuts a TCP/TLS byte stream
into messages by Content-Length (§18.3). Malformed input raises :class:`SipParseError`,
which carries the status to answer with (400, 413, 416, 505) and, when the headers could be
read, the partial message so that the caller can build that answer with
:func:`make_response`.

This is the public face of the message layer; import from here. The code lives in private
modules, one per concern:

- :mod:`sip._abnf`: the RFC 3261 §25.1 grammar of start lines and header names (compact
  forms, list and single-instance headers), each table under the ABNF it implements;
- :mod:`sip._message`: :class:`SipMessage`, :class:`SipRequest`, :class:`SipResponse`
  (header access, typed views, serialization) and :class:`SipParseError`;
- :mod:`sip._parser`: :func:`parse_message`, start line, folding, Content-Length, body;
- :mod:`sip._framer`: :class:`StreamFramer`;
- here: building new messages, :func:`make_response` and the identifiers
  (:func:`new_branch`, :func:`new_tag`, :func:`new_call_id`).
"""

from __future__ import annotations

import secrets

from sip._abnf import COMPACT_FORMS, LIST_HEADERS, canonical_name
from sip._framer import StreamFramer
from sip._message import (
    REASON_PHRASES,
    SipMessage,
    SipParseError,
    SipRequest,
    SipResponse,
    is_request,
)
from sip._message import default_reason as default_reason
from sip._parser import parse_message

__all__ = [
    "SipParseError",
    "COMPACT_FORMS",
    "LIST_HEADERS",
    "REASON_PHRASES",
    "canonical_name",
    "SipMessage",
    "SipRequest",
    "SipResponse",
    "parse_message",
    "make_response",
    "is_request",
    "StreamFramer",
    "new_branch",
    "new_tag",
    "new_call_id",
    "BRANCH_MAGIC_COOKIE",
]


BRANCH_MAGIC_COOKIE = "z9hG4bK"


def make_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> SipResponse:
    """Build a response to ``request`` (RFC 3261 §8.2.6).

    Copies every Via (in order), From, To, Call-ID and CSeq; adds ``;tag=to_tag`` to To
    when given and the To has no tag yet; copies Timestamp into a 100 (§8.2.6.1).
    Record-Route is the caller's business (§12.1.1: only in dialog-creating responses).
    Content-Length is written by :meth:`SipMessage.serialize`.
    """
    response = SipResponse(status, reason)
    out = response.headers
    for n, v in request.headers:
        if n == "Via" or n == "From" or n == "Call-ID" or n == "CSeq":
            out.append((n, v))
        elif n == "To":
            if to_tag and not _has_tag(request, v):
                v = f"{v};tag={to_tag}"
            out.append((n, v))
        elif n == "Timestamp" and status == 100:
            out.append((n, v))
    if headers:
        for n, v in headers:
            response.add(n, v)
    response.body = body
    return response


def _has_tag(request: SipRequest, to_value: str) -> bool:
    try:
        return request.to_addr.params.get("tag") is not None
    except SipParseError:
        # A partial (malformed) request: best effort on the text.
        return ";tag=" in to_value.replace(" ", "").lower()


# ----------------------------------------------------------------- identifiers


def new_branch() -> str:
    """A fresh Via branch: the RFC 3261 magic cookie ``z9hG4bK`` (§8.1.1.7) and 80 random
    bits, unique across space and time."""
    return BRANCH_MAGIC_COOKIE + secrets.token_hex(10)


def new_tag() -> str:
    """A From/To tag (§19.3): at least 32 bits of cryptographic randomness."""
    return secrets.token_hex(8)


def new_call_id(host: str) -> str:
    """A Call-ID (§8.1.1.4): 96 random bits ``@host``."""
    return f"{secrets.token_hex(12)}@{host}"
