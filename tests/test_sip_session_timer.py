"""RFC 4028 session timers against sipp callees (issue 13: no call lives forever): we ask
for the timer in every INVITE, refresh it (UPDATE or re-INVITE), and a refresh that fails or
a session the callee lets expire ends with BYE + Reason cause 102, reported as
RECOVERY_ON_TIMER_EXPIRE on the record and the hangup callback."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from sip import causes
from softswitch.ua import UserAgent, UserAgentConfig
from tests.conftest import needs_sipp
from tests.peers import plivo_api as api
from tests.peers.plivo_api import Env, sipp_done, sipp_messages, wait_record
from tests.peers.webhooks import WebhookReceiver

pytestmark = [needs_sipp, pytest.mark.peer]

env = api.env
receiver = api.receiver
sdk_base = api.sdk_base


@pytest.fixture
async def ua():
    agent = UserAgent(UserAgentConfig(host="127.0.0.1", port=0))
    await agent.start()
    yield agent
    await agent.close()


async def test_refresh_by_update_when_the_callee_allows_it(ua: UserAgent, sipp: Any) -> None:
    peer = sipp("uas_session_timer_update.xml")  # 4 s session, Allow: UPDATE
    call = await ua.dial(peer.uri, from_user="1000")
    assert await asyncio.wait_for(call.wait_answered(), 10)
    await asyncio.wait_for(_until_sent(peer, "UPDATE sip:"), 5)  # due at 2 s
    await asyncio.sleep(0.5)  # the 200 to the UPDATE is in
    assert call.terminated is None
    await call.hangup()
    await sipp_done(peer)  # sipp checked Session-Expires: 4;refresher=uac on the UPDATE


async def test_refresh_answered_481_ends_with_bye_and_reason(ua: UserAgent, sipp: Any) -> None:
    peer = sipp("uas_session_timer_481.xml")
    call = await ua.dial(peer.uri, from_user="1000")
    assert await asyncio.wait_for(call.wait_answered(), 10)
    end = await asyncio.wait_for(call.wait_terminated(), 6)
    assert end.cause == causes.RECOVERY_ON_TIMER_EXPIRE
    await sipp_done(peer)  # sipp checked the BYE's Reason: Q.850;cause=102


async def test_callee_refresher_that_never_refreshes_through_the_plivo_api(
    sipp: Any, env: Env, receiver: WebhookReceiver
) -> None:
    """The callee makes itself refresher of a 4 s session and goes quiet: before the 4 s
    are over we send BYE with Reason cause 102; the hangup callback and the record say
    RECOVERY_ON_TIMER_EXPIRE."""
    peer = sipp("uas_session_timer_expire.xml")
    resp = await env.sdk(
        env.client.calls.create,
        from_="1000",
        to_=peer.uri,
        answer_url=receiver.url("/answer"),
        hangup_url=receiver.url("/hangup"),
    )
    hangup = (await receiver.wait_hangup(request_uuid=resp.request_uuid, timeout=10)).params
    assert (
        hangup["HangupCause"] == "RECOVERY_ON_TIMER_EXPIRE" and hangup["CallStatus"] == "completed"
    )
    record = await wait_record(env.server, resp.request_uuid)
    extra = record["extra"] if isinstance(record["extra"], dict) else json.loads(record["extra"])
    assert extra["hangup_cause"] == "RECOVERY_ON_TIMER_EXPIRE"
    await sipp_done(peer)
    invite = sipp_messages(peer).split("SIP/2.0 200 OK", 1)[0]
    assert "Session-Expires: 1800;refresher=uac" in invite and "timer" in invite


async def _until_sent(peer: Any, text: str) -> None:
    while text not in sipp_messages(peer):
        await asyncio.sleep(0.05)
