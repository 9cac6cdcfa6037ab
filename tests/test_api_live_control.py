"""Live call control over the Plivo v1 API, with the official SDK as the client, on calls to
real callees: baresip (records what it hears, plays a WAV as its microphone, logs RFC 4733
digits) and sipp (answers and echoes RTP).

Transfer (``calls.update`` with ``aleg_url``), Play/Speak and their DELETEs, DTMF, Record
(the file is written under the data directory and served over HTTP; ``callback_url`` gets
Plivo's recording parameters), and the errors: 404 for unknown or ended calls, 400 for bad
parameters, in Plivo's ``{"api_id", "error"}`` shape.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import wave
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import plivo.exceptions
import pytest

from tests.conftest import wait_until
from tests.peers import xml_app
from tests.peers.baresip import needs_baresip
from tests.peers.xml_app import AUTH_ID, AUTH_TOKEN, HOLD, Env, hangup_of

# the shared fixtures: a real server with the user's web app (``env``), sipp callees (``uas``)
env = xml_app.env
uas = xml_app.uas

pytestmark = [pytest.mark.peer]

RATE = 8000


def tone(freq: float, seconds: float, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (np.sin(2 * np.pi * freq * t) * level * 32767).astype(np.int16)


def wav_bytes(pcm: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def read_wav_bytes(data: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(data), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, RATE)
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


def band_energy(pcm: np.ndarray, freq: float, width: float = 40.0) -> float:
    """Share of the signal's energy within ``freq`` ± ``width`` Hz."""
    x = pcm.astype(np.float64)
    if x.size == 0:
        return 0.0
    spec = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / RATE)
    total = spec.sum()
    return (
        float(spec[(freqs > freq - width) & (freqs < freq + width)].sum() / total) if total else 0.0
    )


def loud_seconds(pcm: np.ndarray, threshold: float = 500.0) -> float:
    """How long (s) the 20 ms frames of ``pcm`` are louder than ``threshold`` RMS."""
    n = pcm.size // 160
    if n == 0:
        return 0.0
    frames = pcm[: n * 160].astype(np.float64).reshape(n, 160)
    rms = np.sqrt((frames**2).mean(axis=1))
    return float((rms > threshold).sum() * 0.02)


async def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status, resp.content_type, await resp.read()


def live_call(env: Env, call_uuid: str) -> Any:
    call = env.server.manager.live_call(AUTH_ID, call_uuid)  # type: ignore[union-attr]
    assert call is not None
    return call


# --- with baresip: what the callee hears, and what we record ----------------------------------


@needs_baresip
async def test_live_speak_play_dtmf_and_record_on_baresip(
    env: Env, baresip: Any, tmp_path: Path
) -> None:
    mic = tmp_path / "mic.wav"
    mic.write_bytes(wav_bytes(tone(400.0, 20.0, 0.2)))
    peer = baresip(play_wav=mic, max_call_s=30)
    env.web.routes["/answer"] = HOLD
    env.web.routes["/tone.wav"] = (200, wav_bytes(tone(1000.0, 1.5)), "audio/wav")
    call_uuid = await env.call(peer.uri)
    await asyncio.sleep(0.3)

    rec = await env.sdk(
        env.client.calls.record,
        call_uuid,
        file_format="wav",
        time_limit=60,
        callback_url=env.web.url("/rec"),
        callback_method="POST",
    )
    assert rec.message == "call recording started"
    # the URL handed out is signed ([http] recording_url_ttl_s): fetchable without credentials
    assert rec.url.split("?")[0].endswith(f"/v1/Account/{AUTH_ID}/Recording/files/{rec.recording_id}.wav")
    assert rec.api_id
    status, _, _ = await http_get(rec.url)
    assert status == 404, "a recording is not served while it is being written"

    spoke = await env.sdk(env.client.calls.speak, call_uuid, "Hello from the live call API")
    assert spoke.message == "speak started"
    await asyncio.sleep(2.5)
    played = await env.sdk(env.client.calls.play, call_uuid, env.web.url("/tone.wav"))
    assert played.message == "play started"
    await asyncio.sleep(2.0)
    sent = await env.sdk(env.client.calls.send_digits, call_uuid, "1234")
    assert sent.message == "digits sent"
    await asyncio.sleep(1.5)

    assert await env.sdk(env.client.calls.stop_recording, call_uuid, None, None) is None  # 204
    cb = (await env.web.wait_for(path="/rec", call_uuid=call_uuid))[0]
    assert cb.signed
    assert cb.params["record_url"] == rec.url and cb.params["recording_id"] == rec.recording_id
    assert cb.params["api_id"] == rec.api_id
    assert int(cb.params["recording_duration_ms"]) >= 5000
    assert int(cb.params["recording_end_ms"]) > int(cb.params["recording_start_ms"])

    status, ctype, body = await http_get(rec.url)
    assert (status, ctype) == (200, "audio/wav")
    ours = read_wav_bytes(body)
    assert ours.size / RATE >= 5.0
    # Both directions are in it: baresip's 400 Hz microphone and our 1 kHz Play.
    assert band_energy(ours, 400.0) > 0.05
    assert band_energy(ours, 1000.0) > 0.02
    assert (env.server.manager.data_dir / "recordings" / AUTH_ID / f"{rec.recording_id}.wav").is_file()  # type: ignore[union-attr]

    await env.sdk(env.client.calls.delete, call_uuid)
    hang = await hangup_of(env, call_uuid)
    assert hang["HangupSource"] == "API Request"
    peer.stop()

    heard_path = peer.recording()
    assert heard_path is not None
    heard = read_wav_bytes(heard_path.read_bytes())
    # speech (~1.5 s of voiced frames) and the 1.5 s tone reached the callee
    assert loud_seconds(heard) >= 2.0
    assert band_energy(heard, 1000.0) > 0.1
    assert "".join(d for d, _ in peer.received_dtmf()) == "1234"


