"""The SIP user agent: the asyncio shell around the sans-I/O SIP core.

    async with UserAgent(UserAgentConfig(port=0)) as ua:
        call = await ua.dial("sip:bob@127.0.0.1:5062", from_user="1000", sdp=offer,
                             on_remote_sdp=lambda sdp, early: ...)
        if await call.wait_answered():
            await call.hangup()
        print((await call.wait_terminated()).cause)

It owns the transports, every transaction (one timer heap re-armed with ``loop.call_at``)
and the INVITE sessions. It knows nothing of media: the caller brings the SDP offer and is
handed the callee's session descriptions (:mod:`softswitch.ua` joins it to the media engine).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import ipaddress
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from sip import causes
from sip.auth import Credentials
from sip.events import (
    Answered,
    CallEvent,
    EarlyMedia,
    Ringing,
    Terminated,
)
from sip.headers import Via
from sip.invite import (
    ClientInviteSession,
    Emit,
    RemoteSdp,
    SendAck,
    SendRequest,
    SessionConfig,
)
from sip.locate import Target
from sip.message import (
    SipParseError,
    SipRequest,
    SipResponse,
    make_response,
    new_branch,
    new_call_id,
)
from sip.transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ClientTransaction,
    ResponseReceived,
    SendMessage,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    ServerTransaction,
    TimerConfig,
    TransactionTerminated,
    TransactionTimeout,
    new_client_transaction,
    new_server_transaction,
    transaction_key,
)
from sip.uri import SipUri, TelUri, UriError, parse_uri

from .resolver import resolve
from .transport import Address, Inbound, TcpTransport, UdpTransport

log = logging.getLogger("sip.ua")

__all__ = [
    "AnswerHandler",
    "Credentials",
    "GatewayConfig",
    "OfferHandler",
    "OutboundCall",
    "UserAgent",
    "UserAgentConfig",
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


#: ``offer_handler(offer)``: the callee's offer in a re-INVITE/UPDATE (None: a re-INVITE
#: without SDP asks us to offer) -> our SDP. Raise ``ValueError`` to refuse it (488).
OfferHandler = Callable[[str | None], str]
#: ``on_remote_sdp(sdp, early)``: the callee's answer (early: from a 18x) or its SDP in an ACK.
#: Raise ``ValueError`` when it is unusable: a final answer then ends the call with BYE and
#: INCOMPATIBLE_DESTINATION.
AnswerHandler = Callable[[str, bool], None]


class _TimerHeap:
    """One ``loop.call_at`` for every timer of every transaction and session."""

    def __init__(self, fire: Callable[[object, float], None]):
        self._heap: list[tuple[float, int, object]] = []
        self._scheduled: dict[int, float] = {}
        self._counter = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at: float | None = None
        self._fire = fire

    def schedule(self, obj: object, deadline: float | None) -> None:
        if deadline is None:
            return
        current = self._scheduled.get(id(obj))
        if current is not None and current <= deadline:
            return  # an earlier entry fires first; it re-schedules then
        self._scheduled[id(obj)] = deadline
        heapq.heappush(self._heap, (deadline, next(self._counter), obj))
        self._arm()

    def forget(self, obj: object) -> None:
        self._scheduled.pop(id(obj), None)

    def _arm(self) -> None:
        if not self._heap:
            return
        first = self._heap[0][0]
        if self._armed_at is not None and self._armed_at <= first:
            return
        if self._handle is not None:
            self._handle.cancel()
        loop = asyncio.get_running_loop()
        self._armed_at = first
        self._handle = loop.call_at(first, self._run)

    def _run(self) -> None:
        self._handle = None
        self._armed_at = None
        now = asyncio.get_running_loop().time()
        while self._heap and self._heap[0][0] <= now:
            deadline, _, obj = heapq.heappop(self._heap)
            if self._scheduled.get(id(obj)) != deadline:
                continue  # superseded by an earlier schedule
            del self._scheduled[id(obj)]
            try:
                self._fire(obj, now)
            except Exception:
                log.exception("timer handler failed")
        self._arm()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._heap.clear()
        self._scheduled.clear()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class OutboundCall:
    """One outbound SIP call: its progress as events, and control."""

    def __init__(
        self,
        ua: UserAgent,
        session: ClientInviteSession,
        ring_timeout: float,
        on_remote_sdp: AnswerHandler | None = None,
    ):
        self.ua = ua
        self.session = session
        self.on_remote_sdp = on_remote_sdp
        self.state = "trying"
        self.created_at = time.time()
        self.ringing_at: float | None = None
        self.early_at: float | None = None
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.terminated: Terminated | None = None
        self.transport = "udp"
        self._events: list[CallEvent] = []
        self._queue_waiters: list[asyncio.Event] = []
        self._listeners: list[Callable[[CallEvent], None]] = []
        loop = asyncio.get_running_loop()
        self._answered: asyncio.Future[bool] = loop.create_future()
        self._ended: asyncio.Future[Terminated] = loop.create_future()
        self._ring_timer = loop.call_later(ring_timeout, self._ring_timeout) if ring_timeout > 0 else None

    # -- properties

    @property
    def call_id(self) -> str:
        return self.session.call_id

    @property
    def sip_status(self) -> int | None:
        return self.session.final_status

    @property
    def duration(self) -> float:
        """Seconds from answer to end (0 if never answered)."""
        if self.answered_at is None:
            return 0.0
        return max(0.0, (self.ended_at or time.time()) - self.answered_at)

    @property
    def history(self) -> list[CallEvent]:
        """Every event so far, oldest first."""
        return list(self._events)

    # -- observing

    def add_listener(self, fn: Callable[[CallEvent], None]) -> None:
        """``fn(event)`` is called synchronously for every event from now on."""
        self._listeners.append(fn)

    async def events(self) -> AsyncIterator[CallEvent]:
        """Every event of the call from the start, ending after :class:`Terminated`."""
        index = 0
        while True:
            while index < len(self._events):
                event = self._events[index]
                index += 1
                yield event
                if isinstance(event, Terminated):
                    return
            waiter = asyncio.Event()
            self._queue_waiters.append(waiter)
            await waiter.wait()

    async def wait_answered(self) -> bool:
        """True once answered; False if the call ended without answer."""
        return await asyncio.shield(self._answered)

    async def wait_terminated(self) -> Terminated:
        return await asyncio.shield(self._ended)

    # -- control

    async def hangup(self, cause: str | None = None, source: str = "caller") -> None:
        """CANCEL if not answered yet (§9.1), BYE if answered. The cause defaults to
        ORIGINATOR_CANCEL before answer and NORMAL_CLEARING after."""
        if self.terminated is not None:
            return
        now = self.ua._now()
        if cause is None:
            cause = causes.NORMAL_CLEARING if self.session.answered else causes.ORIGINATOR_CANCEL
        if self.session.answered:
            self.ua._run_actions(self, self.session.bye(now, cause, source))
        else:
            self.ua._run_actions(self, self.session.cancel(now, cause, source))
        self.ua._timers.schedule(self.session, self.session.get_timer())

    # -- internals

    def _ring_timeout(self) -> None:
        self._ring_timer = None
        if self.terminated is None and not self.session.answered:
            self.ua._run_actions(
                self, self.session.cancel(self.ua._now(), causes.NO_ANSWER, "timeout")
            )
            self.ua._timers.schedule(self.session, self.session.get_timer())

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
            if self._ring_timer is not None:
                self._ring_timer.cancel()
                self._ring_timer = None
            if not self._answered.done():
                self._answered.set_result(True)
        elif isinstance(event, Terminated):
            self.state = "terminated"
            self.ended_at = wall
            self.terminated = event
            if self._ring_timer is not None:
                self._ring_timer.cancel()
                self._ring_timer = None
        self._events.append(event)
        for fn in list(self._listeners):
            try:
                fn(event)
            except Exception:
                log.exception("call listener failed")
        for waiter in self._queue_waiters:
            waiter.set()
        self._queue_waiters.clear()
        if isinstance(event, Terminated):
            if not self._answered.done():
                self._answered.set_result(False)
            if not self._ended.done():
                self._ended.set_result(event)

    def __repr__(self) -> str:
        return f"<OutboundCall {self.call_id} {self.state} {self.session.invite.uri}>"


class UserAgent:
    """A SIP user agent that places calls; run it inside any asyncio program."""

    def __init__(self, config: UserAgentConfig | None = None):
        self.config = config or UserAgentConfig()
        self.timer_config = TimerConfig(self.config.t1, self.config.t2, self.config.t4)
        self.udp: UdpTransport | None = None
        self.tcp: TcpTransport | None = None
        self.local_host = self.config.public_host or self.config.host
        self.local_port = self.config.port
        self._client: dict[tuple[str, str, str], tuple[ClientTransaction, OutboundCall | None, str, Address]] = {}
        self._server: dict[tuple[str, str, str], tuple[ServerTransaction, str, Address, Inbound]] = {}
        self._calls: dict[str, OutboundCall] = {}  # Call-ID -> call
        self._failover: dict[tuple[str, str, str], tuple[SipUri, list[Target]]] = {}
        self._timers = _TimerHeap(self._on_timer)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._resolver = None  # one dnspython resolver (with its cache) for every lookup
        self.stats = {"requests_in": 0, "responses_in": 0, "parse_errors": 0, "sent": 0}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        cfg = self.config
        if "udp" in cfg.transports:
            self.udp = await UdpTransport.listen(cfg.host, cfg.port, self._on_message, self._on_parse_error)
            self.local_port = self.udp.local[1]
        if "tcp" in cfg.transports:
            port = self.local_port if self.udp is not None else cfg.port
            try:
                self.tcp = await TcpTransport.listen(cfg.host, port, self._on_message, self._on_parse_error)
            except OSError:
                if self.udp is None:
                    raise
                log.warning("TCP port %s busy; TCP listens elsewhere", port)
                self.tcp = await TcpTransport.listen(cfg.host, 0, self._on_message, self._on_parse_error)
            if self.udp is None:
                self.local_port = self.tcp.local[1]

    async def close(self, *, grace: float = 2.0) -> None:
        """Hang up every call, give the BYEs/CANCELs a moment, close everything."""
        self._closing = True
        calls = [c for c in self._calls.values() if c.terminated is None]
        for call in calls:
            await call.hangup(None, "caller")
        if calls:
            deadline = self._now() + grace
            while self._now() < deadline and any(
                tx.request.method in ("BYE", "CANCEL") and not tx.terminated
                and tx.state.value in ("Trying", "Proceeding")
                for tx, *_ in self._client.values()
            ):
                await asyncio.sleep(0.02)
        self._timers.close()
        if self.udp is not None:
            self.udp.close()
        if self.tcp is not None:
            self.tcp.close()

    async def __aenter__(self) -> UserAgent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def calls(self) -> list[OutboundCall]:
        return list(self._calls.values())

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    # ------------------------------------------------------------------ placing calls

    def route(self, target: str, *, gateway: str | None = None) -> tuple[str, GatewayConfig | None]:
        """The Request-URI for ``target`` and the gateway it goes through (if any).

        SIP/SIPS URIs (and ``user@host``) go direct; bare numbers (E.164 with or without
        ``+``, or any digit string) go through the gateway whose prefix matches longest."""
        text = target.strip()
        if not text:
            raise ValueError("empty destination")
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
        number = text.replace("-", "").replace(" ", "").replace("(", "").replace(")", "").replace(".", "")
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
            gw = max(candidates, key=lambda c: (c[0], -c[1]))[2]
        dialled = gw.add_prefix + digits[gw.strip:]
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
    ) -> OutboundCall:
        """Send an INVITE to ``target`` and return the call at once.

        ``target`` is a SIP/SIPS URI, ``user@host``, or a number routed through a gateway.
        ``sdp`` is our offer (none: an offerless INVITE); ``offer_handler`` answers offers
        the callee makes later; ``on_remote_sdp`` is given the callee's session
        descriptions (see :data:`AnswerHandler`).
        Raises ``ValueError`` for a malformed target and ``LookupError`` when no gateway
        routes a number; everything after that (DNS, timeouts, rejections) ends the call
        with a :class:`~sip.events.Terminated` event and a hangup cause.
        """
        if self._closing or self._loop is None:
            raise RuntimeError("user agent is not running")
        request_uri, gw = self.route(target, gateway=gateway)
        uri = parse_uri(request_uri)
        assert isinstance(uri, SipUri)
        if transport:
            transport = transport.lower()
            if transport not in ("udp", "tcp"):
                raise ValueError(f"unsupported transport {transport!r}")
            uri.params["transport"] = transport
            request_uri = str(uri)
        if gw is not None and credentials is None and gw.username:
            credentials = Credentials(gw.username, gw.password or "", gw.realm)
        from_host = (gw.from_domain if gw and gw.from_domain else None) or self.config.from_domain or self.local_host
        if ":" in from_host and not from_host.startswith("["):
            from_host = f"[{from_host}]"  # RFC 3261 §25.1: IPv6reference in a URI
        from_uri = f"sip:{_escape_user(from_user)}@{from_host}"
        to_uri = request_uri.split(";", 1)[0] if ";" in request_uri.split("@")[-1] else request_uri
        extra = list((headers or {}).items())
        if gw is not None and gw.p_asserted_identity:
            name = f'"{caller_name}" ' if caller_name else ""
            extra.append(("P-Asserted-Identity", f"{name}<{from_uri}>"))
        wanted = transport or (uri.transport or None)
        session = ClientInviteSession.create(
            request_uri=request_uri,
            from_uri=from_uri,
            to_uri=to_uri,
            call_id=new_call_id(self.local_host),
            config=self._session_config(wanted or "udp"),
            caller_name=caller_name,
            sdp=sdp,
            headers=extra,
            credentials=credentials,
            offer_handler=offer_handler,
        )
        call = OutboundCall(self, session, ring_timeout, on_remote_sdp)
        self._calls[session.call_id] = call
        call.add_listener(functools.partial(self._on_call_event, call))
        self._run_actions(call, session.start(self._now()))
        return call

    def _session_config(self, transport: str) -> SessionConfig:
        host = self.local_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        port = self.local_port
        if transport == "tcp" and self.tcp is not None:
            port = self.tcp.local[1]
        contact = f"<sip:softswitch@{host}:{port}" + (";transport=tcp" if transport == "tcp" else "") + ">"
        return SessionConfig(
            contact=contact,
            user_agent=self.config.user_agent,
            session_expires=self.config.session_expires,
            max_redirects=self.config.max_redirects,
            t1=self.config.t1,
        )

    def _on_call_event(self, call: OutboundCall, event: CallEvent) -> None:
        if isinstance(event, Terminated):
            # Keep the session a while to re-ACK retransmitted 2xx and answer stray BYEs.
            assert self._loop is not None
            self._loop.call_later(self.config.linger, self._forget_call, call)

    def _forget_call(self, call: OutboundCall) -> None:
        if self._calls.get(call.call_id) is call:
            del self._calls[call.call_id]
        self._timers.forget(call.session)
        # Break the call's reference cycles (listeners and the media callback point back at
        # it) so that reference counting frees it at once, without the cyclic collector.
        call._listeners.clear()
        call._queue_waiters.clear()
        call.on_remote_sdp = None

    # ------------------------------------------------------------------ actions

    def _run_actions(self, call: OutboundCall, actions: list) -> None:
        for action in actions:
            if isinstance(action, SendRequest):
                self._send_request(call, action.request, action.next_hop)
            elif isinstance(action, SendAck):
                self._send_stateless(call, action.request, action.next_hop)
            elif isinstance(action, RemoteSdp):
                if call.on_remote_sdp is not None:
                    try:
                        call.on_remote_sdp(action.sdp, action.early)
                    except ValueError as exc:
                        log.warning("call %s: unusable SDP answer: %s", call.call_id, exc)
                        if not action.early:
                            self._run_actions(
                                call,
                                call.session.bye(self._now(), causes.INCOMPATIBLE_DESTINATION, "error"),
                            )
            elif isinstance(action, Emit):
                call._emit(action.event)
        self._timers.schedule(call.session, call.session.get_timer())

    def _pick_transport(self, uri: SipUri, target: Target | None = None) -> str:
        name = (target.transport if target else None) or uri.transport or "udp"
        if uri.scheme == "sips":
            name = "tcp" if name == "udp" else name
        name = name.lower()
        if name == "tcp" and self.tcp is None:
            name = "udp"
        if name == "udp" and self.udp is None:
            name = "tcp"
        return name

    def _targets_now(self, uri: SipUri) -> list[Target] | None:
        """IP literals resolve without waiting; names need the resolver (None)."""
        if _is_ip(uri.host):
            transport = (uri.transport or ("tcp" if uri.scheme == "sips" else "udp")).lower()
            port = uri.port or (5061 if uri.scheme == "sips" else 5060)
            return [Target(uri.host.strip("[]"), port, transport)]
        return None

    def _send_request(self, call: OutboundCall | None, request: SipRequest, next_hop: str) -> None:
        try:
            uri = parse_uri(next_hop)
            if not isinstance(uri, SipUri):
                raise UriError(f"cannot route to {next_hop}")
        except (UriError, ValueError):
            if call is not None:
                self._run_actions(call, call.session.on_unreachable(request, self._now()))
            return
        targets = self._targets_now(uri)
        if targets is not None:
            self._start_client(call, request, uri, targets)
            return
        assert self._loop is not None
        self._loop.create_task(self._resolve_and_send(call, request, uri))

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

    async def _resolve_and_send(self, call: OutboundCall | None, request: SipRequest, uri: SipUri) -> None:
        try:
            targets = await resolve(
                uri.host,
                uri.port,
                uri.transport,
                uri.scheme == "sips",
                supported=tuple(t for t in ("udp", "tcp") if getattr(self, t) is not None),
                resolver=self._dns(),
            )
        except Exception as exc:
            log.info("resolving %s failed: %s", uri.host, exc)
            targets = []
        if not targets:
            if call is not None:
                self._run_actions(call, call.session.on_unreachable(request, self._now()))
            return
        self._start_client(call, request, uri, targets)

    def _start_client(self, call: OutboundCall | None, request: SipRequest, uri: SipUri, targets: list[Target]) -> None:
        target = targets[0]
        transport = self._pick_transport(uri, target)
        address = (target.host, target.port)
        if "Via" not in request:
            request.prepend("Via", self._via(transport))
        if call is not None and request.method == "INVITE":
            call.transport = transport
        tx = new_client_transaction(request, reliable=transport != "udp", timers=self.timer_config, now=self._now())
        self._client[tx.key] = (tx, call, transport, address)
        if len(targets) > 1 and request.method not in ("ACK", "CANCEL"):
            self._failover[tx.key] = (uri, targets[1:])
        self._drain_client(tx)

    def _fail_over(self, tx: ClientTransaction) -> bool:
        """RFC 3263 §4.3: a timeout, transport error or 503 moves the request on to the next
        target of the same lookup, as a new transaction with a new branch. The session does
        not see the failed attempt."""
        entry = self._failover.pop(tx.key, None)
        if entry is None:
            return False
        uri, remaining = entry
        _, call, _, _ = self._client.get(tx.key, (None, None, None, None))
        if call is not None and call.terminated is not None and tx.request.method == "INVITE":
            return False
        retry = SipRequest(tx.request.method, tx.request.uri)
        retry.headers = [(n, v) for n, v in tx.request.headers if n.lower() != "via"]
        retry.body = tx.request.body
        if call is not None and tx.request is call.session.invite:
            call.session.invite = retry  # CANCEL and ACK follow the live attempt (same CSeq)
        log.info("failing over %s to %s:%s", tx.request.method, remaining[0].host, remaining[0].port)
        self._start_client(call, retry, uri, remaining)
        return True

    def _via(self, transport: str) -> str:
        host = self.local_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        port = self.tcp.local[1] if transport == "tcp" and self.tcp is not None else self.local_port
        return f"SIP/2.0/{transport.upper()} {host}:{port};branch={new_branch()};rport"

    def _send_stateless(self, call: OutboundCall, request: SipRequest, next_hop: str) -> None:
        """ACK for 2xx: a fresh branch, no transaction, same transport as the INVITE."""
        try:
            uri = parse_uri(next_hop)
        except (UriError, ValueError):
            return
        if not isinstance(uri, SipUri):
            return
        targets = self._targets_now(uri)
        transport = call.transport
        if "Via" not in request:
            request.prepend("Via", self._via(transport))
        if targets is None:
            assert self._loop is not None
            self._loop.create_task(self._resolve_and_ack(request, uri, transport))
            return
        self._transmit(request.serialize(), transport, (targets[0].host, targets[0].port))

    async def _resolve_and_ack(self, request: SipRequest, uri: SipUri, transport: str) -> None:
        with contextlib.suppress(Exception):
            targets = await resolve(uri.host, uri.port, uri.transport, uri.scheme == "sips", resolver=self._dns())
            if targets:
                self._transmit(request.serialize(), transport, (targets[0].host, targets[0].port))

    def _transmit(self, data: bytes, transport: str, address: Address, inbound: Inbound | None = None, on_error: Callable[[], None] | None = None) -> None:
        self.stats["sent"] += 1
        if transport == "udp":
            if self.udp is not None:
                self.udp.send(data, address)
            return
        assert self.tcp is not None
        if inbound is not None and inbound.connection is not None and not inbound.connection.closed:
            inbound.connection.send(data)
            return
        conn = self.tcp.connection_to(address)
        if conn is not None:
            conn.send(data)
            return
        assert self._loop is not None
        self._loop.create_task(self._connect_and_send(data, address, on_error))

    async def _connect_and_send(self, data: bytes, address: Address, on_error: Callable[[], None] | None) -> None:
        assert self.tcp is not None
        try:
            conn = await self.tcp.connect(address)
            conn.send(data)
        except (TimeoutError, OSError) as exc:
            log.info("TCP connect to %s:%s failed: %s", address[0], address[1], exc)
            if on_error is not None:
                on_error()

    # ------------------------------------------------------------------ transactions

    def _drain_client(self, tx: ClientTransaction) -> None:
        entry = self._client.get(tx.key)
        if entry is None:
            return
        _, call, transport, address = entry
        while (event := tx.next_event()) is not None:
            if isinstance(event, SendMessage):
                self._transmit(
                    event.message.serialize(), transport, address,
                    on_error=functools.partial(self._client_transport_error, tx),
                )
            elif isinstance(event, ResponseReceived):
                if event.response.status == 503 and self._fail_over(tx):
                    continue
                if event.response.status >= 200:
                    self._failover.pop(tx.key, None)
                if call is not None:
                    self._run_actions(call, call.session.on_response(tx.request, event.response, self._now()))
            elif isinstance(event, TransactionTimeout):
                if self._fail_over(tx):
                    continue
                if call is not None:
                    self._run_actions(call, call.session.on_timeout(tx.request, self._now()))
            elif isinstance(event, TransactionTerminated):
                self._client.pop(tx.key, None)
                self._failover.pop(tx.key, None)
                self._timers.forget(tx)
                return
        self._timers.schedule(tx, tx.get_timer())

    def _client_transport_error(self, tx: ClientTransaction) -> None:
        tx.transport_error(self._now())
        self._drain_client(tx)

    def _drain_server(self, tx: ServerTransaction) -> None:
        entry = self._server.get(tx.key)
        if entry is None:
            return
        _, transport, address, inbound = entry
        while (event := tx.next_event()) is not None:
            if isinstance(event, SendMessage):
                self._transmit(event.message.serialize(), transport, address, inbound)
            elif isinstance(event, TransactionTerminated):
                self._server.pop(tx.key, None)
                self._timers.forget(tx)
                return
        self._timers.schedule(tx, tx.get_timer())

    def _on_timer(self, obj: object, now: float) -> None:
        if isinstance(obj, ClientInviteSession):
            call = self._calls.get(obj.call_id)
            actions = obj.handle_timer(now)
            if call is not None:
                self._run_actions(call, actions)
            return
        if isinstance(obj, ClientInviteTransaction | ClientNonInviteTransaction):
            obj.handle_timer(now)
            self._drain_client(obj)
        elif isinstance(obj, ServerInviteTransaction | ServerNonInviteTransaction):
            obj.handle_timer(now)
            self._drain_server(obj)

    # ------------------------------------------------------------------ inbound

    def _on_parse_error(self, data: bytes, error: SipParseError, inbound: Inbound) -> None:
        """RFC 3261 §16.3/§8.2: a malformed request gets 400 (with the reason) when we can
        address a response; a malformed response is dropped."""
        self.stats["parse_errors"] += 1
        if getattr(error, "status", 400) == 0:
            return
        log.info("malformed message from %s:%s: %s", inbound.source[0], inbound.source[1], error)
        partial = getattr(error, "partial", None)
        if isinstance(partial, SipRequest):
            if partial.method == "ACK":
                return  # §17: an ACK is never answered
            try:
                response = make_response(partial, error.status, _phrase(error))
                response.add("User-Agent", self.config.user_agent)
                self._transmit(response.serialize(), inbound.transport, self._response_address(partial, inbound), inbound)
                return
            except (SipParseError, ValueError, IndexError, AttributeError):
                pass  # not enough of it to address an answer: fall back to raw salvage
        if partial is not None:
            return  # a malformed response is dropped
        raw = salvage_error_response(data, error)
        if raw is not None:
            self._transmit(raw, inbound.transport, inbound.source, inbound)

    def _on_message(self, message: SipRequest | SipResponse, inbound: Inbound) -> None:
        try:
            if isinstance(message, SipResponse):
                self.stats["responses_in"] += 1
                self._on_response(message, inbound)
            else:
                self.stats["requests_in"] += 1
                self._on_request(message, inbound)
        except Exception:
            log.exception("failed handling a message from %s", inbound.source)

    def _on_response(self, response: SipResponse, inbound: Inbound) -> None:
        try:
            key = transaction_key(response)
        except (SipParseError, ValueError, IndexError):
            return
        entry = self._client.get(key)
        if entry is not None:
            tx = entry[0]
            tx.receive(response, self._now())  # type: ignore[arg-type]
            self._drain_client(tx)
            return
        # RFC 6026 / §13.2.2.4: a 2xx retransmission after the INVITE transaction is gone
        # still needs our ACK.
        if response.cseq[1] == "INVITE" and 200 <= response.status < 300:
            call = self._calls.get(response.call_id)
            if call is not None:
                self._run_actions(call, call.session.on_response(call.session.invite, response, self._now()))

    def _response_address(self, request: SipRequest, inbound: Inbound) -> Address:
        """§18.2.2 with RFC 3581: answer to the source address when rport was asked for,
        else to ``received`` and the Via port."""
        via = request.top_via
        if via.params.get("rport", "absent") != "absent" or inbound.transport != "udp":
            return inbound.source
        return (inbound.source[0], via.port or 5060)

    def _stamp_via(self, request: SipRequest, inbound: Inbound) -> None:
        """§18.2.1 + RFC 3581: record received= and rport= on the top Via."""
        vias = request.get_all("Via")
        if not vias:
            return
        via = Via.parse(vias[0])
        changed = False
        if via.host.strip("[]") != inbound.source[0]:
            via.params["received"] = inbound.source[0]
            changed = True
        if "rport" in via.params and not via.params.get("rport"):
            via.params["rport"] = str(inbound.source[1])
            via.params["received"] = inbound.source[0]
            changed = True
        if changed:
            vias[0] = str(via)
            request.remove("Via")
            for value in reversed(vias):
                request.prepend("Via", value)

    def _on_request(self, request: SipRequest, inbound: Inbound) -> None:
        self._stamp_via(request, inbound)
        key = transaction_key(request)
        address = self._response_address(request, inbound)
        if request.method == "ACK":
            entry = self._server.get(key)
            if entry is not None:  # ACK for a non-2xx final response we sent
                entry[0].receive(request, self._now())
                self._drain_server(entry[0])
                return
            call = self._calls.get(request.call_id)
            if call is not None and call.session.matches(request):
                _, actions = call.session.on_request(request, self._now())
                self._run_actions(call, actions)
            return
        entry = self._server.get(key)
        if entry is not None:  # a retransmission
            entry[0].receive(request, self._now())
            self._drain_server(entry[0])
            return
        if request.method == "CANCEL":
            invite_key = (key[0], key[1], "INVITE")
            status = 200 if invite_key in self._server else 481
            self._reply_stateless(request, status, inbound, address)
            return
        tx = new_server_transaction(request, reliable=inbound.transport != "udp", timers=self.timer_config, now=self._now())
        self._server[tx.key] = (tx, inbound.transport, address, inbound)
        response = self._handle_new_request(request)
        if response is not None:
            tx.respond(response, self._now())
        self._drain_server(tx)

    def _handle_new_request(self, request: SipRequest) -> SipResponse | None:
        try:
            to_tag = request.to_tag
        except ValueError:
            to_tag = None
        if to_tag:
            call = self._calls.get(request.call_id)
            if call is None or not call.session.matches(request):
                return self._plain_response(request, 481)
            response, actions = call.session.on_request(request, self._now())
            self._run_actions(call, actions)
            return response
        # Out of dialog: we place calls, we do not take them (yet).
        method = request.method
        if method == "OPTIONS":
            response = self._plain_response(request, 200)
            response.add("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, PRACK")
            response.add("Accept", "application/sdp")
            return response
        if method == "INVITE":
            return self._plain_response(request, 603, "Decline (inbound calls are not served)")
        if method in ("REGISTER", "SUBSCRIBE", "MESSAGE", "NOTIFY", "PUBLISH", "REFER", "INFO", "UPDATE", "PRACK", "BYE"):
            if method == "BYE":
                return self._plain_response(request, 481)
            response = self._plain_response(request, 405)
            response.add("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, PRACK")
            return response
        response = self._plain_response(request, 501)
        response.add("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, PRACK")
        return response

    def _plain_response(self, request: SipRequest, status: int, reason: str | None = None) -> SipResponse:
        response = make_response(request, status, reason)
        response.add("User-Agent", self.config.user_agent)
        return response

    def _reply_stateless(self, request: SipRequest, status: int, inbound: Inbound, address: Address) -> None:
        self._transmit(self._plain_response(request, status).serialize(), inbound.transport, address, inbound)


def _phrase(error: SipParseError) -> str:
    """Reason phrase for an error response: the standard phrase plus what was wrong."""
    status = error.status
    base = {400: "Bad Request", 413: "Request Entity Too Large", 414: "Request-URI Too Long",
            416: "Unsupported URI Scheme", 420: "Bad Extension", 505: "Version Not Supported"}.get(status, "Bad Request")
    reason = " ".join(str(getattr(error, "reason", "") or "").split())[:100]
    return f"{base} ({reason})" if reason and reason.lower() != base.lower() else base


def _escape_user(user: str) -> str:
    """RFC 3261 §25.1 user part: unreserved and a few marks pass, the rest is %-escaped."""
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()&=+$,;?/")
    return "".join(c if c in allowed else f"%{ord(c):02X}" for c in user) or "anonymous"


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
