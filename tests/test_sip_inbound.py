"""The asyncio user agent's inbound side (``accept_inbound``): two real user agents on
loopback, one calling the other; the callee rings, answers, rejects, and sees the caller's
BYE and CANCEL as :class:`~sip.events.Terminated` events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sip import causes
from sip.aio import InboundCall, UserAgent, UserAgentConfig
from sip.events import Ringing

OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"
ANSWER = OFFER.replace("40000", "40002").replace("- 1 1", "- 2 2")


@pytest.fixture
async def agents() -> AsyncIterator[tuple[UserAgent, UserAgent, asyncio.Queue[InboundCall]]]:
    callee = UserAgent(
        UserAgentConfig(host="127.0.0.1", port=0, transports=("udp",), accept_inbound=True)
    )
    caller = UserAgent(UserAgentConfig(host="127.0.0.1", port=0, transports=("udp",)))
    await callee.start()
    await caller.start()
    offered: asyncio.Queue[InboundCall] = asyncio.Queue()
    callee.on_incoming = offered.put_nowait
    try:
        yield caller, callee, offered
    finally:
        await caller.close(grace=0.5)
        await callee.close(grace=0.5)


async def test_ring_answer_and_the_callers_bye(agents) -> None:
    caller, callee, offered = agents
    remote: list[str] = []
    call = await caller.dial(
        f"sip:5000@127.0.0.1:{callee.local_port}",
        from_user="4155550100",
        caller_name="Alice",
        sdp=OFFER,
        on_remote_sdp=lambda sdp, early: remote.append(sdp),
    )
    inbound = await asyncio.wait_for(offered.get(), 5)
    assert (inbound.called_user, inbound.caller_user, inbound.caller_name) == (
        "5000",
        "4155550100",
        "Alice",
    )
    assert inbound.offer == OFFER and inbound.state == "offered"
    inbound.ring()
    inbound.answer(ANSWER)
    assert await asyncio.wait_for(call.wait_answered(), 5)
    assert await asyncio.wait_for(inbound.wait_answered(), 5)  # the caller's ACK
    assert remote == [ANSWER]
    assert any(isinstance(e, Ringing) for e in call.history)
    assert inbound.dialog_state() is not None
    await call.hangup()
    ended = await asyncio.wait_for(inbound.wait_terminated(), 5)
    assert (ended.cause, ended.hangup_source) == (causes.NORMAL_CLEARING, "caller")
    assert inbound.state == "terminated" and inbound.duration >= 0


async def test_reject_and_the_callers_cancel(agents) -> None:
    caller, callee, offered = agents
    busy = await caller.dial(f"sip:5001@127.0.0.1:{callee.local_port}", from_user="1", sdp=OFFER)
    (await asyncio.wait_for(offered.get(), 5)).reject(486)
    assert (await asyncio.wait_for(busy.wait_terminated(), 5)).sip_status == 486

    ringing = await caller.dial(f"sip:5002@127.0.0.1:{callee.local_port}", from_user="1", sdp=OFFER)
    inbound = await asyncio.wait_for(offered.get(), 5)
    rang = asyncio.get_running_loop().create_future()
    ringing.add_listener(
        lambda e: isinstance(e, Ringing) and not rang.done() and rang.set_result(True)
    )
    inbound.ring()
    await asyncio.wait_for(rang, 5)
    await ringing.hangup()  # CANCEL
    ended = await asyncio.wait_for(inbound.wait_terminated(), 5)
    assert (ended.cause, ended.sip_status, ended.hangup_source) == (
        causes.ORIGINATOR_CANCEL,
        487,
        "caller",
    )
    assert (await asyncio.wait_for(ringing.wait_terminated(), 5)).sip_status == 487


async def test_without_a_handler_inbound_invites_get_480(agents) -> None:
    caller, callee, _ = agents
    callee.on_incoming = None
    call = await caller.dial(f"sip:5000@127.0.0.1:{callee.local_port}", from_user="1", sdp=OFFER)
    assert (await asyncio.wait_for(call.wait_terminated(), 5)).sip_status == 480