@needs_baresip
async def test_stop_speaking_and_playing_stop_only_the_api_audio(env: Env, baresip: Any) -> None:
    peer = baresip(max_call_s=30)
    env.web.routes["/answer"] = HOLD
    env.web.routes["/long.wav"] = (200, wav_bytes(tone(700.0, 10.0)), "audio/wav")
    call_uuid = await env.call(peer.uri)
    call = live_call(env, call_uuid)
    media = call.leg.media

    await env.sdk(
        env.client.calls.speak,
        call_uuid,
        "This sentence is repeated until it is stopped",
        loop=True,
    )
    # wait on the event: espeak's synthesis is slower on a loaded machine
    await wait_until(lambda: media.playing and call.playbacks.get("speak"), 10, what="speaking")
    assert await env.sdk(env.client.calls.stop_speaking, call_uuid) is None
    await wait_until(lambda: not media.playing, 2, what="speak stopped")
    assert not media.playing and not call.playbacks.get("speak")

    await env.sdk(env.client.calls.play, call_uuid, env.web.url("/long.wav"), length=1)
    await wait_until(lambda: media.playing, 5, what="the length=1 playback started")
    started = time.monotonic()
    await wait_until(lambda: not media.playing, 4, what="the length=1 playback ended")
    # the 10 s file stops after about a second (bounded loosely: a shared machine is noisy)
    assert time.monotonic() - started < 4, "length=1 ends the playback after a second"

    await env.sdk(env.client.calls.play, call_uuid, env.web.url("/long.wav"))
    await wait_until(lambda: media.playing, 5, what="the playback started")
    assert await env.sdk(env.client.calls.stop_playing, call_uuid) is None
    await wait_until(lambda: not media.playing, 2, what="play stopped")
    assert not media.playing
    await env.sdk(env.client.calls.delete, call_uuid)
    await hangup_of(env, call_uuid)


@needs_baresip
async def test_play_mix_false_cuts_the_xml_prompt_and_the_xml_goes_on(
    env: Env, baresip: Any
) -> None:
    peer = baresip(max_call_s=30)
    env.web.routes["/xml.wav"] = (200, wav_bytes(tone(500.0, 20.0)), "audio/wav")
    env.web.routes["/api.wav"] = (200, wav_bytes(tone(1200.0, 0.5)), "audio/wav")
    env.web.routes["/answer"] = (
        f"<Response><Play>{env.web.url('/xml.wav')}</Play><Speak>after</Speak><Hangup/></Response>"
    )
    call_uuid = await env.call(peer.uri)
    await asyncio.sleep(1.5)
    await env.sdk(env.client.calls.play, call_uuid, env.web.url("/api.wav"), mix=False)
    # The 20 s XML prompt is cut short; the API's 0.5 s tone plays, then "after", then <Hangup/>.
    hang = await hangup_of(env, call_uuid, timeout=10)
    assert int(hang["Duration"]) < 10
    assert hang["HangupSource"] == "Answer XML"


