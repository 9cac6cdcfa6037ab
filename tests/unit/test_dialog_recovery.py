"""A dialog stored by one process and ended by the next (crash recovery), sans-I/O: the
stored state, the CSeq lease, and the BYE a fresh endpoint sends from it, over the loop
network with plain bytes and a fake clock."""

from __future__ import annotations

import json

import pytest

from sip import causes
from sip.dialog import Dialog
from sip.endpoint import (
    CallProgress,
    DialogChanged,
    EndpointConfig,
    IncomingCall,
    RequestCompleted,
    Source,
)
from sip.events import Terminated
from sip.message import new_branch, parse_message
from sip.testing import CLIENT, SERVER, client_and_server, make_client_session

OFFER = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
ANSWER = "v=0\r\no=- 2 2 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n"
BOB = "sip:bob@10.0.0.2:5060"


def answered_call(client_config: EndpointConfig | None = None):
    net, client, server = client_and_server(client_config=client_config)
    session = make_client_session(client, BOB, sdp=OFFER)
    client.invite(session, net.now)
    net.roundtrip()
    (offer,) = net.take(server, IncomingCall)
    server.answer(offer.call_id, net.now, ANSWER)
    net.roundtrip()
    net.take(client)
    net.take(server)
    return net, client, server, session.call_id


def test_dialog_state_round_trips_through_json():
    net, client, _, call_id = answered_call()
    state = json.loads(json.dumps(client.dialog_state(call_id)))
    dialog = client.calls[call_id].session.dialog
    assert state["call_id"] == call_id and state["local_tag"] == dialog.local_tag
    assert state["remote_target"] == dialog.remote_target and state["transport"] == "udp"
    assert state["address"] == list(SERVER) and state["contact"].startswith(
        "<sip:softswitch@10.0.0.1"
    )
    # the stored CSeq is the top of the lease, above anything the live dialog has used
    assert state["local_seq"] == dialog.local_seq + EndpointConfig().dialog_seq_lease
    again = Dialog.from_state(state)
    assert (
        again.id == dialog.id and again.state == "confirmed" and again.route_set == dialog.route_set
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"call_id": ""}, "call_id"),
        ({"local_seq": "7"}, "local_seq"),
        ({"local_seq": 2**31}, "local_seq"),
        ({"route_set": "<sip:p>"}, "route_set"),
        ({"remote_target": None}, "remote_target"),
    ],
)
def test_from_state_names_what_is_wrong(change, message):
    net, client, _, call_id = answered_call()
    state = {**client.dialog_state(call_id), **change}
    with pytest.raises(ValueError, match=message):
        Dialog.from_state(state)


def test_no_state_before_answer():
    net, client, server = client_and_server()
    session = make_client_session(client, BOB, sdp=OFFER)
    client.invite(session, net.now)
    net.roundtrip()
    assert client.dialog_state(session.call_id) is None
    assert client.dialog_state("nope") is None


def test_a_restarted_endpoint_ends_the_stored_call_with_bye():
    net, client, server, call_id = answered_call()
    state = json.loads(json.dumps(client.dialog_state(call_id)))
    # kill -9: the old endpoint is gone; a new one takes its address
    fresh = net.add(CLIENT)
    net.now = 10.0
    assert fresh.send_bye(state, net.now) == call_id
    net.roundtrip()
    (bye,) = net.sent(CLIENT, "BYE")
    message = parse_message(bye.data)
    assert message.cseq == (state["local_seq"] + 1, "BYE")
    assert message.get("Reason") == 'Q.850;cause=41;text="NORMAL_TEMPORARY_FAILURE"'
    (end,) = [e.event for e in net.take(server, CallProgress)]
    assert isinstance(end, Terminated) and end.cause == causes.NORMAL_TEMPORARY_FAILURE
    assert net.take(fresh, RequestCompleted) == [RequestCompleted(call_id, "BYE", 200)]


