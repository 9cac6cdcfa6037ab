"""The user agent with media: the public embedding API.

    async with UserAgent(UserAgentConfig(port=0)) as ua:
        call = await ua.dial("sip:bob@127.0.0.1:5062", from_user="1000")
        if await call.wait_answered():
            await call.send_digits("1w2")
            await call.hangup()
        print((await call.wait_terminated()).cause)

It joins the SIP user agent (:class:`sip.aio.UserAgent`, which knows nothing of media) to
the media engine (:class:`media.engine.MediaEngine`, which knows nothing of SIP): each call
is an :class:`OutboundCall`, a *leg* of one SIP call and one RTP stream. The leg makes the
SDP offer, applies the callee's answers (early and final) to its stream, answers the
callee's re-offers, and merges the digits of both layers into :class:`DigitReceived`
events. It also applies the process policy (:class:`softswitch.process.GcPolicy`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid as uuidlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from media.dtmf import DtmfStep
from media.engine import MediaConfig, MediaEngine, MediaStream
from sip import aio as sip_aio
from sip import causes
from sip.aio.observe import ObservableCall
from sip.aio.transport import TcpTransport, TlsTransport, UdpTransport
from sip.aio.ua import Credentials, GatewayConfig
from sip.events import InfoDigit
from sip.invite import ClientInviteSession
from sip.registrar import Binding
from softswitch.events import (
    Answered,
    CallEvent,
    DigitReceived,
    EarlyMedia,
    Ringing,
    Terminated,
    Trying,
)
from softswitch.process import GcPolicy

log = logging.getLogger("softswitch.ua")

__all__ = [
    "Answered",
    "CallEvent",
    "Credentials",
    "DigitReceived",
    "EarlyMedia",
    "GatewayConfig",
    "InboundCall",
    "OutboundCall",
    "Ringing",
    "Terminated",
    "Trying",
    "UserAgent",
    "UserAgentConfig",
]


@dataclass
class UserAgentConfig(sip_aio.UserAgentConfig):
    """:class:`sip.aio.UserAgentConfig` plus the media and process settings."""

    media: MediaConfig | None = None  #: RTP settings; ``None`` = defaults on ``host``
    #: Keep CPython's cyclic collector from walking thousands of live calls (see
    #: :class:`~softswitch.process.GcPolicy`): a full collection stalls the event loop
    #: and the media clock.
    tune_gc: bool = True
    #: A trunk's codec preference, by gateway name: calls through that gateway offer only
    #: these (unless ``dial(codecs=...)`` says otherwise).
    gateway_codecs: dict[str, list[str]] = field(default_factory=dict)
    #: SRTP (SDES, RFC 4568) of calls that go through no configured trunk (a SIP URI dialled
    #: directly): ``"off"`` (plain RTP), ``"optional"`` (RTP/AVP offer with ``a=crypto``
    #: lines, SRTP when the callee answers one) or ``"mandatory"`` (RTP/SAVP; an answer
    #: without crypto ends the call with ``INCOMPATIBLE_DESTINATION``).
    srtp: str = "off"
    #: A trunk's SRTP policy, by gateway name (a trunk not listed: :attr:`srtp`).
    gateway_srtp: dict[str, str] = field(default_factory=dict)
    #: A trunk's ring-timeout cap in seconds, by gateway name.
    gateway_ring_timeout: dict[str, float] = field(default_factory=dict)
    #: RTP inactivity timeout of an answered call, in seconds (0 = off): no RTP from the
    #: callee for this long and the leg sends BYE with ``Reason: Q.850;...;text="MEDIA_TIMEOUT"``
    #: and ends with cause ``MEDIA_TIMEOUT`` (FreeSWITCH ``rtp_timeout_sec``, Asterisk
    #: ``rtptimeout``). Counted from the answer (the ring timeout covers ringing); RTCP does
    #: not count.
    rtp_timeout_s: float = 60.0
    #: The same while the call is on hold (either side's SDP not ``sendrecv``, or the callee's
    #: c=0.0.0.0), when no RTP is expected (``rtp_hold_timeout_sec``, ``rtpholdtimeout``).
    rtp_hold_timeout_s: float = 600.0


class OutboundCall(ObservableCall[CallEvent]):
    """One outbound call leg: a SIP call, its media stream, its events and control."""

    def __init__(
        self,
        sip_call: sip_aio.OutboundCall | sip_aio.InboundCall,
        media: MediaStream | None,
        call_uuid: str,
        *,
        rtp_timeouts: tuple[float, float] = (0.0, 0.0),
    ):
        super().__init__()
        self.sip_call = sip_call
        self.media = media
        self.uuid = call_uuid
        self.digits: list[DigitReceived] = []
        self.final_stats: dict[str, object] | None = None  #: media statistics at the end
        #: (active, on hold) RTP inactivity timeouts armed at answer; 0 = off.
        self.rtp_timeouts = rtp_timeouts
        self._timeout_task: asyncio.Task[None] | None = None
        if media is not None:
            self._attach(media)
        # The SIP call may have moved already (Trying; an unroutable target has even ended).
        for event in sip_call.history:
            self._on_sip_event(event)
        sip_call.add_listener(self._on_sip_event)

    def _attach(self, media: MediaStream) -> None:
        self.media = media
        media.on_dtmf = self._on_media_dtmf
        media.on_media_timeout = self._on_media_timeout

    # -- what the SIP call knows

    @property
    def session(self) -> ClientInviteSession:
        return self.sip_call.session  # type: ignore[return-value]

    @property
    def call_id(self) -> str:
        return self.sip_call.call_id

    @property
    def transport(self) -> str:
        return self.sip_call.transport

    @property
    def state(self) -> str:
        return self.sip_call.state

    @property
    def created_at(self) -> float:
        return self.sip_call.created_at

    @property
    def ringing_at(self) -> float | None:
        return self.sip_call.ringing_at

    @property
    def early_at(self) -> float | None:
        return self.sip_call.early_at

    @property
    def answered_at(self) -> float | None:
        return self.sip_call.answered_at

    @property
    def ended_at(self) -> float | None:
        return self.sip_call.ended_at

    @property
    def sip_status(self) -> int | None:
        return self.sip_call.sip_status

    @property
    def duration(self) -> float:
        """Seconds from answer to end (0 if never answered)."""
        return self.sip_call.duration

    def dialog_state(self) -> dict[str, object] | None:
        """What another process needs to BYE this answered call; see
        :meth:`sip.aio.OutboundCall.dialog_state`."""
        return self.sip_call.dialog_state()

    @property
    def on_dialog_change(self) -> Callable[[dict[str, object]], None] | None:
        """Called with the new :meth:`dialog_state` when the dialog changes."""
        return self.sip_call.on_dialog_change

    @on_dialog_change.setter
    def on_dialog_change(self, callback: Callable[[dict[str, object]], None] | None) -> None:
        self.sip_call.on_dialog_change = callback

    def stats(self) -> dict[str, object]:
        """Media statistics (packets, loss, jitter, RTT, codec…): live during the call, the
        final figures once it has ended."""
        if self.final_stats is not None:
            return dict(self.final_stats)
        return dict(self.media.stats()) if self.media is not None else {}

    # -- control

    async def hangup(self, cause: str | None = None, source: str = "caller") -> None:
        """CANCEL if not answered yet (§9.1), BYE if answered. The cause defaults to
        ORIGINATOR_CANCEL before answer and NORMAL_CLEARING after."""
        await self.sip_call.hangup(cause, source)

    async def send_digits(
        self, digits: str | list[DtmfStep], mode: str = "auto", tone_ms: int | None = None
    ) -> None:
        """Send DTMF (grammar of ``send_digits``: ``1w2W3@300``, or steps already parsed by
        :func:`media.dtmf.parse_send_digits`) on the call's media; returns when the last
        digit has been sent."""
        if self.media is None:
            raise RuntimeError("call has no media stream")
        await self.media.send_digits(digits, mode=mode, tone_ms=tone_ms)

    # -- internals

    def _on_sip_event(self, event: object) -> None:
        if isinstance(event, InfoDigit):
            self._emit(DigitReceived(event.at, event.digit, event.duration_ms, "info"))
        elif isinstance(event, Trying | Ringing | EarlyMedia | Answered | Terminated):
            self._emit(event)

    def _on_media_dtmf(self, event: object) -> None:
        digit = getattr(event, "digit", None)
        if digit:
            self._emit(
                DigitReceived(
                    asyncio.get_running_loop().time(),
                    digit,
                    int(getattr(event, "duration_ms", 0)),
                    getattr(event, "source", "rfc4733"),
                )
            )

    def _on_media_timeout(self) -> None:
        """No RTP from the callee for the configured time: hang up (BYE with a Reason)."""
        if self.terminated is not None or self._timeout_task is not None:
            return
        active, hold = self.rtp_timeouts
        held = self.media is not None and self.media.on_hold
        log.info(
            "call %s: no RTP for %ss%s; hanging up (MEDIA_TIMEOUT)",
            self.uuid,
            hold if held else active,
            " (on hold)" if held else "",
        )
        self._timeout_task = asyncio.get_running_loop().create_task(
            self.hangup(causes.MEDIA_TIMEOUT, "timeout"), name=f"media-timeout-{self.uuid}"
        )

    def _emit(self, event: CallEvent) -> None:
        if self.terminated is not None:
            return
        if isinstance(event, DigitReceived):
            self.digits.append(event)
        elif isinstance(event, Answered) and self.media is not None and any(self.rtp_timeouts):
            # From the answer on; early media and ringing are the ring timeout's business.
            self.media.set_media_timeout(*self.rtp_timeouts)
        elif isinstance(event, Terminated) and self.media is not None:
            with contextlib.suppress(Exception):
                self.final_stats = dict(self.media.stats())
            self.media.close()
        self._publish(event)

    def _release(self) -> None:
        """Break the leg's reference cycles (listeners and the media callback point back at
        it) so that reference counting frees it at once, without the cyclic collector."""
        self._release_observers()
        if self.media is not None:
            self.media.on_dtmf = None
            self.media.on_media_timeout = None

    def __repr__(self) -> str:
        return f"<OutboundCall {self.uuid} {self.state} {self.session.invite.uri}>"


class InboundCall(OutboundCall):
    """One inbound call leg: the caller's INVITE (:class:`sip.aio.InboundCall`) and, once
    answered, a media stream. The same events and control as an :class:`OutboundCall`
    (``DigitReceived``, ``Answered`` at the caller's ACK, one ``Terminated``), plus
    :meth:`ring`, :meth:`answer` and :meth:`reject`."""

    def __init__(
        self,
        sip_call: sip_aio.InboundCall,
        engine: MediaEngine,
        call_uuid: str,
        *,
        rtp_timeouts: tuple[float, float] = (0.0, 0.0),
    ):
        self._engine = engine
        self.inbound = sip_call
        self._local_sdp: str | None = None  #: our SDP, once :meth:`prepare` made it
        super().__init__(sip_call, None, call_uuid, rtp_timeouts=rtp_timeouts)

    @property
    def called_user(self) -> str:
        """The number called (the Request-URI's user part)."""
        return self.inbound.called_user

    @property
    def caller_user(self) -> str:
        """The caller's number (the From URI's user part)."""
        return self.inbound.caller_user

    @property
    def caller_name(self) -> str | None:
        return self.inbound.caller_name

    @property
    def source(self) -> tuple[str, int]:
        """The address the INVITE came from."""
        return self.inbound.source.address

    def ring(self) -> None:
        """180 Ringing."""
        self.inbound.ring(180)

    def prepare(self, codecs: Sequence[str] | None = None) -> None:
        """Create the call's media stream and our SDP (the engine's answer to the caller's
        offer, or our offer when the INVITE had none) without sending anything: the call
        then has media for an application that runs before the answer, and :meth:`early`
        and :meth:`answer` send that SDP. An offer the engine cannot answer (no common
        codec) is refused with 488 and raises ``ValueError``."""
        if self.terminated is not None or self.media is not None:
            return
        media = self._engine.create_stream(codecs=codecs)
        offer = self.inbound.offer
        try:
            sdp = media.handle_offer(offer) if offer else media.create_offer()
        except ValueError:
            media.close()
            self.inbound.reject(488)
            raise
        self._attach(media)
        self._local_sdp = sdp

    def early(self) -> None:
        """183 Session Progress with our SDP: early media flows both ways before the answer
        (``<PreAnswer>``); only with an offer in the INVITE (an offerless one cannot have
        an answer before our 200 offers)."""
        self.prepare()
        if self.terminated is None and self.inbound.offer and self.inbound.state in ("offered", "ringing"):
            self.inbound.ring(183, self._local_sdp)

    def answer(self, codecs: Sequence[str] | None = None) -> None:
        """200 OK with our SDP (see :meth:`prepare`, done here if not yet). An offer the
        engine cannot answer is refused with 488 and raises ``ValueError``."""
        if self.terminated is not None or self.inbound.session.answered:
            return
        self.prepare(codecs)
        media = self.media
        if media is None or self._local_sdp is None or self.terminated is not None:
            return
        self.inbound.answer(
            self._local_sdp, on_remote_sdp=_answer_handler(media), offer_handler=_offer_handler(media)
        )

    def reject(self, status: int = 486, reason: str | None = None) -> None:
        """A final non-2xx response (404, 486, 603...)."""
        self.inbound.reject(status, reason)

    async def hangup(self, cause: str | None = None, source: str = "callee") -> None:
        """BYE once answered; before that the INVITE is refused with 480."""
        await self.inbound.hangup(cause, source)

    def __repr__(self) -> str:
        return f"<InboundCall {self.uuid} {self.state} {self.inbound.request.uri}>"


#: ``on_incoming(leg)``: a new inbound leg; ring, answer or reject it.
IncomingLegHandler = Callable[[InboundCall], None]


def _offer_handler(media: MediaStream) -> sip_aio.OfferHandler:
    """Our side of an offer/answer exchange the callee starts with re-INVITE or UPDATE.

    RFC 3261 §14.2: a re-INVITE without a body asks us to offer; our 200 carries the offer
    and the answer comes in the ACK (given to ``on_remote_sdp``)."""

    def handle(offer: str | None) -> str:
        return media.handle_offer(offer) if offer else media.create_offer()

    return handle


def _answer_handler(media: MediaStream) -> sip_aio.AnswerHandler:
    def apply(sdp: str, early: bool) -> None:
        media.apply_answer(sdp)  # ValueError: unusable (the SIP layer BYEs a final answer)

    return apply


class UserAgent:
    """A user agent that places calls with media; run it inside any asyncio program."""

    def __init__(self, config: UserAgentConfig | None = None, *, media: MediaEngine | None = None):
        self.config = config or UserAgentConfig()
        if self.config.rtp_timeout_s < 0 or self.config.rtp_hold_timeout_s < 0:
            raise ValueError("rtp_timeout_s and rtp_hold_timeout_s must be >= 0 (0 = off)")
        self.sip = sip_aio.UserAgent(self.config)
        self.media = media
        self._own_media = media is None
        self._legs: dict[str, OutboundCall] = {}  # Call-ID -> leg
        self._gc_policy: GcPolicy | None = None
        #: Given each inbound leg (``accept_inbound``); without one the INVITE gets 480.
        self.on_incoming: IncomingLegHandler | None = None
        self.sip.on_incoming = self._on_incoming

    # -- lifecycle

    async def start(self) -> None:
        cfg = self.config
        if getattr(cfg, "tune_gc", False):
            self._gc_policy = GcPolicy(lambda: any(c.terminated is None for c in self._legs.values()))
            self._gc_policy.start()
        await self.sip.start()
        if self.media is None:
            media_cfg = getattr(cfg, "media", None)
            self.media = MediaEngine(media_cfg or MediaConfig(bind_host=cfg.host, advertised_host=cfg.public_host))
        self.media.start()

    async def close(self, *, grace: float = 2.0) -> None:
        """Hang up every call, give the BYEs/CANCELs a moment, close everything."""
        await self.sip.close(grace=grace)
        if self._gc_policy is not None:
            self._gc_policy.stop()
        if self.media is not None and self._own_media:
            await self.media.stop()

    async def __aenter__(self) -> UserAgent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the SIP side, as the embedding API has always shown it

    @property
    def calls(self) -> list[OutboundCall]:
        return list(self._legs.values())

    @property
    def local_host(self) -> str:
        return self.sip.local_host

    @property
    def local_port(self) -> int:
        return self.sip.local_port

    @property
    def udp(self) -> UdpTransport | None:
        return self.sip.udp

    @property
    def tcp(self) -> TcpTransport | None:
        return self.sip.tcp

    @property
    def tls(self) -> TlsTransport | None:
        return self.sip.tls

    @property
    def stats(self) -> dict[str, int]:
        return self.sip.stats

    def gateways(self) -> list[dict[str, object]]:
        """Each pinged gateway's health (see :meth:`sip.aio.UserAgent.gateways`)."""
        return self.sip.gateways()

    def registrations(self) -> list[dict[str, object]]:
        """The state of each gateway registration (see :meth:`sip.aio.UserAgent.registrations`)."""
        return self.sip.registrations()

    def local_user(self, target: str) -> str | None:
        """The registrar user ``target`` names (see :meth:`sip.aio.UserAgent.local_user`)."""
        return self.sip.local_user(target)

    def user_bindings(self, user: str) -> list[Binding]:
        """``user``'s registered phones, best first (see :meth:`sip.aio.UserAgent.user_bindings`)."""
        return self.sip.user_bindings(user)

    def bindings(self) -> list[dict[str, object]]:
        """The registered phones of the registrar's users (see :meth:`sip.aio.UserAgent.bindings`)."""
        return self.sip.bindings()

    def route(self, target: str, *, gateway: str | None = None) -> tuple[str, GatewayConfig | None]:
        """See :meth:`sip.aio.UserAgent.route`."""
        return self.sip.route(target, gateway=gateway)

    async def send_byes(self, states: Sequence[Mapping[str, object]], *, cause: str, timeout: float) -> list[int | None]:
        """End calls a crashed process left up; see :meth:`sip.aio.UserAgent.send_byes`."""
        return await self.sip.send_byes(states, cause=cause, timeout=timeout)

    # -- placing calls

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
        call_uuid: str | None = None,
        codecs: Sequence[str] | None = None,
        srtp: str | None = None,
        binding: Binding | None = None,
    ) -> OutboundCall:
        """Send an INVITE with our media offer to ``target`` and return the leg at once.

        ``codecs`` restricts this leg's offer (and the answers it accepts) to those codec
        names, in preference order (``None``: the gateway's ``gateway_codecs`` when the call
        goes through a configured trunk, else the media engine's configured list); an empty
        list or a codec the engine cannot encode raises
        :class:`media.engine.UnsupportedCodec` (a ``ValueError``) before any INVITE.

        ``srtp`` is this leg's SRTP policy (``"off"``, ``"optional"``, ``"mandatory"``;
        ``None``: the trunk's ``gateway_srtp``, else ``UserAgentConfig.srtp``); another value
        raises ``ValueError`` before any INVITE. An answer the policy cannot use (no
        ``a=crypto`` under ``"mandatory"``) ends the call with BYE and
        ``INCOMPATIBLE_DESTINATION``; a callee that refuses RTP/SAVP answers 488, the same
        cause.

        ``target`` is a SIP/SIPS URI, ``user@host``, or a number routed through a gateway.
        Raises ``ValueError`` for a malformed target and ``LookupError`` when no gateway
        routes a number; everything after that (DNS, timeouts, rejections) ends the call
        with a :class:`Terminated` event and a hangup cause.
        """
        if self.media is None or not self.sip.running:
            raise RuntimeError("user agent is not running")
        # Refuse a bad target before taking a port; learn the trunk it goes through.
        _, trunk = self.sip.route(target, gateway=gateway)
        if srtp is None:
            srtp = self.config.srtp
            if trunk is not None:
                srtp = self.config.gateway_srtp.get(trunk.name, srtp)
        if trunk is not None:
            if codecs is None:
                codecs = self.config.gateway_codecs.get(trunk.name)
            cap = self.config.gateway_ring_timeout.get(trunk.name)
            if cap is not None and (ring_timeout <= 0 or ring_timeout > cap):
                ring_timeout = cap
        media = self.media.create_stream(codecs=codecs, srtp=srtp)
        try:
            sip_call = await self.sip.dial(
                target,
                from_user=from_user,
                caller_name=caller_name,
                headers=headers,
                ring_timeout=ring_timeout,
                credentials=credentials,
                transport=transport,
                gateway=gateway,
                sdp=media.create_offer(),
                offer_handler=_offer_handler(media),
                on_remote_sdp=_answer_handler(media),
                binding=binding,
            )
        except Exception:
            media.close()
            raise
        leg = OutboundCall(
            sip_call,
            media,
            call_uuid or str(uuidlib.uuid4()),
            rtp_timeouts=(self.config.rtp_timeout_s, self.config.rtp_hold_timeout_s),
        )
        self._legs[leg.call_id] = leg
        if leg.terminated is not None:  # ended at once (an unroutable next hop)
            asyncio.get_running_loop().call_later(self.config.linger, self._forget, leg)
        else:
            leg.add_listener(self._on_leg_event(leg))
        return leg

    def _on_incoming(self, sip_call: sip_aio.InboundCall) -> None:
        if self.on_incoming is None or self.media is None:
            sip_call.reject(480)
            return
        leg = InboundCall(
            sip_call,
            self.media,
            str(uuidlib.uuid4()),
            rtp_timeouts=(self.config.rtp_timeout_s, self.config.rtp_hold_timeout_s),
        )
        self._legs[leg.call_id] = leg
        leg.add_listener(self._on_leg_event(leg))
        self.on_incoming(leg)

    def _on_leg_event(self, leg: OutboundCall) -> Callable[[CallEvent], None]:
        def on_event(event: CallEvent) -> None:
            if isinstance(event, Terminated):
                # The SIP call lingers as long to absorb retransmissions; the leg with it.
                asyncio.get_running_loop().call_later(self.config.linger, self._forget, leg)

        return on_event

    def _forget(self, leg: OutboundCall) -> None:
        if self._legs.get(leg.call_id) is leg:
            del self._legs[leg.call_id]
        leg._release()