@needs_baresip
async def test_speak_and_dtmf_on_the_bridged_b_leg(env: Env, baresip: Any, uas: Any) -> None:
    callee = baresip(max_call_s=30)
    env.web.routes["/answer"] = f"<Response><Dial><User>{callee.uri}</User></Dial></Response>"
    call_uuid = await env.call(uas().uri)
    call = live_call(env, call_uuid)
    manager = env.server.manager
    assert manager is not None
    await wait_until(lambda: manager.bridged_leg(call) is not None, 5, what="the B leg answers")
    b_leg = env.server.manager.bridged_leg(call)  # type: ignore[union-attr]
    assert b_leg is not None
    spoke = await env.sdk(env.client.calls.speak, call_uuid, "Hello B leg", legs="bleg")
    assert spoke.message == "speak started"
    await wait_until(lambda: b_leg.media.playing, 5, what="the speech on the B leg started")
    await wait_until(lambda: not b_leg.media.playing, 10, what="the speech on the B leg ended")
    await env.sdk(env.client.calls.send_digits, call_uuid, "9", leg="bleg")
    await wait_until(lambda: callee.received_dtmf(), 5, what="baresip logged the digit")
    await env.sdk(env.client.calls.delete, call_uuid)
    await hangup_of(env, call_uuid)
    callee.stop()
    heard = read_wav_bytes(callee.recording().read_bytes())  # type: ignore[union-attr]
    assert loud_seconds(heard) >= 0.5, "the B leg heard the speech"
    assert [d for d, _ in callee.received_dtmf()] == ["9"]


# --- with sipp: transfer, recording to hangup, errors -----------------------------------------


async def test_transfer_runs_the_aleg_url_xml(env: Env, uas: Any) -> None:
    env.web.routes["/answer"] = HOLD
    env.web.routes["/transfer"] = "<Response><Speak>You were transferred</Speak><Hangup/></Response>"
    call_uuid = await env.call(uas().uri)
    await asyncio.sleep(0.3)
    resp = await env.sdk(
        env.client.calls.update,
        call_uuid,
        legs="aleg",
        aleg_url=env.web.url("/transfer"),
        aleg_method="GET",
    )
    assert resp.message == "call transfered"  # Plivo's spelling, as the SDK fixtures have it
    hit = (await env.web.wait_for(path="/transfer", call_uuid=call_uuid))[0]
    assert hit.signed and hit.method == "GET" and hit.params["CallStatus"] == "in-progress"
    hang = await hangup_of(env, call_uuid)
    assert hang["HangupSource"] == "Answer XML" and hang["HangupCause"] == "NORMAL_CLEARING"
    assert int(hang["Duration"]) < 20, "the held <Wait length=60> was replaced"
    rec = env.record(call_uuid)
    assert rec["error"] is None and rec["extra"]["answer_fetch_url"] == env.web.url("/transfer")


async def test_transfer_to_an_unreachable_url_hangs_up(env: Env, uas: Any) -> None:
    env.web.routes["/answer"] = HOLD
    env.web.routes["/broken"] = (500, "oops", "text/plain")
    call_uuid = await env.call(uas().uri)
    await env.sdk(
        env.client.calls.transfer, call_uuid, legs="aleg", aleg_url=env.web.url("/broken")
    )
    hang = await hangup_of(env, call_uuid)
    assert (hang["HangupCauseCode"], hang["HangupSource"]) == ("8021", "Error")
    assert "/broken" in env.record(call_uuid)["error"]


async def test_recording_ends_with_the_call_and_is_served(env: Env, uas: Any) -> None:
    env.web.routes["/answer"] = (
        '<Response><Speak loop="3">Recording this call for quality</Speak><Wait length="30"/></Response>'
    )
    call_uuid = await env.call(uas().uri)  # sipp echoes our RTP: both directions carry speech
    rec = await env.sdk(env.client.calls.record, call_uuid, callback_url=env.web.url("/rec"))
    assert rec.url.split("?")[0].endswith(".mp3"), "mp3 is Plivo's default file_format"
    await asyncio.sleep(2.5)
    await env.sdk(env.client.calls.delete, call_uuid)
    await hangup_of(env, call_uuid)
    cb = (await env.web.wait_for(path="/rec", call_uuid=call_uuid))[0]
    assert cb.params["record_url"] == rec.url
    assert 1500 <= int(cb.params["recording_duration_ms"]) <= 10000
    status, ctype, body = await http_get(rec.url)
    assert (status, ctype) == (200, "audio/mpeg") and len(body) > 1000
    # not served for another name, another account, or a traversal attempt
    base = rec.url.split("?")[0].rsplit("/", 1)[0]
    for bad in (
        f"{base}/{'0' * 8}-0000-0000-0000-{'0' * 12}.mp3",
        f"{base}/..%2F..%2Fcalls.db",
    ):
        assert (await http_get(bad, {"Authorization": aiohttp.encode_basic_auth(AUTH_ID, AUTH_TOKEN)}))[0] == 404, bad
    assert (await http_get(rec.url.replace(AUTH_ID, "MANOSUCHACCOUNT00000")))[0] == 404


