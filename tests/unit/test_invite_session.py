"""The UAC INVITE session and dialogs, sans-I/O: plain messages in, actions out, fake clock."""

from __future__ import annotations

from sip import causes
from sip.auth import Credentials
from sip.dialog import Dialog
from sip.events import Answered, EarlyMedia, InfoDigit, Ringing, Terminated
from sip.invite import ClientInviteSession, Emit, RemoteSdp, SendAck, SendRequest, SessionConfig
from sip.message import SipRequest, SipResponse, make_response

CFG = SessionConfig(contact="<sip:softswitch@127.0.0.1:5060>", session_expires=1800)
SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


def new_session(**kw) -> ClientInviteSession:
    s = ClientInviteSession.create(
        request_uri="sip:bob@127.0.0.1:5062",
        from_uri="sip:1000@127.0.0.1",
        to_uri="sip:bob@127.0.0.1:5062",
        call_id="c1@test",
        config=CFG,
        caller_name="Alice",
        sdp=SDP,
        **kw,
    )
    actions = s.start(0.0)
    req = actions[0].request
    req.prepend("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1;rport")
    return s


def reply(
    s: ClientInviteSession, status: int, tag: str | None = "t1", *, sdp: bool = False, headers=()
) -> SipResponse:
    r = make_response(s.invite, status, to_tag=tag)
    r.add("Contact", f"<sip:bob@127.0.0.1:5062;tag={tag}>" if tag else "<sip:bob@127.0.0.1:5062>")
    for name, value in headers:
        r.add(name, value)
    if sdp:
        r.add("Content-Type", "application/sdp")
        r.body = SDP.encode()
    return r


def events(actions) -> list:
    return [a.event for a in actions if isinstance(a, Emit)]


def test_initial_invite_has_what_the_rfc_asks():
    s = new_session()
    inv = s.invite
    assert inv.method == "INVITE" and inv.cseq == (1, "INVITE")
    assert '"Alice"' in inv.get("From") and "tag=" in inv.get("From")
    assert "tag=" not in inv.get("To")
    assert "100rel" in inv.get("Supported") and "timer" in inv.get("Supported")
    assert inv.get("Session-Expires") == "1800;refresher=uac" and inv.get("Min-SE") == "90"
    assert inv.get("Max-Forwards") == "70"
    assert inv.body.decode() == SDP


def test_ringing_then_answer_acks_and_confirms():
    s = new_session()
    ev = events(s.on_response(s.invite, reply(s, 180), 0.1))
    assert isinstance(ev[0], Ringing) and ev[0].to_tag == "t1"
    actions = s.on_response(s.invite, reply(s, 200, sdp=True), 1.0)
    acks = [a for a in actions if isinstance(a, SendAck)]
    assert len(acks) == 1
    ack = acks[0].request
    assert (
        ack.method == "ACK"
        and ack.cseq == (1, "ACK")
        and ack.uri == "sip:bob@127.0.0.1:5062;tag=t1"
    )
    assert any(isinstance(a, RemoteSdp) and not a.early for a in actions)
    assert any(isinstance(e, Answered) for e in events(actions))
    assert s.state == "confirmed" and s.dialog is not None
    # A retransmitted 2xx gets the very same ACK again and nothing else.
    again = s.on_response(s.invite, reply(s, 200, sdp=True), 1.5)
    assert [type(a) for a in again] == [SendAck] and again[0].request is ack


def test_183_with_sdp_is_early_media():
    s = new_session()
    actions = s.on_response(s.invite, reply(s, 183, sdp=True), 0.1)
    assert any(isinstance(a, RemoteSdp) and a.early for a in actions)
    assert isinstance(events(actions)[0], EarlyMedia)


def test_busy_ends_with_user_busy():
    s = new_session()
    ev = events(s.on_response(s.invite, reply(s, 486), 0.1))
    assert ev == [Terminated(0.1, causes.USER_BUSY, 486, "Busy Here", "callee")]


