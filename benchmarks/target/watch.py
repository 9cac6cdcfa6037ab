"""SIP timings and retransmissions of each call, read off the user agent's tracer
(``sip.aio.UserAgent.tracer``: every message as it went on the wire, with its monotonic
time). The user agent does not count retransmissions per call; the wire does: a message we
send again with the same bytes on the same Call-ID is one (INVITE and BYE under Timers A/E,
ACK to a repeated 2xx)."""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

from sip.aio.trace import TracedMessage

_STATUS_RE = re.compile(rb"^SIP/2\.0 (\d{3})")
_REQUEST_RE = re.compile(rb"^([A-Z]+) ")
_CSEQ_RE = re.compile(rb"^(?:cseq)[ \t]*:[ \t]*\d+[ \t]+([A-Za-z]+)", re.IGNORECASE | re.MULTILINE)


@dataclass
class Timings:
    """Monotonic times of one call's SIP milestones, and its retransmissions."""

    invite_out: float | None = None
    first_18x: float | None = None
    answer_200: float | None = None
    bye_out: float | None = None
    bye_final: float | None = None
    retransmissions: int = 0
    sent: set[int] = field(default_factory=set)  # CRC32 of each message sent


class SipWatch:
    """The tracer: one :class:`Timings` per Call-ID of an INVITE we sent, at most ``limit``
    (the oldest dropped past it); :meth:`take` hands a call's over and forgets it."""

    def __init__(self, limit: int = 20_000) -> None:
        self.limit = limit
        self.calls: dict[str, Timings] = {}

    def __call__(self, msg: TracedMessage) -> None:
        if msg.call_id is None:
            return
        data = msg.data
        head = data[:2048]
        entry = self.calls.get(msg.call_id)
        if msg.direction == "out":
            request = _REQUEST_RE.match(head)
            method = request.group(1) if request else None
            if entry is None:
                if method != b"INVITE":
                    return
                if len(self.calls) >= self.limit:
                    self.calls.pop(next(iter(self.calls)))
                entry = self.calls[msg.call_id] = Timings()
            digest = zlib.crc32(data)
            if digest in entry.sent:
                entry.retransmissions += 1
                return
            entry.sent.add(digest)
            if method == b"INVITE" and entry.invite_out is None:
                entry.invite_out = msg.monotonic
            elif method == b"BYE" and entry.bye_out is None:
                entry.bye_out = msg.monotonic
            return
        if entry is None:
            return
        status = _STATUS_RE.match(head)
        if status is None:
            return
        code = int(status.group(1))
        cseq = _CSEQ_RE.search(head)
        method = cseq.group(1).upper() if cseq else b""
        if method == b"INVITE":
            if 180 <= code < 190 and entry.first_18x is None:
                entry.first_18x = msg.monotonic
            elif 200 <= code < 300 and entry.answer_200 is None:
                entry.answer_200 = msg.monotonic
        elif (
            method == b"BYE"
            and code >= 200
            and entry.bye_out is not None
            and entry.bye_final is None
        ):
            # A 401/407 answer makes the BYE go again with credentials: the round trip of
            # the request that ended the call is to its last final answer.
            if code in (401, 407):
                entry.bye_out = None
                return
            entry.bye_final = msg.monotonic

    def take(self, call_id: str) -> Timings:
        return self.calls.pop(call_id, None) or Timings()
