"""What a tracer sees: every SIP message the user agent sends or receives, as one
:class:`TracedMessage` handed to ``UserAgent.tracer`` (None: nothing is built).

The hook sits where bytes meet the endpoint (:meth:`sip.aio.ua.UserAgent._send` and the
transports' callbacks), so the trace is what went on the wire: a UDP datagram as received, a
message framed from a TCP/TLS stream serialized again from its parse (header order and values
as received), an unparseable one its raw bytes; CRLF keep-alives are left out. Keeping,
bounding and storing traces is the tracer's business.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

__all__ = ["TracedMessage", "call_id_of"]

Address = tuple[str, int]

# RFC 3261 §7.3.3: "i" is the compact form of Call-ID; header names are case-insensitive.
_CALL_ID_RE = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*([^\r\n]+)", re.IGNORECASE | re.MULTILINE)


def call_id_of(data: bytes) -> str | None:
    """The Call-ID of a message's bytes (first match in the head), or None."""
    head = data.split(b"\r\n\r\n", 1)[0]
    match = _CALL_ID_RE.search(head)
    return match.group(1).strip().decode("utf-8", "replace") if match else None


@dataclass(frozen=True, slots=True)
class TracedMessage:
    """One SIP message on the wire; ``direction`` is "in" or "out"."""

    direction: str
    transport: str  # "udp" | "tcp" | "tls"
    local: Address
    remote: Address
    data: bytes
    call_id: str | None
    wall: float  # time.time()
    monotonic: float  # time.monotonic()

    @classmethod
    def now(
        cls, direction: str, transport: str, local: Address, remote: Address, data: bytes
    ) -> TracedMessage:
        return cls(
            direction,
            transport,
            local,
            remote,
            data,
            call_id_of(data),
            time.time(),
            time.monotonic(),
        )
