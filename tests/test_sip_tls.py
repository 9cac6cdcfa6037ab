"""SIP over TLS between two real user agents on loopback (RFC 3261 §26.2, RFC 5630): a
throw-away CA made here signs the callee's certificate; the caller verifies it against that
CA and the name it dialled, or the call fails as a transport failure with nothing sent in
clear."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from sip import causes
from sip.aio import GatewayConfig, InboundCall, UserAgent, UserAgentConfig
from tests.peers.tls_certs import TestCA

OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"
ANSWER = OFFER.replace("40000", "40002").replace("- 1 1", "- 2 2")


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path)


@pytest.fixture
async def callee(ca: TestCA) -> AsyncIterator[tuple[UserAgent, asyncio.Queue[InboundCall]]]:
    issued = ca.issue("callee", dns=("localhost", "callee.test"), ips=("127.0.0.1",))
    ua = UserAgent(
        UserAgentConfig(
            host="127.0.0.1",
            port=0,
            transports=("udp", "tcp", "tls"),
            accept_inbound=True,
            tls_cert=str(issued.cert),
            tls_key=str(issued.key),
            tls_ca=str(ca.cert),
            tls_port=0,
        )
    )
    await ua.start()
    offered: asyncio.Queue[InboundCall] = asyncio.Queue()
    ua.on_incoming = offered.put_nowait
    try:
        yield ua, offered
    finally:
        await ua.close(grace=0.5)


@pytest.fixture
async def make_caller() -> AsyncIterator[Callable[..., asyncio.Future[UserAgent]]]:
    agents: list[UserAgent] = []

    async def start(**options: object) -> UserAgent:
        config = {
            "host": "127.0.0.1",
            "port": 0,
            "transports": ("udp", "tcp", "tls"),
            "tls_port": 0,
        }
        ua = UserAgent(UserAgentConfig(**(config | options)))  # type: ignore[arg-type]
        await ua.start()
        agents.append(ua)
        return ua

    try:
        yield start  # type: ignore[misc]
    finally:
        for ua in agents:
            await ua.close(grace=0.5)


def tls_port(ua: UserAgent) -> int:
    assert ua.tls is not None
    return ua.tls.local[1]


async def answer_and_hang_up(
    caller: UserAgent, call, offered: asyncio.Queue[InboundCall]
) -> InboundCall:  # type: ignore[no-untyped-def]
    inbound = await asyncio.wait_for(offered.get(), 5)
    inbound.answer(ANSWER)
    assert await asyncio.wait_for(call.wait_answered(), 5)
    assert await asyncio.wait_for(inbound.wait_answered(), 5)
    await call.hangup()
    ended = await asyncio.wait_for(inbound.wait_terminated(), 5)
    assert (ended.cause, ended.hangup_source) == (causes.NORMAL_CLEARING, "caller")
    assert (await asyncio.wait_for(call.wait_terminated(), 5)).cause == causes.NORMAL_CLEARING
    return inbound


async def test_call_over_tls_verified_by_the_test_ca(ca: TestCA, callee, make_caller) -> None:
    ua, offered = callee
    caller = await make_caller(tls_ca=str(ca.cert))
    call = await caller.dial(
        f"sip:5000@127.0.0.1:{tls_port(ua)};transport=tls", from_user="100", sdp=OFFER
    )
    inbound = await answer_and_hang_up(caller, call, offered)
    assert inbound.source.transport == "tls"
    invite = inbound.session.invite
    assert invite.top_via.transport.upper() == "TLS"
    assert ";transport=tls" in invite.get("Contact")
    # One connection carried the INVITE, its answer, the ACK and the BYE; the callee's
    # listener holds the other end.
    assert caller.tls is not None and len(caller.tls.connections) == 1
    assert caller.tcp is not None and caller.tcp.connections == []
    assert caller.stats["sent"] >= 3


async def test_sips_uri_forces_tls_with_the_name_dialled(ca: TestCA, callee, make_caller) -> None:
    ua, offered = callee
    caller = await make_caller(tls_ca=str(ca.cert))
    # No transport parameter: sips alone means TLS (RFC 5630 §3.1.3), verified for "localhost".
    call = await caller.dial(f"sips:5001@localhost:{tls_port(ua)}", from_user="100", sdp=OFFER)
    inbound = await answer_and_hang_up(caller, call, offered)
    assert inbound.source.transport == "tls"
    invite = inbound.session.invite
    assert invite.uri.startswith("sips:")
    assert invite.get("Contact").startswith("<sips:")  # our Contact is sips too (§4.1)
    with pytest.raises(ValueError, match="TLS only"):
        await caller.dial(f"sips:5001@localhost:{tls_port(ua)}", from_user="1", transport="tcp")


async def test_gateway_over_tls_with_its_server_name(ca: TestCA, callee, make_caller) -> None:
    ua, offered = callee
    gw = GatewayConfig(
        name="tls-trunk",
        host="127.0.0.1",
        port=tls_port(ua),
        transport="tls",
        tls_server_name="callee.test",
    )
    caller = await make_caller(tls_ca=str(ca.cert), gateways=[gw])
    call = await caller.dial("4155550101", from_user="100", sdp=OFFER)
    inbound = await answer_and_hang_up(caller, call, offered)
    assert inbound.called_user == "4155550101" and inbound.source.transport == "tls"


@pytest.mark.parametrize("mismatch", ["wrong CA", "wrong host name"])
async def test_certificate_failure_fails_the_call_without_plaintext(
    tmp_path: Path, ca: TestCA, callee, make_caller, mismatch: str, caplog
) -> None:
    ua, offered = callee
    caplog.set_level("WARNING", logger="sip.ua")
    if mismatch == "wrong CA":
        other = TestCA(tmp_path, "another CA")
        caller = await make_caller(tls_ca=str(other.cert))
        gateways: list[GatewayConfig] = []
        target = f"sips:5002@127.0.0.1:{tls_port(ua)}"
    else:
        gw = GatewayConfig(
            name="tls-trunk",
            host="127.0.0.1",
            port=tls_port(ua),
            transport="tls",
            tls_server_name="somebody-else.test",
        )
        gateways = [gw]
        caller = await make_caller(tls_ca=str(ca.cert), gateways=gateways)
        target = "4155550102"
    received_before = ua.stats["requests_in"]
    call = await caller.dial(target, from_user="100", sdp=OFFER)
    ended = await asyncio.wait_for(call.wait_terminated(), 15)
    # RFC 3261 §8.1.3.1: a transport error is a 503; no other target to try.
    assert ended.cause == causes.DESTINATION_OUT_OF_ORDER
    assert ended.sip_status == 503
    assert offered.empty() and ua.stats["requests_in"] == received_before
    assert caller.tcp is not None and caller.tcp.connections == []  # no fallback to TCP
    # The log says why, with the name the certificate was checked for.
    (record,) = [r for r in caplog.records if "TLS connect" in r.getMessage()]
    assert "certificate verify failed" in record.getMessage()
    if mismatch == "wrong host name":
        assert "somebody-else.test" in record.getMessage()


async def test_sips_without_a_tls_transport_is_not_sent_in_clear(callee, make_caller) -> None:
    ua, offered = callee
    caller = await make_caller(transports=("udp", "tcp"))
    assert caller.tls is None
    received_before = ua.stats["requests_in"]
    call = await caller.dial(f"sips:5003@127.0.0.1:{ua.local_port}", from_user="100", sdp=OFFER)
    ended = await asyncio.wait_for(call.wait_terminated(), 5)
    assert ended.cause == causes.DESTINATION_OUT_OF_ORDER
    assert offered.empty() and ua.stats["requests_in"] == received_before


async def test_listener_refuses_a_client_that_does_not_trust_it(callee) -> None:
    """The callee's listener is real TLS: a client verifying against the system store
    (which does not know the test CA) fails its handshake."""
    ua, _ = callee
    context = ssl.create_default_context()
    with pytest.raises(ssl.SSLCertVerificationError):
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(
                "127.0.0.1", tls_port(ua), ssl=context, server_hostname="localhost"
            ),
            5,
        )
        writer.close()


async def test_callee_bye_comes_back_on_the_callers_tls_connection(
    ca: TestCA, callee, make_caller
) -> None:
    """The caller has no certificate (no listener): the callee's BYE can only come back on
    the connection the caller opened (RFC 5923 alias in our Via)."""
    ua, offered = callee
    caller = await make_caller(tls_ca=str(ca.cert))
    assert caller.tls is not None and caller.tls.server is None
    call = await caller.dial(
        f"sip:5004@127.0.0.1:{tls_port(ua)};transport=tls", from_user="100", sdp=OFFER
    )
    inbound = await asyncio.wait_for(offered.get(), 5)
    inbound.answer(ANSWER)
    assert await asyncio.wait_for(call.wait_answered(), 5)
    assert await asyncio.wait_for(inbound.wait_answered(), 5)
    await inbound.hangup()
    ended = await asyncio.wait_for(call.wait_terminated(), 5)
    assert (ended.cause, ended.hangup_source) == (causes.NORMAL_CLEARING, "callee")
    assert (await asyncio.wait_for(inbound.wait_terminated(), 5)).hangup_source == "callee"
    assert ua.tls is not None and len(ua.tls.connections) == 1
