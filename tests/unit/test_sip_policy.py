"""The endpoint's doors (issue 13): unsolicited requests answered statelessly and once, a
per-source rate limit on out-of-dialog answers, and the peer allow-list; plain bytes in, the
wire record out, a fake clock."""

from __future__ import annotations

import pytest

from sip.endpoint import CallProgress, Endpoint, EndpointConfig, IncomingCall, Source
from sip.events import Answered, Terminated
from sip.message import parse_message
from sip.policy import PeerPolicy, PolicyConfig, parse_networks
from sip.testing import CLIENT, SERVER, LoopNetwork, make_client_session

STRANGER = ("203.0.113.9", 5060)
ANSWER = "v=0\r\no=- 2 2 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n"


def request(method: str, n: int = 1, source=STRANGER, to_tag: str = "") -> bytes:
    host, port = source
    to = "<sip:softswitch@10.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    return (
        f"{method} sip:softswitch@10.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-{method}-{n};rport\r\n"
        f"From: <sip:scanner@{host}>;tag=f{n}\r\nTo: {to}\r\nCall-ID: c{n}@{host}\r\n"
        f"CSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def endpoint(**policy) -> Endpoint:
    return Endpoint(
        EndpointConfig(local_host="10.0.0.1", ports={"udp": 5060}, policy=PolicyConfig(**policy))
    )


def answers(ep: Endpoint) -> list[str]:
    return [d.data.split(b"\r\n", 1)[0].decode() for d in ep.datagrams_to_send()]


def test_unsolicited_invite_gets_one_603_and_no_retransmissions():
    ep = endpoint()
    invite = request("INVITE")
    ep.receive(invite, Source("udp", STRANGER), 0.0)
    (first,) = ep.datagrams_to_send()
    assert first.data.startswith(b"SIP/2.0 603 ") and first.address == STRANGER
    for t in (1.0, 5.0, 40.0):  # Timer G would retransmit a stateful 603 until ACK (11 times)
        ep.handle_timer(t)
        assert ep.datagrams_to_send() == []
    assert ep.get_timer() is None
    ep.receive(invite, Source("udp", STRANGER), 41.0)  # the caller's retransmission: again
    (again,) = ep.datagrams_to_send()
    tag = parse_message(first.data).to_tag
    assert tag and parse_message(again.data).to_tag == tag  # §8.2.7: the same To tag
    ep.receive(request("ACK"), Source("udp", STRANGER), 41.1)
    assert ep.datagrams_to_send() == []


def test_out_of_dialog_answers_are_rate_limited_per_source():
    ep = endpoint(rate=5.0, burst=10)
    other = ("198.51.100.7", 5060)
    for n in range(30):
        ep.receive(request("OPTIONS", n), Source("udp", STRANGER), 0.0)
    assert answers(ep) == ["SIP/2.0 200 OK"] * 10
    assert ep.stats["dropped_rate_limited"] == 20
    ep.receive(request("OPTIONS", 99, other), Source("udp", other), 0.0)  # another source
    ep.receive(request("BYE", 98, other, to_tag="x"), Source("udp", other), 0.0)
    assert answers(ep) == ["SIP/2.0 200 OK", "SIP/2.0 481 Call/Transaction Does Not Exist"]
    for n in range(30, 40):
        ep.receive(request("OPTIONS", n), Source("udp", STRANGER), 1.0)  # 1 s later: 5 tokens
    assert len(answers(ep)) == 5
    garbage = b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.9;branch=z9hG4bK1\r\n\r\n"
    ep.receive(garbage, Source("udp", STRANGER), 1.0)  # its 400 counts against the rate too
    assert answers(ep) == [] and ep.stats["dropped_rate_limited"] == 26


def test_rate_limiter_table_is_bounded():
    policy = PeerPolicy(PolicyConfig(rate=1.0, burst=1, max_sources=100))
    for n in range(1000):
        assert policy.may_answer(f"10.0.{n // 256}.{n % 256}", 0.0)
    assert len(policy._buckets) == 100


