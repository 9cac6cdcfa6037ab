"""SIP over TLS to a real Kamailio (its ``tls`` module, a certificate from a throw-away CA
made by the test), which proxies to a sipp callee over UDP: the call is answered and hung up
with the BYE on the same TLS connection; a certificate that does not verify (another CA,
another name) fails the call as a transport failure with nothing sent in clear; a ``sips:``
URI goes over TLS with no transport parameter (issue 17, TLS)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from sip import causes
from softswitch.ua import GatewayConfig, UserAgent, UserAgentConfig
from tests.conftest import needs_sipp
from tests.peers.kamailio import Kamailio, needs_kamailio
from tests.peers.plivo_api import sipp_messages
from tests.peers.tls_certs import TestCA

pytestmark = [needs_kamailio, needs_sipp, pytest.mark.peer, pytest.mark.xdist_group("timing")]

CALLEE = "2000"


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path)


@pytest.fixture
def proxy(kamailio, sipp, ca: TestCA) -> tuple[Kamailio, object]:
    issued = ca.issue("proxy", dns=("proxy.softswitch.test", "localhost"), ips=("127.0.0.1",))
    peer = sipp("uas_answer_rr.xml")
    started = kamailio(
        routes={CALLEE: f"sip:127.0.0.1:{peer.port}"},
        challenge_bye=False,
        tls=(issued.cert, issued.key),
    )
    return started, peer


async def _ua(proxy: Kamailio, ca: Path, **gateway: object) -> UserAgent:
    gw = GatewayConfig(
        name="proxy",
        host="127.0.0.1",
        port=proxy.tls_port,
        transport="tls",
        username=proxy.user,
        password=proxy.password,
        **gateway,  # type: ignore[arg-type]
    )
    ua = UserAgent(
        UserAgentConfig(
            host="127.0.0.1",
            port=0,
            transports=("udp", "tcp", "tls"),
            tls_port=0,
            tls_ca=str(ca),
            gateways=[gw],
        )
    )
    await ua.start()
    return ua


def _sources(log: str, method: str) -> list[str]:
    """Where Kamailio saw each ``method`` come from: ``ip:port/proto``."""
    return re.findall(rf"REQ {method} \S+ from (\S+) ", log)


async def test_call_over_tls_answered_and_bye_on_the_same_connection(proxy, ca: TestCA) -> None:
    kamailio, peer = proxy
    ua = await _ua(kamailio, ca.cert, tls_server_name="proxy.softswitch.test")
    try:
        call = await ua.dial(CALLEE, from_user=kamailio.user)
        assert await asyncio.wait_for(call.wait_answered(), 10), call.terminated
        assert call.transport == "tls"
        await call.hangup()
        end = await asyncio.wait_for(call.wait_terminated(), 10)
        assert (end.cause, end.hangup_source) == (causes.NORMAL_CLEARING, "caller")
        assert ua.tls is not None and len(ua.tls.connections) == 1
        assert ua.tcp is not None and ua.tcp.connections == []
    finally:
        await ua.close()
    await asyncio.to_thread(peer.assert_ok, 10)
    assert "BYE sip:" in sipp_messages(peer)
    log = kamailio.log()
    invites, byes = _sources(log, "INVITE"), _sources(log, "BYE")
    assert invites and byes, log[-3000:]
    # The INVITE (challenged, then sent again) and the BYE came on one TLS connection.
    assert all(s.endswith("/tls") for s in invites + byes), (invites, byes)
    assert len(set(invites + byes)) == 1, (invites, byes)


async def test_sips_uri_goes_over_tls(proxy, ca: TestCA) -> None:
    kamailio, peer = proxy
    ua = await _ua(kamailio, ca.cert)
    try:
        # No transport parameter: sips: alone means TLS, verified for "localhost".
        call = await ua.dial(f"sips:{CALLEE}@localhost:{kamailio.tls_port}", from_user="bob")
        assert await asyncio.wait_for(call.wait_answered(), 10), call.terminated
        assert call.transport == "tls"
        await call.hangup()
        await asyncio.wait_for(call.wait_terminated(), 10)
    finally:
        await ua.close()
    await asyncio.to_thread(peer.assert_ok, 10)
    log = kamailio.log()
    assert [s.rsplit("/", 1)[1] for s in _sources(log, "INVITE")] == ["tls"], log[-3000:]
    assert f"REQ INVITE sips:{CALLEE}@localhost" in log


@pytest.mark.parametrize("mismatch", ["another CA", "another name"])
async def test_certificate_that_does_not_verify_fails_the_call(
    tmp_path: Path, proxy, ca: TestCA, mismatch: str
) -> None:
    kamailio, peer = proxy
    if mismatch == "another CA":
        ua = await _ua(kamailio, TestCA(tmp_path, "another CA").cert)
    else:
        ua = await _ua(kamailio, ca.cert, tls_server_name="pbx.elsewhere.test")
    try:
        call = await ua.dial(CALLEE, from_user=kamailio.user)
        end = await asyncio.wait_for(call.wait_terminated(), 15)
        assert end.cause == causes.DESTINATION_OUT_OF_ORDER and end.sip_status == 503
        assert call.answered_at is None
        # Nothing went in clear instead: no TCP or UDP traffic to the proxy.
        assert ua.tcp is not None and ua.tcp.connections == []
    finally:
        await ua.close()
    peer.stop()
    log = kamailio.log()
    assert "REQ INVITE" not in log, log[-3000:]