def test_cancel_waits_for_a_provisional_response():
    s = new_session()
    early = s.cancel(0.05)  # §9.1: nothing received yet, so no CANCEL on the wire...
    assert not [a for a in early if isinstance(a, SendRequest)]
    assert (
        events(early)[0].cause == causes.ORIGINATOR_CANCEL
    )  # ...but the call is over for the user
    actions = s.on_response(s.invite, reply(s, 100, tag=None), 0.1)
    cancels = [a.request for a in actions if isinstance(a, SendRequest)]
    assert cancels and cancels[0].method == "CANCEL"
    assert cancels[0].get_all("Via")[0] == s.invite.get_all("Via")[0]
    assert cancels[0].cseq == (1, "CANCEL")
    assert events(s.on_response(s.invite, reply(s, 487), 0.2)) == []  # reported once only


def test_2xx_crossing_cancel_is_acked_then_byed():
    s = new_session()
    s.on_response(s.invite, reply(s, 180), 0.1)
    s.cancel(0.2, causes.NO_ANSWER, "timeout")
    actions = s.on_response(s.invite, reply(s, 200, sdp=True), 0.3)
    kinds = [
        (type(a).__name__, getattr(getattr(a, "request", None), "method", None)) for a in actions
    ]
    assert ("SendAck", "ACK") in kinds and ("SendRequest", "BYE") in kinds
    end = events(actions)[-1]
    assert end.cause == causes.NO_ANSWER and end.hangup_source == "timeout"


def test_forking_second_2xx_is_acked_and_released():
    s = new_session()
    s.on_response(s.invite, reply(s, 180, tag="a"), 0.1)
    s.on_response(s.invite, reply(s, 180, tag="b"), 0.1)
    assert set(s.dialogs) == {"a", "b"}
    s.on_response(s.invite, reply(s, 200, tag="b", sdp=True), 0.2)
    assert s.dialog is not None and s.dialog.remote_tag == "b"
    late = s.on_response(s.invite, reply(s, 200, tag="a", sdp=True), 0.3)
    methods = [a.request.method for a in late if isinstance(a, (SendAck, SendRequest))]
    assert methods == ["ACK", "BYE"]
    assert not events(late)  # the call itself goes on
    assert s.dialog.remote_tag == "b"


def test_digest_retry_increments_cseq_and_adds_authorization():
    s = new_session(credentials=Credentials("alice", "secret"))
    challenge = reply(
        s,
        401,
        headers=[("WWW-Authenticate", 'Digest realm="r", nonce="n1", qop="auth", algorithm=MD5')],
    )
    actions = s.on_response(s.invite, challenge, 0.1)
    retry = actions[0].request
    assert retry.cseq == (2, "INVITE") and "Via" not in retry
    assert retry.get("Authorization").startswith("Digest ") and 'username="alice"' in retry.get(
        "Authorization"
    )
    assert retry.get("Call-ID") == "c1@test" and retry.get("From") == s.invite.get("From")
    # A second challenge (not stale) means the password is wrong: give up.
    retry.prepend("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-2")
    ev = events(
        s.on_response(
            retry,
            reply(s, 401, headers=[("WWW-Authenticate", 'Digest realm="r", nonce="n2"')]),
            0.2,
        )
    )
    assert ev[0].cause == causes.CALL_REJECTED and ev[0].sip_status == 401


def test_redirect_is_bounded_and_tries_each_contact_once():
    s = new_session()
    r = reply(
        s, 302, headers=[("Contact", "<sip:x@127.0.0.1:6000>;q=0.5, <sip:y@127.0.0.1:6001>;q=0.9")]
    )
    r.remove("Contact")
    r.add("Contact", "<sip:x@127.0.0.1:6000>;q=0.5, <sip:y@127.0.0.1:6001>;q=0.9")
    retry = s.on_response(s.invite, r, 0.1)[0]
    assert retry.request.uri == "sip:y@127.0.0.1:6001" and retry.request.cseq == (2, "INVITE")


