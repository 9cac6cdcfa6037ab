"""A dead destination fails the attempt at once (issue 13, issue 11's dead UDP gateway):
ICMP port unreachable read from the UDP socket's error queue, a refused TCP connection,
and gateway failover past a dead trunk, against real sockets and a sipp callee."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sip import causes
from sip.aio.transport import UdpTransport
from softswitch.server import Server
from softswitch.ua import UserAgent, UserAgentConfig
from tests.conftest import free_port, needs_sipp
from tests.peers.plivo_api import AUTH_ID, AUTH_TOKEN, basic, make_config, sipp_done

SHORT = '<?xml version="1.0"?><Response><Wait length="1"/></Response>'


@pytest.fixture
async def ua():
    agent = UserAgent(UserAgentConfig(host="127.0.0.1", port=0))
    await agent.start()
    yield agent
    await agent.close()


async def test_dead_udp_port_fails_at_once_not_after_timer_b(ua: UserAgent) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    call = await ua.dial(f"sip:bob@127.0.0.1:{free_port()}", from_user="1000")
    end = await asyncio.wait_for(call.wait_terminated(), 5)  # Timer B would be 32 s
    assert loop.time() - started < 5
    assert (end.cause, end.sip_status, end.hangup_source) == (
        causes.TRANSPORT_FAILURE,
        503,
        "error",
    )
    assert ua.sip.udp is not None and ua.sip.udp.icmp_errors >= 1


async def test_refused_tcp_connection_is_a_transport_failure(ua: UserAgent) -> None:
    call = await ua.dial(
        f"sip:bob@127.0.0.1:{free_port(socket.SOCK_STREAM)};transport=tcp", from_user="1000"
    )
    end = await asyncio.wait_for(call.wait_terminated(), 5)
    assert (end.cause, end.sip_status) == (causes.DESTINATION_OUT_OF_ORDER, 503)  # not 408


async def test_error_queue_names_the_destination_and_the_next_send_goes_out() -> None:
    """The transport alone: the ICMP error is reported with the address the datagram went
    to, and a datagram sent while the error was still pending is not lost."""
    unreachable: list[tuple[tuple[str, int], int]] = []
    received: asyncio.Queue[bytes] = asyncio.Queue()
    udp = await UdpTransport.listen("127.0.0.1", 0, lambda m, i: None, lambda d, e, i: None)
    udp.on_unreachable = lambda address, err: unreachable.append((address, err))
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.setblocking(False)
    loop = asyncio.get_running_loop()
    loop.add_reader(listener.fileno(), lambda: received.put_nowait(listener.recv(100)))
    try:
        dead = free_port()
        udp.send(b"to nobody", ("127.0.0.1", dead))
        udp.send(b"to a listener", listener.getsockname())  # may meet the pending error
        assert await asyncio.wait_for(received.get(), 5) == b"to a listener"
        for _ in range(250):  # bounded: the error arrives within a loop turn or two
            if unreachable:
                break
            await asyncio.sleep(0.02)
        assert unreachable == [(("127.0.0.1", dead), 111)]
    finally:
        loop.remove_reader(listener.fileno())
        listener.close()
        udp.close()


@needs_sipp
@pytest.mark.peer
async def test_legacy_gateways_fail_over_past_a_dead_trunk_at_once(
    tmp_path: Path, sipp: Any, webhook_receiver: Any
) -> None:
    """Gateways = [a dead UDP port, sipp] with a 30 s timeout each: the dead one is left as
    soon as its ICMP error comes back, the answer URL is fetched well before Timer B."""
    up = sipp("uas_answer.xml")
    receiver = await webhook_receiver(routes={"/answer": SHORT})
    server = Server(make_config(tmp_path))
    await server.start()
    loop = asyncio.get_running_loop()
    try:
        async with aiohttp.ClientSession() as session:
            started = loop.time()
            async with session.post(
                f"{server.base_url}/v0.1/Call/",
                data={
                    "From": "1000",
                    "To": "bob",
                    "AnswerUrl": receiver.url("/answer"),
                    "HangupUrl": receiver.url("/hangup"),
                    "Gateways": f"sip:127.0.0.1:{free_port()}/,sip:127.0.0.1:{up.port}/",
                    "GatewayTimeouts": "30,30",
                },
                headers=basic(AUTH_ID, AUTH_TOKEN),
            ) as resp:
                assert (await resp.json(content_type=None))["Success"] is True
            await receiver.wait_for(path="/answer", timeout=10)
            assert loop.time() - started < 5
            hangup = (await receiver.wait_for(path="/hangup", timeout=15))[0].form
            assert hangup["HangupCause"] == "NORMAL_CLEARING"
            await sipp_done(up)
    finally:
        await server.stop(mode="hangup", drain_timeout_s=2.0)
