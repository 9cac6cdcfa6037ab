"""Fax and special-information tones on real calls: baresip answers and plays a fax machine's
CED or a carrier's SIT and announcement; each dialect reports it in its own words."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.peers import amd_clips, xml_app
from tests.peers.baresip import needs_baresip
from tests.peers.xml_app import AUTH_ID, AUTH_TOKEN, HOLD, Env, hangup_of

env = xml_app.env
sit_clip = amd_clips.sit_clip
fax_clip = amd_clips.fax_clip

pytestmark = [needs_baresip, pytest.mark.peer]


async def _create(env: Env, to: str, **kw: Any) -> None:
    kw.setdefault("answer_url", env.web.url("/answer"))
    kw.setdefault("hangup_url", env.web.url("/hangup"))
    resp = await env.sdk(env.client.calls.create, from_="1000", to_=to, **kw)
    assert resp.message == "call fired"


async def test_plivo_sync_mode_reports_a_sit_as_not_a_machine(
    env: Env, baresip: Any, sit_clip: Any
) -> None:
    env.web.routes["/answer"] = "<Response><Hangup/></Response>"
    peer = baresip(play_wav=sit_clip)
    await _create(env, peer.uri, machine_detection="true")
    answer = (await env.web.wait_for(path="/answer", timeout=20))[0]
    p = answer.params
    assert p["Machine"] == "false" and p["AmdStatus"] == "SIT" and p["AmdReason"] == "SIT_IC", p
    assert p["AmdToneHz"].split(",")[0] in ("913", "914"), p
    # decided at the third segment: 0.3 s silence + 0.55 s + a part of the third (with RTP delay)
    assert int(p["AmdDecisionMs"]) < 1800, p
    hang = await hangup_of(env, p["CallUUID"])
    assert hang["AmdStatus"] == "SIT"
    rec = env.record(p["CallUUID"])
    assert rec["extra"]["machine_detection"]["AmdStatus"] == "SIT"


async def test_plivo_hangup_mode_hangs_up_on_a_fax(env: Env, baresip: Any, fax_clip: Any) -> None:
    env.web.routes["/answer"] = HOLD
    peer = baresip(play_wav=fax_clip)
    await _create(env, peer.uri, machine_detection="hangup", machine_detection_time="5000")
    hits = await env.web.wait_for(path="/hangup", timeout=25)
    hang = hits[0].params
    assert (
        hang["Machine"] == "true" and hang["AmdStatus"] == "FAX" and hang["AmdReason"] == "CED"
    ), hang
    assert hang["HangupCause"] == "MACHINE_DETECTED"
    # CED starts 1.8 s after the answer; recognised 0.7 s into it (plus RTP start-up)
    assert int(hang["AmdDecisionMs"]) < 1800 + 1500, hang
    assert not env.web.of("/answer")


async def test_twilio_answered_by_fax(env: Env, baresip: Any, fax_clip: Any) -> None:
    """The Twilio-style path (the CallAPI dialect) on the same server: AnsweredBy=fax."""
    env.web.routes["/answer"] = "<Response><Hangup/></Response>"
    peer = baresip(play_wav=fax_clip)
    url = f"{env.server.base_url}/2010-04-01/Accounts/{AUTH_ID}/Calls.json"
    auth = {"Authorization": aiohttp.encode_basic_auth(AUTH_ID, AUTH_TOKEN)}
    data = {
        "To": peer.uri,
        "From": "+15551230000",
        "Url": env.web.url("/answer"),
        "MachineDetection": "Enable",
    }
    async with aiohttp.ClientSession(headers=auth) as s, s.post(url, data=data) as r:
        assert r.status == 201, await r.text()
    answer = (await env.web.wait_for(path="/answer", timeout=20))[0]
    assert answer.params["AnsweredBy"] == "fax", answer.params