def test_bye_from_callee_with_reason_cause():
    s = new_session()
    s.on_response(s.invite, reply(s, 200, sdp=True), 0.1)
    bye = SipRequest("BYE", "sip:softswitch@127.0.0.1:5060")
    bye.add("Via", "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-bye")
    bye.add("From", s.dialog.remote_header)
    bye.add("To", s.dialog.local_header)
    bye.add("Call-ID", "c1@test")
    bye.add("CSeq", "5 BYE")
    bye.add("Reason", "Q.850;cause=17")
    assert s.matches(bye)
    response, actions = s.on_request(bye, 2.0)
    assert response.status == 200
    end = events(actions)[0]
    assert end.cause == causes.USER_BUSY and end.hangup_source == "callee"


def test_in_dialog_info_dtmf_and_unknown_method():
    s = new_session()
    s.on_response(s.invite, reply(s, 200, sdp=True), 0.1)

    def req(method: str, seq: int, body: str = "", ctype: str = "") -> SipRequest:
        r = SipRequest(method, "sip:softswitch@127.0.0.1:5060")
        r.add("Via", f"SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-{seq}")
        r.add("From", s.dialog.remote_header)
        r.add("To", s.dialog.local_header)
        r.add("Call-ID", "c1@test")
        r.add("CSeq", f"{seq} {method}")
        if ctype:
            r.add("Content-Type", ctype)
            r.body = body.encode()
        return r

    response, actions = s.on_request(
        req("INFO", 2, "Signal=5\r\nDuration=160\r\n", "application/dtmf-relay"), 1.0
    )
    assert response.status == 200
    assert events(actions) == [InfoDigit(1.0, "5", 160)]
    response, _ = s.on_request(req("MESSAGE", 3), 1.0)
    assert response.status == 501
    response, _ = s.on_request(req("OPTIONS", 1), 1.0)  # CSeq went backwards
    assert response.status == 500


def test_session_timer_refresh_when_we_are_refresher():
    s = new_session()
    s.on_response(
        s.invite, reply(s, 200, sdp=True, headers=[("Session-Expires", "90;refresher=uac")]), 0.0
    )
    assert s.get_timer() == 45.0
    actions = s.handle_timer(45.0)
    reinvite = actions[0].request
    assert reinvite.method == "INVITE" and reinvite.cseq == (2, "INVITE")
    assert "refresher=uac" in reinvite.get("Session-Expires") and reinvite.body


def test_session_expiry_when_peer_refreshes_and_does_not():
    s = new_session()
    s.on_response(
        s.invite, reply(s, 200, sdp=True, headers=[("Session-Expires", "90;refresher=uas")]), 0.0
    )
    assert s.get_timer() == 60.0  # 90 - min(32, 90/3)
    assert_timer_bye(s, s.handle_timer(60.0))


def test_dialog_strict_routing_moves_route_into_request_uri():
    d = Dialog(
        call_id="c",
        local_tag="l",
        remote_tag="r",
        local_header="<sip:a@x>;tag=l",
        remote_header="<sip:b@y>;tag=r",
        local_seq=1,
        remote_target="sip:b@10.0.0.9",
        route_set=["<sip:proxy1@10.0.0.1>", "<sip:proxy2@10.0.0.2;lr>"],
    )
    req = d.create_request("BYE")
    assert req.uri == "sip:proxy1@10.0.0.1"
    assert req.get_all("Route") == ["<sip:proxy2@10.0.0.2;lr>", "<sip:b@10.0.0.9>"]
    d.route_set = ["<sip:proxy1@10.0.0.1;lr>"]
    req = d.create_request("BYE")
    assert req.uri == "sip:b@10.0.0.9" and d.next_hop() == "sip:proxy1@10.0.0.1;lr"
    assert req.cseq == (3, "BYE")


