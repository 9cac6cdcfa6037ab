"""UDP and TCP transports (RFC 3261 §18): they move bytes, nothing more.

Each transport hands every complete message, with its source address and the connection
it came on, to one callback; parsing errors are reported to the same place so the user
agent can answer 400 (requests) or drop (responses). Streams are framed by Content-Length
(:class:`sip.message.StreamFramer`); TCP connections are reused in both directions
(RFC 3261 §18.3 / RFC 5923 style: a response goes back on the connection the request came on).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sip.message import SipParseError, SipRequest, SipResponse, StreamFramer, parse_message

log = logging.getLogger(__name__)

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Inbound:
    """Where a message came from: the transport name, source address and (TCP) connection."""

    transport: str  # "udp" | "tcp"
    source: Address
    connection: TcpConnection | None = None


#: on_message(message, inbound) — on_error(raw bytes, error, inbound)
MessageHandler = Callable[[SipRequest | SipResponse, Inbound], None]
ErrorHandler = Callable[[bytes, SipParseError, Inbound], None]


class UdpTransport(asyncio.DatagramProtocol):
    name = "udp"
    reliable = False

    def __init__(self, on_message: MessageHandler, on_error: ErrorHandler, *, max_size: int = 65535):
        self.on_message = on_message
        self.on_error = on_error
        self.max_size = max_size
        #: When set, datagrams go to it unparsed (a sans-I/O endpoint parses its own).
        self.on_datagram: Callable[[bytes, Inbound], None] | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.local: Address = ("", 0)

    @classmethod
    async def listen(
        cls, host: str, port: int, on_message: MessageHandler, on_error: ErrorHandler
    ) -> UdpTransport:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(
            lambda: cls(on_message, on_error), local_addr=(host, port)
        )
        return protocol

    #: Receive buffer asked for on the SIP socket: bursts of call setups arrive faster than
    #: one event-loop turn drains them, and the kernel default (~200 KiB) drops them.
    RECEIVE_BUFFER = 4 * 1024 * 1024

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sockname = transport.get_extra_info("sockname")
        self.local = (sockname[0], sockname[1])
        sock = transport.get_extra_info("socket")
        if sock is not None:
            import socket as _socket

            # SO_RCVBUFFORCE passes net.core.rmem_max when we may (root); else the kernel caps it.
            for option in (getattr(_socket, "SO_RCVBUFFORCE", None), _socket.SO_RCVBUF):
                if option is None:
                    continue
                try:
                    sock.setsockopt(_socket.SOL_SOCKET, option, self.RECEIVE_BUFFER)
                    break
                except OSError:
                    continue

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[override]
        source = (addr[0], addr[1])
        inbound = Inbound("udp", source)
        if self.on_datagram is not None:
            self.on_datagram(data, inbound)
            return
        if not data.strip(b"\r\n\t "):
            return  # RFC 5626 keepalive (CRLF) — nothing to answer
        try:
            message = parse_message(data, max_size=self.max_size)
        except SipParseError as exc:
            self.on_error(data, exc, inbound)
            return
        except Exception as exc:  # never let one datagram stop the process
            log.exception("unexpected parser failure from %s", source)
            self.on_error(data, SipParseError(f"unparseable message ({type(exc).__name__})"), inbound)
            return
        self.on_message(message, inbound)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable etc. arrive here on Linux; transactions time out on their own.
        log.debug("udp error: %s", exc)

    def send(self, data: bytes, addr: Address) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class TcpConnection:
    """One TCP connection, either direction, with its Content-Length framer."""

    def __init__(self, owner: TcpTransport, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.owner = owner
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer: Address = (peer[0], peer[1])
        self.framer = StreamFramer(max_message_size=owner.max_size)
        self.task: asyncio.Task[None] | None = None
        self.closed = False

    async def run(self) -> None:
        inbound = Inbound("tcp", self.peer, self)
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                while True:
                    try:
                        messages = self.framer.feed(data)
                    except SipParseError as exc:
                        for message in getattr(exc, "messages", None) or ():
                            self.owner.on_message(message, inbound)
                        self.owner.on_error(data, exc, inbound)
                        if getattr(exc, "fatal", True):
                            # Framing lost: the stream cannot be resynchronised (§18.3).
                            return
                        data = b""  # the bad message was framed and skipped: go on
                        continue
                    break
                for message in messages:
                    self.owner.on_message(message, inbound)
        except (ConnectionError, OSError):
            pass
        finally:
            self.close()

    def send(self, data: bytes) -> None:
        if not self.closed:
            self.writer.write(data)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.owner._forget(self)
        with contextlib.suppress(Exception):
            self.writer.close()


class TcpTransport:
    name = "tcp"
    reliable = True

    def __init__(self, on_message: MessageHandler, on_error: ErrorHandler, *, max_size: int = 65535):
        self.on_message = on_message
        self.on_error = on_error
        self.max_size = max_size
        self.server: asyncio.base_events.Server | None = None
        self.local: Address = ("", 0)
        self._connections: dict[Address, TcpConnection] = {}
        self._connecting: dict[Address, asyncio.Task[TcpConnection]] = {}

    @classmethod
    async def listen(
        cls, host: str, port: int, on_message: MessageHandler, on_error: ErrorHandler
    ) -> TcpTransport:
        self = cls(on_message, on_error)
        self.server = await asyncio.start_server(self._accept, host, port)
        sock = self.server.sockets[0].getsockname()
        self.local = (sock[0], sock[1])
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = TcpConnection(self, reader, writer)
        self._connections[conn.peer] = conn
        await conn.run()

    def _forget(self, conn: TcpConnection) -> None:
        if self._connections.get(conn.peer) is conn:
            del self._connections[conn.peer]

    async def connect(self, addr: Address) -> TcpConnection:
        conn = self._connections.get(addr)
        if conn is not None and not conn.closed:
            return conn
        pending = self._connecting.get(addr)
        if pending is None:
            pending = asyncio.ensure_future(self._open(addr))
            self._connecting[addr] = pending
        try:
            return await pending
        finally:
            self._connecting.pop(addr, None)

    async def _open(self, addr: Address) -> TcpConnection:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(addr[0], addr[1]), 10)
        conn = TcpConnection(self, reader, writer)
        self._connections[addr] = conn
        conn.task = asyncio.ensure_future(conn.run())
        return conn

    def connection_to(self, addr: Address) -> TcpConnection | None:
        conn = self._connections.get(addr)
        return conn if conn is not None and not conn.closed else None

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for conn in list(self._connections.values()):
            conn.close()
