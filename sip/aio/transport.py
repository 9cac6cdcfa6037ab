"""UDP, TCP and TLS transports (RFC 3261 §18, §26.2): they move bytes, nothing more.

Each transport hands every complete message, with its source address and the connection
it came on, to one callback; parsing errors are reported to the same place so the user
agent can answer 400 (requests) or drop (responses). Streams are framed by Content-Length
(:class:`sip.message.StreamFramer`); TCP connections are reused in both directions
(RFC 3261 §18.3: a response goes back on the connection the request came on; RFC 5923: a
peer whose Via carries ``alias`` is reached on its connection for our requests too), kept
while a transaction uses them and closed after an idle timeout.

An unconnected UDP socket hears nothing of ICMP errors unless asked: the UDP transport sets
``IP_RECVERR``/``IPV6_RECVERR`` (Linux) and reads the socket's error queue, so a datagram to
a port nobody listens on is reported (:attr:`UdpTransport.on_unreachable`) with the address
it was sent to, and the transaction behind it fails at once instead of after Timer B
(RFC 3261 §8.1.3.1, §17.1.4).

TLS (:class:`TlsTransport`) is TCP with an :class:`ssl.SSLContext` on each connection: the
same framing, reuse and lifetime. A connection we open verifies the peer's certificate
(against the system store or a configured CA file) for the host name of the URI the address
came from, which also goes in SNI (RFC 5922 §4); a failed handshake is an ``ssl.SSLError``,
an ``OSError`` like a refused connect, so the transaction fails the same way and nothing
is ever sent in clear instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass

from sip.message import SipParseError, SipRequest, SipResponse, StreamFramer, parse_message

log = logging.getLogger(__name__)

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Inbound:
    """Where a message came from: the transport name, source address and (TCP) connection."""

    transport: str  # "udp" | "tcp" | "tls"
    source: Address
    connection: TcpConnection | None = None


#: on_message(message, inbound) — on_error(raw bytes, error, inbound)
MessageHandler = Callable[[SipRequest | SipResponse, Inbound], None]
ErrorHandler = Callable[[bytes, SipParseError, Inbound], None]


#: ``on_unreachable(destination, errno)``: a datagram we sent to ``destination`` drew an
#: ICMP error (port/host/network unreachable).
UnreachableHandler = Callable[[Address, int], None]

# Linux <linux/in.h>, <linux/in6.h>, <linux/errqueue.h>; the socket module lacks most names.
_SOL_IP = getattr(socket, "SOL_IP", 0)
_IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
_IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
_MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3
#: struct sock_extended_err { u32 ee_errno; u8 ee_origin, ee_type, ee_code, ee_pad; u32 ee_info, ee_data; }
_EXTENDED_ERR = struct.Struct("=IBBBBII")
#: The ICMP errors that say nobody will answer at that address (RFC 3261 §18.4 -> §8.1.3.1:
#: a transport error, treated as a 503). Others (fragmentation needed...) are not failures.
UNREACHABLE_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN}
)
#: Most error-queue entries read per wake-up (the queue is bounded by the socket buffer).
_ERRQUEUE_BATCH = 64


@dataclass(frozen=True, slots=True)
class IcmpError:
    """One entry of a socket's error queue: where the datagram went and what came back."""

    destination: Address
    errno: int
    origin: int
    icmp_type: int
    icmp_code: int


def parse_extended_error(
    level: int, kind: int, data: bytes, destination: Address
) -> IcmpError | None:
    """The ``sock_extended_err`` of one ``IP_RECVERR``/``IPV6_RECVERR`` control message
    (``recvmsg(..., MSG_ERRQUEUE)``), or None for another kind of ancillary data.
    ``destination`` is the error message's ``msg_name``: the original datagram's address."""
    if (level, kind) not in ((_SOL_IP, _IP_RECVERR), (socket.IPPROTO_IPV6, _IPV6_RECVERR)):
        return None
    if len(data) < _EXTENDED_ERR.size:
        return None
    ee_errno, origin, icmp_type, icmp_code, _, _, _ = _EXTENDED_ERR.unpack_from(data)
    return IcmpError(destination, ee_errno, origin, icmp_type, icmp_code)


