"""The sans-I/O endpoint, two of them talking over the in-memory loop with a fake clock:
plain bytes, no sockets, no sleeps."""

from __future__ import annotations

from sip import causes
from sip.endpoint import CallProgress, CallReleased, EndpointConfig, IncomingCall, Source
from sip.events import Answered, Ringing, Terminated, Trying
from sip.locate import Target
from sip.message import parse_message
from sip.testing import CLIENT, SERVER, LoopNetwork, client_and_server, make_client_session

OFFER = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
ANSWER = "v=0\r\no=- 2 2 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n"
BOB = "sip:bob@10.0.0.2:5060"


def progress(net: LoopNetwork, endpoint) -> list:
    return [e.event for e in net.take(endpoint, CallProgress)]


def incoming(net: LoopNetwork, endpoint) -> IncomingCall:
    calls = net.take(endpoint, IncomingCall)
    assert len(calls) == 1, calls
    return calls[0]  # type: ignore[return-value]


def dial(net: LoopNetwork, client, target: str = BOB, **kw):
    answers: list[tuple[str, bool]] = []
    session = make_client_session(client, target, sdp=OFFER)
    call = client.invite(
        session, net.now, on_remote_sdp=lambda sdp, early: answers.append((sdp, early)), **kw
    )
    return call, answers


def test_call_answered_then_bye_from_the_uas():
    net, client, server = client_and_server()
    call, answers = dial(net, client)
    net.roundtrip()
    offer = incoming(net, server)
    assert offer.offer == OFFER
    server.ring(offer.call_id, net.now)
    net.roundtrip()
    net.now = 1.0
    server.answer(offer.call_id, net.now, ANSWER)
    net.roundtrip()

    events = progress(net, client)
    assert [type(e) for e in events] == [Trying, Ringing, Answered]
    assert answers == [(ANSWER, False)]
    assert call.session.dialog is not None and call.session.dialog.state == "confirmed"
    assert [type(e) for e in progress(net, server)] == [Answered]  # the ACK came
    assert net.sent(CLIENT, "ACK")

    net.now = 5.0
    server.hangup(offer.call_id, net.now)
    net.roundtrip()
    (end,) = progress(net, client)
    assert (
        isinstance(end, Terminated)
        and end.cause == causes.NORMAL_CLEARING
        and end.hangup_source == "callee"
    )
    (mine,) = progress(net, server)
    assert isinstance(mine, Terminated) and mine.hangup_source == "callee"
    assert [d.first_line for d in net.sent(CLIENT, "SIP/2.0 200")]  # 200 to the BYE

    # Both sides linger to absorb retransmissions, then release the call.
    net.advance(40.0)
    assert [e.call_id for e in net.take(client, CallReleased)] == [call.session.call_id]
    assert [e.call_id for e in net.take(server, CallReleased)] == [offer.call_id]
    assert client.get_timer() is None and not client.calls


def test_cancel_before_answer_gets_487():
    net, client, server = client_and_server()
    call, _ = dial(net, client)
    net.roundtrip()
    offer = incoming(net, server)
    server.ring(offer.call_id, net.now)
    net.roundtrip()
    client.hangup(call.session.call_id, net.now)
    net.roundtrip()
    assert net.sent(CLIENT, "CANCEL")
    assert net.sent(SERVER, "SIP/2.0 200") and net.sent(SERVER, "SIP/2.0 487")
    events = progress(net, client)
    assert isinstance(events[-1], Terminated) and events[-1].cause == causes.ORIGINATOR_CANCEL
    (end,) = progress(net, server)
    assert (
        isinstance(end, Terminated)
        and end.sip_status == 487
        and end.cause == causes.ORIGINATOR_CANCEL
    )
    assert net.sent(CLIENT, "ACK")  # the transaction ACKs the 487


def test_busy_here():
    net, client, server = client_and_server()
    call, _ = dial(net, client)
    net.roundtrip()
    server.reject(incoming(net, server).call_id, net.now, 486)
    net.roundtrip()
    end = progress(net, client)[-1]
    assert isinstance(end, Terminated) and end.cause == causes.USER_BUSY and end.sip_status == 486
    assert call.session.final_status == 486


