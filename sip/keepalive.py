"""OPTIONS pings to a gateway (its health), client side, sans-I/O.

One :class:`OptionsProbe` per gateway with ``ping`` set: every ``interval`` seconds it sends
an out-of-dialog OPTIONS (RFC 3261 §11) to the gateway and watches the outcome. Any final
response says the gateway is alive (a 404 or 405 too: something answered), except 408 and
503 (§21.5.4: it is overloaded or down, the same answer that moves RFC 3263 failover on); a
timeout (Timer F) or a transport error says it is not. The probe is ``up`` until a ping
fails, ``down`` from then until a ping is answered again; each change is a
:class:`GatewayHealthChanged` action (the endpoint hands it out as an event). Like
:mod:`sip.register` it returns actions and takes time as ``now``; the endpoint runs its
transactions and timer (:meth:`sip.endpoint.Endpoint.probe`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sip._session import SendRequest
from sip.message import SipRequest, SipResponse, new_call_id, new_tag

__all__ = ["GatewayHealthChanged", "OptionsProbe", "ProbeConfig"]

#: Final responses that say the gateway is not taking requests.
DOWN_STATUSES = frozenset({408, 503})


@dataclass(frozen=True)
class ProbeConfig:
    name: str  #: the gateway's name
    target: str  #: Request-URI of the OPTIONS, e.g. ``sip:trunk.example.com:5060;transport=tcp``
    from_uri: str  #: our From URI, e.g. ``sip:softswitch@192.0.2.1``
    interval: float  #: seconds between pings (from the end of one to the start of the next)
    user_agent: str = "softswitch/0.1"

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ValueError(f"probe {self.name}: interval must be > 0, not {self.interval}")


@dataclass(frozen=True, slots=True)
class GatewayHealthChanged:
    """The gateway called ``name`` went ``up`` (answered) or down (``error`` says how)."""

    name: str
    up: bool
    error: str | None = None


@dataclass
class OptionsProbe:
    config: ProbeConfig
    up: bool = True  #: usable until a ping fails
    last_error: str | None = None
    last_answer_at: float | None = None
    pings: int = 0
    _next_at: float | None = None
    _cseq: int = 0
    _call_id: str = ""
    _from_tag: str = field(default_factory=new_tag)
    _live: SipRequest | None = None
    _stopped: bool = False

    @property
    def name(self) -> str:
        return self.config.name

    def start(self, now: float) -> list[object]:
        """Ping now, then every ``interval`` seconds."""
        self._stopped = False
        return self._ping(now)

    def stop(self, now: float) -> list[object]:
        self._stopped = True
        self._next_at = None
        return []

    def get_timer(self) -> float | None:
        return self._next_at

    def handle_timer(self, now: float) -> list[object]:
        if self._next_at is None or now < self._next_at or self._stopped:
            return []
        self._next_at = None
        if self._live is not None:  # the last ping is still out (retransmitting)
            self._next_at = now + self.config.interval
            return []
        return self._ping(now)

    def owns(self, request: SipRequest) -> bool:
        return (
            self._live is not None
            and request.cseq == self._live.cseq
            and request.call_id == self._live.call_id
        )

    def on_response(self, request: SipRequest, response: SipResponse, now: float) -> list[object]:
        if response.status < 200 or not self.owns(request):
            return []
        if response.status in DOWN_STATUSES:
            return self._outcome(now, f"{response.status} {response.reason}")
        self.last_answer_at = now
        return self._outcome(now, None)

    def on_timeout(self, request: SipRequest, now: float) -> list[object]:
        return self._outcome(now, "timeout (no answer to OPTIONS)") if self.owns(request) else []

    def on_transport_error(self, request: SipRequest, now: float) -> list[object]:
        return self._outcome(now, "transport error (unreachable)") if self.owns(request) else []

    def on_unreachable(self, request: SipRequest, now: float) -> list[object]:
        return self._outcome(now, "did not resolve") if self.owns(request) else []

    # ------------------------------------------------------------------ internals

    def _ping(self, now: float) -> list[object]:
        cfg = self.config
        self._cseq += 1
        self.pings += 1
        if not self._call_id:
            self._call_id = new_call_id("probe")
        request = SipRequest("OPTIONS", cfg.target)
        request.add("Max-Forwards", "70")
        request.add("From", f"<{cfg.from_uri}>;tag={self._from_tag}")
        request.add("To", f"<{cfg.target.split(';', 1)[0]}>")
        request.add("Call-ID", self._call_id)
        request.add("CSeq", f"{self._cseq} OPTIONS")
        request.add("Accept", "application/sdp")
        request.add("User-Agent", cfg.user_agent)
        self._live = request
        return [SendRequest(request, cfg.target)]

    def _outcome(self, now: float, error: str | None) -> list[object]:
        self._live = None
        if not self._stopped:
            self._next_at = now + self.config.interval
        up = error is None
        self.last_error = error if error is not None else self.last_error
        if up == self.up:
            return []
        self.up = up
        return [GatewayHealthChanged(self.name, up, error)]
