"""machine_detection through the Plivo API (seed 002), with the official SDK as the client and
baresip answering with a recorded human "Hello?" or a voicemail greeting."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.peers import amd_clips, xml_app
from tests.peers.baresip import needs_baresip
from tests.peers.xml_app import AUTH_ID, AUTH_TOKEN, HOLD, Env, hangup_of

# the shared fixtures: a real server with the user's web app, the callee's recorded clips
env = xml_app.env
human_clip = amd_clips.human_clip
machine_clip = amd_clips.machine_clip

pytestmark = [needs_baresip, pytest.mark.peer]


async def _create(env: Env, to: str, **kw: Any) -> None:
    kw.setdefault("answer_url", env.web.url("/answer"))
    kw.setdefault("hangup_url", env.web.url("/hangup"))
    resp = await env.sdk(env.client.calls.create, from_="1000", to_=to, **kw)
    assert resp.message == "call fired"


async def test_sync_mode_passes_machine_false_to_answer_url(env: Env, baresip: Any, human_clip: Any) -> None:
    env.web.routes["/answer"] = '<Response><Wait length="1"/></Response>'
    peer = baresip(play_wav=human_clip)
    await _create(env, peer.uri, machine_detection="true")
    answer = (await env.web.wait_for(path="/answer", timeout=20))[0]
    assert answer.signed and answer.params["Machine"] == "false", answer.params
    assert answer.params["AmdStatus"] == "HUMAN" and int(answer.params["AmdDecisionMs"]) < 3500
    hang = await hangup_of(env, answer.params["CallUUID"])
    assert hang["Machine"] == "false"  # every later callback carries the decision
    rec = env.record(answer.params["CallUUID"])
    assert rec["extra"]["machine_detection"]["Machine"] == "false"


async def test_hangup_mode_ends_a_machine_call(env: Env, baresip: Any, machine_clip: Any) -> None:
    env.web.routes["/answer"] = HOLD
    peer = baresip(play_wav=machine_clip)
    await _create(env, peer.uri, machine_detection="hangup", machine_detection_time="5000")
    hits = await env.web.wait_for(path="/hangup", timeout=25)
    hang = hits[0].params
    assert hits[0].signed
    assert hang["Machine"] == "true" and hang["HangupCause"] == "MACHINE_DETECTED", hang
    assert hang["CallStatus"] == "completed" and hang["HangupSource"] == "Plivo"
    assert not env.web.of("/answer"), "a machine hung up in sync mode never runs answer_url"


async def test_async_mode_posts_the_decision_while_the_app_runs(env: Env, baresip: Any, machine_clip: Any) -> None:
    env.web.routes["/answer"] = HOLD
    peer = baresip(play_wav=machine_clip)
    await _create(env, peer.uri, machine_detection="true", machine_detection_url=env.web.url("/amd"),
                  machine_detection_method="POST")
    answer = (await env.web.wait_for(path="/answer", timeout=15))[0]
    assert "Machine" not in answer.params  # async: answer_url runs at once
    amd = (await env.web.wait_for(path="/amd", timeout=15))[0]
    assert amd.signed
    p = amd.params
    assert p["Event"] == "MachineDetection" and p["Machine"] == "true" and p["CallStatus"] == "in-progress"
    for key in ("From", "To", "RequestUUID", "ALegRequestUUID", "CallUUID", "ALegUUID", "Direction"):
        assert p[key], key
    await env.sdk(env.client.calls.delete, p["CallUUID"])
    hang = await hangup_of(env, p["CallUUID"])
    assert hang["Machine"] == "true"


async def test_tuning_parameters_are_validated(env: Env) -> None:
    # The SDK's calls.create() knows only machine_detection_time; the others go as raw JSON.
    url = f"{env.server.base_url}/v1/Account/{AUTH_ID}/Call/"
    auth = {"Authorization": aiohttp.encode_basic_auth(AUTH_ID, AUTH_TOKEN)}
    base = {"from": "1000", "to": "sip:x@127.0.0.1:9", "answer_url": env.web.url("/answer"), "machine_detection": "true"}
    async with aiohttp.ClientSession(headers=auth) as session:
        for name, value in (("machine_detection_time", "1000"), ("machine_detection_maximum_words", "50"),
                            ("machine_detection_initial_silence", "abc"), ("machine_detection_silence", "100"),
                            ("machine_detection_maximum_speech_length", "9000"),
                            ("machine_detection_initial_greeting", "500")):
            async with session.post(url, json={**base, name: value}) as resp:
                body = await resp.json()
                assert resp.status == 400 and name in body["error"], (name, body)
                assert set(body) == {"api_id", "error"}
        async with session.post(url, json={**base, "machine_detection_maximum_words": "5",
                                           "machine_detection_silence": "1000"}) as resp:
            assert resp.status == 201
