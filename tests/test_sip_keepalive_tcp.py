"""RFC 5626 CRLF keep-alives on TCP/TLS and re-registration after a transport change (issue
17): our listener answers a peer's CRLFCRLF ping with a CRLF pong; a gateway with
``keepalive`` pings its connection to Kamailio (which answers, ``tcp_crlf_ping``); a Kamailio
that does not answer gets the connection closed, and the registration that used it registers
again at once on a new one, as it does when the registrar drops the connection."""

from __future__ import annotations

import asyncio

import pytest

from softswitch.ua import GatewayConfig, UserAgent, UserAgentConfig
from tests.conftest import wait_until
from tests.peers.kamailio import Kamailio, needs_kamailio

pytestmark = [pytest.mark.peer]


async def test_our_listener_answers_a_double_crlf_ping_with_a_single_crlf() -> None:
    ua = UserAgent(UserAgentConfig(host="127.0.0.1", port=0, transports=("udp", "tcp")))
    await ua.start()
    try:
        assert ua.tcp is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", ua.tcp.local[1])
        try:
            for _ in range(2):
                writer.write(b"\r\n\r\n")
                await writer.drain()
                assert await asyncio.wait_for(reader.readexactly(2), 2) == b"\r\n"
            # A lone CRLF (a pong) is not answered: nothing more comes.
            writer.write(b"\r\n")
            await writer.drain()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.read(1), 0.3)
        finally:
            writer.close()
    finally:
        await ua.close()


async def _registered_over_tcp(proxy: Kamailio, keepalive: float) -> UserAgent:
    gateway = GatewayConfig(
        name="trunk",
        host="127.0.0.1",
        port=proxy.port,
        transport="tcp",
        username=proxy.user,
        password=proxy.password,
        register=True,
        register_expires=600,
        keepalive=keepalive,
    )
    ua = UserAgent(UserAgentConfig(host="127.0.0.1", port=0, gateways=[gateway]))
    await ua.start()
    registration = ua.sip.registration("trunk")
    assert registration is not None
    await wait_until(lambda: registration.up, 5, what="registered")
    return ua


def _connection(ua: UserAgent, proxy: Kamailio):  # type: ignore[no-untyped-def]
    assert ua.tcp is not None
    return ua.tcp.connection_to(("127.0.0.1", proxy.port))


@needs_kamailio
@pytest.mark.xdist_group("timing")
async def test_keepalives_to_kamailio_are_answered_and_keep_the_connection(kamailio) -> None:
    proxy = kamailio()
    ua = await _registered_over_tcp(proxy, keepalive=0.3)
    try:
        conn = _connection(ua, proxy)
        assert conn is not None
        await wait_until(lambda: conn.pongs >= 3, 5, what="three pongs from Kamailio")
        assert not conn.closed and _connection(ua, proxy) is conn
        registration = ua.sip.registration("trunk")
        assert registration is not None and registration.registered_count == 1
    finally:
        await ua.close()


@needs_kamailio
@pytest.mark.xdist_group("timing")
async def test_an_unanswered_keepalive_closes_the_connection_and_registers_again(
    kamailio, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sip.aio.ua.UserAgent.PONG_TIMEOUT", 0.5)
    proxy = kamailio(crlf_pong=False)
    ua = await _registered_over_tcp(proxy, keepalive=0.3)
    try:
        first = _connection(ua, proxy)
        assert first is not None
        registration = ua.sip.registration("trunk")
        assert registration is not None
        await wait_until(lambda: first.closed, 5, what="the silent connection closed")
        await wait_until(
            lambda: registration.registered_count >= 2 and registration.up,
            5,
            what="registered again",
        )
        second = _connection(ua, proxy)
        assert second is not None and second is not first
        assert len(await asyncio.to_thread(proxy.contacts)) == 1
    finally:
        await ua.close()


@needs_kamailio
@pytest.mark.xdist_group("timing")
async def test_a_registrar_restart_gets_a_new_register_at_once(kamailio) -> None:
    """The registrar restarts (its bindings are gone, our connection is closed under us): we
    register again on a new connection at once, not at the next refresh (300 s away)."""
    proxy = kamailio()
    ua = await _registered_over_tcp(proxy, keepalive=0)
    try:
        registration = ua.sip.registration("trunk")
        assert registration is not None
        first = _connection(ua, proxy)
        assert first is not None
        port = proxy.port
        await asyncio.to_thread(proxy.stop)
        restarted = kamailio(port=port)
        # Refused while it was down: the back-off's first retry (5 s) then finds it.
        await wait_until(
            lambda: registration.up and registration.registered_count >= 2,
            12,
            what="registered again",
        )
        assert first.closed
        second = _connection(ua, restarted)
        assert second is not None and second is not first
        assert len(await asyncio.to_thread(restarted.contacts)) == 1
    finally:
        await ua.close()


async def test_pongs_from_the_peer_are_never_answered() -> None:
    """Two single-CRLF pongs in a row are not a ping: nothing is sent back."""
    ua = UserAgent(UserAgentConfig(host="127.0.0.1", port=0, transports=("udp", "tcp")))
    await ua.start()
    try:
        assert ua.tcp is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", ua.tcp.local[1])
        try:
            for _ in range(3):
                writer.write(b"\r\n")
                await writer.drain()
                await asyncio.sleep(0.05)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.read(1), 0.3)
        finally:
            writer.close()
    finally:
        await ua.close()