def test_lost_invite_is_retransmitted_on_timer_a():
    net, client, server = client_and_server()
    net.drop = lambda d: d.first_line.startswith("INVITE") and len(net.sent(starts="INVITE")) == 1
    dial(net, client)
    net.roundtrip()
    assert net.take(server, IncomingCall) == []
    assert client.get_timer() == 0.5  # Timer A = T1
    net.advance(0.5)
    assert len(net.sent(CLIENT, "INVITE")) == 2
    offer = incoming(net, server)
    server.answer(offer.call_id, net.now, ANSWER)
    net.roundtrip()
    assert isinstance(progress(net, client)[-1], Answered)


def test_timer_b_ends_the_call_without_answer():
    net = LoopNetwork()
    client = net.add(CLIENT)
    dial(net, client, "sip:nobody@10.0.0.9:5060")
    net.advance(31.0)
    assert not any(isinstance(e, Terminated) for e in progress(net, client))
    net.advance(1.5)  # 64*T1 = 32 s
    end = progress(net, client)[-1]
    assert (
        isinstance(end, Terminated)
        and end.cause == causes.RECOVERY_ON_TIMER_EXPIRE
        and end.sip_status == 408
    )
    # Timer A doubled each time: sends at 0, .5, 1.5, 3.5, 7.5, 15.5, 31.5
    assert len(net.sent(CLIENT, "INVITE")) == 7


def test_503_fails_over_to_the_next_target():
    net = LoopNetwork()
    client = net.add(CLIENT)
    first = net.add(SERVER, EndpointConfig(accept_inbound=True))
    second = net.add(("10.0.0.3", 5060), EndpointConfig(accept_inbound=True))
    net.hosts["pool.example"] = [Target("10.0.0.2", 5060, "udp"), Target("10.0.0.3", 5060, "udp")]
    call, answers = dial(net, client, "sip:bob@pool.example")
    net.roundtrip()
    first.reject(incoming(net, first).call_id, net.now, 503)
    net.roundtrip()
    offer = incoming(net, second)
    second.answer(offer.call_id, net.now, ANSWER)
    net.roundtrip()
    events = progress(net, client)
    assert [type(e) for e in events] == [Trying, Answered]  # the 503 stays inside the endpoint
    assert answers == [(ANSWER, False)]
    assert [d.destination for d in net.sent(CLIENT, "INVITE")] == [SERVER, ("10.0.0.3", 5060)]


def test_2xx_retransmitted_until_ack():
    net, client, server = client_and_server()
    net.drop = lambda d: d.first_line.startswith("ACK") and len(net.sent(starts="ACK")) == 1
    dial(net, client)
    net.roundtrip()
    offer = incoming(net, server)
    server.answer(offer.call_id, net.now, ANSWER)
    net.roundtrip()
    assert progress(net, server) == []  # the ACK was lost
    net.advance(0.5)  # §13.3.1.4: the 2xx again after T1; the client ACKs it again
    assert len(net.sent(SERVER, "SIP/2.0 200")) == 2
    assert [type(e) for e in progress(net, server)] == [Answered]


def _raw(method: str, *, to_tag: str = "", drop: str = "") -> bytes:
    lines = [
        f"{method} sip:softswitch@10.0.0.2 SIP/2.0",
        "Via: SIP/2.0/UDP 10.0.0.7:5060;branch=z9hG4bK-raw1;rport",
        "Max-Forwards: 70",
        "From: <sip:probe@10.0.0.7>;tag=p1",
        "To: <sip:softswitch@10.0.0.2>" + (f";tag={to_tag}" if to_tag else ""),
        "Call-ID: raw-1@10.0.0.7",
        f"CSeq: 1 {method}",
        "Content-Length: 0",
    ]
    lines = [line for line in lines if not (drop and line.startswith(drop))]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _answer_bytes(endpoint, data: bytes) -> bytes:
    endpoint.receive(data, Source("udp", ("10.0.0.7", 5060)), 0.0)
    (datagram,) = endpoint.datagrams_to_send()
    assert datagram.address == ("10.0.0.7", 5060)
    return datagram.data


