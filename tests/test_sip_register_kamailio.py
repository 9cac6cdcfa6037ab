"""Registration to a trunk that requires it, against Kamailio's registrar (401 digest,
usrloc in memory): register, refresh, un-REGISTER at shutdown; calls through a gateway whose
registration is down fail at once; the server shows the state at ``GET /health``."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from pathlib import Path

import pytest

from sip import causes
from softswitch.config import Gateway
from softswitch.server import Server
from softswitch.ua import GatewayConfig, UserAgent, UserAgentConfig
from tests.conftest import wait_until
from tests.peers.baresip import needs_baresip
from tests.peers.kamailio import Kamailio, needs_kamailio
from tests.peers.xml_app import make_config

pytestmark = [needs_kamailio, pytest.mark.peer, pytest.mark.xdist_group("timing")]


async def _ua(
    proxy: Kamailio, *, password: str | None = None, transport: str = "udp", expires: int = 3600
) -> UserAgent:
    gateway = GatewayConfig(
        name="trunk",
        host="127.0.0.1",
        port=proxy.port,
        transport=transport,
        username=proxy.user,
        password=password or proxy.password,
        register=True,
        register_expires=expires,
    )
    ua = UserAgent(UserAgentConfig(host="127.0.0.1", port=0, gateways=[gateway]))
    await ua.start()
    return ua


def _registers(log: str) -> list[str]:
    return re.findall(r"REGISTER alice expires=(\d+)", log)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_registers_refreshes_and_unregisters_at_shutdown(kamailio, transport):
    proxy = kamailio()
    ua = await _ua(proxy, transport=transport, expires=2)
    try:
        registration = ua.sip.registration("trunk")
        assert registration is not None
        await wait_until(lambda: registration.up, 5, what="registered")
        (contact,) = await asyncio.to_thread(proxy.contacts)
        suffix = ";transport=tcp" if transport == "tcp" else ""
        assert contact == f"sip:alice@127.0.0.1:{ua.sip.endpoint.config.ports[transport]}{suffix}"
        # Granted 2 s: refreshed at half, so a second and third REGISTER come within ~2 s.
        await wait_until(lambda: registration.registered_count >= 3, 4, what="two refreshes")
        assert registration.up and registration.last_error is None
        assert await asyncio.to_thread(proxy.contacts) == [contact]  # never lapsed
    finally:
        await ua.close()
    assert registration.state == "unregistered"
    assert await asyncio.to_thread(proxy.contacts) == []  # removed by our Expires: 0
    log = proxy.log()
    assert _registers(log)[-1] == "0" and set(_registers(log)[:-1]) == {"2"}, _registers(log)
    assert "CHALLENGE REGISTER" in log


async def test_wrong_password_fails_and_calls_through_the_gateway_fail_at_once(kamailio):
    proxy = kamailio()
    ua = await _ua(proxy, password="wrong")
    try:
        registration = ua.sip.registration("trunk")
        assert registration is not None
        await wait_until(lambda: registration.state == "failed", 5, what="registration failed")
        assert registration.last_error == "401 Unauthorized"
        assert registration.retry_at is not None  # it will try again (back-off)
        [state] = ua.registrations()
        assert state["state"] == "failed" and state["last_error"] == "401 Unauthorized"
        call = await ua.dial("2000", from_user=proxy.user)
        end = await asyncio.wait_for(call.wait_terminated(), 1)
        assert (end.cause, end.hangup_source) == (causes.NETWORK_OUT_OF_ORDER, "error")
        assert "not registered" in end.reason
    finally:
        await ua.close()
    assert "INVITE" not in proxy.log()  # no INVITE ever left
    assert await asyncio.to_thread(proxy.contacts) == []


async def test_server_shows_the_registration_at_health(kamailio, tmp_path: Path):
    proxy = kamailio()
    gateway = Gateway(
        name="trunk",
        host="127.0.0.1",
        port=proxy.port,
        username=proxy.user,
        password=proxy.password,
        register=True,
        register_expires=60,
    )
    server = Server(make_config(tmp_path, gateways=[gateway]))
    await server.start()
    try:

        def health() -> dict:
            with urllib.request.urlopen(f"{server.base_url}/health", timeout=5) as response:
                return json.loads(response.read())

        registration = server.ua.sip.registration("trunk")
        await wait_until(lambda: registration.up, 5, what="registered")
        body = await asyncio.to_thread(health)
        [state] = body["registrations"]
        assert state["gateway"] == "trunk" and state["state"] == "registered", body
        assert 0 < state["expires_in"] <= 60
        assert body["status"] == "ok" and body["gateways"] == []  # no OPTIONS pings configured
    finally:
        await server.stop(mode="hangup", drain_timeout_s=1.0)
    assert await asyncio.to_thread(proxy.contacts) == []


async def test_registrar_sees_another_address_than_our_contact(kamailio, caplog):
    """Advertising 127.0.0.3 while bound to 127.0.0.1 (as behind a NAT): the registrar's
    2xx comes back to our source (we asked for rport), its Via says where it saw us
    (``received``/``rport``, RFC 3581), and we warn that the Contact differs from that."""
    proxy = kamailio()
    gateway = GatewayConfig(
        name="trunk",
        host="127.0.0.1",
        port=proxy.port,
        username=proxy.user,
        password=proxy.password,
        register=True,
        register_expires=60,
    )
    ua = UserAgent(
        UserAgentConfig(
            host="127.0.0.1",
            port=0,
            public_host="127.0.0.3",
            transports=("udp",),
            gateways=[gateway],
        )
    )
    await ua.start()
    try:
        registration = ua.sip.registration("trunk")
        assert registration is not None
        await wait_until(lambda: registration.up, 5, what="registered")
        port = ua.sip.endpoint.config.ports["udp"]
        assert await asyncio.to_thread(proxy.contacts) == [f"sip:alice@127.0.0.3:{port}"]
        assert registration.seen_as == ("127.0.0.1", port)
        [state] = ua.registrations()
        assert state["seen_as"] == f"127.0.0.1:{port}"
        assert (
            f"saw our REGISTER come from 127.0.0.1:{port}, not from our Contact's 127.0.0.3:{port}"
            in caplog.text
        )
    finally:
        await ua.close()


@needs_baresip
async def test_baresip_registered_through_kamailio_is_called_through_it(kamailio, baresip):
    """Kamailio as the phones' registrar (issue 17's test list): baresip REGISTERs there with
    401 digest; our INVITE to its AoR is routed by Kamailio's location lookup to baresip."""
    proxy = kamailio()
    phone = baresip(user=proxy.user, registrar=f"127.0.0.1:{proxy.port}", password=proxy.password)
    await wait_until(lambda: "[1 binding]" in phone.log(), 5, what="baresip registered")
    assert len(await asyncio.to_thread(proxy.contacts)) == 1
    ua = UserAgent(UserAgentConfig(host="127.0.0.1", port=0))
    await ua.start()
    try:
        call = await ua.dial(f"sip:{proxy.user}@127.0.0.1:{proxy.port}", from_user="1000")
        assert await asyncio.wait_for(call.wait_answered(), 10), phone.log()[-2000:]
        await call.hangup()
        end = await asyncio.wait_for(call.wait_terminated(), 5)
        assert end.cause == causes.NORMAL_CLEARING
    finally:
        await ua.close()
    assert "CHALLENGE REGISTER" in proxy.log()
