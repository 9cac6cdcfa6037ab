"""The INVITE session, UAC side (RFC 3261 §13-15), sans-I/O.

One :class:`ClientInviteSession` per outbound call. It builds the requests the call needs
(INVITE and its retries after 401/407/3xx/422, ACK for 2xx, CANCEL, BYE, PRACK, session
refreshes) and digests the responses and in-dialog requests the shell hands it. It never
touches a socket or the clock: it returns *actions* for the shell to carry out, and time
comes in as ``now``.

Covered here:
- forking (§13.2.2.4): one early dialog per To tag; the first 2xx wins, any other 2xx is
  ACKed and then released with BYE;
- CANCEL (§9.1): never before a provisional response; a 2xx that crosses our CANCEL is ACKed
  and BYEd; a call whose INVITE never completes after CANCEL is ended after 64*T1;
- digest authentication for 401/407 on any request (one retry per challenge, nc counting in
  :class:`sip.auth.DigestClient`);
- 3xx redirects, bounded by ``max_redirects``; 422 Session Interval Too Small;
- reliable provisional responses (RFC 3262): PRACK once per RSeq;
- session timers (RFC 4028): every INVITE asks for one with us as refresher
  (``Session-Expires: n;refresher=uac``, ``Supported: timer``, a 422 is retried with its
  Min-SE); we refresh at half the interval with UPDATE when the callee allows it, else
  re-INVITE, and also when the callee's 2xx ignores the timer (a callee that vanished is
  found by the refresh). A refresh that fails (no answer, 408, 481) or a session the callee
  was to refresh and let expire ends with BYE and RECOVERY_ON_TIMER_EXPIRE (Q.850 102);
- requests from the callee: BYE, re-INVITE/UPDATE (hold, codec change, refresh), INFO (DTMF
  relay), OPTIONS, and 481/501/491 where they do not fit.

The module is longer than our ~600-line habit on purpose: everything that moves this state
machine stays in one file (the h11 rule); what the UAS session shares is in
:mod:`sip._session`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from sip import causes
from sip._message import check_values
from sip._session import (
    Action,
    Emit,
    RemoteSdp,
    SendAck,
    SendRequest,
    SessionConfig,
    allows,
    body_sdp,
    copy_request,
    has_option,
    header_int,
    reason_cause,
    reason_header,
    safe_tag,
    session_expires,
)
from sip.auth import Credentials, DigestClient, choose_challenge
from sip.dialog import Dialog, DialogError
from sip.events import (
    Answered,
    EarlyMedia,
    InfoDigit,
    Ringing,
    Terminated,
    Trying,
)
from sip.headers import NameAddr
from sip.message import SipRequest, SipResponse, make_response, new_tag

__all__ = [
    "Action",
    "ClientInviteSession",
    "Emit",
    "RemoteSdp",
    "SendAck",
    "SendRequest",
    "SessionConfig",
]


@dataclass
class _Pending:
    """A request of ours awaiting its final response, with what to do about auth."""

    request: SipRequest
    auth_tries: int = 0


@dataclass
class ClientInviteSession:
    """One outbound call's INVITE session. Build with :meth:`create`, then :meth:`start`."""

    invite: SipRequest
    config: SessionConfig
    credentials: Credentials | None = None
    offer_handler: Callable[[str | None], str] | None = None  # re-INVITE offer -> our answer
    state: str = "init"  # init|calling|proceeding|early|confirmed|terminated
    dialogs: dict[str, Dialog] = field(default_factory=dict)
    dialog: Dialog | None = None  # the confirmed one
    final_status: int | None = None
    terminated: Terminated | None = None
    _digest: DigestClient = field(default_factory=DigestClient)
    _auth_tries: int = 0
    _redirects: int = 0
    _tried_targets: set[str] = field(default_factory=set)
    _provisional_seen: bool = False
    _cancel_pending: tuple[str, str] | None = None  # (cause, source) waiting for a 1xx
    _cancel_sent_at: float | None = None
    _cancel_cause: tuple[str, str] | None = None
    _acks: dict[str, SendAck] = field(
        default_factory=dict
    )  # remote tag -> ACK (re-sent on 2xx retx)
    _prack_seen: set[tuple[str, int]] = field(default_factory=set)
    _pending: dict[tuple[int, str], _Pending] = field(default_factory=dict)
    _refresh_at: float | None = None
    _expire_at: float | None = None
    _session_interval: int | None = None
    _we_refresh: bool = False
    _reinvite_in_progress: bool = False
    _update_in_progress: bool = False
    _peer_allows_update: bool = False
    _local_sdp: str | None = None
    _bye_sent: bool = False
    _bye_ending: tuple[float, str, str] | None = None  # (when, cause, source) of our BYE
    _bye_cseq: int | None = None  # CSeq of our live BYE (a challenge moves it on)

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(
        cls,
        *,
        request_uri: str,
        from_uri: str,
        to_uri: str,
        call_id: str,
        config: SessionConfig,
        caller_name: str | None = None,
        sdp: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        credentials: Credentials | None = None,
        offer_handler: Callable[[str | None], str] | None = None,
    ) -> ClientInviteSession:
        """Build the initial INVITE (§8.1.1): From with a fresh tag and the caller name as
        display name, To without tag, CSeq 1, Contact, Supported/Allow, session timer."""
        invite = SipRequest("INVITE", request_uri)
        from_na = NameAddr.parse(from_uri)
        from_na.display_name = caller_name or from_na.display_name
        from_na.params["tag"] = new_tag()
        # The INVITE's template: the lines ``add`` would append one by one (canonical names,
        # values checked at once; a test compares the two).
        lines = [
            ("Max-Forwards", "70"),
            ("From", str(from_na)),
            ("To", str(NameAddr.parse(to_uri))),
            ("Call-ID", call_id),
            ("CSeq", "1 INVITE"),
            ("Contact", config.contact),
            ("User-Agent", config.user_agent),
            ("Allow", config.allow),
            ("Supported", config.supported),
        ]
        if config.session_expires:
            # RFC 4028 §7.1: we ask for the timer and to be the refresher ourselves.
            lines.append(("Session-Expires", f"{config.session_expires};refresher=uac"))
            lines.append(("Min-SE", str(min(config.min_se, config.session_expires))))
        check_values(lines)
        invite.headers = lines
        for name, value in headers or ():
            invite.add(name, value)
        if sdp is not None:
            invite.add("Content-Type", "application/sdp")
            invite.body = sdp.encode()
        session = cls(
            invite=invite, config=config, credentials=credentials, offer_handler=offer_handler
        )
        session._local_sdp = sdp
        return session

    @property
    def call_id(self) -> str:
        return self.invite.call_id

    @property
    def answered(self) -> bool:
        return self.dialog is not None

    # ---------------------------------------------------------------- the shell's calls

    def start(self, now: float) -> list[Action]:
        self.state = "calling"
        self._tried_targets.add(self.invite.uri)
        return [self._send(self.invite), Emit(Trying(now))]

    def _send(self, request: SipRequest, next_hop: str | None = None) -> SendRequest:
        self._pending[(request.cseq[0], request.method)] = _Pending(request)
        if next_hop is None:
            next_hop = self._next_hop_for(request)
        return SendRequest(request, next_hop)

    def _next_hop_for(self, request: SipRequest) -> str:
        routes = request.get_all("Route")
        if routes:
            return str(NameAddr.parse(routes[0]).uri)
        return request.uri

    def on_response(self, request: SipRequest, response: SipResponse, now: float) -> list[Action]:
        """A response (or RFC 6026 2xx retransmission) to one of our requests."""
        if request.method == "INVITE" and request.cseq[0] == self.invite.cseq[0]:
            return self._on_invite_response(response, now)
        key = (request.cseq[0], request.method)
        pending = self._pending.get(key)
        if response.status >= 200:
            self._pending.pop(key, None)
        if response.status in (401, 407) and pending is not None:
            retry = self._authenticated_retry(pending.request, response, tries=pending.auth_tries)
            if retry is not None:
                self._pending[(retry.request.cseq[0], retry.request.method)].auth_tries = (
                    pending.auth_tries + 1
                )
                if self._is_our_bye(request):
                    self._bye_cseq = retry.request.cseq[0]
                return [retry]
        if request.method in ("INVITE", "UPDATE"):  # our session refresh
            return self._on_refresh_response(request, response, now)
        if response.status >= 200 and self._is_our_bye(request):
            return self._bye_done(f"hangup ({response.status} to BYE)")
        return []  # CANCEL, PRACK, a released fork's BYE...: nothing further to do

    def on_timeout(self, request: SipRequest, now: float) -> list[Action]:
        """Timer B/F fired, or the transport failed, for one of our requests."""
        self._pending.pop((request.cseq[0], request.method), None)
        if request.method == "INVITE" and request is self.invite:
            if self.state in ("calling", "proceeding", "early") and self.dialog is None:
                if self._cancel_cause is not None or self._cancel_pending is not None:
                    cause, source = self._cancel_cause or self._cancel_pending  # type: ignore[misc]
                    return self._terminate(now, cause, 487, "cancelled", source)
                return self._terminate(
                    now, causes.RECOVERY_ON_TIMER_EXPIRE, 408, "no response", "error"
                )
            return []
        if self._is_our_bye(request):
            return self._bye_done("hangup (BYE not answered)")
        if request.method in ("INVITE", "UPDATE") and self.dialog is not None:
            # RFC 4028 §10 / RFC 5057: a refresh that gets no answer ends the session.
            self._reinvite_in_progress = self._update_in_progress = False
            return self.bye(now, causes.RECOVERY_ON_TIMER_EXPIRE, "error")
        return []

    def on_transport_error(self, request: SipRequest, now: float) -> list[Action]:
        """Sending ``request`` failed (an ICMP port/host unreachable, a refused TCP
        connection). RFC 3261 §8.1.3.1: treated as a 503 from the peer; for the initial
        INVITE the call ends at once as DESTINATION_OUT_OF_ORDER (Q.850 27: the destination's
        interface is not working); in-dialog requests fail as on a timeout."""
        if request.method == "INVITE" and request is self.invite and self.dialog is None:
            cancelled = self._cancel_cause is not None or self._cancel_pending is not None
            if self.state in ("calling", "proceeding", "early") and not cancelled:
                self._pending.pop((request.cseq[0], request.method), None)
                return self._terminate(
                    now, causes.TRANSPORT_FAILURE, 503, "transport error", "error"
                )
        return self.on_timeout(request, now)

    def on_unreachable(
        self, request: SipRequest, now: float, reason: str = "destination unreachable"
    ) -> list[Action]:
        """The next hop of ``request`` could not be resolved or reached (``reason`` says
        why: the name that did not resolve...; it becomes the ``Terminated`` reason)."""
        if request is self.invite and self.dialog is None:
            return self._terminate(now, causes.NO_ROUTE_DESTINATION, None, reason, "error")
        return self.on_timeout(request, now)

    def cancel(
        self, now: float, cause: str = causes.ORIGINATOR_CANCEL, source: str = "caller"
    ) -> list[Action]:
        """Abandon the call before it is answered (§9.1), or hang up if it already was."""
        if self.state == "terminated":
            return []
        if self.dialog is not None:
            return self.bye(now, cause, source)
        if self._cancel_sent_at is not None or self._cancel_pending is not None:
            return []
        if not self._provisional_seen:
            # §9.1: a CANCEL must not be sent before a provisional response arrives. The
            # call is over for the user now; the INVITE transaction lives on, and a late
            # 1xx gets our CANCEL (a late 2xx gets ACK and BYE).
            self._cancel_pending = (cause, source)
            return self._terminate(now, cause, None, "cancelled before any response", source)
        return self._send_cancel(now, cause, source)

    def _send_cancel(self, now: float, cause: str, source: str) -> list[Action]:
        inv = self.invite
        cancel = SipRequest("CANCEL", inv.uri)
        cancel.add("Via", inv.get_all("Via")[0])  # §9.1: same branch as the INVITE
        for route in inv.get_all("Route"):
            cancel.add("Route", route)
        cancel.add("Max-Forwards", "70")
        cancel.add("From", inv.get("From") or "")
        cancel.add("To", inv.get("To") or "")
        cancel.add("Call-ID", inv.call_id)
        cancel.add("CSeq", f"{inv.cseq[0]} CANCEL")
        cancel.add("Reason", reason_header(cause))
        cancel.add("User-Agent", self.config.user_agent)
        self._cancel_sent_at = now
        self._cancel_cause = (cause, source)
        self._cancel_pending = None
        return [self._send(cancel, self._next_hop_for(inv))]

    def bye(
        self, now: float, cause: str = causes.NORMAL_CLEARING, source: str = "caller"
    ) -> list[Action]:
        """End an answered call (§15.1.1). The call ends (:class:`Terminated`, dated now)
        when the BYE transaction does: its final response (after a 401/407 the BYE is sent
        again with our credentials), its timeout or a transport error."""
        if self.dialog is None:
            return self.cancel(now, cause, source)
        if self._bye_sent:
            return []
        self._bye_sent = True
        self._refresh_at = self._expire_at = None
        send = self._bye_for(self.dialog, cause)
        if self.state == "terminated":
            return [send]
        self._bye_ending = (now, cause, source)
        self._bye_cseq = send.request.cseq[0]
        return [send]

    @property
    def hanging_up(self) -> bool:
        """Our BYE is out and its transaction not over: the call ends when it is."""
        return self._bye_ending is not None and self.state != "terminated"

    def abandon(self, now: float) -> list[Action]:
        """The user agent is closing: a call still waiting for its BYE's answer ends now."""
        return self._bye_done("hangup (BYE abandoned at close)") if self.hanging_up else []

    def _is_our_bye(self, request: SipRequest) -> bool:
        return (
            self._bye_ending is not None
            and request.method == "BYE"
            and request.cseq[0] == self._bye_cseq
            and self.dialog is not None
            and safe_tag(request, "to") == self.dialog.remote_tag
        )

    def _bye_done(self, reason: str) -> list[Action]:
        """Our BYE's transaction is over: the call ends, dated when we hung up."""
        assert self._bye_ending is not None
        at, cause, source = self._bye_ending
        return self._terminate(at, cause, None, reason, source)

    def _bye_for(self, dialog: Dialog, cause: str) -> SendRequest:
        bye = dialog.create_request(
            "BYE",
            headers=[("Reason", reason_header(cause)), ("User-Agent", self.config.user_agent)],
        )
        dialog.state = "terminated"
        return self._send(bye, dialog.next_hop())

    # --------------------------------------------------------------- INVITE responses

    def _on_invite_response(self, response: SipResponse, now: float) -> list[Action]:
        status = response.status
        if status < 200:
            return self._on_provisional(response, now)
        if status < 300:
            return self._on_2xx(response, now)
        # Final non-2xx: the transaction ACKs it. Retries first, then the end of the call.
        self._pending.pop((self.invite.cseq[0], "INVITE"), None)
        if self.state == "terminated":
            return []
        if status in (401, 407) and self._cancel_sent_at is None:
            retry = self._authenticated_retry(self.invite, response, is_invite=True)
            if retry is not None:
                return [retry]
        if 300 <= status < 400 and self._cancel_sent_at is None and self._cancel_pending is None:
            retry = self._redirect(response)
            if retry is not None:
                return [retry]
        if status == 422 and self._cancel_sent_at is None:
            retry = self._session_interval_retry(response)
            if retry is not None:
                return [retry]
        self.final_status = status
        if self._cancel_cause is not None or self._cancel_pending is not None:
            cause, source = self._cancel_cause or self._cancel_pending  # type: ignore[misc]
            return self._terminate(now, cause, status, response.reason, source)
        return self._terminate(
            now, causes.cause_from_status(status), status, response.reason, "callee"
        )

    def _on_provisional(self, response: SipResponse, now: float) -> list[Action]:
        actions: list[Action] = []
        first_provisional = not self._provisional_seen
        self._provisional_seen = True
        if self._cancel_pending is not None:
            cause, source = self._cancel_pending
            return self._send_cancel(now, cause, source)
        if self.state == "terminated":
            return actions
        if response.status == 100:
            return actions
        tag = safe_tag(response, "to")
        dialog = None
        if tag:
            dialog = self.dialogs.get(tag)
            if dialog is None:
                with contextlib.suppress(DialogError):
                    dialog = Dialog.from_uac_response(self.invite, response)
                    self.dialogs[tag] = dialog
            else:
                dialog.update_from_response(response)
        # RFC 3262 §4: a reliable provisional response is PRACKed once per RSeq.
        if dialog is not None and has_option(response, "Require", "100rel"):
            rseq_text = response.get("RSeq")
            if rseq_text and rseq_text.strip().isdigit():
                rseq = int(rseq_text)
                if (tag or "", rseq) in self._prack_seen:
                    return actions  # a retransmission of a 1xx we already PRACKed
                self._prack_seen.add((tag or "", rseq))
                prack = dialog.create_request(
                    "PRACK",
                    headers=[
                        ("RAck", f"{rseq} {self.invite.cseq[0]} INVITE"),
                        ("User-Agent", self.config.user_agent),
                    ],
                )
                actions.append(self._send(prack, dialog.next_hop()))
        sdp = body_sdp(response)
        self.state = "early" if tag else "proceeding"
        if sdp:
            actions.append(RemoteSdp(sdp, early=True))
            actions.append(Emit(EarlyMedia(now, response.status, tag)))
        elif first_provisional or response.status in (180, 181, 182, 183):
            actions.append(Emit(Ringing(now, response.status, response.reason, tag)))
        return actions

    def _on_2xx(self, response: SipResponse, now: float) -> list[Action]:
        tag = safe_tag(response, "to") or ""
        if tag in self._acks:
            return [self._acks[tag]]  # 2xx retransmission: the same ACK again
        dialog = self.dialogs.get(tag)
        if dialog is None:
            try:
                dialog = Dialog.from_uac_response(self.invite, response)
            except DialogError:
                # A 2xx without To tag is broken; ACK it as best we can and give up.
                return self._terminate(
                    now, causes.PROTOCOL_ERROR, response.status, "2xx without To tag", "error"
                )
            self.dialogs[tag] = dialog
        dialog.update_from_response(response)
        ack = SendAck(
            dialog.create_ack(
                self.invite.cseq[0], headers=[("User-Agent", self.config.user_agent)]
            ),
            dialog.next_hop(),
        )
        self._acks[tag] = ack
        actions: list[Action] = [ack]
        if self.dialog is not None or self.state == "terminated":
            # §13.2.2.4: a second 2xx from another fork, or one that crossed our CANCEL:
            # acknowledge it, then release that dialog.
            actions.append(self._bye_for(dialog, causes.NORMAL_CLEARING))
            if self.dialog is None and self.state != "terminated":
                cause, source = self._cancel_cause or (causes.ORIGINATOR_CANCEL, "caller")
                actions += self._terminate(now, cause, 487, "cancelled", source)
            return actions
        if self._cancel_sent_at is not None or self._cancel_pending is not None:
            self.dialog = dialog
            cause, source = self._cancel_cause or self._cancel_pending  # type: ignore[misc]
            actions.append(self._bye_for(dialog, cause))
            self._bye_sent = True
            actions += self._terminate(now, cause, 487, "cancelled", source)
            return actions
        self.dialog = dialog
        self.state = "confirmed"
        self.final_status = response.status
        self._pending.pop((self.invite.cseq[0], "INVITE"), None)
        for other_tag, other in self.dialogs.items():
            if other_tag != tag:
                other.state = "terminated"
        self._arm_session_timer(response, now)
        sdp = body_sdp(response)
        if sdp:
            actions.append(RemoteSdp(sdp, early=False))
        actions.append(Emit(Answered(now, response.status)))
        return actions

    def _authenticated_retry(
        self, request: SipRequest, response: SipResponse, *, is_invite: bool = False, tries: int = 0
    ) -> SendRequest | None:
        """Re-send ``request`` with credentials for the 401/407 challenge (RFC 3261 §22.2).

        One retry per challenge; a second challenge is only answered when it says
        ``stale=true`` (the nonce expired, the password was right)."""
        if self.credentials is None:
            return None
        header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        challenge = choose_challenge(response.get_all(header), realm=self.credentials.realm)
        if challenge is None:
            return None
        if is_invite:
            tries = self._auth_tries
        if tries >= 1 and not challenge.stale or tries >= 3:
            return None
        retry = copy_request(request, drop=("Via", "Authorization", "Proxy-Authorization"))
        seq = (
            (self.dialog.local_seq + 1) if (self.dialog and not is_invite) else request.cseq[0] + 1
        )
        if self.dialog and not is_invite:
            self.dialog.local_seq = seq
        retry.set("CSeq", f"{seq} {request.method}")
        auth_name = "Authorization" if response.status == 401 else "Proxy-Authorization"
        retry.add(
            auth_name,
            self._digest.authorization(
                challenge, self.credentials, request.method, request.uri, request.body
            ),
        )
        if is_invite:
            self._auth_tries += 1
            self.invite = retry
        return self._send(retry)

    def _redirect(self, response: SipResponse) -> SendRequest | None:
        """§8.1.3.4: try the Contacts of a 3xx, highest q first, each once, within bounds."""
        if self._redirects >= self.config.max_redirects:
            return None
        contacts: list[tuple[float, str]] = []
        for value in response.get_all("Contact"):
            try:
                na = NameAddr.parse(value)
            except ValueError:
                continue
            q = 1.0
            with contextlib.suppress(TypeError, ValueError):
                q = float(na.params.get("q") or 1.0)
            contacts.append((-q, str(na.uri)))
        for _, uri in sorted(contacts):
            if uri in self._tried_targets or not uri.lower().startswith(("sip:", "sips:")):
                continue
            self._redirects += 1
            self._tried_targets.add(uri)
            retry = copy_request(
                self.invite, drop=("Via", "Authorization", "Proxy-Authorization", "Route")
            )
            retry.uri = uri
            retry.set("CSeq", f"{self.invite.cseq[0] + 1} INVITE")
            self.invite = retry
            self._provisional_seen = False
            self.state = "calling"
            return self._send(retry)
        return None

    def _session_interval_retry(self, response: SipResponse) -> SendRequest | None:
        """RFC 4028 §7.4: 422 carries the smallest interval the peer accepts."""
        min_se = response.get("Min-SE")
        if not min_se or "Session-Expires" not in self.invite:
            return None
        try:
            interval = int(min_se.split(";")[0])
        except ValueError:
            return None
        current = int((self.invite.get("Session-Expires") or "0").split(";")[0] or 0)
        if interval <= current:
            return None
        retry = copy_request(self.invite, drop=("Via",))
        retry.set("Session-Expires", f"{interval};refresher=uac")
        retry.set("Min-SE", str(interval))
        retry.set("CSeq", f"{self.invite.cseq[0] + 1} INVITE")
        self.invite = retry
        return self._send(retry)

    # ---------------------------------------------------------------- session timers

    def _arm_session_timer(self, response: SipResponse, now: float) -> None:
        self._peer_allows_update = allows(response, "UPDATE")
        se = session_expires(response)
        if se is None:
            # RFC 4028 §7.2: the callee does not do session timers, so the session does not
            # expire; we asked for one and keep refreshing at our interval all the same
            # (plain re-INVITE/UPDATE any UA answers): a refresh that fails ends a call whose
            # callee is gone.
            if not self.config.session_expires:
                return
            se = (self.config.session_expires, "uac")
        interval, refresher = se
        if interval <= 0:
            return
        self._session_interval = interval
        self._we_refresh = refresher in (None, "uac")
        self._rearm_session_timer(now)

    def _rearm_session_timer(self, now: float) -> None:
        interval = self._session_interval
        if interval is None:
            return
        if self._we_refresh:
            self._refresh_at = now + interval / 2
            self._expire_at = None
        else:
            # §10: the side that does not refresh sends BYE shortly before expiry.
            self._refresh_at = None
            self._expire_at = now + interval - min(32, interval / 3)

    def get_timer(self) -> float | None:
        candidates = [t for t in (self._refresh_at, self._expire_at) if t is not None]
        if self._cancel_sent_at is not None and self.state != "terminated":
            candidates.append(self._cancel_sent_at + 64 * self.config.t1)
        return min(candidates) if candidates else None

    def handle_timer(self, now: float) -> list[Action]:
        if self.state == "terminated":
            self._refresh_at = self._expire_at = None
            return []
        if (
            self._cancel_sent_at is not None
            and self.dialog is None
            and now >= self._cancel_sent_at + 64 * self.config.t1
        ):
            cause, source = self._cancel_cause or (causes.ORIGINATOR_CANCEL, "caller")
            return self._terminate(now, cause, None, "no final response after CANCEL", source)
        if self._expire_at is not None and now >= self._expire_at:
            self._expire_at = None
            return self.bye(now, causes.RECOVERY_ON_TIMER_EXPIRE, "error")
        if self._refresh_at is not None and now >= self._refresh_at and self.dialog is not None:
            self._refresh_at = None
            if self._reinvite_in_progress or self._update_in_progress:
                self._refresh_at = now + 2
                return []
            return [self._session_refresh()]
        return []

    def _session_refresh(self) -> SendRequest:
        """RFC 4028 §7.4: UPDATE (no SDP: nothing to renegotiate) when the callee allows
        it, else a re-INVITE with our last SDP."""
        assert self.dialog is not None
        min_se = min(self.config.min_se, self._session_interval or self.config.min_se)
        headers = [
            ("Contact", self.config.contact),
            ("User-Agent", self.config.user_agent),
            ("Supported", self.config.supported),
            ("Session-Expires", f"{self._session_interval};refresher=uac"),
            ("Min-SE", str(min_se)),
        ]
        if self._peer_allows_update:
            update = self.dialog.create_request("UPDATE", headers=headers)
            self._update_in_progress = True
            return self._send(update, self.dialog.next_hop())
        body = b""
        if self._local_sdp:
            headers.append(("Content-Type", "application/sdp"))
            body = self._local_sdp.encode()
        reinvite = self.dialog.create_request("INVITE", headers=headers, body=body)
        self._reinvite_in_progress = True
        return self._send(reinvite, self.dialog.next_hop())

    def _on_refresh_response(
        self, request: SipRequest, response: SipResponse, now: float
    ) -> list[Action]:
        """The answer to our session refresh (re-INVITE or UPDATE)."""
        if response.status < 200 or self.dialog is None or self.state == "terminated":
            return []
        if request.method == "INVITE":
            self._reinvite_in_progress = False
        else:
            self._update_in_progress = False
        status = response.status
        if status < 300:
            actions: list[Action] = []
            if request.method == "INVITE":
                self.dialog.update_from_response(response, method="INVITE")
                ack = self.dialog.create_ack(
                    request.cseq[0], headers=[("User-Agent", self.config.user_agent)]
                )
                actions.append(SendAck(ack, self.dialog.next_hop()))
            se = session_expires(response)
            if se is not None:
                self._session_interval = se[0]
                self._we_refresh = se[1] in (None, "uac")
            self._rearm_session_timer(now)
            return actions
        if status in (481, 408):
            # RFC 4028 §10, RFC 5057 §5.1: the refresh failed, the dialog is gone.
            return self.bye(now, causes.RECOVERY_ON_TIMER_EXPIRE, "error")
        if status == 491:
            self._refresh_at = now + 2.1  # §14.1: retry after a random wait (2.1-4 s for the owner)
        elif status == 422 and (min_se := header_int(response, "Min-SE")) is not None:
            # RFC 4028 §7.4: the interval is too small for the callee: at once with its Min-SE.
            self._session_interval = max(min_se, self._session_interval or 0)
            self._refresh_at = now
        elif request.method == "UPDATE" and status in (405, 501):
            self._peer_allows_update = False  # it said Allow: UPDATE, but no: re-INVITE now
            self._refresh_at = now
        else:
            self._rearm_session_timer(now)
        return []

    # ------------------------------------------------------- requests from the callee

    def matches(self, request: SipRequest) -> bool:
        """Does this in-dialog request belong to one of our dialogs?"""
        tag = safe_tag(request, "from")
        to_tag = safe_tag(request, "to")
        return (
            request.call_id == self.call_id
            and tag in self.dialogs
            and to_tag == self.dialogs[tag].local_tag
        )

    def on_request(
        self, request: SipRequest, now: float
    ) -> tuple[SipResponse | None, list[Action]]:
        """An in-dialog request from the callee; returns our response (None for ACK)."""
        method = request.method
        tag = safe_tag(request, "from") or ""
        dialog = self.dialogs.get(tag)
        if dialog is None or dialog.state == "terminated" and method != "BYE":
            return (None if method == "ACK" else self._response(request, 481), [])
        if method == "ACK":
            sdp = body_sdp(request)
            return None, ([RemoteSdp(sdp, early=False)] if sdp else [])
        try:
            dialog.receive_request(request)
        except DialogError as exc:
            return self._response(request, exc.status, exc.reason), []
        if method == "BYE":
            return self._on_bye(request, dialog, now)
        if method in ("INVITE", "UPDATE"):
            return self._on_offer(request, dialog, now)
        if method == "INFO":
            return self._on_info(request, now)
        if method in ("OPTIONS", "NOTIFY", "PRACK"):
            response = self._response(request, 200)
            if method == "OPTIONS":
                response.add("Allow", self.config.allow)
                response.add("Accept", "application/sdp")
                response.add("Supported", self.config.supported)
            return response, []
        if method == "CANCEL":
            return self._response(request, 481), []
        response = self._response(request, 501)
        response.add("Allow", self.config.allow)
        return response, []

    def _on_bye(
        self, request: SipRequest, dialog: Dialog, now: float
    ) -> tuple[SipResponse, list[Action]]:
        response = self._response(request, 200)
        dialog.state = "terminated"
        if self.state == "terminated":
            return response, []
        if self.dialog is not dialog:
            # A BYE in an early dialog (some UASs do it instead of a final response):
            # that fork is over; the call goes on while other forks may still answer.
            if any(d.state != "terminated" for d in self.dialogs.values()):
                return response, []
            return response, self._terminate(now, causes.NORMAL_CLEARING, None, "BYE", "callee")
        if self._bye_ending is not None:
            return response, self._bye_done("hangup (BYEs crossed)")  # ours came first
        cause = reason_cause(request) or causes.NORMAL_CLEARING
        return response, self._terminate(now, cause, None, "BYE", "callee")

    def _on_offer(
        self, request: SipRequest, dialog: Dialog, now: float
    ) -> tuple[SipResponse, list[Action]]:
        """A re-INVITE or UPDATE from the callee: hold/resume, codec change, refresh (§14.2)."""
        if request.method == "INVITE" and self._reinvite_in_progress:
            return self._response(request, 491), []  # §14.2 glare
        offer = body_sdp(request)
        answer: str | None = None
        if self.offer_handler is not None and (offer is not None or request.method == "INVITE"):
            try:
                answer = self.offer_handler(offer)
            except ValueError as exc:
                return self._response(request, 488, f"Not Acceptable Here ({exc})"), []
        response = self._response(request, 200)
        response.add("Contact", self.config.contact)
        response.add("Allow", self.config.allow)
        response.add("Supported", self.config.supported)
        se = session_expires(request)
        if se is not None:
            # §9: the peer refreshed; it stays the refresher unless it says otherwise.
            interval, refresher = se
            self._session_interval = interval
            self._we_refresh = refresher == "uas"
            response.add("Session-Expires", f"{interval};refresher={refresher or 'uac'}")
            response.add("Require", "timer")
        if self._session_interval is not None:
            self._rearm_session_timer(now)
        if answer is not None:
            self._local_sdp = answer
            response.add("Content-Type", "application/sdp")
            response.body = answer.encode()
        return response, []

    def _on_info(self, request: SipRequest, now: float) -> tuple[SipResponse, list[Action]]:
        """SIP INFO DTMF (application/dtmf-relay, application/dtmf), as PBXs send it."""
        ctype = (request.get("Content-Type") or "").split(";")[0].strip().lower()
        actions: list[Action] = []
        body = request.body.decode("utf-8", "replace")
        digit = None
        duration = 250
        if ctype == "application/dtmf-relay":
            for line in body.splitlines():
                name, _, value = line.partition("=")
                if name.strip().lower() == "signal":
                    digit = value.strip()
                elif name.strip().lower() == "duration" and value.strip().isdigit():
                    duration = int(value.strip())
        elif ctype == "application/dtmf":
            digit = body.strip()
        if digit:
            digit = {"10": "*", "11": "#"}.get(digit, digit).upper()
            if len(digit) == 1 and digit in "0123456789*#ABCD":
                actions.append(Emit(InfoDigit(now, digit, duration)))
        return self._response(request, 200), actions

    def _response(self, request: SipRequest, status: int, reason: str | None = None) -> SipResponse:
        response = make_response(request, status, reason)
        response.add("User-Agent", self.config.user_agent)
        return response

    # --------------------------------------------------------------------- the end

    def _terminate(
        self, now: float, cause: str, status: int | None, reason: str, source: str
    ) -> list[Action]:
        if self.state == "terminated":
            return []
        self.state = "terminated"
        self._refresh_at = self._expire_at = None
        self.terminated = Terminated(
            now, cause, status if status is not None else self.final_status, reason, source
        )
        return [Emit(self.terminated)]
