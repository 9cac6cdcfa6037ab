"""The UAS INVITE session alone: requests in, actions out, time as an argument."""

from __future__ import annotations

from sip import causes
from sip._session import Emit, RemoteSdp, SendRequest, SessionConfig
from sip.events import Answered, Terminated
from sip.invite_server import SendResponse, ServerInviteSession
from sip.message import SipRequest, parse_message

CONFIG = SessionConfig(contact="<sip:softswitch@10.0.0.2:5060>", t1=0.5, t2=4.0)
SDP = "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n"


def invite(body: str = "") -> SipRequest:
    head = (
        "INVITE sip:bob@10.0.0.2 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-inv1\r\n"
        "From: <sip:alice@10.0.0.1>;tag=a1\r\nTo: <sip:bob@10.0.0.2>\r\n"
        "Call-ID: s1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@10.0.0.1:5060>\r\n"
    )
    if body:
        head += "Content-Type: application/sdp\r\n"
    return parse_message((head + f"Content-Length: {len(body)}\r\n\r\n" + body).encode())  # type: ignore[return-value]


def in_dialog(session: ServerInviteSession, method: str, seq: int, body: str = "") -> SipRequest:
    text = (
        f"{method} sip:softswitch@10.0.0.2:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-{method}{seq}\r\n"
        f"From: <sip:alice@10.0.0.1>;tag=a1\r\nTo: <sip:bob@10.0.0.2>;tag={session.local_tag}\r\n"
        f"Call-ID: s1\r\nCSeq: {seq} {method}\r\n"
        + ("Content-Type: application/sdp\r\n" if body else "")
        + f"Content-Length: {len(body)}\r\n\r\n{body}"
    )
    return parse_message(text.encode())  # type: ignore[return-value]


def responses(actions) -> list[int]:
    return [a.response.status for a in actions if isinstance(a, SendResponse)]


def test_offerless_invite_answer_comes_in_the_ack():
    session = ServerInviteSession(invite(), CONFIG)
    assert session.offer is None
    actions = session.answer(0.0, SDP)  # our 200 carries the offer (§14.2 / RFC 3264)
    (ok,) = [a.response for a in actions if isinstance(a, SendResponse)]
    assert ok.status == 200 and ok.body.decode() == SDP and session.local_tag in (ok.get("To") or "")
    assert ok.get("Contact") == CONFIG.contact
    response, actions = session.on_request(in_dialog(session, "ACK", 1, SDP), 0.1)
    assert response is None
    assert actions == [RemoteSdp(SDP, early=False), Emit(Answered(0.1, 200))]
    assert session.state == "confirmed" and session.get_timer() is None


def test_2xx_retransmission_backs_off_to_t2():
    session = ServerInviteSession(invite(SDP), CONFIG)
    session.answer(0.0, SDP)
    times = []
    now = 0.0
    while (deadline := session.get_timer()) is not None and deadline < 10:
        now = deadline
        if responses(session.handle_timer(now)) == [200]:
            times.append(now)
    assert times == [0.5, 1.5, 3.5, 7.5]  # T1, doubling, capped at T2 = 4


def test_reject_and_cancel():
    busy = ServerInviteSession(invite(SDP), CONFIG)
    actions = busy.reject(0.0, 486)
    assert responses(actions) == [486]
    assert busy.terminated is not None and busy.terminated.cause == causes.USER_BUSY
    cancelled = ServerInviteSession(invite(SDP), CONFIG)
    cancelled.ring(0.0)
    actions = cancelled.on_cancel(1.0)
    assert responses(actions) == [487]
    assert cancelled.terminated == Terminated(1.0, causes.ORIGINATOR_CANCEL, 487, "cancelled", "caller")
    assert cancelled.on_cancel(2.0) == []  # once only