class UdpTransport(asyncio.DatagramProtocol):
    name = "udp"
    reliable = False

    def __init__(
        self, on_message: MessageHandler, on_error: ErrorHandler, *, max_size: int = 65535
    ):
        self.on_message = on_message
        self.on_error = on_error
        self.max_size = max_size
        #: When set, datagrams go to it unparsed (a sans-I/O endpoint parses its own).
        self.on_datagram: Callable[[bytes, Inbound], None] | None = None
        #: When set, ICMP errors for datagrams we sent are reported here (see the module doc).
        self.on_unreachable: UnreachableHandler | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.local: Address = ("", 0)
        self.icmp_errors = 0  #: error-queue entries read
        self._sock: socket.socket | None = None
        self._sending: tuple[bytes, Address] | None = None

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
            # SO_RCVBUFFORCE passes net.core.rmem_max when we may (root); else the kernel caps it.
            for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
                if option is None:
                    continue
                try:
                    sock.setsockopt(socket.SOL_SOCKET, option, self.RECEIVE_BUFFER)
                    break
                except OSError:
                    continue
            self._enable_error_queue(sock)

    def _enable_error_queue(self, sock: socket.socket) -> None:
        """Ask the kernel to queue ICMP errors on this unconnected socket (Linux only;
        elsewhere transactions time out as before)."""
        options = [(_SOL_IP, _IP_RECVERR)]
        if sock.family == socket.AF_INET6:
            options.append((socket.IPPROTO_IPV6, _IPV6_RECVERR))
        enabled = False
        for level, option in options:
            try:
                sock.setsockopt(level, option, 1)
                enabled = True
            except OSError:
                continue
        if enabled:
            # asyncio hands out a wrapper without recvmsg(): read the queue through a
            # duplicate descriptor of the same socket (closed with the transport).
            dup = socket.socket(sock.family, sock.type, sock.proto, fileno=os.dup(sock.fileno()))
            dup.setblocking(False)
            self._sock = dup

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
            self.on_error(
                data, SipParseError(f"unparseable message ({type(exc).__name__})"), inbound
            )
            return
        self.on_message(message, inbound)

    def error_received(self, exc: Exception) -> None:
        """A pending socket error (an ICMP error was queued, IP_RECVERR) surfaced on a
        receive or a send: read the error queue to learn which destination it was for."""
        log.debug("udp error: %s", exc)
        self.read_error_queue()
        pending, self._sending = self._sending, None
        if pending is not None and self.transport is not None and not self.transport.is_closing():
            # The send failed only because an earlier ICMP error was pending (the kernel
            # reports it on the next socket call): it is read now, so send once more.
            self.transport.sendto(pending[0], pending[1])

    def read_error_queue(self) -> list[IcmpError]:
        """Drain the socket's error queue (bounded per call) and report each unreachable
        destination to :attr:`on_unreachable`."""
        sock = self._sock
        if sock is None:
            return []
        found: list[IcmpError] = []
        for _ in range(_ERRQUEUE_BATCH):
            try:
                _, ancdata, _, name = sock.recvmsg(1, 512, _MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.debug("reading the udp error queue: %s", exc)
                break
            if not isinstance(name, tuple) or len(name) < 2:
                continue
            destination = (str(name[0]), int(name[1]))
            for level, kind, data in ancdata:
                error = parse_extended_error(level, kind, data, destination)
                if error is not None:
                    found.append(error)
        self.icmp_errors += len(found)
        for error in found:
            if error.errno not in UNREACHABLE_ERRNOS:
                continue
            log.info(
                "udp %s:%s unreachable (%s)",
                error.destination[0],
                error.destination[1],
                errno.errorcode.get(error.errno, error.errno),
            )
            if self.on_unreachable is not None:
                try:
                    self.on_unreachable(error.destination, error.errno)
                except Exception:
                    log.exception("unreachable handler failed")
        return found

    def send(self, data: bytes, addr: Address) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._sending = (data, addr)
            try:
                self.transport.sendto(data, addr)
            finally:
                self._sending = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class TcpConnection:
    """One TCP connection, either direction, with its Content-Length framer."""

    def __init__(
        self, owner: TcpTransport, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ):
        self.owner = owner
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer: Address = (peer[0], peer[1])
        self.framer = StreamFramer(max_message_size=owner.max_size)
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.last_active = asyncio.get_running_loop().time()  #: last byte in or out
        self.aliases: set[Address] = set()  #: other addresses it serves (RFC 5923 alias)
        #: When our unanswered RFC 5626 ping (CRLFCRLF) went out; None: none pending. Any
        #: byte from the peer (its CRLF pong, or a message) answers it.
        self.ping_sent_at: float | None = None
        self.pongs = 0  #: pings of ours answered
        self.pings_answered = 0  #: the peer's pings we answered with a CRLF

    async def run(self) -> None:
        inbound = Inbound(self.owner.name, self.peer, self)
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                self.last_active = asyncio.get_running_loop().time()
                if self.ping_sent_at is not None:
                    self.ping_sent_at = None
                    self.pongs += 1
                pings = self.framer.pings
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
                if self.framer.pings > pings:
                    # RFC 5626 §3.5.1 / §4.4.1: each double-CRLF ping gets a single-CRLF pong.
                    self.pings_answered += self.framer.pings - pings
                    self.send(b"\r\n" * (self.framer.pings - pings))
                for message in messages:
                    self.owner.on_message(message, inbound)
        except (ConnectionError, OSError):
            pass
        finally:
            self.close()

    def send(self, data: bytes) -> None:
        if not self.closed:
            self.last_active = asyncio.get_running_loop().time()
            self.writer.write(data)

    def ping(self) -> None:
        """An RFC 5626 §3.5.1 keep-alive: CRLFCRLF; the peer's CRLF (or anything) answers it."""
        if not self.closed and self.ping_sent_at is None:
            self.ping_sent_at = asyncio.get_running_loop().time()
            self.send(b"\r\n\r\n")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.owner._forget(self)
        with contextlib.suppress(Exception):
            self.writer.close()
        if self.owner.on_closed is not None:
            try:
                self.owner.on_closed(self)
            except Exception:
                log.exception("connection close handler failed")


class TcpTransport:
    """TCP connections both ways, by peer address. A connection lives while a transaction
    uses it (:attr:`in_use`) and then until it has been idle for :attr:`idle_timeout`
    seconds (either side may close it first; the next request opens a new one)."""

    name = "tcp"
    reliable = True

    #: Seconds without a byte either way after which an unused connection is closed.
    IDLE_TIMEOUT = 120.0

    def __init__(
        self,
        on_message: MessageHandler,
        on_error: ErrorHandler,
        *,
        max_size: int = 65535,
        idle_timeout: float | None = None,
    ) -> None:
        self.on_message = on_message
        self.on_error = on_error
        self.max_size = max_size
        self.idle_timeout = self.IDLE_TIMEOUT if idle_timeout is None else idle_timeout
        #: ``in_use(connection)``: does a transaction still need it? (kept open if so)
        self.in_use: Callable[[TcpConnection], bool] = lambda conn: False
        #: ``on_closed(connection)``: it closed (either side, an error, idle, a failed ping).
        self.on_closed: Callable[[TcpConnection], None] | None = None
        self.server: asyncio.base_events.Server | None = None
        self.local: Address = ("", 0)
        self._connections: dict[Address, TcpConnection] = {}
        self._connecting: dict[Address, asyncio.Task[TcpConnection]] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    @classmethod
    async def listen(
        cls,
        host: str,
        port: int,
        on_message: MessageHandler,
        on_error: ErrorHandler,
        **options: object,
    ) -> TcpTransport:
        self = cls(on_message, on_error, **options)  # type: ignore[arg-type]
        self.server = await asyncio.start_server(self._accept, host, port, ssl=self._server_ssl())
        sock = self.server.sockets[0].getsockname()
        self.local = (sock[0], sock[1])
        return self

    def _server_ssl(self) -> ssl.SSLContext | None:
        return None

    def _client_ssl(self) -> ssl.SSLContext | None:
        return None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = TcpConnection(self, reader, writer)
        self._add(conn.peer, conn)
        await conn.run()

    def _add(self, addr: Address, conn: TcpConnection) -> None:
        self._connections[addr] = conn
        self._arm_sweeper()

    def alias(self, conn: TcpConnection, addr: Address) -> None:
        """RFC 5923: the peer lets us reach ``addr`` (its Via sent-by) on ``conn``."""
        if conn.closed or addr == conn.peer or self._connections.get(addr) is conn:
            return
        conn.aliases.add(addr)
        self._connections[addr] = conn

    def _forget(self, conn: TcpConnection) -> None:
        for addr in (conn.peer, *conn.aliases):
            if self._connections.get(addr) is conn:
                del self._connections[addr]

    def _arm_sweeper(self) -> None:
        if self._sweeper is not None or self.idle_timeout <= 0:
            return
        loop = asyncio.get_running_loop()
        # A quarter of the timeout between sweeps: an idle connection goes within 1.25x.
        self._sweeper = loop.call_later(max(0.05, self.idle_timeout / 4), self._sweep)

    def _sweep(self) -> None:
        """Close the connections idle for the timeout that no transaction uses."""
        self._sweeper = None
        now = asyncio.get_running_loop().time()
        for conn in list({id(c): c for c in self._connections.values()}.values()):
            if conn.closed or now - conn.last_active < self.idle_timeout:
                continue
            try:
                busy = self.in_use(conn)
            except Exception:
                log.exception("tcp in_use check failed")
                busy = False
            if busy:
                continue
            log.debug("tcp connection to %s:%s idle: closed", *conn.peer)
            conn.close()
        if self._connections:
            self._arm_sweeper()

    #: Seconds a connect (and, for TLS, its handshake) may take.
    CONNECT_TIMEOUT = 10.0

    async def connect(self, addr: Address, server_name: str | None = None) -> TcpConnection:
        """The open connection to ``addr``, else a new one. ``server_name`` (TLS): the name
        the peer's certificate must carry (None: ``addr``'s host)."""
        conn = self._connections.get(addr)
        if conn is not None and not conn.closed:
            return conn
        pending = self._connecting.get(addr)
        if pending is None:
            pending = asyncio.ensure_future(self._open(addr, server_name))
            self._connecting[addr] = pending
        try:
            return await pending
        finally:
            self._connecting.pop(addr, None)

    async def _open(self, addr: Address, server_name: str | None = None) -> TcpConnection:
        context = self._client_ssl()
        opening = asyncio.open_connection(
            addr[0],
            addr[1],
            ssl=context,
            server_hostname=(server_name or addr[0]) if context is not None else None,
            ssl_handshake_timeout=self.CONNECT_TIMEOUT if context is not None else None,
        )
        reader, writer = await asyncio.wait_for(opening, self.CONNECT_TIMEOUT)
        conn = TcpConnection(self, reader, writer)
        self._add(addr, conn)
        conn.task = asyncio.ensure_future(conn.run())
        return conn

    def connection_to(self, addr: Address) -> TcpConnection | None:
        conn = self._connections.get(addr)
        return conn if conn is not None and not conn.closed else None

    @property
    def connections(self) -> list[TcpConnection]:
        """The open connections (each once, aliases aside)."""
        return list({id(c): c for c in self._connections.values() if not c.closed}.values())

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self.server is not None:
            self.server.close()
        for conn in list(self._connections.values()):
            conn.close()


class TlsTransport(TcpTransport):
    """TLS connections both ways (RFC 3261 §26.2.1), otherwise exactly :class:`TcpTransport`.

    ``client_context`` verifies the servers we connect to (:func:`client_context`);
    ``server_context`` (our certificate and key, :func:`server_context`) serves the
    connections peers open to our listener, e.g. for their in-dialog requests."""

    name = "tls"

    def __init__(
        self,
        on_message: MessageHandler,
        on_error: ErrorHandler,
        *,
        client_context: ssl.SSLContext,
        server_context: ssl.SSLContext | None = None,
        max_size: int = 65535,
        idle_timeout: float | None = None,
    ) -> None:
        super().__init__(on_message, on_error, max_size=max_size, idle_timeout=idle_timeout)
        self.client_context = client_context
        self.server_context = server_context

    def _server_ssl(self) -> ssl.SSLContext | None:
        if self.server_context is None:
            raise ValueError("a TLS listener needs a certificate and key (server_context)")
        return self.server_context

    def _client_ssl(self) -> ssl.SSLContext | None:
        return self.client_context


def client_context(
    *,
    ca_file: str | None = None,
    verify: bool = True,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> ssl.SSLContext:
    """The context of the TLS connections we open: the server's certificate checked against
    ``ca_file`` (PEM; None: the system store) and the host name we connect for (RFC 5922
    §7.2), unless ``verify`` is off; our own certificate if ``cert_file`` is given (for
    peers that ask for one). ``OSError``/``ssl.SSLError`` for files that cannot be read."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file:
        context.load_cert_chain(cert_file, key_file or None)
    return context


def server_context(cert_file: str, key_file: str | None = None) -> ssl.SSLContext:
    """The context of our TLS listener: our certificate chain and key (PEM). Peers are not
    asked for a certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file or None)
    return context
