"""Calls through a real Kamailio (proxy with 407 digest on INVITE and BYE, Record-Route) to
real callees (sipp, baresip), over UDP and TCP (issue 17, "found failing")."""

from __future__ import annotations

import asyncio
import re

import pytest

from sip import causes
from softswitch.ua import GatewayConfig, UserAgent, UserAgentConfig
from tests.conftest import needs_sipp, wait_until
from tests.peers.baresip import needs_baresip
from tests.peers.kamailio import Kamailio, needs_kamailio
from tests.peers.plivo_api import sipp_messages

pytestmark = [needs_kamailio, pytest.mark.peer, pytest.mark.xdist_group("timing")]

CALLEE = "2000"


async def _ua(proxy: Kamailio, transport: str, **config: object) -> UserAgent:
    gateway = GatewayConfig(
        name="proxy",
        host="127.0.0.1",
        port=proxy.port,
        transport=transport,
        username=proxy.user,
        password=proxy.password,
    )
    ua = UserAgent(UserAgentConfig(host="127.0.0.1", port=0, gateways=[gateway], **config))  # type: ignore[arg-type]
    await ua.start()
    return ua


def _requests(log: str, method: str) -> list[str]:
    return re.findall(rf"(CHALLENGE|AUTHORIZED) {method}\b", log)


@needs_sipp
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_bye_challenged_by_the_proxy_is_sent_again_and_reaches_the_callee(
    kamailio, sipp, transport
):
    peer = sipp("uas_answer_rr.xml")
    proxy = kamailio(routes={CALLEE: f"sip:127.0.0.1:{peer.port}"})
    ua = await _ua(proxy, transport)
    try:
        call = await ua.dial(CALLEE, from_user=proxy.user)
        assert await asyncio.wait_for(call.wait_answered(), 10), call.terminated
        assert call.transport == transport
        await call.hangup()
        end = await asyncio.wait_for(call.wait_terminated(), 10)
        # The call ended when the BYE's transaction did: by then the callee had it.
        assert (end.cause, end.hangup_source) == (causes.NORMAL_CLEARING, "caller")
        assert "BYE sip:" in sipp_messages(peer)
    finally:
        await ua.close()  # at once, as a program that exits after wait_terminated()
    await asyncio.to_thread(peer.assert_ok, 10)
    log = proxy.log()
    assert _requests(log, "INVITE") == ["CHALLENGE", "AUTHORIZED"]
    assert _requests(log, "BYE") == ["CHALLENGE", "AUTHORIZED"]
    assert "tcp_send failed" not in log and "connection reset" not in log.lower(), log[-3000:]


@needs_sipp
async def test_close_right_after_hangup_waits_for_the_challenged_bye(kamailio, sipp):
    peer = sipp("uas_answer_rr.xml")
    proxy = kamailio(routes={CALLEE: f"sip:127.0.0.1:{peer.port}"})
    ua = await _ua(proxy, "tcp")
    call = await ua.dial(CALLEE, from_user=proxy.user)
    assert await asyncio.wait_for(call.wait_answered(), 10)
    await call.hangup()
    assert call.terminated is None  # the BYE is out, not answered yet
    await ua.close()  # waits for the BYE transaction (407, again with credentials, 200)
    assert call.terminated is not None and call.terminated.cause == causes.NORMAL_CLEARING
    await asyncio.to_thread(peer.assert_ok, 10)
    log = proxy.log()
    assert _requests(log, "BYE") == ["CHALLENGE", "AUTHORIZED"]
    assert "tcp_send failed" not in log, log[-3000:]