# --- RFC 4028 session timers: always asked for, refreshed, and their failures -----------------


def answered(headers=()) -> tuple[ClientInviteSession, list]:
    s = new_session()
    actions = s.on_response(s.invite, reply(s, 200, sdp=True, headers=headers), 0.0)
    assert isinstance(events(actions)[-1], Answered)
    return s, actions


def sent(actions, method: str) -> list[SipRequest]:
    return [a.request for a in actions if isinstance(a, SendRequest) and a.request.method == method]


def answer_to(request: SipRequest, status: int, headers=()) -> SipResponse:
    r = make_response(request, status)
    for name, value in headers:
        r.add(name, value)
    return r


def assert_timer_bye(s: ClientInviteSession, actions) -> None:
    (bye,) = sent(actions, "BYE")
    assert bye.get("Reason") == 'Q.850;cause=102;text="RECOVERY_ON_TIMER_EXPIRE"'
    assert not [e for e in events(actions) if isinstance(e, Terminated)]  # the BYE's answer ends it
    (end,) = events(s.on_response(bye, answer_to(bye, 200), 100.0))
    assert isinstance(end, Terminated) and end.cause == causes.RECOVERY_ON_TIMER_EXPIRE


def test_422_is_retried_with_the_callees_min_se():
    s = new_session()
    actions = s.on_response(s.invite, reply(s, 422, headers=[("Min-SE", "3600")]), 0.1)
    (retry,) = sent(actions, "INVITE")
    assert retry.get("Session-Expires") == "3600;refresher=uac" and retry.get("Min-SE") == "3600"
    assert retry.cseq == (2, "INVITE") and not events(actions)


def test_we_refresh_even_when_the_callee_ignores_the_timer():
    s, _ = answered()  # no Session-Expires, no Require: timer in the 2xx
    assert s.get_timer() == 900.0  # half of the 1800 s we asked for
    (reinvite,) = sent(s.handle_timer(900.0), "INVITE")
    assert reinvite.get("Session-Expires") == "1800;refresher=uac" and reinvite.body


def test_refresh_with_update_when_the_callee_allows_it():
    s, _ = answered(
        [("Session-Expires", "90;refresher=uac"), ("Allow", "INVITE, ACK, BYE, UPDATE")]
    )
    (update,) = sent(s.handle_timer(45.0), "UPDATE")
    assert update.get("Session-Expires") == "90;refresher=uac" and update.get("Min-SE") == "90"
    assert not update.body and update.cseq == (2, "UPDATE")
    actions = s.on_response(
        update, answer_to(update, 200, [("Session-Expires", "120;refresher=uac")]), 45.1
    )
    assert actions == [] and s.get_timer() == 45.1 + 60


def test_update_refused_falls_back_to_reinvite_at_once():
    s, _ = answered([("Session-Expires", "90;refresher=uac"), ("Allow", "UPDATE")])
    (update,) = sent(s.handle_timer(45.0), "UPDATE")
    assert s.on_response(update, answer_to(update, 501), 45.1) == []
    assert s.get_timer() == 45.1
    assert len(sent(s.handle_timer(45.1), "INVITE")) == 1


def test_refresh_answered_481_or_408_ends_with_bye_and_reason():
    for status in (481, 408):
        s, _ = answered([("Session-Expires", "90;refresher=uac")])
        (reinvite,) = sent(s.handle_timer(45.0), "INVITE")
        assert_timer_bye(s, s.on_response(reinvite, answer_to(reinvite, status), 45.2))


def test_refresh_never_answered_ends_with_bye_and_reason():
    s, _ = answered([("Session-Expires", "90;refresher=uac"), ("Allow", "UPDATE")])
    (update,) = sent(s.handle_timer(45.0), "UPDATE")
    assert_timer_bye(s, s.on_timeout(update, 77.0))