async def test_errors_are_404_for_unknown_or_ended_calls_and_400_for_bad_params(
    env: Env, uas: Any
) -> None:
    env.web.routes["/answer"] = HOLD
    c = env.client.calls
    ghost = "11111111-2222-3333-4444-555555555555"
    for fn, args, kw in [
        (c.play, (ghost, "http://127.0.0.1/a.wav"), {}),
        (c.speak, (ghost, "hi"), {}),
        (c.send_digits, (ghost, "1"), {}),
        (c.record, (ghost,), {}),
        (c.update, (ghost,), {"legs": "aleg", "aleg_url": "http://127.0.0.1/x"}),
        (c.stop_playing, (ghost,), {}),
        (c.stop_speaking, (ghost,), {}),
        (c.stop_recording, (ghost, None, None), {}),
    ]:
        with pytest.raises(plivo.exceptions.ResourceNotFoundError):
            await env.sdk(fn, *args, **kw)

    call_uuid = await env.call(uas().uri)
    bad: list[tuple[Any, tuple[Any, ...], dict[str, Any], str]] = [
        (c.play, (call_uuid, "not a url"), {}, "urls"),
        (c.play, (call_uuid, "http://127.0.0.1/a.wav"), {"legs": "sideways"}, "legs"),
        (c.play, (call_uuid, "http://127.0.0.1/a.wav"), {"legs": "bleg"}, "B leg"),
        (c.speak, (call_uuid, " "), {}, "text"),
        (c.speak, (call_uuid, "hi"), {"voice": "ROBOT"}, "voice"),
        (c.send_digits, (call_uuid, "12x"), {}, "digits"),
        (c.record, (call_uuid,), {"file_format": "ogg"}, "file_format"),
        (c.record, (call_uuid,), {"time_limit": 0}, "time_limit"),
        (c.record, (call_uuid,), {"record_channel_type": "stereo"}, "stereo"),
        (c.update, (call_uuid,), {"legs": "aleg"}, "aleg_url"),
        (c.update, (call_uuid,), {"legs": "bleg", "bleg_url": "http://127.0.0.1/b"}, "bleg"),
    ]
    for fn, args, kw, needle in bad:
        with pytest.raises(plivo.exceptions.ValidationError) as info:
            await env.sdk(fn, *args, **kw)
        assert needle in str(info.value), (fn.__name__, kw, str(info.value))

    # raw HTTP: the Plivo error shape
    auth = {"Authorization": aiohttp.encode_basic_auth(AUTH_ID, AUTH_TOKEN)}
    async with aiohttp.ClientSession(headers=auth) as session:
        url = f"{env.server.base_url}/v1/Account/{AUTH_ID}/Call/{call_uuid}/DTMF/"
        async with session.post(url, json={}) as resp:
            body = await resp.json()
            assert (
                resp.status == 400
                and set(body) == {"api_id", "error"}
                and "digits" in body["error"]
            )
        async with session.delete(url) as resp:
            assert resp.status == 405 and set(await resp.json()) == {"api_id", "error"}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{env.server.base_url}/v1/Account/{AUTH_ID}/Call/{call_uuid}/Play/",
            json={"urls": "http://127.0.0.1/a.wav"},
        ) as resp:
            assert resp.status == 401

    await env.sdk(c.delete, call_uuid)
    await hangup_of(env, call_uuid)
    with pytest.raises(plivo.exceptions.ResourceNotFoundError):
        await env.sdk(c.speak, call_uuid, "too late")


async def test_openapi_documents_live_control(env: Env) -> None:
    status, _, body = await http_get(f"{env.server.base_url}/openapi.json")
    assert status == 200
    doc = json.loads(body)
    call = "/v1/Account/{auth_id}/Call/{call_uuid}/"
    assert "post" in doc["paths"][call]
    for sub, methods in (
        ("Play/", {"post", "delete"}),
        ("Speak/", {"post", "delete"}),
        ("DTMF/", {"post"}),
        ("Record/", {"post", "delete"}),
    ):
        ops = doc["paths"][call + sub]
        assert set(ops) == methods
        for op in ops.values():
            assert {"400", "404"} <= set(op["responses"])
    assert "/v1/Account/{auth_id}/Recording/files/{name}" in doc["paths"]