@needs_baresip
async def test_callee_bye_through_the_proxy_comes_back_on_our_tcp_connection(kamailio, baresip):
    """RFC 5923: our Via says ``alias``, so Kamailio sends the callee's BYE on the
    connection we opened rather than connecting to our Contact."""
    peer = baresip(max_call_s=1.5)
    proxy = kamailio(routes={CALLEE: peer.uri})
    ua = await _ua(proxy, "tcp")
    try:
        call = await ua.dial(CALLEE, from_user=proxy.user)
        assert await asyncio.wait_for(call.wait_answered(), 10), call.terminated
        end = await asyncio.wait_for(call.wait_terminated(), 10)
        assert end.hangup_source == "callee"
        assert ua.tcp is not None and len(ua.tcp.connections) == 1
        assert ua.tcp.connections[0].peer == ("127.0.0.1", proxy.port)
    finally:
        await ua.close()
    log = proxy.log()
    assert "tcp_send failed" not in log, log[-3000:]


@needs_sipp
async def test_tcp_connection_outlives_the_bye_then_closes_when_idle(kamailio, sipp):
    peer = sipp("uas_answer_rr.xml")
    proxy = kamailio(routes={CALLEE: f"sip:127.0.0.1:{peer.port}"})
    ua = await _ua(proxy, "tcp", tcp_idle_timeout=0.4)
    try:
        call = await ua.dial(CALLEE, from_user=proxy.user)
        assert await asyncio.wait_for(call.wait_answered(), 10)
        await call.hangup()
        await asyncio.wait_for(call.wait_terminated(), 10)
        assert ua.tcp is not None and len(ua.tcp.connections) == 1  # the 200 to BYE came on it
        await wait_until(lambda: not ua.tcp.connections, 3, what="the idle connection closed")
    finally:
        await ua.close()
    await asyncio.to_thread(peer.assert_ok, 10)
    assert "tcp_send failed" not in proxy.log()


@needs_sipp
async def test_gateway_that_stops_answering_options_is_skipped_until_it_answers_again(
    kamailio, sipp
):
    peer = sipp("uas_answer_rr.xml")
    proxy = kamailio(routes={CALLEE: f"sip:127.0.0.1:{peer.port}"})
    primary = GatewayConfig(
        name="primary",
        host="127.0.0.1",
        port=proxy.port,
        username=proxy.user,
        password=proxy.password,
        ping=0.2,
    )
    fallback = GatewayConfig(name="fallback", host="127.0.0.1", port=peer.port)
    ua = UserAgent(UserAgentConfig(host="127.0.0.1", port=0, gateways=[primary, fallback]))
    await ua.start()
    try:
        await wait_until(
            lambda: ua.sip.endpoint.probes["primary"].last_answer_at is not None, 3, what="a pong"
        )
        assert ua.route(CALLEE)[1] is primary  # up: the first of equals
        proxy.stop()  # the proxy is gone: the next ping draws an ICMP port unreachable
        await wait_until(lambda: ua.sip.gateway_down(primary) is not None, 3, what="primary down")
        [health] = ua.gateways()
        assert health["up"] is False and "transport error" in str(health["last_error"])
        assert ua.route(CALLEE)[1] is fallback  # failover skips it
        call = await ua.dial(CALLEE, from_user="alice", gateway="primary")  # asked for by name
        end = await asyncio.wait_for(call.wait_terminated(), 1)
        assert end.cause == causes.NETWORK_OUT_OF_ORDER and "down" in end.reason
        # The proxy comes back on the same port: the next ping is answered, the call goes through.
        again = kamailio(routes={CALLEE: f"sip:127.0.0.1:{peer.port}"}, port=proxy.port)
        await wait_until(lambda: ua.sip.gateway_down(primary) is None, 3, what="primary up again")
        assert ua.route(CALLEE)[1] is primary
        call = await ua.dial(CALLEE, from_user=proxy.user)
        assert await asyncio.wait_for(call.wait_answered(), 10), call.terminated
        await call.hangup()
        await asyncio.wait_for(call.wait_terminated(), 10)
    finally:
        await ua.close()
    await asyncio.to_thread(peer.assert_ok, 10)
    assert "OPTIONS" in again.log()