def test_allow_list_drops_other_sources_silently_and_counts_them():
    ep = endpoint(allowed_peers=("10.0.0.0/30", "2001:db8::/32"))
    ep.receive(request("OPTIONS", 1), Source("udp", STRANGER), 0.0)
    ep.receive(request("INVITE", 2), Source("udp", STRANGER), 0.0)
    ep.receive(b"garbage\r\n\r\n", Source("udp", STRANGER), 0.0)
    assert answers(ep) == []
    assert (
        ep.stats["dropped_not_allowed"] == 2
    )  # the garbage earns no 400 either (no count: no answer)
    ep.receive(request("OPTIONS", 3, ("10.0.0.2", 5060)), Source("udp", ("10.0.0.2", 5060)), 0.0)
    ep.receive(request("OPTIONS", 4), Source("udp", ("::ffff:10.0.0.3", 5060)), 0.0)  # v4-mapped
    assert answers(ep) == ["SIP/2.0 200 OK"] * 2
    ep.policy.allow_host(STRANGER[0])  # a configured trunk is always allowed
    ep.receive(request("OPTIONS", 5), Source("udp", STRANGER), 0.0)
    assert answers(ep) == ["SIP/2.0 200 OK"]


def test_our_own_calls_pass_the_allow_list():
    """Responses to our transactions and requests inside our dialogs are matched, not
    filtered: a callee outside the allow-list can still answer and hang up."""
    net = LoopNetwork()
    client = net.add(CLIENT, EndpointConfig(policy=PolicyConfig(allowed_peers=("192.0.2.0/24",))))
    server = net.add(SERVER, EndpointConfig(accept_inbound=True))
    session = make_client_session(client, "sip:bob@10.0.0.2:5060")
    client.invite(session, net.now)
    net.roundtrip()
    (offer,) = net.take(server, IncomingCall)
    server.answer(offer.call_id, net.now, ANSWER)
    net.roundtrip()
    server.hangup(offer.call_id, net.now)
    net.roundtrip()
    events = [e.event for e in net.take(client, CallProgress)]
    assert isinstance(events[-2], Answered) and isinstance(events[-1], Terminated)
    assert events[-1].hangup_source == "callee"
    assert net.sent(CLIENT, "SIP/2.0 200")  # the BYE was answered
    assert client.stats["dropped_not_allowed"] == 0


def test_networks_are_checked():
    assert [str(n) for n in parse_networks(["10.0.0.0/8", "192.0.2.7", " ::1 "])] == [
        "10.0.0.0/8",
        "192.0.2.7/32",
        "::1/128",
    ]
    with pytest.raises(ValueError, match="not an IP network"):
        parse_networks(["pbx.example.com"])


def test_inbound_invite_from_outside_the_allow_list_gets_403_within_its_rate():
    ep = Endpoint(
        EndpointConfig(
            local_host="10.0.0.1",
            ports={"udp": 5060},
            accept_inbound=True,
            policy=PolicyConfig(allowed_peers=("192.0.2.0/24",), rate=1.0, burst=2),
        )
    )
    for n in range(4):  # two at once, then the bucket is empty: dropped
        ep.receive(request("INVITE", n), Source("udp", STRANGER), 0.0)
    assert answers(ep) == ["SIP/2.0 403 Forbidden"] * 2
    assert ep.next_event() is None  # no IncomingCall, no state kept
    ep.receive(request("OPTIONS", 9), Source("udp", STRANGER), 5.0)
    assert answers(ep) == []  # other requests from strangers are still dropped silently
    friend = ("192.0.2.5", 5060)
    ep.receive(request("INVITE", 7, source=friend), Source("udp", friend), 5.0)
    assert answers(ep) == ["SIP/2.0 100 Trying"]
    assert isinstance(ep.next_event(), IncomingCall)
