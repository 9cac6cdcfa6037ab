"""Conferences with real callees: the official Plivo SDK places three calls to three baresip
callees, each playing its own tone, and each call's answer XML puts it in one
``<Conference>`` room. baresip records what it decoded from our RTP, so what each member heard
is independent evidence, checked by frequency (one DFT bin per 20 ms frame).

What is checked: each member hears the other two and never itself; the enter beep reaches the
room; a member muted in the room is no longer heard, a deaf member hears nothing; the callee
with ``endConferenceOnExit`` hanging up ends the room, and the others go on with their XML;
the room recording (``record``) holds every tone; the callbacks (enter, exit, floor, record)
come with Plivo's parameters.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.peers import baresip as baresip_peer
from tests.peers import xml_app
from tests.peers.baresip import needs_baresip, needs_baresip_codec, read_wav, read_wav_8k
from tests.peers.xml_app import AUTH_ID, Env, hangup_of

env = xml_app.env
baresip = baresip_peer.baresip

pytestmark = [
    pytest.mark.peer,
    needs_baresip,
    pytest.mark.skipif(shutil.which("baresip") is None, reason="baresip not installed"),
    pytest.mark.xdist_group("timing"),
]

RATE = 8000
FRAME = 160
#: whole cycles in one 20 ms frame: one DFT bin each, no leakage between them.
TONES = {"a": 400.0, "b": 1000.0, "c": 2000.0}
BEEP = 700.0


def tone_wav(path: Path, freq: float, seconds: float) -> Path:
    t = np.arange(int(seconds * RATE)) / RATE
    pcm = (8000 * np.sin(2 * np.pi * freq * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())
    return path


def levels(pcm: np.ndarray, freq: float) -> np.ndarray:
    """Amplitude of ``freq`` in each 20 ms frame."""
    n = len(pcm) // FRAME
    if n == 0:
        return np.zeros(0)
    frames = pcm[: n * FRAME].reshape(n, FRAME).astype(np.float64)
    t = np.arange(FRAME) / RATE
    basis = np.exp(-2j * np.pi * freq * t)
    return np.abs(frames @ basis) * 2 / FRAME


def heard(pcm: np.ndarray, freq: float) -> float:
    """How much of ``pcm`` carries ``freq`` clearly (fraction of frames over ~-30 dBFS)."""
    lv = levels(pcm, freq)
    return float((lv > 1000).mean()) if lv.size else 0.0


async def poll(pred: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def recording_of(peer: Any, timeout: float = 10.0) -> np.ndarray:
    assert await poll(lambda: peer.recording() is not None, timeout), peer.log()[-2000:]
    path = peer.recording()
    # libsndfile finalises the header when the call ends: wait until the size is stable
    last = -1
    for _ in range(50):
        size = path.stat().st_size
        if size == last and size > 44:
            break
        last = size
        await asyncio.sleep(0.1)
    return read_wav(path)


async def test_three_callees_in_one_room(env: Env, baresip: Any, tmp_path: Path) -> None:
    peers = {
        k: baresip(play_wav=tone_wav(tmp_path / f"{k}.wav", f, 40.0), max_call_s=60.0)
        for k, f in TONES.items()
    }
    cb = env.web.url("/conf")
    env.web.routes["/a"] = (
        f'<Response><Conference callbackUrl="{cb}" floorEvent="true">room</Conference>'
        "<Speak>after</Speak></Response>"
    )
    env.web.routes["/b"] = (
        f'<Response><Conference callbackUrl="{cb}">room</Conference><Wait length="1"/></Response>'
    )
    env.web.routes["/c"] = (
        f'<Response><Conference callbackUrl="{cb}" endConferenceOnExit="true" enterSound="beep:1"'
        f' record="true" recordFileFormat="wav">room</Conference></Response>'
    )
    conferences = env.server.manager.conferences
    uuids = {}
    for k in ("a", "b"):
        uuids[k] = await env.call(peers[k].uri, answer_url=env.web.url(f"/{k}"))
    assert await poll(lambda: (r := conferences.get(AUTH_ID, "room")) and len(r.members) == 2, 10)
    uuids["c"] = await env.call(peers["c"].uri, answer_url=env.web.url("/c"))
    assert await poll(lambda: len(conferences.get(AUTH_ID, "room").members) == 3, 10)
    room = conferences.get(AUTH_ID, "room")
    members = {k: conferences.member_of(uuids[k]) for k in TONES}
    assert [m.member_id for m in members.values()] == ["1", "2", "3"]
    await asyncio.sleep(3.0)  # everybody talks
    # phase 2: b muted (nobody hears it any more), c deaf (hears nothing)
    room.set_mute([members["b"]], True)
    room.set_deaf([members["c"]], True)
    await asyncio.sleep(3.0)
    await env.sdk(env.client.calls.delete, uuids["c"])  # c hangs up: endConferenceOnExit
    for k in TONES:
        await hangup_of(env, uuids[k], timeout=20)
    assert conferences.get(AUTH_ID, "room") is None

    pcm = {k: await recording_of(p) for k, p in peers.items()}
    pcm["a"] = pcm["a"][: -int(1.5 * RATE)]  # then a's "after" (speech) plays, out of the room
    for k, own in TONES.items():
        others = [f for j, f in TONES.items() if j != k]
        assert heard(pcm[k], own) < 0.01, (k, "hears itself", heard(pcm[k], own))
        for f in others:
            assert heard(pcm[k], f) > 0.1, (k, f, heard(pcm[k], f))
    # the last 2 s in the room (before c's hangup): b muted, c deaf
    tail_a = pcm["a"][-int(2.0 * RATE) :]
    assert heard(tail_a, TONES["c"]) > 0.8 and heard(tail_a, TONES["b"]) < 0.05
    tail_c = pcm["c"][-int(2.2 * RATE) : -int(0.4 * RATE)]
    assert heard(tail_c, TONES["a"]) < 0.05 and heard(tail_c, TONES["b"]) < 0.05
    # the enter beep of c reached a and b
    for k in ("a", "b"):
        assert levels(pcm[k], BEEP).max() > 1000, k

    # callbacks: enter and exit for each member, a's floor, the room recording
    hits = env.web.of("/conf")
    actions = [(h.params["CallUUID"], h.params["ConferenceAction"]) for h in hits]
    for k in TONES:
        assert (uuids[k], "enter") in actions and (uuids[k], "exit") in actions
    assert (uuids["a"], "floor") in actions
    names = {h.params["ConferenceName"] for h in hits}
    assert names == {"room"} and len({h.params["ConferenceUUID"] for h in hits}) == 1
    rec = [h.params for h in hits if h.params["ConferenceAction"] == "record"]
    assert len(rec) == 1 and rec[0]["CallUUID"] == uuids["c"]
    path = (
        Path(env.server.config.data_dir) / "recordings" / AUTH_ID / f"{rec[0]['RecordingID']}.wav"
    )
    room_pcm = read_wav(path)
    first = room_pcm[int(0.5 * RATE) : int(2.5 * RATE)]
    for f in TONES.values():
        assert heard(first, f) > 0.8, f
    assert int(rec[0]["RecordingDuration"]) >= 5


async def test_twiml_dial_conference_joined_by_a_plivo_xml_call(
    env: Env, baresip: Any, tmp_path: Path
) -> None:
    from twilio.rest import Client

    tw = Client(AUTH_ID, xml_app.AUTH_TOKEN)
    tw.api.base_url = env.server.base_url
    plivo_peer = baresip(play_wav=tone_wav(tmp_path / "p.wav", TONES["a"], 40.0), max_call_s=60.0)
    twiml_peer = baresip(play_wav=tone_wav(tmp_path / "t.wav", TONES["b"], 40.0), max_call_s=60.0)
    env.web.routes["/plivo"] = (
        f'<Response><Conference callbackUrl="{env.web.url("/pcb")}">mixed</Conference></Response>'
    )
    env.web.routes["/twiml"] = (
        '<Response><Dial><Conference beep="onExit" statusCallback="/tcb"'
        ' statusCallbackEvent="start end join leave" record="record-from-start">mixed'
        "</Conference></Dial></Response>"
    )
    conferences = env.server.manager.conferences
    plivo_uuid = await env.call(plivo_peer.uri, answer_url=env.web.url("/plivo"))
    assert await poll(lambda: conferences.get(AUTH_ID, "mixed") is not None, 10)
    call = await env.sdk(
        tw.calls.create, to=twiml_peer.uri, from_="+15551230000", url=env.web.url("/twiml")
    )
    assert await poll(lambda: len(conferences.get(AUTH_ID, "mixed").members) == 2, 10)
    room = conferences.get(AUTH_ID, "mixed")
    await asyncio.sleep(3.0)
    await env.sdk(tw.calls(call.sid).update, status="completed")  # the TwiML call leaves
    assert await poll(lambda: len(room.members) == 1, 10)
    await asyncio.sleep(1.5)  # the exit beep plays to the Plivo call
    await env.sdk(env.client.calls.delete, plivo_uuid)
    await hangup_of(env, plivo_uuid, timeout=20)
    assert conferences.get(AUTH_ID, "mixed") is None

    p_pcm = (await recording_of(plivo_peer))[: -int(0.5 * RATE)]
    t_pcm = (await recording_of(twiml_peer))[: -int(0.5 * RATE)]
    assert heard(p_pcm, TONES["b"]) > 0.3 and heard(p_pcm, TONES["a"]) < 0.01
    assert heard(t_pcm, TONES["a"]) > 0.3 and heard(t_pcm, TONES["b"]) < 0.01
    # beep="onExit": the Plivo call heard the TwiML call leave, and no beep when it came in
    beeps = levels(p_pcm, BEEP) > 1000
    assert beeps.sum() >= 10 and not beeps[: int(len(beeps) * 0.5)].any()
    # Twilio's conference status callbacks on the TwiML call, Plivo's on the Plivo call
    tcb = [h.params for h in env.web.of("/tcb")]
    words = [p["StatusCallbackEvent"] for p in tcb]
    assert words[:1] == ["participant-join"] and "participant-leave" in words
    assert "conference-start" not in words  # the Plivo call had started the room already
    sid = "CF" + room.uuid.replace("-", "")
    assert {p["ConferenceSid"] for p in tcb} == {sid}
    assert {p["FriendlyName"] for p in tcb} == {"mixed"} and tcb[0]["CallSid"] == call.sid
    pcb = [h.params for h in env.web.of("/pcb")]
    assert [p["ConferenceAction"] for p in pcb] == ["enter", "exit"]
    assert pcb[0]["ConferenceUUID"] == room.uuid


@needs_baresip_codec("G722")
@needs_baresip_codec("OPUS")
async def test_members_on_different_codecs_hear_each_other(
    env: Env, baresip: Any, tmp_path: Path
) -> None:
    """G.722, Opus and PCMU callees in one room: every stream decodes to 8 kHz linear PCM
    before the mixer, and each member's mix is encoded in its own codec."""
    # Calls not through a gateway offer the engine's codecs (G.711 by default; a gateway's
    # ``codecs`` narrows its own): here all four, and each callee accepts only its own.
    env.server.ua.media.config.codecs = ["G722", "OPUS", "PCMU", "PCMA"]
    codecs = {"a": "G722", "b": "OPUS", "c": "PCMU"}
    peers = {
        k: baresip(
            codecs=(codecs[k],), play_wav=tone_wav(tmp_path / f"{k}.wav", f, 30.0), max_call_s=40.0
        )
        for k, f in TONES.items()
    }
    conferences = env.server.manager.conferences
    uuids = {}
    for k in TONES:  # a path per call: env.call waits on it
        env.web.routes[f"/room-{k}"] = "<Response><Conference>mixed</Conference></Response>"
        uuids[k] = await env.call(peers[k].uri, answer_url=env.web.url(f"/room-{k}"))
    assert await poll(lambda: (r := conferences.get(AUTH_ID, "mixed")) and len(r.members) == 3, 10)
    for k, codec in codecs.items():
        member = conferences.member_of(uuids[k])
        assert member.stream.stats()["codec"].upper() == codec, (k, member.stream.stats())
    await asyncio.sleep(3.0)
    await env.sdk(env.client.conferences.hangup, "mixed")
    for k in TONES:
        await hangup_of(env, uuids[k], timeout=20)
    for peer in peers.values():
        assert await poll(lambda: peer.recording() is not None, 10), peer.log()[-2000:]  # noqa: B023
        peer.stop()  # the WAV header is final once baresip has exited
    pcm = {k: read_wav_8k(p.recording()) for k, p in peers.items()}
    for k in TONES:
        print(codecs[k], {codecs[j]: round(heard(pcm[k], f), 2) for j, f in TONES.items()})
    for k, own in TONES.items():
        assert heard(pcm[k], own) < 0.01, (k, codecs[k], "hears itself", heard(pcm[k], own))
        for j, f in TONES.items():
            if j != k:
                # about 3 s of the other two in the room (the recording holds more)
                assert heard(pcm[k], f) > 0.15, (k, codecs[k], j, codecs[j], heard(pcm[k], f))
