"""The SIP user agent: a thin asyncio adapter around the sans-I/O :class:`sip.endpoint.Endpoint`.

    async with UserAgent(UserAgentConfig(port=0)) as ua:
        call = await ua.dial("sip:bob@127.0.0.1:5062", from_user="1000", sdp=offer,
                             on_remote_sdp=lambda sdp, early: ...)
        if await call.wait_answered():
            await call.hangup()
        print((await call.wait_terminated()).cause)

The adapter owns the sockets (:mod:`sip.aio.transport`), the clock (one ``loop.call_at``
re-armed from :meth:`Endpoint.get_timer`), the DNS resolver (:mod:`sip.aio.resolver`, fed
back with :meth:`Endpoint.resolved`), and turns the endpoint's events into each
:class:`OutboundCall`'s event stream. It knows nothing of media: the caller brings the SDP
offer and is handed the callee's session descriptions (:mod:`softswitch.ua` joins it to
the media engine).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from sip import causes
from sip._stateless import canonical_address as canonical
from sip.auth import Credentials
from sip.endpoint import (
    AnswerHandler,
    CallProgress,
    CallReleased,
    ClientCall,
    Datagram,
    DialogChanged,
    Endpoint,
    EndpointConfig,
    EndpointEvent,
    IncomingCall,
    RequestCompleted,
    ResolveRequest,
    ServerCall,
    Source,
)
from sip.events import (
    Answered,
    CallEvent,
    EarlyMedia,
    Ringing,
    Terminated,
)
from sip.invite import ClientInviteSession
from sip.invite_server import ServerInviteSession
from sip.keepalive import GatewayHealthChanged, OptionsProbe, ProbeConfig
from sip.message import SipParseError, SipRequest, SipResponse, new_call_id
from sip.policy import PolicyConfig
from sip.register import Registration, RegistrationChanged, RegistrationConfig, contact_address
from sip.registrar import Binding, BindingsChanged, RegistrarConfig
from sip.transaction import TimerConfig
from sip.uri import SipUri, TelUri, parse_uri

from .observe import ObservableCall
from .resolver import resolve
from .trace import TracedMessage
from .transport import (
    Inbound,
    TcpConnection,
    TcpTransport,
    TlsTransport,
    UdpTransport,
    client_context,
    server_context,
)

log = logging.getLogger("sip.ua")

__all__ = [
    "AnswerHandler",
    "Credentials",
    "GatewayConfig",
    "InboundCall",
    "OfferHandler",
    "OutboundCall",
    "UserAgent",
    "UserAgentConfig",
    "UserNotRegistered",
]


@dataclass
class GatewayConfig:
    """A trunk or PBX that bare numbers are routed through."""

    name: str
    host: str
    port: int | None = None
    transport: str = "udp"
    username: str | None = None
    password: str | None = None
    realm: str | None = None
    prefix: str | list[str] = ""  # destination prefixes this gateway takes ("" = any)
    strip: int = 0  # leading digits to remove before dialing
    add_prefix: str = ""  # digits to put in front
    from_domain: str | None = None
    p_asserted_identity: bool = False
    keep_plus: bool = False  # send "+1415..." rather than "1415..."
    #: Keep a registration with the trunk (RFC 3261 §10, :mod:`sip.register`): the AoR is
    #: ``sip:username@(from_domain or host)``; calls through the trunk fail at once with
    #: NETWORK_OUT_OF_ORDER while it is not registered.
    register: bool = False
    register_expires: int = 3600  #: the interval asked for, seconds
    #: Seconds between OPTIONS pings (:mod:`sip.keepalive`; 0 = none): a gateway that stops
    #: answering is down, and calls through it fail at once, until it answers again.
    ping: float = 0.0
    #: ``transport = "tls"``: the name the trunk's certificate must carry and that goes in
    #: SNI, when it is not ``host`` (e.g. ``host`` is an address).
    tls_server_name: str | None = None
    #: Seconds between RFC 5626 §3.5.1 keep-alives (CRLFCRLF) on our TCP/TLS connection to
    #: the gateway (0 = none): the connection (and a NAT's mapping of it) stays up for the
    #: trunk's requests to us; a ping not answered (CRLF) within :attr:`UserAgent.PONG_TIMEOUT`
    #: closes it, and a registration that used it registers again on a new one.
    keepalive: float = 0.0

    def prefixes(self) -> list[str]:
        return [self.prefix] if isinstance(self.prefix, str) else list(self.prefix)


@dataclass
class UserAgentConfig:
    """Configuration of a :class:`UserAgent`; every field has a working default."""

    host: str = "127.0.0.1"  #: address the SIP transports bind to
    port: int = 5060  #: SIP port (0 = any free port)
    transports: tuple[str, ...] = ("udp", "tcp")
    public_host: str | None = None  #: address put in Via/Contact/SDP if not ``host``
    user_agent: str = "softswitch/0.1"
    from_domain: str | None = None  #: host part of From for calls (default: ``public_host``)
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    session_expires: int = 1800  #: RFC 4028 interval asked for (0 = off)
    max_redirects: int = 3
    gateways: list[GatewayConfig] = field(default_factory=list)
    linger: float = 32.0  #: how long an ended call's state absorbs retransmissions
    dns_servers: list[str] | None = None  #: resolvers to ask (default: the system's)
    dns_port: int = 53
    #: Networks whose requests are served (:mod:`sip.policy`); empty: any source. The
    #: gateways' addresses are always allowed.
    allowed_peers: list[str] = field(default_factory=list)
    out_of_dialog_rate: float = 5.0  #: out-of-dialog answers per second per source (0 = no limit)
    out_of_dialog_burst: float = 10.0  #: ... and at once
    #: Take out-of-dialog INVITEs: each becomes an :class:`InboundCall` handed to
    #: :attr:`UserAgent.on_incoming` (False: they are declined with 603). With an allow-list,
    #: an INVITE from elsewhere is refused with 403 (within the source's answer rate).
    accept_inbound: bool = False
    #: Seconds a TCP connection no transaction uses stays open without traffic.
    tcp_idle_timeout: float = 120.0
    #: TLS (``"tls"`` in ``transports``; RFC 3261 §26.2): our certificate chain and key (PEM
    #: files). With them a TLS listener runs on ``tls_port`` (peers' in-dialog requests) and
    #: the certificate is shown to servers that ask for one; without, TLS is outbound only.
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None  #: CA certificates (PEM) servers are verified by (None: the system's)
    tls_verify: bool = True  #: verify servers' certificates and names (off: tests only)
    tls_port: int = 5061  #: TLS listen port (0 = any free port)
    #: Per transport (``{"tcp": "198.51.100.4"}``), the address put in Via/Contact of that
    #: transport instead of ``public_host`` (a NAT that maps UDP and TCP apart).
    public_hosts: dict[str, str] = field(default_factory=dict)
    #: Phones that may REGISTER here (user name -> password, :mod:`sip.registrar`); calls to
    #: ``user/<name>`` or ``sip:<name>@<one of our addresses or the realm>`` reach their
    #: binding. Empty: no registrar (REGISTER gets 405).
    users: dict[str, str] = field(default_factory=dict)
    registrar_realm: str | None = None  #: digest realm and AoR host (default: our address)
    registrar_min_expires: int = 60  #: shorter registrations get 423
    registrar_max_expires: int = 3600  #: longer ones are shortened to this


class UserNotRegistered(LookupError):
    """A call to a configured user (``user/alice``) who has no live registration."""

    cause = causes.USER_NOT_REGISTERED


#: ``offer_handler(offer)``: the callee's offer in a re-INVITE/UPDATE (None: a re-INVITE
#: without SDP asks us to offer) -> our SDP. Raise ``ValueError`` to refuse it (488).
OfferHandler = Callable[[str | None], str]


class OutboundCall(ObservableCall[CallEvent]):
    """One outbound SIP call: its progress as events, and control."""

    def __init__(self, ua: UserAgent, session: ClientInviteSession):
        super().__init__()
        self.ua = ua
        self.session = session
        self.record: ClientCall | None = None  #: the endpoint's record (set once the INVITE starts)
        self.state = "trying"
        self.created_at = time.time()
        self.ringing_at: float | None = None
        self.early_at: float | None = None
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        #: Called with the new :meth:`dialog_state` when the dialog changed after a first
        #: :meth:`dialog_state` (target refresh, CSeq lease; see
        #: :meth:`sip.endpoint.Endpoint.dialog_state`).
        self.on_dialog_change: Callable[[dict[str, object]], None] | None = None

    # -- properties

    @property
    def call_id(self) -> str:
        return self.session.call_id

    @property
    def transport(self) -> str:
        """The transport the INVITE went out on."""
        return self.record.transport if self.record is not None else "udp"

    @property
    def sip_status(self) -> int | None:
        return self.session.final_status

    @property
    def duration(self) -> float:
        """Seconds from answer to end (0 if never answered)."""
        if self.answered_at is None:
            return 0.0
        return max(0.0, (self.ended_at or time.time()) - self.answered_at)

    def dialog_state(self) -> dict[str, object] | None:
        """What another process needs to BYE this answered call (JSON-safe), or None before
        the answer and after the end; see :meth:`sip.endpoint.Endpoint.dialog_state`."""
        return self.ua.endpoint.dialog_state(self.call_id)

    # -- control

    async def hangup(self, cause: str | None = None, source: str = "caller") -> None:
        """CANCEL if not answered yet (§9.1), BYE if answered. The cause defaults to
        ORIGINATOR_CANCEL before answer and NORMAL_CLEARING after."""
        if self.terminated is not None:
            return
        self.ua.endpoint.hangup(self.call_id, self.ua._now(), cause, source)
        self.ua._pump()

    # -- internals

    def _emit(self, event: CallEvent) -> None:
        if self.terminated is not None:
            return
        wall = time.time()
        if isinstance(event, Ringing):
            self.state = "ringing" if self.state in ("trying",) else self.state
            self.ringing_at = self.ringing_at or wall
        elif isinstance(event, EarlyMedia):
            self.state = "early"
            self.early_at = self.early_at or wall
            self.ringing_at = self.ringing_at or wall
        elif isinstance(event, Answered):
            self.state = "answered"
            self.answered_at = wall
        elif isinstance(event, Terminated):
            self.state = "terminated"
            self.ended_at = wall
        self._publish(event)

    def __repr__(self) -> str:
        return f"<OutboundCall {self.call_id} {self.state} {self.session.invite.uri}>"




class InboundCall(ObservableCall[CallEvent]):
    """One inbound SIP call (an out-of-dialog INVITE we took): its events and control.

    The application answers it: :meth:`ring` (180/183), :meth:`answer` (200 with our SDP),
    :meth:`reject` (a final non-2xx); :meth:`hangup` ends it (BYE once answered, 480 before).
    It publishes the same events as an :class:`OutboundCall`: :class:`~sip.events.Answered`
    when the caller's ACK confirms our 200, one :class:`~sip.events.Terminated` last (the
    caller's CANCEL or BYE, our hangup, a reject)."""

    def __init__(self, ua: UserAgent, session: ServerInviteSession, source: Source):
        super().__init__()
        self.ua = ua
        self.session = session
        self.source = source  #: where the INVITE came from
        self.state = "offered"
        self.created_at = time.time()
        self.ringing_at: float | None = None
        self.early_at: float | None = None
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.on_dialog_change: Callable[[dict[str, object]], None] | None = None

    # -- what the INVITE says

    @property
    def call_id(self) -> str:
        return self.session.call_id

    @property
    def request(self) -> SipRequest:
        return self.session.invite

    @property
    def offer(self) -> str | None:
        """The caller's SDP offer (None: an offerless INVITE; our 200 must offer)."""
        return self.session.offer

    @property
    def called_user(self) -> str:
        """The Request-URI's user part (the number called), '' when it has none."""
        return _user_of(self.request.uri)

    @property
    def caller_user(self) -> str:
        """The From URI's user part (the caller's number), '' when it has none."""
        try:
            return _user_of(self.request.from_addr.uri)
        except (ValueError, SipParseError):
            return ""

    @property
    def caller_name(self) -> str | None:
        try:
            return self.request.from_addr.display_name
        except (ValueError, SipParseError):
            return None

    @property
    def transport(self) -> str:
        return self.source.transport

    @property
    def sip_status(self) -> int | None:
        return self.session.final_status

    @property
    def duration(self) -> float:
        if self.answered_at is None:
            return 0.0
        return max(0.0, (self.ended_at or time.time()) - self.answered_at)

    def dialog_state(self) -> dict[str, object] | None:
        """See :meth:`OutboundCall.dialog_state`."""
        return self.ua.endpoint.dialog_state(self.call_id)

    # -- control

    def ring(self, status: int = 180, sdp: str | None = None) -> None:
        """A provisional response: 180 Ringing, or 183 with early media ``sdp``."""
        if self.terminated is not None:
            return
        self.ua.endpoint.ring(self.call_id, self.ua._now(), status, sdp)
        self.ua._pump()
        if self.state == "offered":
            self.state = "ringing"
            self.ringing_at = time.time()

    def answer(
        self,
        sdp: str | None,
        *,
        on_remote_sdp: AnswerHandler | None = None,
        offer_handler: OfferHandler | None = None,
    ) -> None:
        """Accept the call: 200 with ``sdp`` (our answer, or our offer when the INVITE had
        none: the caller's answer then reaches ``on_remote_sdp`` from the ACK).
        ``offer_handler`` answers the caller's later offers (re-INVITE/UPDATE: hold, resume,
        refresh); without one a re-offer with SDP gets 488."""
        if self.terminated is not None:
            return
        self.session.offer_handler = offer_handler
        self.ua.endpoint.answer(self.call_id, self.ua._now(), sdp, on_remote_sdp=on_remote_sdp)
        self.ua._pump()

    def reject(self, status: int = 486, reason: str | None = None) -> None:
        """Refuse the call with a final non-2xx response (404, 403, 486, 603...)."""
        if self.terminated is not None:
            return
        self.ua.endpoint.reject(self.call_id, self.ua._now(), status, reason)
        self.ua._pump()

    async def hangup(self, cause: str | None = None, source: str = "callee") -> None:
        """BYE once answered; before that the INVITE is refused with 480."""
        if self.terminated is not None:
            return
        self.ua.endpoint.hangup(self.call_id, self.ua._now(), cause, source)
        self.ua._pump()

    # -- internals

    def _emit(self, event: CallEvent) -> None:
        if self.terminated is not None:
            return
        wall = time.time()
        if isinstance(event, Answered):
            self.state = "answered"
            self.answered_at = wall
        elif isinstance(event, Terminated):
            self.state = "terminated"
            self.ended_at = wall
        self._publish(event)

    def __repr__(self) -> str:
        return f"<InboundCall {self.call_id} {self.state} {self.request.uri}>"


