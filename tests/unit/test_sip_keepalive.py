"""OPTIONS pings to a gateway (sip/keepalive.py) through the sans-I/O endpoint: plain bytes,
a fake clock, the gateway played by the test."""

from __future__ import annotations

import pytest

from sip.endpoint import Endpoint, EndpointConfig, GatewayHealthChanged, Source
from sip.keepalive import OptionsProbe, ProbeConfig
from sip.message import SipRequest, make_response, parse_message

GATEWAY = ("10.0.0.7", 5060)


class Pinged:
    def __init__(self, interval: float = 10.0) -> None:
        self.endpoint = Endpoint(EndpointConfig(local_host="10.0.0.1", ports={"udp": 5060}))
        self.now = 0.0
        self.probe = OptionsProbe(
            ProbeConfig(
                name="gw",
                target="sip:10.0.0.7:5060",
                from_uri="sip:softswitch@10.0.0.1",
                interval=interval,
            )
        )
        self.endpoint.probe(self.probe, self.now)

    def sent(self) -> list[SipRequest]:
        out = []
        for datagram in self.endpoint.datagrams_to_send():
            message = parse_message(datagram.data)
            assert isinstance(message, SipRequest) and datagram.address == GATEWAY
            out.append(message)
        return out

    def answer(self, request: SipRequest, status: int) -> None:
        response = make_response(request, status, to_tag="gw")
        self.endpoint.receive(response.serialize(), Source("udp", GATEWAY), self.now)

    def events(self) -> list[GatewayHealthChanged]:
        found = []
        while (event := self.endpoint.next_event()) is not None:
            if isinstance(event, GatewayHealthChanged):
                found.append(event)
        return found

    def advance_to(self, when: float) -> None:
        for _ in range(1000):
            due = self.endpoint.get_timer()
            if due is None or due > when:
                break
            self.now = max(self.now, due)
            self.endpoint.handle_timer(self.now)
        self.now = when


def test_pings_every_interval_after_each_answer():
    p = Pinged(interval=10.0)
    (first,) = p.sent()
    assert (
        first.method == "OPTIONS"
        and first.uri == "sip:10.0.0.7:5060"
        and first.cseq == (1, "OPTIONS")
    )
    p.now = 0.2
    p.answer(first, 200)
    assert p.events() == [] and p.probe.up  # up from the start: no change
    p.advance_to(10.1)
    assert p.sent() == []
    p.advance_to(10.2)
    (second,) = p.sent()
    assert second.cseq == (2, "OPTIONS") and second.call_id == first.call_id


def test_any_answer_but_503_and_408_is_alive():
    p = Pinged()
    p.answer(p.sent()[0], 404)
    assert p.probe.up and p.events() == []
    p.advance_to(10.0)
    p.answer(p.sent()[0], 503)
    assert [(e.up, e.error) for e in p.events()] == [(False, "503 Service Unavailable")]
    p.advance_to(20.0)
    p.answer(p.sent()[0], 200)
    assert [(e.up, e.error) for e in p.events()] == [(True, None)]


def test_unanswered_ping_takes_the_gateway_down_until_it_answers_again():
    p = Pinged(interval=5.0)
    p.sent()
    p.advance_to(31.0)
    assert p.probe.up  # still retransmitting (Timer F: 64*T1)
    p.advance_to(32.5)
    (event,) = p.events()
    assert not event.up and "timeout" in (event.error or "") and not p.probe.up
    p.sent()
    p.advance_to(37.5)
    again = [r for r in p.sent() if r.method == "OPTIONS"]
    assert again
    p.answer(again[0], 200)
    assert [e.up for e in p.events()] == [True]


def test_icmp_unreachable_is_down_at_once():
    p = Pinged()
    p.sent()
    p.endpoint.transport_error("udp", GATEWAY, p.now)
    (event,) = p.events()
    assert not event.up and "transport" in (event.error or "")


def test_stopped_probe_pings_no_more():
    p = Pinged()
    p.answer(p.sent()[0], 200)
    p.endpoint.stop_probe("gw", p.now)
    p.advance_to(100.0)
    assert p.sent() == []


def test_interval_must_be_positive():
    with pytest.raises(ValueError):
        ProbeConfig(name="gw", target="sip:h", from_uri="sip:a@h", interval=0)
