"""The four RFC 3261 §17 transaction state machines, sans-I/O.

Everything that decides a transaction's state lives in this file, as one transition table
per machine (the h11 habit): ``(state, input) -> (next state, actions)``. Inputs are the
kinds of message or timer that can arrive; actions name what the machine does on the way.

Time is an argument. The shell asks :meth:`Transaction.get_timer` for the next deadline,
calls :meth:`Transaction.handle_timer` when it passes, hands messages to ``receive`` and
drains :meth:`Transaction.next_event` after each call. Outputs are :class:`SendMessage`
(to the transport) and the events the transaction user (TU) sees.

RFC 6026 is applied: a client INVITE transaction that receives a 2xx goes to *Accepted*
(Timer M) and passes 2xx retransmissions to the TU, so the TU can re-send its ACK; a server
INVITE transaction that sends a 2xx goes to *Accepted* (Timer L) and absorbs retransmitted
INVITEs instead of handing them to the TU as new requests.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from sip.message import SipRequest, SipResponse


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """RFC 3261 §17.1.1.1 timer values, in seconds (Table 4)."""

    t1: float = 0.5  # RTT estimate
    t2: float = 4.0  # maximum retransmit interval for non-INVITE requests and INVITE responses
    t4: float = 5.0  # maximum duration a message remains in the network


# ---------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class SendMessage:
    """Hand this message to the transport (first send or retransmission)."""

    message: SipRequest | SipResponse
    retransmission: bool = False


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response for the TU (client transactions). ``retransmission`` marks RFC 6026 2xx copies."""

    response: SipResponse
    retransmission: bool = False


@dataclass(frozen=True, slots=True)
class AckReceived:
    """An ACK matched a server INVITE transaction (non-2xx: it is absorbed; for the record only)."""

    request: SipRequest


@dataclass(frozen=True, slots=True)
class TransactionTimeout:
    """Timer B/F (client) or H (server) fired: the peer never answered / never ACKed."""

    timer: str


@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    """The transaction is gone; the shell forgets it."""


TransactionEvent = (
    SendMessage | ResponseReceived | AckReceived | TransactionTimeout | TransactionTerminated
)