def _answer(endpoint, data: bytes):
    return parse_message(_answer_bytes(endpoint, data))


def test_malformed_request_gets_400():
    _, _, server = client_and_server()
    response = _answer_bytes(server, _raw("OPTIONS", drop="Call-ID"))
    assert (
        response.startswith(b"SIP/2.0 400 Bad Request")
        and b"Call-ID" in response.split(b"\r\n", 1)[0]
    )
    assert server.stats["parse_errors"] == 1


def test_options_200_with_allow():
    _, _, server = client_and_server()
    response = _answer(server, _raw("OPTIONS"))
    assert response.status == 200 and "INVITE" in (response.get("Allow") or "")


def test_unknown_in_dialog_request_481():
    _, _, server = client_and_server()
    assert _answer(server, _raw("BYE", to_tag="nosuch")).status == 481
    assert _answer(server, _raw("INFO", to_tag="nosuch").replace(b"raw1", b"raw2")).status == 481


def test_invite_declined_unless_inbound_calls_are_taken():
    net = LoopNetwork()
    plain = net.add(SERVER)
    assert _answer(plain, _raw("INVITE")).status == 603


def test_bye_from_the_uac_ends_the_uas_session():
    net, client, server = client_and_server()
    call, _ = dial(net, client)
    net.roundtrip()
    offer = incoming(net, server)
    server.answer(offer.call_id, net.now, ANSWER)
    net.roundtrip()
    progress(net, server)
    client.hangup(call.session.call_id, net.now)
    net.roundtrip()
    (end,) = progress(net, server)
    assert (
        isinstance(end, Terminated)
        and end.cause == causes.NORMAL_CLEARING
        and end.hangup_source == "caller"
    )
    assert net.sent(SERVER, "SIP/2.0 200")[-1].data.find(b"CSeq: 2 BYE") > 0


def test_2xx_never_acked_ends_with_bye():
    net, client, server = client_and_server()
    net.drop = lambda d: d.first_line.startswith("ACK")
    dial(net, client)
    net.roundtrip()
    offer = incoming(net, server)
    server.answer(offer.call_id, net.now, ANSWER)
    net.advance(33.0)  # §13.3.1.4: 64*T1 without ACK
    (end,) = progress(net, server)
    assert isinstance(end, Terminated) and end.cause == causes.RECOVERY_ON_TIMER_EXPIRE
    assert net.sent(SERVER, "BYE")
    assert isinstance(progress(net, client)[-1], Terminated)


def test_ring_timeout_cancels_with_no_answer():
    net, client, server = client_and_server()
    dial(net, client, ring_timeout=5.0)
    net.roundtrip()
    offer = incoming(net, server)
    server.ring(offer.call_id, net.now)
    net.advance(5.0)
    assert net.sent(CLIENT, "CANCEL")
    end = progress(net, client)[-1]
    assert (
        isinstance(end, Terminated)
        and end.cause == causes.NO_ANSWER
        and end.hangup_source == "timeout"
    )
    assert net.sent(SERVER, "SIP/2.0 487")


def test_unusable_answer_is_byed_as_incompatible_destination():
    net, client, server = client_and_server()
    session = make_client_session(client, BOB, sdp=OFFER)

    def refuse(sdp: str, early: bool) -> None:
        raise ValueError("no common codec")

    client.invite(session, net.now, on_remote_sdp=refuse)
    net.roundtrip()
    server.answer(incoming(net, server).call_id, net.now, ANSWER)
    net.roundtrip()
    events = progress(net, client)
    assert [type(e) for e in events] == [Trying, Terminated]  # never Answered
    assert events[-1].cause == causes.INCOMPATIBLE_DESTINATION
    assert net.sent(CLIENT, "BYE")


def test_cancel_without_invite_481():
    _, _, server = client_and_server()
    assert _answer(server, _raw("CANCEL")).status == 481