def test_callee_refresher_that_stops_expires_the_session_with_reason():
    s, _ = answered([("Session-Expires", "90;refresher=uas")])
    assert_timer_bye(s, s.handle_timer(s.get_timer()))


# --- BYE: the call ends with its transaction; a challenged BYE is sent again ---------------

PROXY_CHALLENGE = (
    "Proxy-Authenticate",
    'Digest realm="proxy", nonce="n1", qop="auth", algorithm=MD5',
)


def test_call_ends_when_the_bye_is_answered_dated_at_the_hangup():
    s, _ = answered()
    (bye,) = sent(s.bye(10.0), "BYE")
    assert s.hanging_up and s.state != "terminated"
    (end,) = events(s.on_response(bye, answer_to(bye, 200), 10.3))
    assert isinstance(end, Terminated) and end.at == 10.0 and end.hangup_source == "caller"
    assert not s.hanging_up and s.bye(11.0) == []


def test_bye_challenged_by_the_proxy_is_sent_again_with_the_invites_credentials():
    s, _ = answered()
    s.credentials = Credentials("alice", "secret", None)
    (bye,) = sent(s.bye(10.0), "BYE")
    actions = s.on_response(bye, answer_to(bye, 407, [PROXY_CHALLENGE]), 10.1)
    (again,) = sent(actions, "BYE")
    assert not events(actions)  # still ending
    assert again.cseq == (bye.cseq[0] + 1, "BYE") and 'username="alice"' in again.get(
        "Proxy-Authorization"
    )
    assert again.get("Reason") == bye.get("Reason") and "Via" not in again
    (end,) = events(s.on_response(again, answer_to(again, 200), 10.2))
    assert isinstance(end, Terminated) and end.cause == causes.NORMAL_CLEARING


def test_bye_challenged_again_and_again_ends_after_one_retry():
    s, _ = answered()
    s.credentials = Credentials("alice", "wrong", None)
    (bye,) = sent(s.bye(10.0), "BYE")
    (again,) = sent(s.on_response(bye, answer_to(bye, 407, [PROXY_CHALLENGE]), 10.1), "BYE")
    actions = s.on_response(again, answer_to(again, 407, [PROXY_CHALLENGE]), 10.2)
    assert not sent(actions, "BYE")
    (end,) = events(actions)
    assert isinstance(end, Terminated)


def test_bye_without_credentials_challenged_ends_the_call():
    s, _ = answered()
    (bye,) = sent(s.bye(10.0), "BYE")
    (end,) = events(
        s.on_response(
            bye, answer_to(bye, 401, [("WWW-Authenticate", 'Digest realm="r", nonce="n"')]), 10.1
        )
    )
    assert isinstance(end, Terminated)


def test_bye_never_answered_ends_the_call_on_its_timeout():
    s, _ = answered()
    (bye,) = sent(s.bye(10.0, causes.MEDIA_TIMEOUT, "timeout"), "BYE")
    assert events(s.on_response(bye, answer_to(bye, 100), 10.1)) == []
    (end,) = events(s.on_timeout(bye, 42.0))
    assert (end.cause, end.hangup_source, end.at) == (causes.MEDIA_TIMEOUT, "timeout", 10.0)


def test_bye_crossing_the_callees_keeps_our_cause():
    s, _ = answered()
    sent(s.bye(10.0), "BYE")
    theirs = SipRequest("BYE", "sip:softswitch@127.0.0.1:5060")
    theirs.add("From", reply(s, 200).get("To"))  # the callee's side, with its tag
    theirs.add("To", s.invite.get("From"))
    theirs.add("Via", "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-x")
    theirs.add("Call-ID", s.call_id)
    theirs.add("CSeq", "7 BYE")
    response, actions = s.on_request(theirs, 10.05)
    assert response is not None and response.status == 200
    (end,) = events(actions)
    assert end.hangup_source == "caller"
