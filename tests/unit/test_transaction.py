"""The four RFC 3261 §17 state machines, driven by a fake clock (no sleeping, no sockets)."""

from __future__ import annotations

from sip.message import SipRequest, SipResponse, make_response, parse_message
from sip.transaction import (
    AckReceived,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ResponseReceived,
    SendMessage,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    State,
    TimerConfig,
    TransactionTerminated,
    TransactionTimeout,
    transaction_key,
)

T = TimerConfig(t1=0.5, t2=4.0, t4=5.0)


def request(method: str = "INVITE", branch: str = "z9hG4bK-abc", cseq: int = 1) -> SipRequest:
    raw = (
        f"{method} sip:bob@127.0.0.1:5062 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@127.0.0.1>;tag=a1\r\n"
        "To: <sip:bob@127.0.0.1>\r\n"
        "Call-ID: call-1@127.0.0.1\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    msg = parse_message(raw)
    assert isinstance(msg, SipRequest)
    return msg


def response(req: SipRequest, status: int, tag: str | None = "b1") -> SipResponse:
    return make_response(req, status, to_tag=tag if status > 100 else None)


def drain(tx) -> list:
    out = []
    while (ev := tx.next_event()) is not None:
        out.append(ev)
    return out


def sends(events: list) -> list[SendMessage]:
    return [e for e in events if isinstance(e, SendMessage)]


def run_timers(tx, until: float, step: float = 0.01) -> list:
    """Advance the fake clock, firing timers as they fall due."""
    events = []
    now = 0.0
    while now <= until:
        deadline = tx.get_timer()
        if deadline is not None and deadline <= now:
            tx.handle_timer(now)
            events += drain(tx)
        now = round(now + step, 6)
    return events


# ---------------------------------------------------------------- client INVITE


def test_client_invite_retransmits_with_doubling_then_times_out():
    tx = ClientInviteTransaction(request(), reliable=False, timers=T, now=0.0)
    first = drain(tx)
    assert len(sends(first)) == 1 and not first[0].retransmission
    events = run_timers(tx, 33.0)
    retx = [e for e in sends(events) if e.retransmission]
    # Timer A: 0.5, 1, 2, 4, 8, 16 -> retransmissions at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5
    assert len(retx) == 6
    assert any(isinstance(e, TransactionTimeout) and e.timer == "B" for e in events)
    assert tx.state is State.TERMINATED


def test_client_invite_over_tcp_never_retransmits():
    tx = ClientInviteTransaction(request(), reliable=True, timers=T, now=0.0)
    drain(tx)
    events = run_timers(tx, 33.0)
    assert not sends(events)
    assert any(isinstance(e, TransactionTimeout) for e in events)


def test_client_invite_provisional_stops_retransmissions():
    req = request()
    tx = ClientInviteTransaction(req, reliable=False, timers=T, now=0.0)
    drain(tx)
    tx.receive(response(req, 180), 0.1)
    assert isinstance(drain(tx)[0], ResponseReceived)
    assert tx.state is State.PROCEEDING
    assert tx.get_timer() is None  # Timer A and B stopped; the TU's ring timeout rules now


def test_client_invite_non2xx_is_acked_by_the_transaction_and_ack_resent():
    req = request()
    tx = ClientInviteTransaction(req, reliable=False, timers=T, now=0.0)
    drain(tx)
    busy = response(req, 486)
    tx.receive(busy, 0.2)
    events = drain(tx)
    acks = [e.message for e in sends(events)]
    assert len(acks) == 1 and acks[0].method == "ACK"
    ack = acks[0]
    assert ack.branch == req.branch  # §17.1.1.3: same branch as the INVITE
    assert ack.cseq == (1, "ACK") and "tag=b1" in (ack.get("To") or "")
    assert any(isinstance(e, ResponseReceived) for e in events)
    assert tx.state is State.COMPLETED
    tx.receive(busy, 0.3)  # a retransmitted 486: ACK again, TU not bothered
    again = drain(tx)
    assert [e.message.method for e in sends(again)] == ["ACK"] and not any(
        isinstance(e, ResponseReceived) for e in again
    )
    tx.handle_timer(0.2 + 32.0)
    assert isinstance(drain(tx)[-1], TransactionTerminated)


def test_client_invite_2xx_goes_to_accepted_and_passes_retransmissions():
    req = request()
    tx = ClientInviteTransaction(req, reliable=False, timers=T, now=0.0)
    drain(tx)
    ok = response(req, 200)
    tx.receive(ok, 0.1)
    assert isinstance(drain(tx)[0], ResponseReceived)
    assert tx.state is State.ACCEPTED
    tx.receive(ok, 0.6)
    ev = drain(tx)
    assert isinstance(ev[0], ResponseReceived) and ev[0].retransmission  # RFC 6026
    tx.handle_timer(0.1 + 64 * T.t1)
    assert tx.state is State.TERMINATED


def test_transport_error_terminates_and_tells_tu():
    tx = ClientInviteTransaction(request(), reliable=True, timers=T, now=0.0)
    drain(tx)
    tx.transport_error(0.0)
    events = drain(tx)
    assert isinstance(events[0], TransactionTimeout) and isinstance(events[-1], TransactionTerminated)


# ---------------------------------------------------------------- client non-INVITE


def test_client_non_invite_backoff_caps_at_t2_and_times_out_with_f():
    tx = ClientNonInviteTransaction(request("BYE"), reliable=False, timers=T, now=0.0)
    drain(tx)
    events = run_timers(tx, 33.0)
    retx = [e for e in sends(events) if e.retransmission]
    # 0.5, 1.5, 3.5, 7.5 then every 4 s until 32 s: 11.5 .. 31.5 -> 4 + 6 = 10
    assert len(retx) == 10
    assert any(isinstance(e, TransactionTimeout) and e.timer == "F" for e in events)


def test_client_non_invite_proceeding_retransmits_at_t2():
    req = request("BYE")
    tx = ClientNonInviteTransaction(req, reliable=False, timers=T, now=0.0)
    drain(tx)
    tx.receive(response(req, 100, tag=None), 0.1)
    drain(tx)
    tx.handle_timer(0.5)  # Timer E fires in Proceeding: retransmit, E = T2
    assert sends(drain(tx))
    assert abs(tx.get_timer() - 4.5) < 1e-9


def test_client_non_invite_final_then_timer_k():
    req = request("BYE")
    tx = ClientNonInviteTransaction(req, reliable=False, timers=T, now=0.0)
    drain(tx)
    tx.receive(response(req, 200), 0.1)
    assert isinstance(drain(tx)[0], ResponseReceived)
    assert tx.state is State.COMPLETED
    tx.receive(response(req, 200), 0.2)  # absorbed
    assert drain(tx) == []
    tx.handle_timer(0.1 + T.t4)
    assert tx.state is State.TERMINATED


# ---------------------------------------------------------------- server INVITE


def test_server_invite_final_retransmitted_until_ack_then_timer_i():
    req = request()
    tx = ServerInviteTransaction(req, reliable=False, timers=T, now=0.0)
    tx.respond(response(req, 486), 0.0)
    assert sends(drain(tx))
    tx.handle_timer(0.5)
    assert sends(drain(tx))[0].retransmission  # Timer G
    tx.receive(request(), 0.6)  # retransmitted INVITE -> response again
    assert sends(drain(tx))
    ack = request("ACK")
    tx.receive(ack, 0.7)
    events = drain(tx)
    assert any(isinstance(e, AckReceived) for e in events)
    assert tx.state is State.CONFIRMED
    tx.handle_timer(0.7 + T.t4)
    assert tx.state is State.TERMINATED


def test_server_invite_timer_h_without_ack():
    req = request()
    tx = ServerInviteTransaction(req, reliable=False, timers=T, now=0.0)
    tx.respond(response(req, 603), 0.0)
    drain(tx)
    events = run_timers(tx, 33.0)
    assert any(isinstance(e, TransactionTimeout) and e.timer == "H" for e in events)


def test_server_invite_2xx_accepted_absorbs_retransmitted_invite():
    req = request()
    tx = ServerInviteTransaction(req, reliable=False, timers=T, now=0.0)
    tx.respond(response(req, 200), 0.0)
    drain(tx)
    assert tx.state is State.ACCEPTED
    tx.receive(request(), 0.1)
    assert drain(tx) == []
    tx.handle_timer(64 * T.t1)
    assert tx.state is State.TERMINATED


def test_server_invite_provisional_resent_on_retransmission():
    req = request()
    tx = ServerInviteTransaction(req, reliable=False, timers=T, now=0.0)
    tx.respond(response(req, 180), 0.0)
    drain(tx)
    tx.receive(request(), 0.5)
    assert sends(drain(tx))[0].message.status == 180


# ---------------------------------------------------------------- server non-INVITE


def test_server_non_invite_resends_final_and_ends_with_timer_j():
    req = request("BYE")
    tx = ServerNonInviteTransaction(req, reliable=False, timers=T, now=0.0)
    tx.receive(req, 0.0)  # in Trying a retransmission is silently absorbed
    assert drain(tx) == []
    tx.respond(response(req, 200), 0.0)
    drain(tx)
    tx.receive(request("BYE"), 1.0)
    assert sends(drain(tx))[0].retransmission
    tx.handle_timer(64 * T.t1)
    assert tx.state is State.TERMINATED


def test_server_non_invite_over_tcp_terminates_at_once():
    req = request("OPTIONS")
    tx = ServerNonInviteTransaction(req, reliable=True, timers=T, now=0.0)
    tx.respond(response(req, 200), 0.0)
    drain(tx)
    tx.handle_timer(0.0)
    assert tx.state is State.TERMINATED


# ---------------------------------------------------------------- matching


def test_matching_key_branch_sent_by_method_ack_maps_to_invite():
    inv = request("INVITE", branch="z9hG4bK-1")
    ack = request("ACK", branch="z9hG4bK-1")
    cancel = request("CANCEL", branch="z9hG4bK-1")
    assert transaction_key(inv) == transaction_key(ack)
    assert transaction_key(inv) != transaction_key(cancel)
    assert transaction_key(inv) != transaction_key(request("INVITE", branch="z9hG4bK-2"))


def test_rfc2543_peer_without_magic_cookie_still_matches():
    a = request("INVITE", branch="oldstyle")
    b = request("INVITE", branch="oldstyle")
    assert transaction_key(a) == transaction_key(b)
