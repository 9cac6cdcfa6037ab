"""The Plivo Conference API with the official SDK against live rooms: calls placed with the
SDK to sipp callees run ``<Conference>`` and the SDK lists, reads and drives the rooms (mute,
deaf, play, speak, record, kick, hang up one member, a room, every room);
``parent_call_uuid`` with ``error_if_parent_not_found``.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import plivo
import pytest

from tests.peers import xml_app
from tests.peers.xml_app import AUTH_ID, AUTH_TOKEN, Env, hangup_of

env = xml_app.env
uas = xml_app.uas

pytestmark = [
    pytest.mark.peer,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp not installed"),
]


async def poll(pred: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def members(env: Env, name: str) -> int:
    room = env.server.manager.conferences.get(AUTH_ID, name)
    return 0 if room is None else len(room.members)


async def join(env: Env, uas: Any, name: str, count: int, attrs: str = "", **kw: Any) -> list[str]:
    uuids: list[str] = []
    before = members(env, name)
    for _ in range(count):
        path = f"/{name}-{members(env, name)}"  # one path per call: env.call waits on it
        env.web.routes[path] = (
            f"<Response><Conference{attrs}>{name}</Conference><Speak>after the room</Speak>"
            "</Response>"
        )
        uuids.append(await env.call(uas().uri, answer_url=env.web.url(path), **kw))
        want = before + len(uuids)
        assert await poll(lambda: members(env, name) == want)  # noqa: B023
    return uuids


async def test_conference_api_with_the_sdk(env: Env, uas: Any, tmp_path: Path) -> None:
    c = env.client
    a, b = await join(env, uas, "r1", 2)
    listed = await env.sdk(c.conferences.list)
    assert listed.conferences == ["r1"]
    got = await env.sdk(c.conferences.get, "r1")
    assert got.conference_name == "r1" and got.conference_member_count == "2"
    rows = {m["member_id"]: m for m in got.members}
    assert rows["1"]["call_uuid"] == a and rows["2"]["call_uuid"] == b
    assert rows["1"]["muted"] is False and rows["1"]["deaf"] is False
    assert rows["1"]["to"].startswith("sip:callee@") and rows["1"]["from"] == "1000"

    resp = await env.sdk(c.conferences.member_mute, "r1", "1")
    assert resp.message == "muted" and resp.member_id == ["1"]
    room = env.server.manager.conferences.get(AUTH_ID, "r1")
    assert room.members["1"].muted and room.media.mixer.muted(room.members["1"].slot)
    await env.sdk(c.conferences.member_mute_stop, "r1", "1")
    assert not room.members["1"].muted
    resp = await env.sdk(c.conferences.member_deaf, "r1", "all")
    assert resp.message == "deaf" and sorted(resp.member_id) == ["1", "2"]
    assert room.media.mixer.deaf(room.members["2"].slot)
    await env.sdk(c.conferences.member_deaf_stop, "r1", "all")
    assert not room.members["2"].deaf

    env.web.file("/tone.wav", _tone_wav(tmp_path / "t.wav"))
    resp = await env.sdk(c.conferences.member_play, "r1", "2", env.web.url("/tone.wav"))
    assert resp.message == "play queued into conference" and resp.member_id == ["2"]
    assert room.members["2"].stream.overlays == 2  # the room's mix and the file
    await env.sdk(c.conferences.member_play_stop, "r1", "2")
    assert await poll(lambda: room.members["2"].stream.overlays == 1)  # the room's mix only
    resp = await env.sdk(c.conferences.member_speak, "r1", "all", "hello room")
    assert resp.message == "speak queued into conference"

    rec = await env.sdk(c.conferences.record, "r1", file_format="wav")
    assert rec.message == "conference recording started" and f"{rec.recording_id}.wav" in rec.url
    await asyncio.sleep(0.5)
    await env.sdk(c.conferences.record_stop, "r1")
    path = Path(env.server.config.data_dir) / "recordings" / AUTH_ID / f"{rec.recording_id}.wav"
    assert path.stat().st_size >= 44 + 6400  # about half a second of 8 kHz 16-bit audio

    resp = await env.sdk(c.conferences.member_kick, "r1", "2")
    assert resp.message == "kicked" and resp.member_id == ["2"]
    # b's XML goes on after the room: "after the room", then the end of instructions
    hb = await hangup_of(env, b)
    assert hb["HangupCauseName"] == "End Of XML Instructions"
    assert members(env, "r1") == 1
    await env.sdk(c.conferences.member_hangup, "r1", "1")
    ha = await hangup_of(env, a)
    assert ha["HangupSource"] == "API Request"
    assert await poll(lambda: members(env, "r1") == 0)
    with pytest.raises(plivo.exceptions.ResourceNotFoundError):
        await env.sdk(c.conferences.get, "r1")
    with pytest.raises(plivo.exceptions.ResourceNotFoundError):
        await env.sdk(c.conferences.member_mute, "nope", "1")


async def test_hangup_rooms_and_parent_call_uuid(env: Env, uas: Any, tmp_path: Path) -> None:
    c = env.client
    # waitSound: a document of Play/Speak/Wait played while the member is alone
    env.web.file("/moh.wav", _tone_wav(tmp_path / "moh.wav"))
    env.web.routes["/wait"] = (
        f'<Response><Play loop="2">{env.web.url("/moh.wav")}</Play><Wait length="1"/></Response>'
    )
    (first,) = await join(env, uas, "r2", 1, attrs=f' waitSound="{env.web.url("/wait")}"')
    await env.web.wait_for(path="/wait", timeout=10)
    alone = env.server.manager.conferences.member_of(first)
    assert await poll(lambda: len(env.web.of("/moh.wav")) == 1)  # the document's <Play>
    assert alone.stream.overlays == 1 and alone.stream.playing
    assert env.web.of("/wait")[-1].method == "POST"  # waitMethod's default
    assert len(env.web.of("/wait")) == 1  # fetched once, as a document only
    # parent_call_uuid: the first leg of the ongoing conference
    (second,) = await join(
        env, uas, "r2", 1, parent_call_uuid=first, error_if_parent_not_found=True
    )
    assert members(env, "r2") == 2
    rec = env.record(second)
    assert rec["parent_call_uuid"] == first
    with pytest.raises(plivo.exceptions.PlivoRestError):
        await env.sdk(
            c.calls.create,
            from_="1000",
            to_=uas().uri,
            answer_url=env.web.url("/r2-x"),
            parent_call_uuid="00000000-0000-0000-0000-000000000000",
            error_if_parent_not_found=True,
        )
    (third,) = await join(env, uas, "r3", 1)
    await env.sdk(c.conferences.hangup, "r3")
    assert (await hangup_of(env, third))["HangupSource"] == "API Request"
    await env.sdk(c.conferences.hangup_all)
    for uid in (first, second):
        assert (await hangup_of(env, uid))["HangupSource"] == "API Request"
    assert (await env.sdk(c.conferences.list)).conferences == []


async def _api(env: Env, method: str, path: str, **data: str) -> tuple[int, Any]:
    import base64

    import aiohttp

    url = f"{env.server.base_url}/v1/Account/{AUTH_ID}/Conference/{path}"
    auth = "Basic " + base64.b64encode(f"{AUTH_ID}:{AUTH_TOKEN}".encode()).decode()
    async with (
        aiohttp.ClientSession(headers={"Authorization": auth}) as session,
        session.request(method, url, json=data or None) as resp,
    ):
        return resp.status, (await resp.json() if resp.status != 204 else None)


async def test_member_callbacks_record_callback_and_record_when_alone(
    env: Env, uas: Any, tmp_path: Path
) -> None:
    # recordWhenAlone false (Plivo's default): the first member alone is not recorded
    attrs = ' record="true" recordFileFormat="wav"'
    (a,) = await join(env, uas, "cb", 1, attrs=attrs)
    room = env.server.manager.conferences.get(AUTH_ID, "cb")
    rec_path = Path(env.server.config.data_dir) / "recordings" / AUTH_ID
    await asyncio.sleep(1.0)
    (recorded,) = list(rec_path.glob("*.wav"))
    assert recorded.stat().st_size <= 44 + 1600  # nothing (a frame or so) while alone
    await join(env, uas, "cb", 1, attrs=attrs)
    assert await poll(lambda: recorded.stat().st_size >= 44 + 8000, timeout=5)

    # callback_url on member operations: the answer's fields are posted there, signed
    cb = env.web.url("/member-cb")
    status, body = await _api(env, "POST", "cb/Member/1/Mute/", callback_url=cb)
    assert status == 202 and body["message"] == "muted" and body["member_id"] == ["1"]
    (hit,) = await env.web.wait_for(path="/member-cb", timeout=10)
    assert hit.method == "POST"
    assert hit.params["message"] == "muted" and hit.params["member_id"] == "1"
    assert hit.params["conference_name"] == "cb" and hit.params["api_id"] == body["api_id"]
    status, _ = await _api(
        env, "DELETE", "cb/Member/all/Mute/", callback_url=cb, callback_method="GET"
    )
    assert status == 204
    hits = await env.web.wait_for(path="/member-cb", count=2, timeout=10)
    assert hits[1].method == "GET" and hits[1].params["member_id"] == "1,2"
    assert hits[1].params["message"] == "unmuted"
    assert not room.members["1"].muted

    # a recording started through the API posts Plivo's recording callback when it ends
    room.stop_recording()
    status, body = await _api(
        env, "POST", "cb/Record/", file_format="wav", callback_url=env.web.url("/rec-cb")
    )
    assert status == 202
    await asyncio.sleep(0.5)
    status, _ = await _api(env, "DELETE", "cb/Record/")
    assert status == 204
    (hit,) = await env.web.wait_for(path="/rec-cb", timeout=10)
    got = hit.params
    assert got["api_id"] == body["api_id"] and got["recording_id"] == body["recording_id"]
    assert got["record_url"] == body["url"] and got["conference_name"] == "cb"
    assert 300 <= int(got["recording_duration_ms"]) <= 3000
    assert int(got["recording_end_ms"]) - int(got["recording_start_ms"]) >= 300
    assert got["recording_duration"] in ("0", "1", "2")
    assert not env.web.bad_signatures
    await env.sdk(env.client.conferences.hangup, "cb")
    await hangup_of(env, a)


def _tone_wav(path: Path) -> bytes:
    import wave

    import numpy as np

    t = np.arange(8000 * 3) / 8000
    pcm = (8000 * np.sin(2 * np.pi * 600 * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(pcm.tobytes())
    return path.read_bytes()


async def test_twiml_participant_hold_coach_time_limit_and_dial_action(env: Env, uas: Any) -> None:
    """Twilio's Participants resource (with the official SDK) holds and mutes a participant
    of a ``<Dial><Conference>`` room, its status callback says so; the Dial's ``timeLimit``
    takes the participant out and the Dial's ``action`` gets Twilio's words."""
    from twilio.rest import Client

    tw = Client(AUTH_ID, AUTH_TOKEN)
    tw.api.base_url = env.server.base_url
    (plivo_uuid,) = await join(env, uas, "tw", 1)
    env.web.routes["/tw"] = (
        '<Response><Dial timeLimit="3" action="/after"><Conference statusCallback="/tcb"'
        ' statusCallbackEvent="join hold mute">tw</Conference></Dial></Response>'
    )
    env.web.routes["/after"] = "<Response><Hangup/></Response>"
    call = await env.sdk(
        tw.calls.create, to=uas().uri, from_="+15551230000", url=env.web.url("/tw")
    )
    assert await poll(lambda: members(env, "tw") == 2)
    room = env.server.manager.conferences.get(AUTH_ID, "tw")
    sid = "CF" + room.uuid.replace("-", "")
    participants = await env.sdk(tw.conferences(sid).participants.list)
    assert len(participants) == 2
    assert call.sid in {p.call_sid for p in participants}
    held = await env.sdk(tw.conferences(sid).participants(call.sid).update, hold=True)
    assert held.hold is True and held.muted is False
    member = env.server.manager.conferences.member_of(
        next(m.call_uuid for m in room.members.values() if m.call_uuid != plivo_uuid)
    )
    assert (
        member.hold and room.media.mixer.muted(member.slot) and room.media.mixer.deaf(member.slot)
    )
    await env.sdk(tw.conferences(sid).participants(call.sid).update, hold=False, muted=True)
    assert not member.hold and member.muted and not room.media.mixer.deaf(member.slot)
    words = [h.params["StatusCallbackEvent"] for h in await env.web.wait_for(path="/tcb", count=4)]
    assert words == [
        "participant-join",
        "participant-hold",
        "participant-unhold",
        "participant-mute",
    ]
    assert [h.params["Hold"] for h in env.web.of("/tcb")][1:3] == ["true", "false"]
    # timeLimit="3": out of the room after 3 s, then the Dial's action
    (after,) = await env.web.wait_for(path="/after", timeout=10)
    assert after.params["DialCallStatus"] == "completed"
    assert after.params["ConferenceSid"] == sid and after.params["CallSid"] == call.sid
    assert 2 <= int(after.params["DialCallDuration"]) <= 5
    assert members(env, "tw") == 1
    with pytest.raises(Exception, match="404|not found"):
        await env.sdk(tw.conferences(sid).participants(call.sid).fetch)
    await env.sdk(env.client.conferences.hangup, "tw")
    await hangup_of(env, plivo_uuid)