def test_dialog_from_uas():
    from sip.dialog import Dialog

    request = parse_message(
        b"INVITE sip:bob@10.0.0.2 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-1\r\n"
        b"Record-Route: <sip:p1.example;lr>\r\nRecord-Route: <sip:p2.example;lr>\r\n"
        b"From: <sip:alice@10.0.0.1>;tag=a1\r\nTo: <sip:bob@10.0.0.2>\r\n"
        b"Call-ID: d1\r\nCSeq: 7 INVITE\r\nContact: <sip:alice@10.0.0.1:5070>\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    dialog = Dialog.from_uas(request, "b2", confirmed=True)
    assert dialog.id == ("d1", "b2", "a1")
    assert dialog.remote_target == "sip:alice@10.0.0.1:5070"
    assert dialog.route_set == ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]  # §12.1.1: in order
    assert dialog.remote_seq == 7 and dialog.local_header.endswith(";tag=b2")
    bye = dialog.create_request("BYE")
    assert bye.cseq == (1, "BYE") and bye.get("To") == "<sip:alice@10.0.0.1>;tag=a1"
    assert dialog.next_hop() == "sip:p1.example;lr"


# --- transport errors: ICMP unreachable, TCP refused (RFC 3261 §8.1.3.1, §17.1.4) -----------


def test_icmp_unreachable_ends_the_call_at_once_as_a_transport_failure():
    net = LoopNetwork(icmp_unreachable=True)
    client = net.add(CLIENT)
    dial(net, client, "sip:nobody@10.0.0.9:5060")
    net.roundtrip()  # no clock movement: the error comes back with the first INVITE
    end = progress(net, client)[-1]
    assert isinstance(end, Terminated)
    assert end.cause == causes.DESTINATION_OUT_OF_ORDER == causes.TRANSPORT_FAILURE
    assert end.sip_status == 503 and end.hangup_source == "error"
    assert len(net.sent(CLIENT, "INVITE")) == 1  # no Timer A retransmissions after it


def test_icmp_unreachable_fails_over_to_the_next_target_at_once():
    net = LoopNetwork(icmp_unreachable=True)
    client = net.add(CLIENT)
    alive = net.add(("10.0.0.3", 5060), EndpointConfig(accept_inbound=True))
    net.hosts["pool.example"] = [Target("10.0.0.9", 5060, "udp"), Target("10.0.0.3", 5060, "udp")]
    dial(net, client, "sip:bob@pool.example")
    net.roundtrip()
    offer = incoming(net, alive)
    alive.answer(offer.call_id, net.now, ANSWER)
    net.roundtrip()
    assert net.now == 0.0
    assert [type(e) for e in progress(net, client)] == [Trying, Answered]
    assert [d.destination for d in net.sent(CLIENT, "INVITE")] == [
        ("10.0.0.9", 5060),
        ("10.0.0.3", 5060),
    ]


def test_transport_error_matches_the_address_in_any_spelling():
    net = LoopNetwork()
    client = net.add(CLIENT)
    dial(net, client, "sip:nobody@[::ffff:10.0.0.9]:5060")
    net.roundtrip()
    client.transport_error("udp", ("10.0.0.9", 5060), net.now)
    end = progress(net, client)[-1]
    assert isinstance(end, Terminated) and end.cause == causes.TRANSPORT_FAILURE


def test_refused_tcp_connection_is_a_transport_failure_not_a_timeout():
    net = LoopNetwork()
    client = net.add(CLIENT)
    client.config.ports["tcp"] = 5060
    dial(net, client, "sip:nobody@10.0.0.9:5060;transport=tcp")
    net.roundtrip()
    client.transport_error("udp", ("10.0.0.9", 5060), net.now)  # another transport: not ours
    assert not any(isinstance(e, Terminated) for e in progress(net, client))
    client.transport_error("tcp", ("10.0.0.9", 5060), net.now)  # the adapter's connect failed
    end = progress(net, client)[-1]
    assert isinstance(end, Terminated)
    assert (end.cause, end.sip_status) == (causes.DESTINATION_OUT_OF_ORDER, 503)


