"""The SIP endpoint, sans-I/O (the aioquic shape).

One :class:`Endpoint` holds every transaction and INVITE session of a user agent. It never
touches a socket, a resolver or the clock; the asyncio adapter (:mod:`sip.aio.ua`), or a
test with a fake clock (:mod:`sip.testing`), drives it:

- inputs: :meth:`Endpoint.receive` (a datagram), :meth:`~Endpoint.receive_message` (a
  message a stream transport framed), :meth:`~Endpoint.receive_error` (one it could not),
  :meth:`~Endpoint.handle_timer`, :meth:`~Endpoint.resolved` (the DNS answer to a
  :class:`ResolveRequest`), :meth:`~Endpoint.transport_error` (a TCP connect failed), and the
  application's calls (:meth:`~Endpoint.invite`, :meth:`~Endpoint.hangup`, the UAS session's
  :meth:`~Endpoint.ring`/:meth:`~Endpoint.answer`/:meth:`~Endpoint.reject`);
- outputs: :meth:`~Endpoint.datagrams_to_send`, :meth:`~Endpoint.next_event` and
  :meth:`~Endpoint.get_timer` (the earliest deadline of one timer heap).

It owns transaction matching (RFC 3261 §17.1.3/§17.2.3), failover across the RFC 3263
targets of a lookup (timeout, transport error, 503), re-ACKing stray 2xx (RFC 6026), Via
received/rport stamping (§18.2.1, RFC 3581), the stateless answers (:mod:`sip._stateless`),
the ring timeout of outbound calls, and the linger of ended sessions (their state absorbs
retransmissions for a while, then :class:`CallReleased`).
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
from collections import deque
from collections.abc import Mapping
from typing import Any

from sip import causes
from sip._endpoint_types import (
    Address,
    AnswerHandler,
    Call,
    CallProgress,
    CallReleased,
    ClientCall,
    Datagram,
    DialogChanged,
    EndpointConfig,
    EndpointEvent,
    IncomingCall,
    RequestCompleted,
    ResolveRequest,
    ServerCall,
    Source,
)
from sip._session import reason_header
from sip._stateless import (
    canonical_address,
    error_answer,
    out_of_dialog_response,
    pick_transport,
    plain_response,
    response_address,
    stamp_via,
    stateless_tag,
    targets_now,
)
from sip._timers import TimerHeap
from sip.dialog import Dialog
from sip.events import Answered, CallEvent, Terminated
from sip.invite import (
    ClientInviteSession,
    Emit,
    RemoteSdp,
    SendAck,
    SendRequest,
    SessionConfig,
)
from sip.invite_server import SendResponse, ServerInviteSession
from sip.keepalive import GatewayHealthChanged, OptionsProbe
from sip.locate import Target
from sip.message import SipParseError, SipRequest, SipResponse, new_branch, parse_message
from sip.policy import PeerPolicy
from sip.register import Registration, RegistrationChanged
from sip.registrar import Binding, BindingsChanged, Registrar
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
from sip.uri import SipUri, UriError, parse_uri

log = logging.getLogger("sip.endpoint")

#: What owns client transactions besides calls: gateway registrations and OPTIONS probes.
_Agent = Registration | OptionsProbe


__all__ = [
    "Address",
    "AnswerHandler",
    "CallProgress",
    "CallReleased",
    "ClientCall",
    "Datagram",
    "DialogChanged",
    "Endpoint",
    "EndpointConfig",
    "EndpointEvent",
    "IncomingCall",
    "RequestCompleted",
    "GatewayHealthChanged",
    "RegistrationChanged",
    "BindingsChanged",
    "ResolveRequest",
    "ServerCall",
    "Source",
]


class Endpoint:
    """A SIP user agent's protocol state, driven by bytes, DNS answers and time."""

    def __init__(self, config: EndpointConfig | None = None):
        self.config = config or EndpointConfig()
        cfg = self.config
        self.timer_config = TimerConfig(cfg.t1, cfg.t2, cfg.t4)
        self.stats = {
            "requests_in": 0,
            "responses_in": 0,
            "parse_errors": 0,
            "sent": 0,
            "dropped_not_allowed": 0,  # requests from outside the allow-list (sip.policy)
            "dropped_rate_limited": 0,  # out-of-dialog requests over their source's rate
        }
        self.policy = PeerPolicy(cfg.policy)
        #: Draining (the server stops taking calls): out-of-dialog OPTIONS and INVITEs are
        #: answered 503 with Retry-After (RFC 3261 §21.5.4), so a load balancer probing with
        #: OPTIONS (Kamailio's dispatcher) sends new calls elsewhere; dialogs go on.
        self.unavailable = False
        # The owner of a client transaction: a call, a registration, or nobody.
        self._client: dict[
            tuple[str, str, str], tuple[ClientTransaction, Call | _Agent | None, str, Address]
        ] = {}
        self._server: dict[tuple[str, str, str], tuple[ServerTransaction, Source, Address]] = {}
        self._failover: dict[tuple[str, str, str], tuple[SipUri, list[Target]]] = {}
        self._calls: dict[str, Call] = {}  # Call-ID -> call (both sides)
        self._resolving: dict[int, tuple[Call | _Agent | None, SipRequest, SipUri, bool]] = {}
        #: requests sent outside any call (send_bye): (Call-ID, CSeq, method) -> transport
        self._standalone: dict[tuple[str, int, str], str] = {}
        #: TLS peer address -> the host name its certificate must match (insertion order)
        self._tls_names: dict[Address, str] = {}
        self._registrations: dict[str, Registration] = {}  # by name
        self._probes: dict[str, OptionsProbe] = {}  # by gateway name
        #: Phones' bindings (:mod:`sip.registrar`), when users are configured.
        self.registrar = Registrar(cfg.registrar) if cfg.registrar is not None else None
        self._tokens = itertools.count(1)
        self._timers = TimerHeap()
        self._events: deque[EndpointEvent] = deque()
        self._out: list[Datagram] = []

    # ------------------------------------------------------------------ outputs

    def next_event(self) -> EndpointEvent | None:
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self) -> list[Datagram]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        """The earliest deadline of any transaction or call, or None."""
        return self._timers.earliest()

    # ------------------------------------------------------------------ local identity

    def advertised_host(self, transport: str = "udp") -> str:
        """The address our Via sent-by and Contact carry over ``transport`` (RFC 3261 §18.1.1,
        §8.1.1.8): the transport's advertised host if one is configured, else ``local_host``."""
        return self.config.advertised_hosts.get(transport) or self.config.local_host

    def _host(self, transport: str = "udp") -> str:
        host = self.advertised_host(transport)
        return f"[{host}]" if ":" in host and not host.startswith("[") else host

    def _port(self, transport: str) -> int:
        ports = self.config.ports
        return ports.get(transport) or ports.get("udp") or next(iter(ports.values()), 5060)

    def session_config(self, transport: str = "udp", secure: bool = False) -> SessionConfig:
        """Contact and session settings for a call over ``transport``; ``secure``: the
        request URI is ``sips:``, so is our Contact (RFC 5630 §4.1: TLS on every hop back)."""
        if secure:
            contact = f"<sips:softswitch@{self._host('tls')}:{self._port('tls')}>"
        else:
            contact = (
                f"<sip:softswitch@{self._host(transport)}:{self._port(transport)}"
                + (f";transport={transport}" if transport in ("tcp", "tls") else "")
                + ">"
            )
        cfg = self.config
        return SessionConfig(
            contact=contact,
            user_agent=cfg.user_agent,
            session_expires=cfg.session_expires,
            max_redirects=cfg.max_redirects,
            t1=cfg.t1,
            t2=cfg.t2,
        )

    def _via(self, transport: str) -> str:
        # RFC 5923 §6: over a connection, "alias" lets the peer send its requests to us on it.
        alias = ";alias" if transport != "udp" else ""
        return f"SIP/2.0/{transport.upper()} {self._host(transport)}:{self._port(transport)};branch={new_branch()};rport{alias}"

    # ------------------------------------------------------------------ calls

    @property
    def calls(self) -> dict[str, Call]:
        return self._calls

    def invite(
        self,
        session: ClientInviteSession,
        now: float,
        *,
        ring_timeout: float = 0.0,
        on_remote_sdp: AnswerHandler | None = None,
        binding: Binding | None = None,
    ) -> ClientCall:
        """Start an outbound call. ``on_remote_sdp`` is given the callee's SDP (early from a
        18x, final from the 2xx or an ACK); a ``ValueError`` from it for a final one ends the
        call with BYE and INCOMPATIBLE_DESTINATION. ``ring_timeout`` (> 0) CANCELs with
        NO_ANSWER when the call is not answered by then. ``binding``: a registered phone's
        (:meth:`sip.registrar.Registrar.lookup`): every request of the call goes to the
        address its REGISTER came from, over the same transport."""
        call = ClientCall(session, on_remote_sdp)
        if binding is not None:
            call.flow = (binding.transport, binding.address)
        if ring_timeout > 0:
            call.ring_deadline = now + ring_timeout
        self._calls[session.call_id] = call
        self._run(call, session.start(now), now)
        return call

    def hangup(
        self, call_id: str, now: float, cause: str | None = None, source: str | None = None
    ) -> None:
        """CANCEL if not answered yet (§9.1), BYE if answered (either side; an inbound call
        not answered yet is refused with 480). The cause defaults to ORIGINATOR_CANCEL
        before answer and NORMAL_CLEARING after; the source to our role in the call."""
        call = self._calls.get(call_id)
        if call is None or call.ended:
            return
        session = call.session
        if source is None:
            source = "callee" if isinstance(call, ServerCall) else "caller"
        if cause is None:
            cause = causes.NORMAL_CLEARING if session.answered else causes.ORIGINATOR_CANCEL
        if isinstance(call, ServerCall):
            self._run(call, call.session.bye(now, cause, source), now)
        elif session.answered:
            self._run(call, call.session.bye(now, cause, source), now)
        else:
            self._run(call, call.session.cancel(now, cause, source), now)

    def ring(self, call_id: str, now: float, status: int = 180, sdp: str | None = None) -> None:
        """UAS: a provisional response to an :class:`IncomingCall`."""
        call = self._server_call(call_id)
        self._run(call, call.session.ring(now, status, sdp), now)

    def answer(
        self,
        call_id: str,
        now: float,
        sdp: str | None,
        *,
        status: int = 200,
        on_remote_sdp: AnswerHandler | None = None,
    ) -> None:
        """UAS: accept an :class:`IncomingCall` with our SDP answer (or offer)."""
        call = self._server_call(call_id)
        call.on_remote_sdp = on_remote_sdp
        self._run(call, call.session.answer(now, sdp, status), now)

    def reject(
        self, call_id: str, now: float, status: int = 486, reason: str | None = None
    ) -> None:
        """UAS: refuse an :class:`IncomingCall` with a final non-2xx response."""
        call = self._server_call(call_id)
        self._run(call, call.session.reject(now, status, reason), now)

    def _server_call(self, call_id: str) -> ServerCall:
        call = self._calls.get(call_id)
        if not isinstance(call, ServerCall):
            raise LookupError(f"no inbound call {call_id!r}")
        return call

    # ------------------------------------------------------------------ dialog state

    def dialog_state(self, call_id: str) -> dict[str, Any] | None:
        """What another process needs to end this answered call with a BYE (a plain,
        JSON-safe dict: :meth:`sip.dialog.Dialog.to_state` plus ``transport``, ``address``
        (the next hop when it is an IP literal) and ``contact``), or None when the call has
        no confirmed dialog. The call is watched from then on: a :class:`DialogChanged`
        event brings the state to keep in its place when the remote target or route set
        changes, or the dialog has used half its lease of CSeq numbers.

        RFC 3261 §12.2.1.1 wants CSeq to grow within a dialog, and the live dialog keeps
        counting after its state was stored. So the stored ``local_seq`` is the top of a
        lease (``EndpointConfig.dialog_seq_lease`` numbers above the current one): a BYE
        built from it (the lease + 1) is above every number this process can have used,
        however many requests it sent since, with one store write per half lease."""
        call = self._calls.get(call_id)
        if call is None or call.ended:
            return None
        dialog = call.session.dialog
        if dialog is None or dialog.state != "confirmed":
            return None
        return self._lease_dialog(call, dialog)

    def _lease_dialog(self, call: Call, dialog: Dialog) -> dict[str, Any]:
        ceiling = dialog.local_seq + self.config.dialog_seq_lease
        call.dialog_watch = (dialog.remote_target, tuple(dialog.route_set), ceiling)
        state = dialog.to_state()
        state["local_seq"] = ceiling
        state["transport"] = call.transport
        state["contact"] = call.session.config.contact
        state["address"] = None
        try:
            uri = parse_uri(dialog.next_hop())
            targets = targets_now(uri) if isinstance(uri, SipUri) else None
        except (UriError, ValueError):
            targets = None
        if targets:
            state["address"] = [targets[0].host, targets[0].port]
        return state

    def _watch_dialog(self, call: Call) -> None:
        watch = call.dialog_watch
        dialog = call.session.dialog
        if watch is None or dialog is None or call.ended or dialog.state != "confirmed":
            return
        target, routes, ceiling = watch
        lease = self.config.dialog_seq_lease
        if (
            dialog.remote_target != target
            or tuple(dialog.route_set) != routes
            or dialog.local_seq >= ceiling - lease // 2
        ):
            self._events.append(DialogChanged(call.session.call_id, self._lease_dialog(call, dialog)))

    def send_bye(self, state: Mapping[str, Any], now: float, cause: str = causes.NORMAL_TEMPORARY_FAILURE) -> str:
        """End a call this endpoint does not hold, from its stored :meth:`dialog_state`
        (the call of a process that crashed): a BYE with an RFC 3326 Reason, in a non-INVITE
        client transaction of its own. Returns the Call-ID; a :class:`RequestCompleted`
        event says how it ended. ``ValueError`` for a state that cannot make a BYE."""
        dialog = Dialog.from_state(state)
        transport = str(state.get("transport") or "udp").lower()
        if transport not in ("udp", "tcp", "tls"):
            raise ValueError(f"dialog state: unsupported transport {transport!r}")
        bye = dialog.create_request(
            "BYE", headers=[("Reason", reason_header(cause)), ("User-Agent", self.config.user_agent)]
        )
        self._standalone[(dialog.call_id, dialog.local_seq, "BYE")] = transport
        address = state.get("address")
        next_hop = dialog.next_hop()
        try:
            uri = parse_uri(next_hop)
        except (UriError, ValueError):
            uri = None
        if not isinstance(uri, SipUri):
            self._complete(bye, 503)
        elif (
            isinstance(address, list | tuple)
            and len(address) == 2
            and isinstance(address[0], str)
            and isinstance(address[1], int)
        ):
            # Where the live dialog sent its requests: no lookup while recovering.
            self._start_client(None, bye, uri, [Target(address[0], address[1], transport)], now)
        else:
            self._send_request(None, bye, next_hop, now)
        return dialog.call_id

    def _complete(self, request: SipRequest, status: int) -> None:
        """A request of :meth:`send_bye` got its final answer (or none)."""
        try:
            seq = request.cseq[0]
        except (SipParseError, ValueError, IndexError):
            return
        if self._standalone.pop((request.call_id, seq, request.method), None) is not None:
            self._events.append(RequestCompleted(request.call_id, request.method, status))

    def has_pending(self, methods: tuple[str, ...] | None = None) -> bool:
        """Is a request of ours (of these methods; None: any) still waiting for its final
        response, or a call still waiting for its BYE's?"""
        if any(
            (methods is None or tx.request.method in methods)
            and not tx.terminated
            and tx.state.value in ("Calling", "Trying", "Proceeding")
            for tx, *_ in self._client.values()
        ):
            return True
        return (methods is None or "BYE" in methods) and any(
            isinstance(call, ClientCall) and call.session.hanging_up
            for call in self._calls.values()
        )

    def uses(self, transport: str, address: Address, connection: object | None = None) -> bool:
        """Does a transaction of ours await its final response from ``address`` over
        ``transport``, or one of the peer's await our answer on ``connection``? (The adapter
        keeps such a connection open.)"""
        wanted = canonical_address(address)
        if any(
            t == transport
            and tx.state.value
            in ("Calling", "Trying", "Proceeding")  # still awaiting a final response
            and canonical_address(a) == wanted
            for tx, _, t, a in self._client.values()
        ):
            return True
        return connection is not None and any(
            source.connection is connection and not tx.terminated
            for tx, source, _ in self._server.values()
        )

    def close(self, now: float | None = None) -> None:
        """The adapter is shutting down: calls still waiting for their BYE's answer end
        now (when ``now`` is given), the transactions and every timer are dropped."""
        if now is not None:
            for call in list(self._calls.values()):
                if isinstance(call, ClientCall) and call.session.hanging_up:
                    self._run(call, call.session.abandon(now), now)
        self._client.clear()
        self._server.clear()
        self._failover.clear()
        self._timers.clear()

    # ------------------------------------------------------------------ registrations

    @property
    def registrations(self) -> dict[str, Registration]:
        return self._registrations

    def register(self, registration: Registration, now: float) -> None:
        """Keep ``registration``'s binding (:mod:`sip.register`): REGISTER now, refresh,
        retry; its :class:`RegistrationChanged` events come out of :meth:`next_event`."""
        old = self._registrations.get(registration.name)
        if old is not None and old is not registration:
            raise ValueError(f"a registration named {registration.name!r} exists")
        self._registrations[registration.name] = registration
        self._run_agent(registration, registration.start(now), now)

    def reregister(self, name: str, now: float) -> None:
        """The transport our binding used is gone: REGISTER again at once
        (:meth:`sip.register.Registration.reconnect`)."""
        registration = self._registrations.get(name)
        if registration is not None:
            self._run_agent(registration, registration.reconnect(now), now)

    def unregister(self, name: str, now: float) -> None:
        """Remove the binding (``Expires: 0``); the registration stays, ``unregistered``."""
        registration = self._registrations.get(name)
        if registration is not None:
            self._run_agent(registration, registration.stop(now), now)

    @property
    def probes(self) -> dict[str, OptionsProbe]:
        return self._probes

    def probe(self, probe: OptionsProbe, now: float) -> None:
        """Ping a gateway with OPTIONS (:mod:`sip.keepalive`); its
        :class:`GatewayHealthChanged` events come out of :meth:`next_event`."""
        old = self._probes.get(probe.name)
        if old is not None and old is not probe:
            raise ValueError(f"a probe named {probe.name!r} exists")
        self._probes[probe.name] = probe
        self._run_agent(probe, probe.start(now), now)

    def stop_probe(self, name: str, now: float) -> None:
        probe = self._probes.get(name)
        if probe is not None:
            self._run_agent(probe, probe.stop(now), now)

    def _run_agent(self, agent: _Agent, actions: list, now: float) -> None:
        """Carry out what a registration or a probe asks: requests out, events up."""
        for action in actions:
            if isinstance(action, SendRequest):
                self._send_request(agent, action.request, action.next_hop, now)
            elif isinstance(action, RegistrationChanged | GatewayHealthChanged):
                self._events.append(action)
        self._timers.schedule(agent, agent.get_timer())

    # ------------------------------------------------------------------ actions

    def _run(self, call: Call, actions: list, now: float) -> None:
        for action in actions:
            if isinstance(action, SendRequest):
                self._send_request(call, action.request, action.next_hop, now)
            elif isinstance(action, SendAck):
                self._send_stateless(call, action.request, action.next_hop)
            elif isinstance(action, SendResponse):
                self._send_response(call, action.response, now)  # type: ignore[arg-type]
            elif isinstance(action, RemoteSdp):
                self._remote_sdp(call, action, now)
            elif isinstance(action, Emit):
                self._emit(call, action.event, now)
        if call.dialog_watch is not None:
            self._watch_dialog(call)
        self._schedule(call)

    def _remote_sdp(self, call: Call, action: RemoteSdp, now: float) -> None:
        if call.on_remote_sdp is None:
            return
        try:
            call.on_remote_sdp(action.sdp, action.early)
        except ValueError as exc:
            log.warning("call %s: unusable SDP answer: %s", call.session.call_id, exc)
            if not action.early:
                self._run(
                    call, call.session.bye(now, causes.INCOMPATIBLE_DESTINATION, "error"), now
                )

    def _emit(self, call: Call, event: CallEvent, now: float) -> None:
        if call.ended:
            return
        if isinstance(event, Answered) and isinstance(call, ClientCall) and call.session.hanging_up:
            return  # the Answered that follows an unusable answer's BYE
        if isinstance(event, Answered | Terminated) and isinstance(call, ClientCall):
            call.ring_deadline = None
        if isinstance(event, Terminated):
            call.ended = True
            call.release_at = now + self.config.linger
        self._events.append(CallProgress(call.session.call_id, event))

    def _schedule(self, call: Call) -> None:
        deadlines = [call.session.get_timer(), call.release_at]
        if isinstance(call, ClientCall):
            deadlines.append(call.ring_deadline)
        live = [d for d in deadlines if d is not None]
        if live:
            self._timers.schedule(call, min(live))

    # ------------------------------------------------------------------ timers

    def handle_timer(self, now: float) -> None:
        """Run every timer whose deadline has passed."""
        for obj in self._timers.pop_due(now):
            try:
                self._fire(obj, now)
            except Exception:
                log.exception("timer handler failed")

    def _fire(self, obj: object, now: float) -> None:
        if isinstance(obj, ClientCall | ServerCall):
            if obj.release_at is not None and now >= obj.release_at:
                self._release(obj)
                return
            if (
                isinstance(obj, ClientCall)
                and obj.ring_deadline is not None
                and now >= obj.ring_deadline
            ):
                obj.ring_deadline = None
                if not obj.session.answered:
                    self._run(obj, obj.session.cancel(now, causes.NO_ANSWER, "timeout"), now)
            self._run(obj, obj.session.handle_timer(now), now)
        elif isinstance(obj, _Agent):
            self._run_agent(obj, obj.handle_timer(now), now)
        elif isinstance(obj, ClientInviteTransaction | ClientNonInviteTransaction):
            obj.handle_timer(now)
            self._drain_client(obj, now)
        elif isinstance(obj, ServerInviteTransaction | ServerNonInviteTransaction):
            obj.handle_timer(now)
            self._drain_server(obj, now)

    def _release(self, call: Call) -> None:
        call_id = call.session.call_id
        if self._calls.get(call_id) is call:
            del self._calls[call_id]
        self._timers.forget(call)
        call.on_remote_sdp = None
        self._events.append(CallReleased(call_id))

    # ------------------------------------------------------------------ sending

    def _resolve(
        self, call: Call | _Agent | None, request: SipRequest, uri: SipUri, ack: bool
    ) -> None:
        token = next(self._tokens)
        self._resolving[token] = (call, request, uri, ack)
        supported = tuple(t for t in ("udp", "tcp", "tls") if t in self.config.ports)
        self._events.append(
            ResolveRequest(
                token, uri.host, uri.port, uri.transport, uri.scheme == "sips", supported
            )
        )

    def resolved(self, token: int, targets: list[Target], now: float) -> None:
        """The answer to a :class:`ResolveRequest` (an empty list: the name did not resolve)."""
        entry = self._resolving.pop(token, None)
        if entry is None:
            return
        call, request, uri, ack = entry
        if ack:
            if targets and isinstance(call, ClientCall | ServerCall):
                self._transmit(
                    request.serialize(), call.transport, (targets[0].host, targets[0].port)
                )
            return
        if not targets:
            self._unreachable(call, request, now, f"{uri.host} did not resolve (DNS)")
            return
        self._start_client(call, request, uri, targets, now)

    def _unreachable(
        self, owner: Call | _Agent | None, request: SipRequest, now: float, reason: str
    ) -> None:
        if isinstance(owner, _Agent):
            self._run_agent(owner, owner.on_unreachable(request, now), now)
        elif owner is not None:
            self._run(owner, owner.session.on_unreachable(request, now, reason), now)
        else:  # a request outside any call (send_bye)
            self._complete(request, 503)

    def _send_request(
        self, call: Call | _Agent | None, request: SipRequest, next_hop: str, now: float
    ) -> None:
        try:
            uri = parse_uri(next_hop)
            if not isinstance(uri, SipUri):
                raise UriError(f"cannot route to {next_hop}")
        except (UriError, ValueError):
            self._unreachable(call, request, now, f"cannot route to {next_hop}")
            return
        if isinstance(call, ClientCall) and call.flow is not None:
            flow_transport, (host, port) = call.flow
            self._start_client(call, request, uri, [Target(host, port, flow_transport)], now)
            return
        targets = targets_now(uri)
        if targets is None:
            self._resolve(call, request, uri, ack=False)
            return
        self._start_client(call, request, uri, targets, now)

    def _start_client(
        self,
        call: Call | _Agent | None,
        request: SipRequest,
        uri: SipUri,
        targets: list[Target],
        now: float,
    ) -> None:
        target = targets[0]
        transport = pick_transport(uri, target, self.config.ports)
        if isinstance(call, ServerCall):
            transport = call.transport  # in-dialog requests of an inbound call: same transport
        elif call is None and self._standalone:
            # send_bye: the transport the dead process's dialog used
            transport = self._standalone.get((request.call_id, request.cseq[0], request.method), transport)
        address = (target.host, target.port)
        if transport == "tls":
            self._name_tls_peer(address, uri.host)
        if "Via" not in request:
            request.prepend("Via", self._via(transport))
        if isinstance(call, ClientCall) and request.method == "INVITE":
            call.transport = transport
        elif isinstance(call, Registration):
            call.flow = (transport, address)
        tx = new_client_transaction(
            request, reliable=transport != "udp", timers=self.timer_config, now=now
        )
        self._client[tx.key] = (tx, call, transport, address)
        if len(targets) > 1 and request.method not in ("ACK", "CANCEL"):
            self._failover[tx.key] = (uri, targets[1:])
        self._drain_client(tx, now)

    def _fail_over(self, tx: ClientTransaction, now: float) -> bool:
        """RFC 3263 §4.3: a timeout, transport error or 503 moves the request on to the next
        target of the same lookup, as a new transaction with a new branch. The session does
        not see the failed attempt."""
        entry = self._failover.pop(tx.key, None)
        if entry is None:
            return False
        uri, remaining = entry
        _, call, _, _ = self._client.get(tx.key, (None, None, None, None))
        if (
            isinstance(call, ClientCall | ServerCall)
            and call.ended
            and tx.request.method == "INVITE"
        ):
            return False
        retry = SipRequest(tx.request.method, tx.request.uri)
        retry.headers = [(n, v) for n, v in tx.request.headers if n.lower() != "via"]
        retry.body = tx.request.body
        if isinstance(call, ClientCall) and tx.request is call.session.invite:
            call.session.invite = retry  # CANCEL and ACK follow the live attempt (same CSeq)
        log.info(
            "failing over %s to %s:%s", tx.request.method, remaining[0].host, remaining[0].port
        )
        self._start_client(call, retry, uri, remaining, now)
        return True

    def _send_stateless(self, call: Call, request: SipRequest, next_hop: str) -> None:
        """ACK for 2xx: a fresh branch, no transaction, same transport as the INVITE."""
        try:
            uri = parse_uri(next_hop)
        except (UriError, ValueError):
            return
        if not isinstance(uri, SipUri):
            return
        transport = call.transport
        if "Via" not in request:
            request.prepend("Via", self._via(transport))
        if isinstance(call, ClientCall) and call.flow is not None:
            self._transmit(request.serialize(), transport, call.flow[1])
            return
        targets = targets_now(uri)
        if targets is None:
            self._resolve(call, request, uri, ack=True)
            return
        self._transmit(request.serialize(), transport, (targets[0].host, targets[0].port))

    def _send_response(self, call: ServerCall, response: SipResponse, now: float) -> None:
        """The UAS session's answer to its INVITE: through the server transaction while it
        lives (it also absorbs INVITE retransmissions), directly after (2xx retransmits)."""
        entry = self._server.get(transaction_key(call.session.invite))
        if entry is not None and entry[0].respond(response, now):
            self._drain_server(entry[0], now)
            return
        if 200 <= response.status < 300:
            self._transmit(
                response.serialize(), call.transport, call.address, call.source.connection
            )

    def _transmit(
        self, data: bytes, transport: str, address: Address, connection: object | None = None
    ) -> None:
        self.stats["sent"] += 1
        server_name = self._tls_names.get(address) if transport == "tls" else None
        self._out.append(Datagram(data, transport, address, connection, server_name))

    #: Most TLS peer names remembered (the oldest go first).
    MAX_TLS_NAMES = 1024

    def _name_tls_peer(self, address: Address, host: str) -> None:
        """Remember the URI host a TLS peer's address came from: its certificate must match
        that name (RFC 5922 §4), not the address (kept for IP literals too: None in SNI)."""
        name = host.strip("[]")
        if address in self._tls_names and _is_ip_literal(name):
            return  # an in-dialog Contact by address: keep the name the peer was reached by
        self._tls_names.pop(address, None)
        self._tls_names[address] = name
        while len(self._tls_names) > self.MAX_TLS_NAMES:
            del self._tls_names[next(iter(self._tls_names))]

    def transport_error(self, transport: str, address: Address, now: float) -> None:
        """Sending to ``address`` over ``transport`` failed (a TCP connect was refused, an
        ICMP port/host unreachable came back for a datagram): the client transactions
        bound there fail at once (§17.1.4); the next RFC 3263 target is tried, else the
        session treats it as a 503 (§8.1.3.1)."""
        wanted = canonical_address(address)
        for tx, _, tx_transport, tx_address in list(self._client.values()):
            if (
                tx_transport == transport
                and canonical_address(tx_address) == wanted
                and not tx.terminated
            ):
                tx.transport_error(now)
                self._drain_client(tx, now)

    # ------------------------------------------------------------------ transactions

    def _drain_client(self, tx: ClientTransaction, now: float) -> None:
        entry = self._client.get(tx.key)
        if entry is None:
            return
        _, call, transport, address = entry
        while (event := tx.next_event()) is not None:
            if isinstance(event, SendMessage):
                self._transmit(event.message.serialize(), transport, address)
            elif isinstance(event, ResponseReceived):
                if event.response.status == 503 and self._fail_over(tx, now):
                    continue
                if event.response.status >= 200:
                    self._failover.pop(tx.key, None)
                if isinstance(call, _Agent):
                    self._run_agent(call, call.on_response(tx.request, event.response, now), now)
                elif call is not None:
                    self._run(call, call.session.on_response(tx.request, event.response, now), now)
                elif event.response.status >= 200:
                    self._complete(tx.request, event.response.status)
            elif isinstance(event, TransactionTimeout):
                if self._fail_over(tx, now):
                    continue
                if isinstance(call, _Agent):
                    failed = (
                        call.on_transport_error if event.timer == "transport" else call.on_timeout
                    )
                    self._run_agent(call, failed(tx.request, now), now)
                elif call is not None and event.timer == "transport":
                    self._run(call, call.session.on_transport_error(tx.request, now), now)
                elif call is not None:
                    self._run(call, call.session.on_timeout(tx.request, now), now)
                else:
                    self._complete(tx.request, 408)
            elif isinstance(event, TransactionTerminated):
                self._client.pop(tx.key, None)
                self._failover.pop(tx.key, None)
                self._timers.forget(tx)
                return
        self._timers.schedule(tx, tx.get_timer())

    def _drain_server(self, tx: ServerTransaction, now: float) -> None:
        entry = self._server.get(tx.key)
        if entry is None:
            return
        _, source, address = entry
        while (event := tx.next_event()) is not None:
            if isinstance(event, SendMessage):
                self._transmit(
                    event.message.serialize(), source.transport, address, source.connection
                )
            elif isinstance(event, TransactionTerminated):
                self._server.pop(tx.key, None)
                self._timers.forget(tx)
                return
        self._timers.schedule(tx, tx.get_timer())

    # ------------------------------------------------------------------ inbound

    def receive(self, data: bytes, source: Source, now: float, *, max_size: int = 65535) -> None:
        """A datagram (one whole message) from ``source``."""
        if not data.strip(b"\r\n\t "):
            return  # RFC 5626 keepalive (CRLF): nothing to answer
        try:
            message = parse_message(data, max_size=max_size)
        except SipParseError as exc:
            self.receive_error(data, exc, source, now)
            return
        except Exception as exc:  # never let one datagram stop the process
            log.exception("unexpected parser failure from %s", source.address)
            self.receive_error(
                data, SipParseError(f"unparseable message ({type(exc).__name__})"), source, now
            )
            return
        self.receive_message(message, source, now)

    def receive_error(self, data: bytes, error: SipParseError, source: Source, now: float) -> None:
        """RFC 3261 §16.3/§8.2: a malformed request gets 400 (with the reason) when we can
        address a response; a malformed response is dropped."""
        self.stats["parse_errors"] += 1
        if getattr(error, "status", 400) == 0:
            return
        log.info("malformed message from %s:%s: %s", source.address[0], source.address[1], error)
        answer = error_answer(data, error, source.transport, source.address, self.config.user_agent)
        if answer is not None and self._may_answer(source, now):
            self._transmit(answer[0], source.transport, answer[1], source.connection)

    def receive_message(
        self, message: SipRequest | SipResponse, source: Source, now: float
    ) -> None:
        """A parsed message (a stream transport frames and parses its own)."""
        try:
            if isinstance(message, SipResponse):
                self.stats["responses_in"] += 1
                self._on_response(message, now)
            else:
                self.stats["requests_in"] += 1
                self._on_request(message, source, now)
        except Exception:
            log.exception("failed handling a message from %s", source.address)

    def _on_response(self, response: SipResponse, now: float) -> None:
        try:
            key = transaction_key(response)
        except (SipParseError, ValueError, IndexError):
            return
        entry = self._client.get(key)
        if entry is not None:
            tx = entry[0]
            tx.receive(response, now)  # type: ignore[arg-type]
            self._drain_client(tx, now)
            return
        # RFC 6026 / §13.2.2.4: a 2xx retransmission after the INVITE transaction is gone
        # still needs our ACK.
        if response.cseq[1] == "INVITE" and 200 <= response.status < 300:
            call = self._calls.get(response.call_id)
            if isinstance(call, ClientCall):
                self._run(call, call.session.on_response(call.session.invite, response, now), now)

    def _on_request(self, request: SipRequest, source: Source, now: float) -> None:
        stamp_via(request, source.address)
        key = transaction_key(request)
        address = response_address(request, source.transport, source.address)
        entry = self._server.get(key)
        if request.method == "ACK":
            if entry is not None:  # ACK for a non-2xx final response we sent (§17.2.1)
                entry[0].receive(request, now)
                self._drain_server(entry[0], now)
                return
            call = self._calls.get(request.call_id)
            if call is not None and call.session.matches(request):
                _, actions = call.session.on_request(request, now)
                self._run(call, actions, now)
            return  # §17: an ACK is never answered
        if entry is not None:  # a retransmission
            entry[0].receive(request, now)
            self._drain_server(entry[0], now)
            return
        if request.method == "CANCEL":
            self._on_cancel(request, key, source, address, now)
            return
        call = self._dialog_call(request)
        if call is None and request.method == "REGISTER" and self.registrar is not None:
            self._on_register(request, source, address, now)
            return
        if call is None and not self._admitted(source):
            if self._takes_inbound(request) and self.policy.may_answer(source.address[0], now):
                # A caller outside the allow-list is told so (403), within its answer rate.
                refusal = plain_response(request, 403, self.config.user_agent)
                self._transmit(refusal.serialize(), source.transport, address, source.connection)
            return
        if call is None and self.unavailable and request.method in ("OPTIONS", "INVITE") and not _has_to_tag(request):
            if self._may_answer(source, now):
                refusal = plain_response(request, 503, self.config.user_agent, to_tag=stateless_tag(request))
                refusal.add("Retry-After", "30")
                self._transmit(refusal.serialize(), source.transport, address, source.connection)
            return
        if call is not None or self._takes_inbound(request):
            tx = new_server_transaction(
                request, reliable=source.transport != "udp", timers=self.timer_config, now=now
            )
            self._server[tx.key] = (tx, source, address)
            if call is not None:
                response, actions = call.session.on_request(request, now)
                self._run(call, actions, now)
            else:
                response = self._incoming(request, source, address, now)
            if response is not None:
                tx.respond(response, now)
            self._drain_server(tx, now)
            return
        # §8.2.7: no session takes it; answered statelessly (a retransmission is answered
        # again, an INVITE's final answer is not retransmitted: the caller's INVITE
        # retransmissions draw it), within the source's rate.
        if self._may_answer(source, now):
            response = out_of_dialog_response(
                request, self.config.user_agent, in_dialog=_has_to_tag(request)
            )
            self._transmit(response.serialize(), source.transport, address, source.connection)

    def _on_register(self, request: SipRequest, source: Source, address: Address, now: float) -> None:
        """A phone's REGISTER (:mod:`sip.registrar`), in a non-INVITE server transaction. A
        refusal (401, 403...) costs the source one out-of-dialog answer of its rate."""
        if not self._admitted(source):
            return
        assert self.registrar is not None
        response = self.registrar.handle(request, source.transport, address, now)
        if response.status != 200 and not self._may_answer(source, now):
            return
        tx = new_server_transaction(
            request, reliable=source.transport != "udp", timers=self.timer_config, now=now
        )
        self._server[tx.key] = (tx, source, address)
        tx.respond(response, now)
        self._drain_server(tx, now)
        self._events.extend(self.registrar.take_changes())

    def _dialog_call(self, request: SipRequest) -> Call | None:
        """The call whose dialog this in-dialog request (To tag) belongs to, if any."""
        if not _has_to_tag(request):
            return None
        call = self._calls.get(request.call_id)
        return call if call is not None and call.session.matches(request) else None

    def _takes_inbound(self, request: SipRequest) -> bool:
        return (
            request.method == "INVITE"
            and self.config.accept_inbound
            and not _has_to_tag(request)
            and request.call_id not in self._calls
        )

    def _admitted(self, source: Source) -> bool:
        """The allow-list (:mod:`sip.policy`): requests from elsewhere are dropped silently."""
        if self.policy.admits(source.address[0]):
            return True
        self.stats["dropped_not_allowed"] += 1
        log.debug("request from %s:%s dropped: not an allowed peer", *source.address)
        return False

    def _may_answer(self, source: Source, now: float) -> bool:
        """One more out-of-dialog answer to this source? (allow-list, then its rate)"""
        if not self._admitted(source):
            return False
        if self.policy.may_answer(source.address[0], now):
            return True
        self.stats["dropped_rate_limited"] += 1
        return False

    def _on_cancel(
        self,
        request: SipRequest,
        key: tuple[str, str, str],
        source: Source,
        address: Address,
        now: float,
    ) -> None:
        """§9.2: 200 to a CANCEL that matches a server INVITE transaction (the session then
        answers 487 to the INVITE), 481 otherwise (out of dialog: within the source's rate).
        Stateless: a retransmitted CANCEL is answered again the same way."""
        invite_entry = self._server.get((key[0], key[1], "INVITE"))
        if invite_entry is None and not self._may_answer(source, now):
            return
        status = 200 if invite_entry is not None else 481
        response = plain_response(request, status, self.config.user_agent)
        self._transmit(response.serialize(), source.transport, address, source.connection)
        if invite_entry is not None:
            call = self._calls.get(request.call_id)
            if isinstance(call, ServerCall) and call.session.invite is invite_entry[0].request:
                self._run(call, call.session.on_cancel(now), now)

    def _incoming(
        self, request: SipRequest, source: Source, address: Address, now: float
    ) -> SipResponse | None:
        if self.registrar is not None:
            # A phone calling as one of our users proves it (the registrar's digest).
            local = {h.strip("[]").lower() for h in (self.config.local_host, *self.config.advertised_hosts.values())}
            user = self.registrar.claimed_user(request, local)
            if user is not None:
                refusal = self.registrar.authenticate(request, user, now)
                if refusal is not None:
                    return refusal
        secure = request.uri.lower().startswith("sips:")
        if secure and source.transport != "tls":
            # RFC 5630 §3: a SIPS Request-URI asks for TLS on every hop; this one was not.
            return plain_response(
                request,
                416,
                self.config.user_agent,
                "Unsupported URI Scheme (sips: needs TLS)",
                to_tag=stateless_tag(request),
            )
        session = ServerInviteSession(request, self.session_config(source.transport, secure))
        self._calls[request.call_id] = ServerCall(session, source, address)
        self._events.append(IncomingCall(request.call_id, request, session.offer))
        # §17.2.1: a 100 Trying at once, so the caller stops retransmitting.
        return plain_response(request, 100, self.config.user_agent)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _has_to_tag(request: SipRequest) -> bool:
    try:
        return bool(request.to_tag)
    except ValueError:
        return False