#: ``on_incoming(call)``: a new :class:`InboundCall`; ring, answer or reject it (now or later).
IncomingHandler = Callable[[InboundCall], None]


class UserAgent:
    """A SIP user agent that places calls; run it inside any asyncio program."""

    def __init__(self, config: UserAgentConfig | None = None):
        self.config = config or UserAgentConfig()
        cfg = self.config
        self.timer_config = TimerConfig(cfg.t1, cfg.t2, cfg.t4)
        self.local_host = cfg.public_host or cfg.host
        self.local_port = cfg.port
        self.endpoint = Endpoint(
            EndpointConfig(
                local_host=self.local_host,
                advertised_hosts=dict(cfg.public_hosts),
                ports={},
                user_agent=cfg.user_agent,
                t1=cfg.t1,
                t2=cfg.t2,
                t4=cfg.t4,
                session_expires=cfg.session_expires,
                max_redirects=cfg.max_redirects,
                linger=cfg.linger,
                policy=PolicyConfig(
                    allowed_peers=tuple(cfg.allowed_peers),
                    rate=cfg.out_of_dialog_rate,
                    burst=cfg.out_of_dialog_burst,
                ),
                accept_inbound=cfg.accept_inbound,
                registrar=(
                    RegistrarConfig(
                        realm=cfg.registrar_realm or self.local_host,
                        users=dict(cfg.users),
                        min_expires=cfg.registrar_min_expires,
                        max_expires=cfg.registrar_max_expires,
                        default_expires=cfg.registrar_max_expires,
                        user_agent=cfg.user_agent,
                    )
                    if cfg.users
                    else None
                ),
            )
        )
        self.udp: UdpTransport | None = None
        self.tcp: TcpTransport | None = None
        self.tls: TlsTransport | None = None
        self._calls: dict[str, OutboundCall | InboundCall] = {}  # Call-ID -> call
        #: Given each :class:`InboundCall` (``accept_inbound``); without one they get 480.
        self.on_incoming: IncomingHandler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._resolver = None  # one dnspython resolver (with its cache) for every lookup
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at: float | None = None
        self._pumping = False
        self._completions: dict[str, asyncio.Future[int]] = {}  # send_byes, by Call-ID
        self._idle_waiters: list[asyncio.Event] = []  #: wait_idle() callers
        self._nat_warned: dict[str, tuple[str, int]] = {}  #: gateway -> address warned about
        #: Given every SIP message sent or received (:mod:`sip.aio.trace`); None: no tracing.
        self.tracer: Callable[[TracedMessage], None] | None = None
        self._keepalive_task: asyncio.Task[None] | None = None

    @property
    def stats(self) -> dict[str, int]:
        """Messages in (requests, responses, parse errors) and out."""
        return self.endpoint.stats

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        cfg = self.config
        if "udp" in cfg.transports:
            self.udp = await UdpTransport.listen(
                cfg.host, cfg.port, self._on_message, self._on_parse_error
            )
            self.udp.on_datagram = self._on_datagram
            self.udp.on_unreachable = self._on_unreachable
            self.local_port = self.udp.local[1]
        if "tcp" in cfg.transports:
            port = self.local_port if self.udp is not None else cfg.port
            try:
                self.tcp = await TcpTransport.listen(
                    cfg.host, port, self._on_message, self._on_parse_error
                )
            except OSError:
                if self.udp is None:
                    raise
                log.warning("TCP port %s busy; TCP listens elsewhere", port)
                self.tcp = await TcpTransport.listen(
                    cfg.host, 0, self._on_message, self._on_parse_error
                )
            self.tcp.idle_timeout = cfg.tcp_idle_timeout
            self.tcp.in_use = self._connection_in_use
            if self.udp is None:
                self.local_port = self.tcp.local[1]
        if "tls" in cfg.transports:
            self.tls = await self._start_tls()
            if self.udp is None and self.tcp is None:
                self.local_port = self.tls.local[1]
        ports = self.endpoint.config.ports
        if self.udp is not None:
            ports["udp"] = self.local_port
        if self.tcp is not None:
            ports["tcp"] = self.tcp.local[1]
        if self.tls is not None:
            ports["tls"] = self.tls.local[1]
        if self.endpoint.policy.restricted:
            await self._allow_gateways()
        for gw in cfg.gateways:
            if gw.register:
                self.endpoint.register(Registration(self._registration_config(gw)), self._now())
            if gw.ping > 0:
                probe = ProbeConfig(
                    name=gw.name,
                    target=self._gateway_uri(gw),
                    from_uri=f"sip:softswitch@{self._local_uri_host()}",
                    interval=gw.ping,
                    user_agent=cfg.user_agent,
                )
                self.endpoint.probe(OptionsProbe(probe), self._now())
        for stream in (self.tcp, self.tls):
            if stream is not None:
                stream.on_closed = self._on_connection_closed
        kept = [g for g in cfg.gateways if g.keepalive > 0 and g.transport.lower() in ("tcp", "tls")]
        if kept:
            self._keepalive_task = self._loop.create_task(self._keep_alive(kept))
        self._pump()

    #: Seconds an RFC 5626 ping waits for its pong before the connection is closed (§4.4.1).
    PONG_TIMEOUT = 10.0

    async def _keep_alive(self, gateways: list[GatewayConfig]) -> None:
        """Ping each gateway's open TCP/TLS connection every ``keepalive`` seconds (RFC 5626
        §3.5.1); close one whose last ping went unanswered for :attr:`PONG_TIMEOUT`."""
        loop = asyncio.get_running_loop()
        addresses: dict[str, list[tuple[str, int]]] = {}
        for gw in gateways:
            port = gw.port or (5061 if gw.transport.lower() == "tls" else 5060)
            try:
                infos = await asyncio.wait_for(
                    loop.getaddrinfo(gw.host.strip("[]"), port, type=socket.SOCK_STREAM),
                    self.GATEWAY_LOOKUP_TIMEOUT,
                )
            except (OSError, TimeoutError) as exc:
                log.warning("gateway %s did not resolve (%s): no keep-alives", gw.name, exc)
                continue
            addresses[gw.name] = sorted({(str(i[4][0]), int(i[4][1])) for i in infos})
        due = {gw.name: loop.time() + gw.keepalive for gw in gateways if gw.name in addresses}
        while not self._closing and due:
            now = loop.time()
            for gw in gateways:
                if gw.name not in due:
                    continue
                stream = self.tls if gw.transport.lower() == "tls" else self.tcp
                for address in addresses[gw.name]:
                    conn = stream.connection_to(address) if stream is not None else None
                    if conn is None or conn.ping_sent_at is None:
                        continue
                    if now - conn.ping_sent_at >= self.PONG_TIMEOUT:
                        log.warning(
                            "gateway %s: no pong to our keep-alive in %ss: connection closed",
                            gw.name,
                            self.PONG_TIMEOUT,
                        )
                        conn.close()
                if now >= due[gw.name]:
                    due[gw.name] = now + gw.keepalive
                    for address in addresses[gw.name]:
                        conn = stream.connection_to(address) if stream is not None else None
                        if conn is not None:
                            conn.ping()
            pending = [
                c.ping_sent_at + self.PONG_TIMEOUT
                for stream in (self.tcp, self.tls)
                if stream is not None
                for c in stream.connections
                if c.ping_sent_at is not None
            ]
            wake = min([*due.values(), *pending])
            await asyncio.sleep(max(0.05, wake - loop.time()))

    def _on_connection_closed(self, conn: TcpConnection) -> None:
        """A TCP/TLS connection closed: a registration whose REGISTERs used it registers
        again at once, on a new connection (RFC 5626 §4.5: the flow failed; the registrar
        would reach us through the dead one)."""
        if self._closing or self._loop is None:
            return
        addresses = {canonical(a) for a in (conn.peer, *conn.aliases)}
        for registration in self.endpoint.registrations.values():
            flow = registration.flow
            if flow is not None and flow[0] == conn.owner.name and canonical(flow[1]) in addresses:
                if registration.up:
                    log.info(
                        "gateway %s: the connection to the registrar closed; registering again",
                        registration.name,
                    )
                self.endpoint.reregister(registration.name, self._now())
        self._pump()

    async def _start_tls(self) -> TlsTransport:
        """The TLS transport: a listener when we have a certificate, else outbound only
        (its Via port is then ``tls_port``, where nobody listens: peers answer on the
        connection, RFC 3261 §18.2.2, and reuse it for their requests, RFC 5923)."""
        cfg = self.config
        client = client_context(
            ca_file=cfg.tls_ca, verify=cfg.tls_verify, cert_file=cfg.tls_cert, key_file=cfg.tls_key
        )
        if cfg.tls_cert:
            tls = await TlsTransport.listen(
                cfg.host,
                cfg.tls_port,
                self._on_message,
                self._on_parse_error,
                client_context=client,
                server_context=server_context(cfg.tls_cert, cfg.tls_key),
            )
            assert isinstance(tls, TlsTransport)
        else:
            tls = TlsTransport(self._on_message, self._on_parse_error, client_context=client)
            tls.local = (cfg.host, cfg.tls_port)
            log.warning("TLS without a certificate (tls_cert): outbound only, no listener")
        tls.idle_timeout = cfg.tcp_idle_timeout
        tls.in_use = self._connection_in_use
        return tls

    def _local_uri_host(self, transport: str | None = None) -> str:
        host = self.endpoint.advertised_host(transport) if transport else self.local_host
        return f"[{host}]" if ":" in host and not host.startswith("[") else host

    @staticmethod
    def _gateway_uri(gw: GatewayConfig) -> str:
        """``sip:host[:port][;transport=tcp]``: where a gateway's REGISTER and OPTIONS go."""
        transport = (gw.transport or "udp").lower()
        host = f"[{gw.host}]" if ":" in gw.host and not gw.host.startswith("[") else gw.host
        suffix = f";transport={transport}" if transport != "udp" else ""
        return f"sip:{host}" + (f":{gw.port}" if gw.port else "") + suffix

    def _registration_config(self, gw: GatewayConfig) -> RegistrationConfig:
        transport = (gw.transport or "udp").lower()
        host = f"[{gw.host}]" if ":" in gw.host and not gw.host.startswith("[") else gw.host
        suffix = f";transport={transport}" if transport != "udp" else ""
        registrar = self._gateway_uri(gw)
        user = _escape_user(gw.username or "softswitch")
        domain = gw.from_domain or host
        local = self._local_uri_host(transport)
        port = self.endpoint.config.ports.get(transport) or self.local_port
        credentials = Credentials(gw.username, gw.password or "", gw.realm) if gw.username else None
        return RegistrationConfig(
            name=gw.name,
            registrar=registrar,
            aor=f"sip:{user}@{domain}",
            contact=f"sip:{user}@{local}:{port}{suffix}",
            call_id=new_call_id(self.local_host),
            credentials=credentials,
            expires=gw.register_expires,
            user_agent=self.config.user_agent,
        )

    def gateway_down(self, gateway: GatewayConfig) -> str | None:
        """Why calls through ``gateway`` cannot be placed now (not registered, not
        answering its OPTIONS pings), or None when they can."""
        registration = self.endpoint.registrations.get(gateway.name) if gateway.register else None
        if registration is not None and not registration.up:
            why = f"gateway {gateway.name} not registered ({registration.state}"
            return why + (f": {registration.last_error})" if registration.last_error else ")")
        probe = self.endpoint.probes.get(gateway.name) if gateway.ping > 0 else None
        if probe is not None and not probe.up:
            return f"gateway {gateway.name} down ({probe.last_error})"
        return None

    def gateways(self) -> list[dict[str, object]]:
        """Each gateway's health as its OPTIONS pings see it (those with ``ping`` set)."""
        return [
            {"gateway": p.name, "up": p.up, "last_error": p.last_error, "pings": p.pings}
            for p in self.endpoint.probes.values()
        ]

    def registration(self, gateway: str) -> Registration | None:
        """The registration kept with this gateway (None: it does not register)."""
        return self.endpoint.registrations.get(gateway)

    def _check_seen_as(self, name: str) -> None:
        """Warn (once per gateway and address) when the registrar saw our REGISTER come from
        another address than our Contact says (RFC 3581 ``received``/``rport``): behind a NAT,
        requests to that Contact may not reach us; ``public_host`` says what to advertise."""
        registration = self.endpoint.registrations.get(name)
        if registration is None or registration.seen_as is None:
            return
        contact = contact_address(registration.config.contact)
        if contact is None or contact == registration.seen_as or self._nat_warned.get(name) == registration.seen_as:
            return
        self._nat_warned[name] = registration.seen_as
        log.warning(
            "gateway %s saw our REGISTER come from %s, not from our Contact's %s: behind a NAT? "
            "(set public_host to the public address)",
            name,
            _hostport(registration.seen_as),
            _hostport(contact),
        )

    def registrations(self) -> list[dict[str, object]]:
        """Each registration's state, for status pages and logs."""
        now = self._now() if self._loop is not None else 0.0
        return [
            {
                "gateway": r.name,
                "state": r.state,
                "last_error": r.last_error,
                "expires_in": round(r.expires_at - now, 1) if r.expires_at is not None else None,
                "retry_in": round(r.retry_at - now, 1) if r.retry_at is not None else None,
                "registrations": r.registered_count,
                "seen_as": _hostport(r.seen_as) if r.seen_as is not None else None,
                "bound_contact": r.bound_contact,
            }
            for r in self.endpoint.registrations.values()
        ]

    #: How long start() waits for the gateways' names to resolve (the allow-list).
    GATEWAY_LOOKUP_TIMEOUT = 5.0

    async def _allow_gateways(self) -> None:
        """The configured trunks are always allowed peers: their addresses (names resolved
        once, at start) join the allow-list."""
        assert self._loop is not None
        loop = self._loop

        async def addresses(host: str) -> list[str]:
            try:
                infos = await asyncio.wait_for(
                    loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM),
                    self.GATEWAY_LOOKUP_TIMEOUT,
                )
            except (OSError, TimeoutError) as exc:
                log.warning(
                    "gateway %s did not resolve (%s): its requests are not allowed", host, exc
                )
                return []
            return [str(info[4][0]) for info in infos]

        hosts = sorted({gw.host.strip("[]") for gw in self.config.gateways})
        for found in await asyncio.gather(*(addresses(h) for h in hosts)):
            for address in found:
                self.endpoint.policy.allow_host(address)

    async def close(self, *, grace: float = 2.0) -> None:
        """Hang up every call, wait (at most ``grace`` seconds) until every client
        transaction is over (a BYE challenged by a proxy is sent again and answered, a
        CANCEL gets its 200), then close everything; a call whose BYE is still unanswered
        then ends."""
        self._closing = True
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
            self._keepalive_task = None
        calls = [c for c in self._calls.values() if c.terminated is None]
        for call in calls:
            await call.hangup(None, "caller")
        if self._loop is not None:
            for name in list(self.endpoint.probes):
                self.endpoint.stop_probe(name, self._now())
            for name in list(self.endpoint.registrations):
                self.endpoint.unregister(name, self._now())  # Expires: 0 (RFC 3261 §10.2.2)
            self._pump()
        await self.wait_idle(grace)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.endpoint.close(self._now())
        self._pump()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.udp is not None:
            self.udp.close()
        if self.tcp is not None:
            self.tcp.close()
        if self.tls is not None:
            self.tls.close()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no client transaction of ours is pending (and no call waits for its
        BYE's answer); False if some still are after ``timeout`` seconds."""
        if not self.endpoint.has_pending():
            return True
        idle = asyncio.Event()
        self._idle_waiters.append(idle)
        try:
            await asyncio.wait_for(idle.wait(), timeout)
        except TimeoutError:
            return False
        finally:
            if idle in self._idle_waiters:
                self._idle_waiters.remove(idle)
        return True

    async def __aenter__(self) -> UserAgent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def calls(self) -> list[OutboundCall | InboundCall]:
        return list(self._calls.values())

    @property
    def running(self) -> bool:
        """Started and not closing: :meth:`dial` may be called."""
        return self._loop is not None and not self._closing

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    # ------------------------------------------------------------------ placing calls

    def local_user(self, target: str) -> str | None:
        """The user of our registrar that ``target`` names, else None: ``user/alice`` (any
        name: an unknown one is simply never registered), or a SIP URI with a configured
        user whose host is the registrar's realm or one of our addresses (and, if it has a
        port, one of ours)."""
        text = target.strip()
        if text.lower().startswith("user/"):
            name = text[5:].split("@", 1)[0]
            if not name:
                raise ValueError(f"invalid destination {target!r}: user/ without a name")
            return name
        registrar = self.endpoint.registrar
        if registrar is None or not text.lower().startswith(("sip:", "sips:")):
            return None
        try:
            uri = parse_uri(text)
        except ValueError:
            return None
        if not isinstance(uri, SipUri) or uri.user not in registrar.config.users:
            return None
        ours = {
            h.strip("[]").lower()
            for h in (
                registrar.config.realm,
                self.local_host,
                self.config.host,
                self.config.public_host or "",
                *self.config.public_hosts.values(),
            )
            if h
        }
        if uri.host.strip("[]").lower() not in ours:
            return None
        if uri.port is not None and uri.port not in self.endpoint.config.ports.values():
            return None
        return uri.user

    def user_bindings(self, user: str) -> list[Binding]:
        """Every live registration of ``user``'s phones, best first (highest ``q``, then
        the newest); ``[]`` when none (or no registrar)."""
        registrar = self.endpoint.registrar
        return registrar.lookup(user, self._now()) if registrar is not None and self._loop else []

    def user_binding(self, user: str) -> Binding:
        """The binding a call to ``user`` goes to: the best of :meth:`user_bindings`.
        :class:`UserNotRegistered` when it has none."""
        found = self.user_bindings(user)
        if not found:
            raise UserNotRegistered(f"user {user!r} is not registered")
        return found[0]

    def bindings(self) -> list[dict[str, object]]:
        """Every live registration of our users' phones, for status pages."""
        registrar = self.endpoint.registrar
        if registrar is None or self._loop is None:
            return []
        now = self._now()
        return [
            {
                "user": b.user,
                "contact": b.contact,
                "transport": b.transport,
                "address": _hostport(b.address),
                "expires_in": b.expires_in(now),
            }
            for user, found in sorted(registrar.bindings(now).items())
            for b in found
        ]

    def route(self, target: str, *, gateway: str | None = None) -> tuple[str, GatewayConfig | None]:
        """The Request-URI for ``target`` and the gateway it goes through (if any).

        SIP/SIPS URIs (and ``user@host``) go direct; bare numbers (E.164 with or without
        ``+``, or any digit string) go through the gateway whose prefix matches longest."""
        text = target.strip()
        if not text:
            raise ValueError("empty destination")
        user = self.local_user(text)
        if user is not None:
            return self.user_binding(user).contact, None
        gw: GatewayConfig | None = None
        if gateway is not None:
            gw = next((g for g in self.config.gateways if g.name == gateway), None)
            if gw is None:
                raise LookupError(f"unknown gateway {gateway!r}")
        lowered = text.lower()
        if lowered.startswith(("sip:", "sips:")):
            uri = parse_uri(text)
            if not isinstance(uri, SipUri) or not uri.host:
                raise ValueError(f"invalid SIP URI {target!r}")
            return str(uri), gw
        if lowered.startswith("tel:"):
            tel = parse_uri(text)
            assert isinstance(tel, TelUri)
            text = tel.number
        elif "@" in text:
            uri = parse_uri("sip:" + text)
            return str(uri), gw
        number = (
            text.replace("-", "")
            .replace(" ", "")
            .replace("(", "")
            .replace(")", "")
            .replace(".", "")
        )
        digits = number[1:] if number.startswith("+") else number
        if not digits or not all(c.isdigit() or c in "*#" for c in digits):
            raise ValueError(f"invalid destination {target!r}: not a SIP URI or a phone number")
        if gw is None:
            candidates = [
                (max((len(p) for p in g.prefixes() if digits.startswith(p)), default=-1), i, g)
                for i, g in enumerate(self.config.gateways)
            ]
            candidates = [c for c in candidates if c[0] >= 0]
            if not candidates:
                raise LookupError(f"no gateway routes the number {target!r}")
            usable = [c for c in candidates if self.gateway_down(c[2]) is None]
            candidates = usable or candidates  # skip those down; all down: the call fails
            gw = max(candidates, key=lambda c: (c[0], -c[1]))[2]
        dialled = gw.add_prefix + digits[gw.strip :]
        if gw.keep_plus and number.startswith("+"):
            dialled = "+" + dialled
        host = f"[{gw.host}]" if ":" in gw.host and not gw.host.startswith("[") else gw.host
        uri_text = f"sip:{dialled}@{host}" + (f":{gw.port}" if gw.port else "")
        if gw.transport and gw.transport.lower() != "udp":
            uri_text += f";transport={gw.transport.lower()}"
        return uri_text, gw

    async def dial(
        self,
        target: str,
        *,
        from_user: str,
        caller_name: str | None = None,
        headers: dict[str, str] | None = None,
        ring_timeout: float = 120.0,
        credentials: Credentials | None = None,
        transport: str | None = None,
        gateway: str | None = None,
        sdp: str | None = None,
        offer_handler: OfferHandler | None = None,
        on_remote_sdp: AnswerHandler | None = None,
        binding: Binding | None = None,
    ) -> OutboundCall:
        """Send an INVITE to ``target`` and return the call at once.

        ``target`` is a SIP/SIPS URI, ``user@host``, or a number routed through a gateway.
        ``sdp`` is our offer (none: an offerless INVITE); ``offer_handler`` answers offers
        the callee makes later; ``on_remote_sdp`` is given the callee's session
        descriptions (see :data:`AnswerHandler`). A registrar user (``user/alice``) rings
        its best binding, or ``binding`` (one of :meth:`user_bindings`) when given.
        Raises ``ValueError`` for a malformed target and ``LookupError`` when no gateway
        routes a number; everything after that (DNS, timeouts, rejections) ends the call
        with a :class:`~sip.events.Terminated` event and a hangup cause.
        """
        if self._closing or self._loop is None:
            raise RuntimeError("user agent is not running")
        if binding is None:
            user = self.local_user(target)
            binding = self.user_binding(user) if user is not None else None
        if binding is not None:
            # A registered phone: its Contact is the Request-URI, the REGISTER's source
            # address (RFC 3581) the destination, over the REGISTER's transport.
            request_uri, gw = binding.contact, None
            stream = self.tls if binding.transport == "tls" else self.tcp
            if binding.transport != "udp" and (
                stream is None or stream.connection_to(binding.address) is None
            ):
                # The phone's connection is gone (it closed it): its Contact, not the
                # ephemeral port the REGISTER came from, is where it listens now.
                binding = None
        else:
            request_uri, gw = self.route(target, gateway=gateway)
        uri = parse_uri(request_uri)
        assert isinstance(uri, SipUri)
        if transport:
            transport = transport.lower()
            if transport not in ("udp", "tcp", "tls"):
                raise ValueError(f"unsupported transport {transport!r}")
            if uri.scheme == "sips" and transport != "tls":
                raise ValueError(f"a sips: URI goes over TLS only, not {transport}")
            uri.params["transport"] = transport
            request_uri = str(uri)
        if gw is not None and credentials is None and gw.username:
            credentials = Credentials(gw.username, gw.password or "", gw.realm)
        from_host = (
            (gw.from_domain if gw and gw.from_domain else None)
            or self.config.from_domain
            or self.local_host
        )
        if ":" in from_host and not from_host.startswith("["):
            from_host = f"[{from_host}]"  # RFC 3261 §25.1: IPv6reference in a URI
        from_uri = f"sip:{_escape_user(from_user)}@{from_host}"
        to_uri = request_uri.split(";", 1)[0] if ";" in request_uri.split("@")[-1] else request_uri
        if binding is not None and self.endpoint.registrar is not None:
            to_uri = f"sip:{_escape_user(binding.user)}@{self.endpoint.registrar.config.realm}"
        extra = list((headers or {}).items())
        if gw is not None and gw.p_asserted_identity:
            name = f'"{caller_name}" ' if caller_name else ""
            extra.append(("P-Asserted-Identity", f"{name}<{from_uri}>"))
        secure = uri.scheme == "sips"  # RFC 5630: TLS on every hop, our Contact sips too
        wanted = "tls" if secure else (transport or uri.transport or "udp").lower()
        if binding is not None:
            wanted = binding.transport  # our Contact: the transport the phone reaches us on
        session = ClientInviteSession.create(
            request_uri=request_uri,
            from_uri=from_uri,
            to_uri=to_uri,
            call_id=new_call_id(self.local_host),
            config=self.endpoint.session_config(wanted, secure),
            caller_name=caller_name,
            sdp=sdp,
            headers=extra,
            credentials=credentials,
            offer_handler=offer_handler,
        )
        call = OutboundCall(self, session)
        why = self.gateway_down(gw) if gw is not None else None
        if why is not None:
            # Not registered with a trunk that wants it, or not answering its pings: no
            # INVITE, the call fails now (the next gateway of a failover is tried at once).
            log.info("call %s: %s", session.call_id, why)
            call._emit(Terminated(self._now(), causes.NETWORK_OUT_OF_ORDER, None, why, "error"))
            return call
        self._calls[session.call_id] = call
        call.record = self.endpoint.invite(
            session,
            self._now(),
            ring_timeout=ring_timeout,
            on_remote_sdp=on_remote_sdp,
            binding=binding,
        )
        self._pump()
        return call

    async def send_byes(
        self,
        states: Sequence[Mapping[str, object]],
        *,
        cause: str = causes.NORMAL_TEMPORARY_FAILURE,
        timeout: float = 4.0,
    ) -> list[int | None]:
        """End calls this user agent does not hold (a crashed process's, from their stored
        :meth:`OutboundCall.dialog_state`): one BYE each, all at once, with an RFC 3326
        Reason. Returns each BYE's final status in order: 408 when it timed out (Timer F),
        503 when it could not be sent, ``None`` when no answer came within ``timeout`` s
        (the transaction goes on retransmitting in the background) or the state was
        unusable (logged)."""
        if self._closing or self._loop is None:
            raise RuntimeError("user agent is not running")
        waits: list[asyncio.Future[int] | None] = []
        for state in states:
            try:
                call_id = str(state.get("call_id"))
                if call_id in self._completions or call_id in self._calls:
                    raise ValueError(f"call {call_id} is already in progress here")
                future: asyncio.Future[int] = self._loop.create_future()
                self._completions[call_id] = future
                try:
                    self.endpoint.send_bye(state, self._now(), cause)
                except BaseException:
                    del self._completions[call_id]
                    raise
                waits.append(future)
            except ValueError as exc:
                log.warning("cannot send a BYE from a stored dialog: %s", exc)
                waits.append(None)
        self._pump()
        live = [w for w in waits if w is not None]
        if live:
            await asyncio.wait(live, timeout=timeout)
        # A BYE still unanswered stays in _completions until its transaction ends (Timer F).
        return [w.result() if w is not None and w.done() else None for w in waits]

    # ------------------------------------------------------------------ the endpoint's I/O

    def _on_datagram(self, data: bytes, inbound: Inbound) -> None:
        if self.tracer is not None and data.strip(b"\r\n\t "):
            self._trace("in", "udp", inbound.source, data)
        self.endpoint.receive(
            data,
            Source("udp", inbound.source),
            self._now(),
            max_size=self.udp.max_size if self.udp else 65535,
        )
        self._pump()

    def _on_unreachable(self, address: tuple[str, int], _errno: int) -> None:
        self.endpoint.transport_error("udp", address, self._now())
        self._pump()

    def _connection_in_use(self, conn: TcpConnection) -> bool:
        """Kept open: a transaction uses it, or a live registration's REGISTERs went over it
        (the registrar sends the trunk's calls to us on it)."""
        addresses = (conn.peer, *conn.aliases)
        if any(self.endpoint.uses(conn.owner.name, address, conn) for address in addresses):
            return True
        wanted = {canonical(a) for a in addresses}
        if any(
            r.up and r.flow is not None and r.flow[0] == conn.owner.name and canonical(r.flow[1]) in wanted
            for r in self.endpoint.registrations.values()
        ):
            return True
        # A phone registered over it: calls to the phone come through it (behind a NAT
        # nothing else reaches it), as long as the binding lives.
        registrar = self.endpoint.registrar
        if registrar is None or self._loop is None:
            return False
        return any(
            b.transport == conn.owner.name and canonical(b.address) in wanted
            for found in registrar.bindings(self._now()).values()
            for b in found
        )

    def _trace(self, direction: str, transport: str, remote: tuple[str, int], data: bytes,
               connection: object | None = None) -> None:
        tracer = self.tracer
        if tracer is None:
            return
        local = getattr(connection, "local", None)
        if local is None:
            owner = {"udp": self.udp, "tcp": self.tcp, "tls": self.tls}.get(transport)
            local = getattr(owner, "local", None) or (self.local_host, self.local_port)
        try:
            tracer(TracedMessage.now(direction, transport, local, remote, data))
        except Exception:
            log.exception("SIP tracer failed")

    def _on_message(self, message: SipRequest | SipResponse, inbound: Inbound) -> None:
        if self.tracer is not None:
            self._trace("in", inbound.transport, inbound.source, bytes(message), inbound.connection)
        if inbound.connection is not None and isinstance(message, SipRequest):
            # RFC 5923 §5: "alias" in the top Via lets us send our requests for the
            # source address and the Via's port on this connection.
            try:
                via = message.top_via
            except (SipParseError, ValueError, IndexError):
                via = None
            if via is not None and "alias" in via.params:
                default = 5061 if inbound.transport == "tls" else 5060
                inbound.connection.owner.alias(
                    inbound.connection, (inbound.source[0], via.port or default)
                )
        self.endpoint.receive_message(
            message, Source(inbound.transport, inbound.source, inbound.connection), self._now()
        )
        self._pump()

    def _on_parse_error(self, data: bytes, error: SipParseError, inbound: Inbound) -> None:
        if self.tracer is not None:
            self._trace("in", inbound.transport, inbound.source, data, inbound.connection)
        self.endpoint.receive_error(
            data, error, Source(inbound.transport, inbound.source, inbound.connection), self._now()
        )
        self._pump()

    def _pump(self) -> None:
        """Send what the endpoint has to send, hand out its events, re-arm the timer.
        Re-entrant calls (a listener hanging up) leave the work to the outer loop."""
        if self._pumping:
            return
        self._pumping = True
        try:
            while True:
                for datagram in self.endpoint.datagrams_to_send():
                    self._send(datagram)
                event = self.endpoint.next_event()
                if event is None:
                    break
                try:
                    self._dispatch(event)
                except Exception:
                    log.exception("failed handling endpoint event %r", event)
        finally:
            self._pumping = False
        self._arm()
        if self._idle_waiters and not self.endpoint.has_pending():
            for idle in self._idle_waiters:
                idle.set()

    def _arm(self) -> None:
        deadline = self.endpoint.get_timer()
        if deadline is None or self._loop is None:
            return
        if self._armed_at is not None and self._armed_at <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._armed_at = deadline
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._armed_at = None
        self.endpoint.handle_timer(self._now())
        self._pump()

    def _dispatch(self, event: EndpointEvent) -> None:
        if isinstance(event, CallProgress):
            call = self._calls.get(event.call_id)
            if call is not None:
                call._emit(event.event)
        elif isinstance(event, ResolveRequest):
            assert self._loop is not None
            self._loop.create_task(self._resolve(event))
        elif isinstance(event, CallReleased):
            call = self._calls.pop(event.call_id, None)
            if call is not None:
                call._release_observers()
        elif isinstance(event, DialogChanged):
            call = self._calls.get(event.call_id)
            if call is not None and call.on_dialog_change is not None:
                call.on_dialog_change(event.state)
        elif isinstance(event, RequestCompleted):
            future = self._completions.pop(event.call_id, None)
            if future is not None and not future.done():
                future.set_result(event.status)
        elif isinstance(event, RegistrationChanged):
            level = logging.WARNING if event.state == "failed" else logging.INFO
            log.log(
                level,
                "gateway %s registration %s%s",
                event.name,
                event.state,
                f" ({event.error})" if event.error else "",
            )
            if event.state == "registered":
                self._check_seen_as(event.name)
        elif isinstance(event, GatewayHealthChanged):
            if event.up:
                log.info("gateway %s answers its OPTIONS again: up", event.name)
            else:
                log.warning("gateway %s down: %s", event.name, event.error)
        elif isinstance(event, IncomingCall):
            self._incoming(event)
        elif isinstance(event, BindingsChanged):
            if event.contacts:
                log.info("user %s registered: %s", event.user, ", ".join(event.contacts))
            else:
                log.info("user %s not registered any more", event.user)

    def _incoming(self, event: IncomingCall) -> None:
        record = self.endpoint.calls.get(event.call_id)
        if not isinstance(record, ServerCall):
            return
        call = InboundCall(self, record.session, record.source)
        self._calls[event.call_id] = call
        handler = self.on_incoming
        if handler is None or self._closing:
            call.reject(480 if handler is None else 503)
            return
        try:
            handler(call)
        except Exception:
            log.exception("inbound call %s: handler failed", event.call_id)
            call.reject(500)

    def _dns(self):  # type: ignore[no-untyped-def]
        if self._resolver is None:
            import dns.asyncresolver
            import dns.resolver

            servers = self.config.dns_servers
            try:
                self._resolver = dns.asyncresolver.Resolver(configure=servers is None)
            except dns.resolver.NoResolverConfiguration:
                self._resolver = dns.asyncresolver.Resolver(configure=False)
                servers = servers or ["127.0.0.1"]
            if servers is not None:
                self._resolver.nameservers = list(servers)
                self._resolver.port = self.config.dns_port
            self._resolver.cache = dns.resolver.Cache()
        return self._resolver

    async def _resolve(self, request: ResolveRequest) -> None:
        try:
            targets = await resolve(
                request.host,
                request.port,
                request.transport,
                request.secure,
                supported=request.supported,
                resolver=self._dns(),
            )
        except Exception as exc:
            log.info("resolving %s failed: %s", request.host, exc)
            targets = []
        self.endpoint.resolved(request.token, targets, self._now())
        self._pump()

    def _send(self, datagram: Datagram) -> None:
        if self.tracer is not None:
            self._trace("out", datagram.transport, datagram.address, datagram.data, datagram.connection)
        if datagram.transport == "udp":
            if self.udp is not None:
                self.udp.send(datagram.data, datagram.address)
            return
        stream = self.tls if datagram.transport == "tls" else self.tcp
        assert self._loop is not None
        if stream is None:
            # No such transport here (a sips: URI without TLS configured): the request
            # fails; it is never sent over another transport (RFC 5630 §3.1.3).
            log.info("no %s transport: not sent to %s:%s", datagram.transport, *datagram.address)
            self._loop.call_soon(self._transport_failed, datagram.transport, datagram.address)
            return
        conn = datagram.connection
        if conn is not None and not conn.closed:  # type: ignore[attr-defined]
            conn.send(datagram.data)  # type: ignore[attr-defined]
            return
        conn = stream.connection_to(datagram.address)
        if conn is not None:
            conn.send(datagram.data)
            return
        self._loop.create_task(self._connect_and_send(stream, datagram))

    def _transport_failed(self, transport: str, address: tuple[str, int]) -> None:
        self.endpoint.transport_error(transport, address, self._now())
        self._pump()

    def _tls_server_name(self, datagram: Datagram) -> str | None:
        """The name a TLS peer's certificate must match: a gateway's ``tls_server_name``
        when the URI named the gateway's host, else the URI's host."""
        name = datagram.server_name
        for gw in self.config.gateways:
            if gw.tls_server_name and name is not None and name == gw.host.strip("[]"):
                return gw.tls_server_name
        return name

    async def _connect_and_send(self, stream: TcpTransport, datagram: Datagram) -> None:
        name = self._tls_server_name(datagram) if datagram.transport == "tls" else None
        try:
            conn = await stream.connect(datagram.address, name)
            conn.send(datagram.data)
        except (TimeoutError, OSError) as exc:
            # ssl.SSLError (a certificate that does not verify...) is an OSError too.
            log.warning(
                "%s connect to %s:%s%s failed: %s",
                datagram.transport.upper(),
                datagram.address[0],
                datagram.address[1],
                f" ({name})" if name and name != datagram.address[0] else "",
                exc,
            )
            self._transport_failed(datagram.transport, datagram.address)


def _user_of(uri: SipUri | TelUri | str) -> str:
    """The user part of a SIP URI, the number of a TEL URI ('' for anything else)."""
    if isinstance(uri, str):
        try:
            uri = parse_uri(uri)
        except ValueError:
            return ""
    if isinstance(uri, TelUri):
        return uri.number
    if isinstance(uri, SipUri):
        return uri.user or ""
    return ""


def _escape_user(user: str) -> str:
    """RFC 3261 §25.1 user part: unreserved and a few marks pass, the rest is %-escaped."""
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()&=+$,;?/")
    return "".join(c if c in allowed else f"%{ord(c):02X}" for c in user) or "anonymous"


def _hostport(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
