"""A trunk that stopped answering its OPTIONS pings is skipped by a call's gateway failover
(issue 17, gateway health): through the legacy API's ``Gateways`` list, against sipp."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sip.message import SipRequest, make_response, parse_message
from softswitch.config import Gateway
from softswitch.server import Server
from tests.conftest import needs_sipp, wait_until
from tests.peers.plivo_api import AUTH_ID, AUTH_TOKEN, basic, make_config, sipp_done, sipp_messages

pytestmark = [needs_sipp, pytest.mark.peer]

SHORT = '<?xml version="1.0"?><Response><Wait length="1"/></Response>'


class Overloaded(asyncio.DatagramProtocol):
    """A trunk that answers every OPTIONS with 503 and ignores everything else (an INVITE
    sent there would hang until Timer B): records the methods it was sent."""

    def __init__(self) -> None:
        self.methods: list[str] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[override]
        request = parse_message(data)
        if not isinstance(request, SipRequest):
            return
        self.methods.append(request.method)
        if request.method == "OPTIONS" and self.transport is not None:
            self.transport.sendto(make_response(request, 503).serialize(), addr)


async def test_a_gateway_down_is_skipped_at_once_and_the_next_one_connects(
    sipp: Any, tmp_path: Path, webhook_receiver: Any
) -> None:
    peer = sipp("uas_answer.xml")
    loop = asyncio.get_running_loop()
    transport, overloaded = await loop.create_datagram_endpoint(
        Overloaded, local_addr=("127.0.0.1", 0)
    )
    dead = Gateway(
        name="dead", host="127.0.0.1", port=transport.get_extra_info("sockname")[1], ping=0.2
    )
    trunk = Gateway(name="trunk", host="127.0.0.1", port=peer.port)
    receiver = await webhook_receiver(routes={"/answer": SHORT})
    server = Server(make_config(tmp_path, gateways=[dead, trunk]))
    await server.start()
    try:
        await wait_until(
            lambda: server.ua.gateways()[0]["up"] is False, 3, what="the dead gateway down"
        )
        form = {
            "From": "1000",
            "To": "2000",
            "AnswerUrl": receiver.url("/answer"),
            "HangupUrl": receiver.url("/hangup"),
            "Gateways": "sofia/gateway/dead/,sofia/gateway/trunk/",
            "GatewayTimeouts": "30,30",
        }
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{server.base_url}/v0.1/Call/", data=form, headers=basic(AUTH_ID, AUTH_TOKEN)
            ) as resp:
                assert (
                    resp.status == 200 and (await resp.json(content_type=None))["Success"] is True
                )
        hangup = (await receiver.wait_for(path="/hangup", timeout=10))[0].form
        assert hangup["HangupCause"] == "NORMAL_CLEARING", hangup
        await sipp_done(peer)
        assert "INVITE sip:2000@127.0.0.1" in sipp_messages(peer)
        assert "OPTIONS" in overloaded.methods and "INVITE" not in overloaded.methods
    finally:
        await server.stop(mode="hangup", drain_timeout_s=2.0)
        transport.close()