def test_bye_to_a_callee_that_forgot_the_call_completes_with_481():
    net, client, server, call_id = answered_call()
    state = client.dialog_state(call_id)
    net.add(SERVER, EndpointConfig(accept_inbound=True))  # the callee restarted too
    fresh = net.add(CLIENT)
    fresh.send_bye(state, net.now)
    net.roundtrip()
    assert net.take(fresh, RequestCompleted) == [RequestCompleted(call_id, "BYE", 481)]


def test_bye_to_a_dead_callee_times_out_on_timer_f():
    net, client, server, call_id = answered_call()
    state = client.dialog_state(call_id)
    del net.endpoints[SERVER]
    fresh = net.add(CLIENT)
    fresh.send_bye(state, net.now)
    net.advance(31.0)
    assert net.take(fresh, RequestCompleted) == []
    assert len(net.sent(CLIENT, "BYE")) > 5  # retransmitted on timer E
    net.advance(2.0)  # Timer F = 64*T1 = 32 s
    assert net.take(fresh, RequestCompleted) == [RequestCompleted(call_id, "BYE", 408)]
    assert fresh.get_timer() is None


def test_unroutable_state_completes_with_503_and_bad_state_raises():
    net, client, server, call_id = answered_call()
    state = client.dialog_state(call_id)
    fresh = net.add(CLIENT)
    fresh.send_bye({**state, "remote_target": "sip:bob@unknown.invalid", "address": None}, net.now)
    net.roundtrip()
    assert net.take(fresh, RequestCompleted) == [RequestCompleted(call_id, "BYE", 503)]
    with pytest.raises(ValueError, match="transport"):
        fresh.send_bye({**state, "transport": "sctp"}, net.now)
    with pytest.raises(ValueError, match="local_tag"):
        fresh.send_bye({**state, "local_tag": 5}, net.now)


def _reinvite_from_callee(server, call_id: str, contact: str, now: float) -> bytes:
    dialog = server.calls[call_id].session.dialog
    request = dialog.create_request(
        "INVITE",
        headers=[
            ("Contact", contact),
            ("Session-Expires", "90;refresher=uas"),
            ("Content-Type", "application/sdp"),
        ],
        body=ANSWER.encode(),
    )
    request.prepend("Via", f"SIP/2.0/UDP {SERVER[0]}:{SERVER[1]};branch={new_branch()}")
    return request.serialize()


def test_a_target_refresh_and_the_cseq_lease_renew_the_stored_state():
    net, client, server, call_id = answered_call(EndpointConfig(dialog_seq_lease=2))
    first = client.dialog_state(call_id)
    assert first["local_seq"] == 1 + 2
    # the callee moves (a re-INVITE with a new Contact) and makes us the session refresher
    client.receive(
        _reinvite_from_callee(server, call_id, "<sip:bob2@10.0.0.2:5060>", net.now),
        Source("udp", SERVER),
        net.now,
    )
    net.roundtrip()
    (changed,) = net.take(client, DialogChanged)
    assert changed.call_id == call_id and changed.state["remote_target"] == "sip:bob2@10.0.0.2:5060"
    assert changed.state["local_seq"] == 1 + 2
    # our session refresh (UPDATE, since the callee allows it; else a re-INVITE) takes
    # CSeq 2: half the lease is used, renew it
    net.advance(50.0)
    (renewed,) = net.take(client, DialogChanged)
    assert renewed.state["local_seq"] == 2 + 2
    refreshes = net.sent(CLIENT, "UPDATE") or net.sent(CLIENT, "INVITE")[1:]
    assert parse_message(refreshes[-1].data).cseq[0] == 2
    fresh = net.add(CLIENT)
    fresh.send_bye(renewed.state, net.now)
    net.roundtrip()
    assert parse_message(net.sent(CLIENT, "BYE")[-1].data).cseq[0] > 2
    assert net.take(fresh, RequestCompleted) == [RequestCompleted(call_id, "BYE", 200)]


def test_no_change_event_after_the_call_ends():
    net, client, server, call_id = answered_call(EndpointConfig(dialog_seq_lease=2))
    client.dialog_state(call_id)
    client.hangup(call_id, net.now)  # our BYE takes CSeq 2, but the call is over
    net.roundtrip()
    assert net.take(client, DialogChanged) == []
