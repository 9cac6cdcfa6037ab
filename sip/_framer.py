"""Stream framing (RFC 3261 §18.3): :class:`StreamFramer` cuts a TCP/TLS byte stream into
SIP messages by Content-Length, with bounded buffering and RFC 5626 CRLF keepalives.

The headers of each message are parsed by :func:`sip._parser.parse_head`, the same code as
for datagrams. Import :class:`StreamFramer` from :mod:`sip.message`; this module is where it
lives.
"""

from __future__ import annotations

from sip._message import SipParseError, SipRequest, SipResponse
from sip._parser import parse_content_length, parse_head

__all__ = ["StreamFramer"]


class StreamFramer:
    """Cut a TCP/TLS byte stream into SIP messages by Content-Length (RFC 3261 §18.3).

    ``feed(data)`` returns the messages completed so far and keeps any partial one. CRLFs
    between messages are skipped (RFC 5626 §3.5.1 keepalives); ``pings`` counts the
    double-CRLF pings seen, so the caller can answer each with a single CRLF pong.

    Content-Length is mandatory on streams. A buffered, incomplete message larger than
    ``max_message_size`` raises :class:`SipParseError` 413.

    On a malformed message, ``feed`` raises :class:`SipParseError` with ``messages`` holding
    the messages completed before it in that call, and ``fatal``:

    * ``fatal is False``: the headers were readable and gave a valid Content-Length, so the
      bad message is skipped (``partial`` holds it, to answer 400). Call ``feed(b"")`` to
      continue with the data already buffered.
    * ``fatal is True``: framing is lost; the caller must close the connection. Every later
      ``feed`` raises the same error.
    """

    def __init__(self, *, max_message_size: int = 65535) -> None:
        self.max_message_size = max_message_size
        self.pings = 0
        #: CR/LF bytes skipped between messages so far (pings, and the single-CRLF pongs
        #: that answer ours: RFC 5626 §4.4.1).
        self.keepalive_bytes = 0
        self._buf = bytearray()
        self._pending: tuple[SipRequest | SipResponse, int] | None = None
        self._discard = 0
        self._crlf_run = 0
        self._error: SipParseError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[SipRequest | SipResponse]:
        """Add received bytes; return the messages they complete."""
        if self._error is not None:
            raise self._error
        buf = self._buf
        buf += data
        out: list[SipRequest | SipResponse] = []
        try:
            while True:
                if self._discard:
                    n = min(self._discard, len(buf))
                    del buf[:n]
                    self._discard -= n
                    if self._discard:
                        break
                if self._pending is None:
                    if not self._skip_keepalives(buf):
                        break
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        if len(buf) > self.max_message_size:
                            raise SipParseError("Message Too Large", 413)
                        break
                    if end + 4 > self.max_message_size:
                        raise SipParseError("Message Too Large", 413)
                    head = bytes(buf[:end])
                    del buf[: end + 4]
                    self._crlf_run = 0
                    msg, length = self._parse_head(head)
                    if end + 4 + length > self.max_message_size:
                        raise SipParseError("Message Too Large", 413, partial=msg)
                    self._pending = (msg, length)
                msg, length = self._pending
                if len(buf) < length:
                    break
                msg.body = bytes(buf[:length])
                del buf[:length]
                self._pending = None
                out.append(msg)
        except SipParseError as exc:
            exc.messages = out
            if exc.fatal:
                self._error = exc
            raise
        if not buf and self._pending is None:
            # CR/LF that ended a read alone is not half a ping: a single-CRLF pong answering
            # ours must not add up with the next one into a "ping" (RFC 5626 §4.4.1).
            self._crlf_run = 0
        return out

    def _skip_keepalives(self, buf: bytearray) -> bool:
        """Drop leading CR/LF; return True when message bytes follow."""
        i = 0
        n = len(buf)
        while i < n and buf[i] in (13, 10):
            i += 1
        if i:
            del buf[:i]
            self.keepalive_bytes += i
            self._crlf_run += i
            while self._crlf_run >= 4:
                self.pings += 1
                self._crlf_run -= 4
        return bool(buf)

    def _parse_head(self, head: bytes) -> tuple[SipRequest | SipResponse, int]:
        try:
            msg, length = parse_head(head)
        except SipParseError as exc:
            # Keep the connection if the Content-Length still frames the message.
            length = None
            if exc.partial is not None:
                values = exc.partial._lines("Content-Length")
                if values:
                    try:
                        length = parse_content_length(values)
                    except SipParseError:
                        length = None
            if length is None:
                raise
            exc.fatal = False
            self._discard = length
            raise
        if length is None:
            raise SipParseError("Bad Request - missing Content-Length on a stream", partial=msg)
        return msg, length