def test_bye_both_ways_and_stray_requests():
    session = ServerInviteSession(invite(SDP), CONFIG)
    session.answer(0.0, SDP)
    session.on_request(in_dialog(session, "ACK", 1), 0.1)
    response, _ = session.on_request(in_dialog(session, "MESSAGE", 2), 0.2)
    assert response is not None and response.status == 501
    response, actions = session.on_request(in_dialog(session, "BYE", 3), 1.0)
    assert response is not None and response.status == 200
    assert [a.event.cause for a in actions if isinstance(a, Emit)] == [causes.NORMAL_CLEARING]

    ours = ServerInviteSession(invite(SDP), CONFIG)
    ours.answer(0.0, SDP)
    ours.on_request(in_dialog(ours, "ACK", 1), 0.1)
    actions = ours.bye(2.0)
    (bye,) = [a for a in actions if isinstance(a, SendRequest)]
    assert bye.request.method == "BYE" and bye.next_hop == "sip:alice@10.0.0.1:5060"
    assert bye.request.cseq == (1, "BYE")
    assert ours.bye(3.0) == []


HOLD = SDP.replace("RTP/AVP 0\r\n", "RTP/AVP 0\r\na=sendonly\r\n")


def _confirmed(offers: list[str | None]) -> ServerInviteSession:
    session = ServerInviteSession(invite(SDP), CONFIG)
    session.answer(0.0, SDP)
    session.on_request(in_dialog(session, "ACK", 1), 0.1)

    def handler(offer: str | None) -> str:
        offers.append(offer)
        if offer is not None and "m=video" in offer:
            raise ValueError("no video")
        return SDP.replace("RTP/AVP 0\r\n", "RTP/AVP 0\r\na=recvonly\r\n") if offer else SDP

    session.offer_handler = handler
    return session


def test_a_re_invite_from_the_caller_is_answered_hold_then_resume():
    offers: list[str | None] = []
    session = _confirmed(offers)
    response, actions = session.on_request(in_dialog(session, "INVITE", 2, HOLD), 1.0)
    assert response is not None and response.status == 200 and actions == []
    assert "a=recvonly" in response.body.decode() and offers == [HOLD]
    assert response.get("Contact") == CONFIG.contact
    assert session.on_request(in_dialog(session, "ACK", 2), 1.1) == (None, [])  # no SDP: nothing
    response, _ = session.on_request(in_dialog(session, "UPDATE", 3, SDP), 2.0)
    assert response is not None and response.status == 200 and offers[-1] == SDP


def test_a_re_invite_without_sdp_gets_our_offer_and_the_ack_brings_the_answer():
    offers: list[str | None] = []
    session = _confirmed(offers)
    response, _ = session.on_request(in_dialog(session, "INVITE", 2), 1.0)
    assert response is not None and response.status == 200 and response.body.decode() == SDP
    assert offers == [None]
    _, actions = session.on_request(in_dialog(session, "ACK", 2, HOLD), 1.1)
    assert actions == [RemoteSdp(HOLD, early=False)]


def test_a_session_refresh_is_answered_with_its_interval_and_an_unusable_offer_gets_488():
    offers: list[str | None] = []
    session = _confirmed(offers)
    refresh = in_dialog(session, "UPDATE", 2)
    refresh.add("Session-Expires", "1800;refresher=uac")
    response, _ = session.on_request(refresh, 1.0)
    assert response is not None and response.status == 200
    assert response.get("Session-Expires") == "1800;refresher=uac" and response.get("Require") == "timer"
    assert offers == []  # an UPDATE without SDP offers nothing
    video = SDP + "m=video 5002 RTP/AVP 96\r\n"
    response, _ = session.on_request(in_dialog(session, "INVITE", 3, video), 2.0)
    assert response is not None and response.status == 488


def test_a_re_invite_before_our_2xx_is_acked_gets_491():
    session = ServerInviteSession(invite(SDP), CONFIG)
    session.answer(0.0, SDP)
    response, _ = session.on_request(in_dialog(session, "INVITE", 2, HOLD), 0.2)
    assert response is not None and response.status == 491
