"""The INVITE session, UAS side (RFC 3261 §13.3, §15), sans-I/O.

One :class:`ServerInviteSession` per inbound call. The endpoint creates it from an
out-of-dialog INVITE and reports the offer (:class:`sip.endpoint.IncomingCall`); the
application answers with :meth:`ServerInviteSession.ring` (180/183, early media SDP),
:meth:`~ServerInviteSession.answer` (2xx + SDP answer) or :meth:`~ServerInviteSession.reject`.
Like the UAC session it returns *actions* and takes time as ``now``:

- provisional and non-2xx final responses travel through the INVITE server transaction;
- the 2xx is retransmitted by this session, T1 doubling up to T2, until the ACK arrives; with
  no ACK after 64*T1 the session is confirmed-then-ended with BYE (§13.3.1.4);
- CANCEL before the final response ends the INVITE with 487 (§9.2);
- BYE from either side (§15.1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sip import causes
from sip._message import check_values
from sip._session import (
    Emit,
    RemoteSdp,
    SendRequest,
    SessionConfig,
    body_sdp,
    reason_cause,
    reason_header,
    safe_tag,
    session_expires,
)
from sip.dialog import Dialog, DialogError
from sip.events import Answered, Terminated
from sip.message import SipRequest, SipResponse, make_response, new_tag


@dataclass(frozen=True, slots=True)
class SendResponse:
    """Answer the INVITE (through its server transaction while it lives, §13.3.1.4)."""

    response: SipResponse
    retransmission: bool = False


ServerAction = SendResponse | SendRequest | RemoteSdp | Emit


@dataclass
class ServerInviteSession:
    """One inbound call's INVITE session. ``state``: proceeding | early | accepted (2xx
    sent, no ACK yet) | confirmed | terminated."""

    invite: SipRequest
    config: SessionConfig
    local_tag: str = field(default_factory=new_tag)
    state: str = "proceeding"
    dialog: Dialog | None = None
    final_status: int | None = None
    terminated: Terminated | None = None
    _ok: SipResponse | None = None  # our 2xx, retransmitted until the ACK
    _ok_interval: float = 0.0
    _ok_next: float | None = None
    _ok_give_up: float | None = None
    _bye_sent: bool = False
    #: ``offer_handler(offer)``: the caller's offer in a re-INVITE/UPDATE (None: a re-INVITE
    #: without SDP asks us to offer) -> our SDP; ``ValueError`` refuses it (488).
    offer_handler: Callable[[str | None], str] | None = None
    _offered_in_2xx: bool = False  #: our 2xx to a re-INVITE offered: the ACK brings the answer

    @property
    def call_id(self) -> str:
        return self.invite.call_id

    @property
    def offer(self) -> str | None:
        """The caller's SDP offer (None: an offerless INVITE; our 2xx then offers)."""
        return body_sdp(self.invite)

    @property
    def answered(self) -> bool:
        return self.state in ("accepted", "confirmed")

    # ---------------------------------------------------------------- the application

    def ring(self, now: float, status: int = 180, sdp: str | None = None) -> list[ServerAction]:
        """A provisional response (180 Ringing, 183 Session Progress with early media)."""
        if self.state not in ("proceeding", "early") or not 100 < status < 200:
            return []
        self._ensure_dialog(confirmed=False)
        self.state = "early"
        return [SendResponse(self._response(status, sdp))]

    def answer(self, now: float, sdp: str | None, status: int = 200) -> list[ServerAction]:
        """Accept the call: a 2xx with our SDP (§13.3.1.4), retransmitted until ACKed."""
        if self.state not in ("proceeding", "early") or not 200 <= status < 300:
            return []
        dialog = self._ensure_dialog(confirmed=True)
        dialog.state = "confirmed"
        self.state = "accepted"
        self.final_status = status
        self._ok = self._response(status, sdp)
        self._ok_interval = self.config.t1
        self._ok_next = now + self._ok_interval
        self._ok_give_up = now + 64 * self.config.t1
        return [SendResponse(self._ok)]

    def reject(
        self, now: float, status: int = 486, reason: str | None = None, source: str = "api"
    ) -> list[ServerAction]:
        """Refuse the call with a final non-2xx response (486 Busy Here, 603 Decline...)."""
        if self.state not in ("proceeding", "early") or status < 300:
            return []
        self.final_status = status
        response = make_response(self.invite, status, reason, to_tag=self.local_tag)
        response.add("User-Agent", self.config.user_agent)
        return [SendResponse(response), *self._terminate(now, causes.cause_from_status(status), status, response.reason, source)]

    def bye(self, now: float, cause: str = causes.NORMAL_CLEARING, source: str = "api") -> list[ServerAction]:
        """Hang up: BYE once answered (§15.1.1); before that, refuse the INVITE with 480."""
        if self.state in ("proceeding", "early"):
            return self.reject(now, 480, None, source)
        if self.dialog is None or self._bye_sent or self.state == "terminated":
            return []
        self._bye_sent = True
        self._ok_next = self._ok_give_up = None
        bye = self.dialog.create_request(
            "BYE", headers=[("Reason", reason_header(cause)), ("User-Agent", self.config.user_agent)]
        )
        self.dialog.state = "terminated"
        return [SendRequest(bye, self.dialog.next_hop()), *self._terminate(now, cause, None, "hangup", source)]

    # ---------------------------------------------------------------- from the caller

    def on_cancel(self, now: float) -> list[ServerAction]:
        """§9.2: a CANCEL that matched our INVITE before the final response: 487 to it."""
        if self.state not in ("proceeding", "early"):
            return []  # too late: the CANCEL still gets its 200, the call goes on
        self.final_status = 487
        response = make_response(self.invite, 487, None, to_tag=self.local_tag)
        response.add("User-Agent", self.config.user_agent)
        return [SendResponse(response), *self._terminate(now, causes.ORIGINATOR_CANCEL, 487, "cancelled", "caller")]

    def matches(self, request: SipRequest) -> bool:
        return (
            self.dialog is not None
            and request.call_id == self.call_id
            and safe_tag(request, "to") == self.local_tag
            and safe_tag(request, "from") == self.dialog.remote_tag
        )

    def on_request(self, request: SipRequest, now: float) -> tuple[SipResponse | None, list[ServerAction]]:
        """An in-dialog request from the caller; returns our response (None for ACK)."""
        method = request.method
        dialog = self.dialog
        if dialog is None or not self.matches(request):
            return (None if method == "ACK" else self._plain(request, 481)), []
        if method == "ACK":
            if self.state == "confirmed" and self._offered_in_2xx:
                # The ACK of a re-INVITE we answered with an offer carries the answer (§14.2).
                self._offered_in_2xx = False
                sdp = body_sdp(request)
                return None, ([RemoteSdp(sdp, early=False)] if sdp else [])
            if self.state != "accepted":
                return None, []
            self.state = "confirmed"
            self._ok_next = self._ok_give_up = None
            actions: list[ServerAction] = []
            sdp = body_sdp(request)
            if sdp:
                actions.append(RemoteSdp(sdp, early=False))  # the answer to our 2xx offer
            actions.append(Emit(Answered(now, self.final_status or 200)))
            return None, actions
        try:
            dialog.receive_request(request)
        except DialogError as exc:
            return self._plain(request, exc.status, exc.reason), []
        if method == "BYE":
            dialog.state = "terminated"
            response = self._plain(request, 200)
            if self.state == "terminated":
                return response, []
            cause = reason_cause(request) or causes.NORMAL_CLEARING
            return response, self._terminate(now, cause, None, "BYE", "caller")
        if method in ("OPTIONS", "INFO", "NOTIFY", "PRACK"):
            return self._plain(request, 200), []
        if method in ("INVITE", "UPDATE"):
            return self._on_offer(request), []
        response = self._plain(request, 501)
        response.add("Allow", self.config.allow)
        return response, []

    def _on_offer(self, request: SipRequest) -> SipResponse:
        """A re-INVITE or UPDATE from the caller (§14.2, RFC 3311): hold and resume, a codec
        change, or a session refresh (RFC 4028) with or without SDP."""
        if self.state != "confirmed":
            # Our 2xx is not ACKed yet: an offer now would cross ours (§14.2 glare).
            return self._plain(request, 491)
        offer = body_sdp(request)
        answer: str | None = None
        if offer is not None or request.method == "INVITE":
            if self.offer_handler is None:
                if offer is not None:
                    return self._plain(request, 488, "Not Acceptable Here (no media to offer)")
            else:
                try:
                    answer = self.offer_handler(offer)
                except ValueError as exc:
                    return self._plain(request, 488, f"Not Acceptable Here ({exc})")
        response = self._plain(request, 200)
        response.add("Contact", self.config.contact)
        response.add("Allow", self.config.allow)
        response.add("Supported", self.config.supported)
        se = session_expires(request)
        if se is not None:
            # RFC 4028 §9: the caller refreshed; it stays the refresher unless it says so.
            interval, refresher = se
            response.add("Session-Expires", f"{interval};refresher={refresher or 'uac'}")
            response.add("Require", "timer")
        if answer is not None:
            self._offered_in_2xx = offer is None and request.method == "INVITE"
            response.add("Content-Type", "application/sdp")
            response.body = answer.encode()
        return response

    # ---------------------------------------------------------------- the endpoint's calls

    def on_response(self, request: SipRequest, response: SipResponse, now: float) -> list[ServerAction]:
        return []  # the answer to our BYE: nothing more to do

    def on_timeout(self, request: SipRequest, now: float) -> list[ServerAction]:
        return []

    def on_unreachable(
        self, request: SipRequest, now: float, reason: str = ""
    ) -> list[ServerAction]:
        return []

    def on_transport_error(self, request: SipRequest, now: float) -> list[ServerAction]:
        return []

    def get_timer(self) -> float | None:
        return self._ok_next if self.state == "accepted" else None

    def handle_timer(self, now: float) -> list[ServerAction]:
        if self.state != "accepted" or self._ok is None or self._ok_next is None:
            return []
        if self._ok_give_up is not None and now >= self._ok_give_up:
            # §13.3.1.4: no ACK within 64*T1: confirm the dialog and end it.
            self.state = "confirmed"
            return self.bye(now, causes.RECOVERY_ON_TIMER_EXPIRE, "error")
        if now < self._ok_next:
            return []
        self._ok_interval = min(2 * self._ok_interval, self.config.t2)
        self._ok_next = min(now + self._ok_interval, self._ok_give_up or now + self._ok_interval)
        return [SendResponse(self._ok, retransmission=True)]

    # ---------------------------------------------------------------- internals

    def _ensure_dialog(self, *, confirmed: bool) -> Dialog:
        if self.dialog is None:
            self.dialog = Dialog.from_uas(self.invite, self.local_tag, confirmed=confirmed)
        return self.dialog

    def _response(self, status: int, sdp: str | None) -> SipResponse:
        response = make_response(self.invite, status, None, to_tag=self.local_tag)
        # §12.1.1: a dialog-creating response copies Record-Route and carries our Contact.
        # The 18x/2xx template: the lines ``add`` would append one by one (canonical names,
        # values checked at once; tests/unit/test_sip_templates.py compares the two).
        config = self.config
        lines = [("Record-Route", route) for route in self.invite.get_all("Record-Route")]
        lines += (("Contact", config.contact), ("User-Agent", config.user_agent))
        if status >= 200:
            lines += (("Allow", config.allow), ("Supported", config.supported))
        if sdp is not None:
            lines.append(("Content-Type", "application/sdp"))
            response.body = sdp.encode()
        check_values(lines)
        response.headers += lines
        return response

    def _plain(self, request: SipRequest, status: int, reason: str | None = None) -> SipResponse:
        response = make_response(request, status, reason)
        response.add("User-Agent", self.config.user_agent)
        return response

    def _terminate(self, now: float, cause: str, status: int | None, reason: str, source: str) -> list[ServerAction]:
        if self.state == "terminated":
            return []
        self.state = "terminated"
        self._ok_next = self._ok_give_up = None
        self.terminated = Terminated(now, cause, status if status is not None else self.final_status, reason, source)
        return [Emit(self.terminated)]