class State(enum.Enum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    ACCEPTED = "Accepted"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


# Inputs to the tables.
I_1XX = "1xx"
I_2XX = "2xx"
I_FINAL = "300-699"
I_REQUEST = "request"  # the request (first or retransmitted), server side
I_ACK = "ACK"
I_SEND_1XX = "send 1xx"
I_SEND_2XX = "send 2xx"
I_SEND_FINAL = "send 300-699"
I_TRANSPORT_ERROR = "transport error"


def _status_input(status: int) -> str:
    if status < 200:
        return I_1XX
    if status < 300:
        return I_2XX
    return I_FINAL


class Transaction:
    """Common machinery: the table walk, the timers, the event queue."""

    #: (state, input) -> (next state, actions). Subclasses define it.
    TRANSITIONS: dict[tuple[State, str], tuple[State, tuple[str, ...]]] = {}
    INITIAL: State = State.TRYING

    def __init__(self, request: SipRequest, *, reliable: bool, timers: TimerConfig, now: float):
        self.request = request
        self.reliable = reliable
        self.timers = timers
        self.state = self.INITIAL
        self.key = transaction_key(request)
        self._deadlines: dict[str, float] = {}
        self._intervals: dict[str, float] = {}
        self._events: deque[TransactionEvent] = deque()
        self.last_response: SipResponse | None = None

    # -- the shell's interface (aioquic shape)

    def get_timer(self) -> float | None:
        """The earliest deadline of a running timer, or None."""
        return min(self._deadlines.values()) if self._deadlines else None

    def handle_timer(self, now: float) -> None:
        for name, deadline in sorted(self._deadlines.items(), key=lambda kv: kv[1]):
            if deadline <= now and name in self._deadlines and self.state is not State.TERMINATED:
                del self._deadlines[name]
                self._step("timer " + name, now)

    def next_event(self) -> TransactionEvent | None:
        return self._events.popleft() if self._events else None

    def transport_error(self, now: float) -> None:
        """RFC 3261 §17.1.4 / §17.2.4: the transport failed; the TU is told as a timeout."""
        if self.state is not State.TERMINATED:
            self._events.append(TransactionTimeout("transport"))
            self._terminate()

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    # -- internals

    def _step(self, inp: str, now: float, message: SipRequest | SipResponse | None = None) -> bool:
        entry = self.TRANSITIONS.get((self.state, inp))
        if entry is None:
            return False  # not meaningful in this state: ignore (e.g. a late retransmission)
        next_state, actions = entry
        self.state = next_state
        for action in actions:
            getattr(self, "_do_" + action.replace(" ", "_"))(now, message)
        if next_state is State.TERMINATED:
            self._terminate()
        return True

    def _terminate(self) -> None:
        self.state = State.TERMINATED
        self._deadlines.clear()
        self._events.append(TransactionTerminated())

    def _start(self, name: str, now: float, interval: float) -> None:
        # Over a reliable transport the retransmission timers never run and the
        # wait timers (D, I, J, K) are zero (§17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2).
        self._intervals[name] = interval
        self._deadlines[name] = now + interval

    def _stop(self, name: str) -> None:
        self._deadlines.pop(name, None)


def transaction_key(message: SipRequest | SipResponse) -> tuple[str, str, str]:
    """The matching key of RFC 3261 §17.1.3/§17.2.3: top Via branch, sent-by, CSeq method.

    ACK and CANCEL are keyed by the method they refer to... except that CANCEL has its own
    transaction: ACK (for non-2xx) matches the INVITE's server transaction, CANCEL does not.
    """
    via = message.top_via
    method = message.cseq[1]
    if method == "ACK":
        method = "INVITE"
    sent_by = f"{via.host}:{via.port or ''}".lower()
    branch = via.branch or ""
    if not branch.startswith("z9hG4bK"):
        # RFC 2543 peers: no usable branch; fall back on the dialog-ish identifiers (§17.2.3).
        branch = "2543:" + message.call_id + ":" + str(message.cseq[0])
    return branch, sent_by, method


# ----------------------------------------------------------------- client transactions


class ClientInviteTransaction(Transaction):
    """RFC 3261 §17.1.1 (figure 5) with RFC 6026's Accepted state."""

    INITIAL = State.CALLING
    TRANSITIONS = {
        (State.CALLING, "timer A"): (State.CALLING, ("retransmit", "double A")),
        (State.CALLING, "timer B"): (State.TERMINATED, ("timeout B",)),
        (State.CALLING, I_1XX): (State.PROCEEDING, ("stop A", "stop B", "pass")),
        (State.CALLING, I_2XX): (State.ACCEPTED, ("stop A", "stop B", "pass", "start M")),
        (State.CALLING, I_FINAL): (State.COMPLETED, ("stop A", "stop B", "ack", "pass", "start D")),
        (State.PROCEEDING, I_1XX): (State.PROCEEDING, ("pass",)),
        (State.PROCEEDING, I_2XX): (State.ACCEPTED, ("pass", "start M")),
        (State.PROCEEDING, I_FINAL): (State.COMPLETED, ("ack", "pass", "start D")),
        (State.ACCEPTED, I_2XX): (State.ACCEPTED, ("pass again",)),
        (State.ACCEPTED, "timer M"): (State.TERMINATED, ()),
        (State.COMPLETED, I_FINAL): (State.COMPLETED, ("ack",)),
        (State.COMPLETED, "timer D"): (State.TERMINATED, ()),
    }

    def __init__(self, request: SipRequest, *, reliable: bool, timers: TimerConfig, now: float):
        super().__init__(request, reliable=reliable, timers=timers, now=now)
        self.ack: SipRequest | None = None
        self._events.append(SendMessage(request))
        if not reliable:
            self._start("A", now, timers.t1)
        self._start("B", now, 64 * timers.t1)

    def receive(self, response: SipResponse, now: float) -> bool:
        """Hand a matching response in; False if it meant nothing in this state."""
        if response.status >= 200:
            self.last_response = response
        return self._step(_status_input(response.status), now, response)

    # RFC 3261 §17.1.1.2: Timer B runs only in Calling; once a provisional response
    # arrives the TU's own timer (ring timeout, then CANCEL) bounds the wait.
    def _do_stop_B(self, now: float, message: object) -> None:
        self._stop("B")

    def _do_retransmit(self, now: float, message: object) -> None:
        self._events.append(SendMessage(self.request, retransmission=True))

    def _do_double_A(self, now: float, message: object) -> None:
        self._start("A", now, self._intervals["A"] * 2)

    def _do_stop_A(self, now: float, message: object) -> None:
        self._stop("A")

    def _do_timeout_B(self, now: float, message: object) -> None:
        self._events.append(TransactionTimeout("B"))

    def _do_pass(self, now: float, message: object) -> None:
        assert isinstance(message, SipResponse)
        self._events.append(ResponseReceived(message))

    def _do_pass_again(self, now: float, message: object) -> None:
        assert isinstance(message, SipResponse)
        self._events.append(ResponseReceived(message, retransmission=True))

    def _do_start_M(self, now: float, message: object) -> None:
        self._start("M", now, 64 * self.timers.t1)

    def _do_start_D(self, now: float, message: object) -> None:
        self._start("D", now, 0.0 if self.reliable else 32.0)

    def _do_ack(self, now: float, message: object) -> None:
        # RFC 3261 §17.1.1.3: the ACK for a non-2xx final response belongs to the transaction.
        assert isinstance(message, SipResponse)
        first = self.ack is None
        if self.ack is None:
            self.ack = build_non2xx_ack(self.request, message)
        self._events.append(SendMessage(self.ack, retransmission=not first))


def build_non2xx_ack(invite: SipRequest, response: SipResponse) -> SipRequest:
    """RFC 3261 §17.1.1.3: same Request-URI, Call-ID, From, top Via, Route as the INVITE;
    To from the response (with its tag); CSeq number of the INVITE with method ACK."""
    ack = SipRequest("ACK", invite.uri)
    ack.add("Via", invite.get_all("Via")[0])
    for route in invite.get_all("Route"):
        ack.add("Route", route)
    ack.add("Max-Forwards", "70")
    ack.add("From", invite.get("From") or "")
    ack.add("To", response.get("To") or invite.get("To") or "")
    ack.add("Call-ID", invite.call_id)
    ack.add("CSeq", f"{invite.cseq[0]} ACK")
    return ack


class ClientNonInviteTransaction(Transaction):
    """RFC 3261 §17.1.2 (figure 6)."""

    INITIAL = State.TRYING
    TRANSITIONS = {
        (State.TRYING, "timer E"): (State.TRYING, ("retransmit", "backoff E")),
        (State.TRYING, "timer F"): (State.TERMINATED, ("timeout F",)),
        (State.TRYING, I_1XX): (State.PROCEEDING, ("pass",)),
        (State.TRYING, I_2XX): (State.COMPLETED, ("pass", "start K")),
        (State.TRYING, I_FINAL): (State.COMPLETED, ("pass", "start K")),
        (State.PROCEEDING, "timer E"): (State.PROCEEDING, ("retransmit", "E at T2")),
        (State.PROCEEDING, "timer F"): (State.TERMINATED, ("timeout F",)),
        (State.PROCEEDING, I_1XX): (State.PROCEEDING, ("pass",)),
        (State.PROCEEDING, I_2XX): (State.COMPLETED, ("pass", "start K")),
        (State.PROCEEDING, I_FINAL): (State.COMPLETED, ("pass", "start K")),
        (State.COMPLETED, "timer K"): (State.TERMINATED, ()),
    }

    def __init__(self, request: SipRequest, *, reliable: bool, timers: TimerConfig, now: float):
        super().__init__(request, reliable=reliable, timers=timers, now=now)
        self._events.append(SendMessage(request))
        if not reliable:
            self._start("E", now, timers.t1)
        self._start("F", now, 64 * timers.t1)

    def receive(self, response: SipResponse, now: float) -> bool:
        if response.status >= 200:
            self.last_response = response
            self._stop("E")
            self._stop("F")
        return self._step(_status_input(response.status), now, response)

    def _do_retransmit(self, now: float, message: object) -> None:
        self._events.append(SendMessage(self.request, retransmission=True))

    def _do_backoff_E(self, now: float, message: object) -> None:
        self._start("E", now, min(2 * self._intervals["E"], self.timers.t2))

    def _do_E_at_T2(self, now: float, message: object) -> None:
        self._start("E", now, self.timers.t2)

    def _do_timeout_F(self, now: float, message: object) -> None:
        self._events.append(TransactionTimeout("F"))

    def _do_pass(self, now: float, message: object) -> None:
        assert isinstance(message, SipResponse)
        self._events.append(ResponseReceived(message))

    def _do_start_K(self, now: float, message: object) -> None:
        self._start("K", now, 0.0 if self.reliable else self.timers.t4)


# ----------------------------------------------------------------- server transactions


class _ServerTransaction(Transaction):
    """What both server machines share: the TU's responses go in, the last one is resent."""

    def respond(self, response: SipResponse, now: float) -> bool:
        """The TU's response; False if the transaction no longer takes one."""
        return self._step(_SEND_INPUT[_status_input(response.status)], now, response)

    def _do_send(self, now: float, message: object) -> None:
        assert isinstance(message, SipResponse)
        self.last_response = message
        self._events.append(SendMessage(message))

    def _do_resend_last(self, now: float, message: object) -> None:
        if self.last_response is not None:
            self._events.append(SendMessage(self.last_response, retransmission=True))


_SEND_INPUT = {I_1XX: I_SEND_1XX, I_2XX: I_SEND_2XX, I_FINAL: I_SEND_FINAL}


class ServerInviteTransaction(_ServerTransaction):
    """RFC 3261 §17.2.1 (figure 7) with RFC 6026's Accepted state."""

    INITIAL = State.PROCEEDING
    TRANSITIONS = {
        (State.PROCEEDING, I_REQUEST): (State.PROCEEDING, ("resend last",)),
        (State.PROCEEDING, I_SEND_1XX): (State.PROCEEDING, ("send",)),
        (State.PROCEEDING, I_SEND_2XX): (State.ACCEPTED, ("send", "start L")),
        (State.PROCEEDING, I_SEND_FINAL): (State.COMPLETED, ("send", "start G", "start H")),
        (State.ACCEPTED, I_REQUEST): (State.ACCEPTED, ()),
        (State.ACCEPTED, I_SEND_2XX): (State.ACCEPTED, ("send",)),
        (State.ACCEPTED, I_ACK): (State.ACCEPTED, ()),
        (State.ACCEPTED, "timer L"): (State.TERMINATED, ()),
        (State.COMPLETED, I_REQUEST): (State.COMPLETED, ("resend last",)),
        (State.COMPLETED, "timer G"): (State.COMPLETED, ("resend last", "backoff G")),
        (State.COMPLETED, "timer H"): (State.TERMINATED, ("timeout H",)),
        (State.COMPLETED, I_ACK): (State.CONFIRMED, ("stop G", "stop H", "ack seen", "start I")),
        (State.CONFIRMED, I_ACK): (State.CONFIRMED, ()),
        (State.CONFIRMED, "timer I"): (State.TERMINATED, ()),
    }

    def receive(self, request: SipRequest, now: float) -> bool:
        """A retransmitted INVITE, or the ACK for a non-2xx final response."""
        return self._step(I_ACK if request.method == "ACK" else I_REQUEST, now, request)

    def _do_start_L(self, now: float, message: object) -> None:
        self._start("L", now, 64 * self.timers.t1)

    def _do_start_G(self, now: float, message: object) -> None:
        if not self.reliable:
            self._start("G", now, self.timers.t1)

    def _do_backoff_G(self, now: float, message: object) -> None:
        self._start("G", now, min(2 * self._intervals["G"], self.timers.t2))

    def _do_start_H(self, now: float, message: object) -> None:
        self._start("H", now, 64 * self.timers.t1)

    def _do_stop_G(self, now: float, message: object) -> None:
        self._stop("G")

    def _do_stop_H(self, now: float, message: object) -> None:
        self._stop("H")

    def _do_timeout_H(self, now: float, message: object) -> None:
        self._events.append(TransactionTimeout("H"))

    def _do_ack_seen(self, now: float, message: object) -> None:
        assert isinstance(message, SipRequest)
        self._events.append(AckReceived(message))

    def _do_start_I(self, now: float, message: object) -> None:
        self._start("I", now, 0.0 if self.reliable else self.timers.t4)


class ServerNonInviteTransaction(_ServerTransaction):
    """RFC 3261 §17.2.2 (figure 8)."""

    INITIAL = State.TRYING
    TRANSITIONS = {
        (State.TRYING, I_REQUEST): (State.TRYING, ()),
        (State.TRYING, I_SEND_1XX): (State.PROCEEDING, ("send",)),
        (State.TRYING, I_SEND_2XX): (State.COMPLETED, ("send", "start J")),
        (State.TRYING, I_SEND_FINAL): (State.COMPLETED, ("send", "start J")),
        (State.PROCEEDING, I_REQUEST): (State.PROCEEDING, ("resend last",)),
        (State.PROCEEDING, I_SEND_1XX): (State.PROCEEDING, ("send",)),
        (State.PROCEEDING, I_SEND_2XX): (State.COMPLETED, ("send", "start J")),
        (State.PROCEEDING, I_SEND_FINAL): (State.COMPLETED, ("send", "start J")),
        (State.COMPLETED, I_REQUEST): (State.COMPLETED, ("resend last",)),
        (State.COMPLETED, "timer J"): (State.TERMINATED, ()),
    }

    def receive(self, request: SipRequest, now: float) -> bool:
        return self._step(I_REQUEST, now, request)

    def _do_start_J(self, now: float, message: object) -> None:
        self._start("J", now, 0.0 if self.reliable else 64 * self.timers.t1)


ClientTransaction = ClientInviteTransaction | ClientNonInviteTransaction
ServerTransaction = ServerInviteTransaction | ServerNonInviteTransaction


def new_client_transaction(
    request: SipRequest, *, reliable: bool, timers: TimerConfig, now: float
) -> ClientTransaction:
    cls = ClientInviteTransaction if request.method == "INVITE" else ClientNonInviteTransaction
    return cls(request, reliable=reliable, timers=timers, now=now)


def new_server_transaction(
    request: SipRequest, *, reliable: bool, timers: TimerConfig, now: float
) -> ServerTransaction:
    cls = ServerInviteTransaction if request.method == "INVITE" else ServerNonInviteTransaction
    return cls(request, reliable=reliable, timers=timers, now=now)