def test_transport_error_on_a_bye_still_ends_the_call_once():
    net, client, server = client_and_server()
    call, _ = dial(net, client)
    net.roundtrip()
    server.answer(incoming(net, server).call_id, net.now, ANSWER)
    net.roundtrip()
    del net.endpoints[SERVER]  # the callee vanishes
    net.icmp_unreachable = True
    client.hangup(call.session.call_id, net.now)
    net.roundtrip()
    ends = [e for e in progress(net, client) if isinstance(e, Terminated)]
    assert len(ends) == 1 and ends[0].cause == causes.NORMAL_CLEARING
    assert len(net.sent(CLIENT, "BYE")) == 1


def test_call_ends_when_its_bye_is_answered_and_has_pending_until_then():
    net, client, server = client_and_server()
    call, _ = dial(net, client)
    net.roundtrip()
    server.answer(incoming(net, server).call_id, net.now, ANSWER)
    net.roundtrip()
    progress(net, client)
    net.drop = lambda d: (
        d.first_line.startswith("SIP/2.0 200") and b"BYE" in d.data.split(b"CSeq:")[1][:20]
    )
    net.now = 3.0
    client.hangup(call.session.call_id, net.now)
    net.roundtrip()
    assert (
        client.has_pending()
        and client.has_pending(("BYE",))
        and not client.has_pending(("CANCEL",))
    )
    assert not progress(net, client)  # the BYE is not answered yet
    net.drop = None
    net.advance(0.6)  # Timer E: the BYE again, now answered
    (end,) = progress(net, client)
    assert isinstance(end, Terminated) and end.at == 3.0 and end.cause == causes.NORMAL_CLEARING
    assert len(net.sent(CLIENT, "BYE")) == 2 and not client.has_pending()


def test_unanswered_bye_ends_the_call_at_timer_f_or_at_close():
    for closing in (False, True):
        net, client, server = client_and_server()
        call, _ = dial(net, client)
        net.roundtrip()
        server.answer(incoming(net, server).call_id, net.now, ANSWER)
        net.roundtrip()
        progress(net, client)
        del net.endpoints[SERVER]  # gone without a trace (no ICMP)
        client.hangup(call.session.call_id, net.now)
        net.advance(10.0)
        assert not progress(net, client) and client.has_pending()
        if closing:
            client.close(net.now)
        else:
            net.advance(25.0)  # Timer F: 64*T1
        (end,) = progress(net, client)
        assert isinstance(end, Terminated) and end.at == 0.0
        assert not client.has_pending()


def test_advertised_host_goes_in_via_and_contact_and_answers_still_reach_us():
    """Behind a NAT (issue 17): the INVITE's Via sent-by and Contact carry the configured
    public address of its transport, not the bound one; the callee answers to the source
    (RFC 3581: our Via asks for rport), so the call is still set up."""
    net = LoopNetwork()
    client = net.add(CLIENT, EndpointConfig(advertised_hosts={"udp": "198.51.100.4", "tcp": "198.51.100.5"}))
    server = net.add(SERVER, EndpointConfig(accept_inbound=True))
    assert client.advertised_host("udp") == "198.51.100.4"
    assert client.advertised_host("tcp") == "198.51.100.5"
    assert client.advertised_host("tls") == CLIENT[0]  # none configured: the local host
    assert client.session_config("tcp").contact == "<sip:softswitch@198.51.100.5:5060;transport=tcp>"
    dial(net, client)
    net.roundtrip()
    offer = incoming(net, server)
    (invite,) = net.sent(CLIENT, "INVITE")
    request = parse_message(invite.data)
    via = request.get("Via") or ""
    assert via.startswith(f"SIP/2.0/UDP 198.51.100.4:{CLIENT[1]};") and ";rport" in via
    assert request.get("Contact") == f"<sip:softswitch@198.51.100.4:{CLIENT[1]}>"
    server.answer(offer.call_id, net.now, ANSWER)
    net.roundtrip()
    assert [type(e) for e in progress(net, client)] == [Trying, Answered]
