"""Issue 13, media part, against real peers on loopback: the RTP inactivity timeout (a callee
that falls silent after answering, one killed with SIGKILL, one holding the call) and RTP
latching against a stray sender during a real call ("RTP bleed")."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from media.g711 import ulaw_encode
from media.rtp import RtpSender
from sip import causes
from softswitch.api.callapi.codes import CallStatus as CallApiStatus
from softswitch.api.callapi.codes import final_status
from softswitch.api.legacy.dialect import LegacyDialect
from softswitch.api.plivo.codes import hangup_code
from softswitch.model import CallEnd, HangupSource
from softswitch.ua import UserAgent, UserAgentConfig
from tests.conftest import needs_sipp, wait_until
from tests.peers import plivo_api as api
from tests.peers.baresip import needs_baresip
from tests.peers.plivo_api import Env, sig_ok, sipp_done, sipp_messages, wait_record
from tests.peers.webhooks import WebhookReceiver
from tests.test_media_peers import _write_wav, best_correlation

pytestmark = [pytest.mark.peer]

RATE = 8000
ACTIVE_S = 1.5  # the test-configured RTP timeout
HOLD_S = 4.0  # ... and the one on hold

receiver = api.receiver
sdk_base = api.sdk_base


@pytest.fixture
async def ua():
    agent = UserAgent(
        UserAgentConfig(host="127.0.0.1", port=0, rtp_timeout_s=ACTIVE_S, rtp_hold_timeout_s=HOLD_S)
    )
    await agent.start()
    yield agent
    await agent.close()


async def _answered(ua: UserAgent, uri: str) -> tuple[Any, float]:
    call = await ua.dial(uri, from_user="1000")
    assert await asyncio.wait_for(call.wait_answered(), 10), call.terminated
    return call, asyncio.get_running_loop().time()


def _bye(peer: Any) -> str:
    """The BYE sipp received (its -trace_msg log)."""
    log = sipp_messages(peer)
    assert "BYE sip:" in log, log[-2000:]
    return log.split("BYE sip:", 1)[1].split("\n\n", 1)[0]


# --------------------------------------------------------------------- RTP inactivity timeout


@needs_sipp
async def test_callee_silent_after_answer_is_hung_up_with_media_timeout(ua, sipp):
    peer = sipp("uas_answer.xml", rtp_echo=False)  # answers, then never sends RTP
    call, answered = await _answered(ua, peer.uri)
    end = await asyncio.wait_for(call.wait_terminated(), ACTIVE_S + 5)
    elapsed = asyncio.get_running_loop().time() - answered
    assert (end.cause, end.hangup_source) == (causes.MEDIA_TIMEOUT, "timeout")
    assert ACTIVE_S <= elapsed < ACTIVE_S + 1.0, elapsed
    await asyncio.to_thread(peer.assert_ok)  # it got the BYE and answered it
    assert 'Reason: Q.850;cause=16;text="MEDIA_TIMEOUT"' in _bye(peer)
    assert call.final_stats["packets_received"] == 0


@needs_sipp
async def test_callee_sending_rtp_is_not_timed_out(ua, sipp):
    peer = sipp("uas_answer.xml")  # -rtp_echo: our packets come back
    call, answered = await _answered(ua, peer.uri)
    loop = asyncio.get_running_loop()
    await wait_until(lambda: loop.time() - answered > ACTIVE_S + 0.5, ACTIVE_S + 3)
    assert call.terminated is None and call.stats()["packets_received"] > 50
    await call.hangup()
    end = await asyncio.wait_for(call.wait_terminated(), 5)
    assert end.cause == causes.NORMAL_CLEARING
    await asyncio.to_thread(peer.assert_ok)


@needs_sipp
async def test_held_call_outlives_the_active_timeout_and_ends_on_the_hold_one(ua, sipp):
    """sipp answers, then holds us (re-INVITE a=sendonly at +0.5 s) and sends no RTP."""
    peer = sipp("uas_reinvite.xml", rtp_echo=False)
    call, answered = await _answered(ua, peer.uri)
    await wait_until(lambda: call.stats()["direction"] == "recvonly", 5, what="on hold")
    held = asyncio.get_running_loop().time()
    assert held - answered < ACTIVE_S and call.terminated is None
    end = await asyncio.wait_for(call.wait_terminated(), HOLD_S + 5)
    now = asyncio.get_running_loop().time()
    assert end.cause == causes.MEDIA_TIMEOUT
    assert now - answered > ACTIVE_S + 1.0  # survived the active limit...
    assert HOLD_S - 0.1 <= now - held < HOLD_S + 1.0, now - held  # ... ended on the hold one
    await asyncio.to_thread(peer.assert_ok)
    assert 'text="MEDIA_TIMEOUT"' in _bye(peer)


@needs_baresip
async def test_callee_killed_after_answer_is_hung_up_with_media_timeout(ua, baresip):
    peer = baresip()
    call, _ = await _answered(ua, peer.uri)
    await wait_until(lambda: call.stats()["packets_received"] > 10, 5, what="baresip's RTP")
    assert peer.proc is not None
    killed = asyncio.get_running_loop().time()
    peer.proc.kill()  # SIGKILL: no BYE, no more RTP
    peer.proc.wait(5)
    end = await asyncio.wait_for(call.wait_terminated(), ACTIVE_S + 5)
    elapsed = asyncio.get_running_loop().time() - killed
    assert (end.cause, end.hangup_source) == (causes.MEDIA_TIMEOUT, "timeout")
    # the last packet may have been read a tick before the kill; the upper bound leaves room
    # for a loaded machine (the BYE to the dead port ends at once on its ICMP unreachable)
    assert ACTIVE_S - 0.2 <= elapsed < ACTIVE_S + 2.5, elapsed


@needs_sipp
async def test_media_timeout_reaches_the_record_and_the_hangup_callback(
    tmp_path: Path, sdk_base: Any, sipp: Any, receiver: WebhookReceiver
) -> None:
    peer = sipp("uas_answer.xml", rtp_echo=False)
    cfg = api.make_config(tmp_path, rtp_timeout_s=ACTIVE_S, rtp_hold_timeout_s=HOLD_S)
    server = await api.start_server(cfg, sdk_base)
    try:
        env = Env(server, api.sdk_client(server.base_url), server.base_url)
        resp = await env.sdk(
            env.client.calls.create,
            from_="1000",
            to_=peer.uri,
            answer_url=receiver.url("/answer"),
            hangup_url=receiver.url("/hangup"),
        )
        p = (
            await receiver.wait_hangup(request_uuid=resp.request_uuid, timeout=ACTIVE_S + 10)
        ).params
        assert (p["CallStatus"], p["HangupCause"], p["HangupSource"]) == (
            "completed",
            "MEDIA_TIMEOUT",
            "Plivo",
        )
        assert (p["HangupCauseCode"], p["HangupCauseName"]) == ("4000", "Normal Hangup")
        assert p["AnswerTime"] and int(p["BillDuration"]) >= 1
        record = await wait_record(server, resp.request_uuid)
        assert record["hangup_cause_code"] == 4000 and record["hangup_source"] == "Plivo"
        await sipp_done(peer)
        assert 'text="MEDIA_TIMEOUT"' in _bye(peer)
        sig_ok(receiver)
    finally:
        await server.stop(mode="hangup", drain_timeout_s=2.0)


def test_media_timeout_in_each_dialect() -> None:
    end = CallEnd(causes.MEDIA_TIMEOUT, HangupSource.SYSTEM, None, None, True)
    assert hangup_code(end.cause, end.answered, None) == (4000, "Normal Hangup")
    assert final_status(end) is CallApiStatus.COMPLETED
    fields = LegacyDialect().end_fields(end)
    assert (fields["hangup_cause_name"], fields["hangup_cause_code"]) == ("MEDIA_TIMEOUT", 604)


# --------------------------------------------------------------------------------- RTP bleed


@needs_baresip
async def test_stray_rtp_during_a_call_is_dropped_and_the_audio_unaffected(ua, baresip, tmp_path):
    """baresip plays a chirp; meanwhile a stray sender floods our RTP port from another port
    with a loud tone under random SSRCs, plus a plausible sequence of its own. We stay latched
    to baresip, count every stray, and hear the chirp intact."""
    t = np.arange(2 * RATE) / RATE
    chirp = (6000 * np.sin(2 * np.pi * (300 * t + 600 * t * t))).astype(np.int16)  # 300-2700 Hz
    src = tmp_path / "chirp.wav"
    _write_wav(src, chirp)
    peer = baresip(play_wav=src)
    call = await ua.dial(peer.uri, from_user="1000")
    frames: list[np.ndarray] = []
    call.media.add_tap(lambda f: frames.append(f.copy()))
    assert await asyncio.wait_for(call.wait_answered(), 10)
    await wait_until(lambda: call.stats()["packets_received"] > 5, 5, what="baresip's RTP")
    source = call.media.remote_address
    target = (call.media.local_address, call.media.local_port)
    loud = ulaw_encode((20000 * np.sin(2 * np.pi * 500 * np.arange(160) / RATE)).astype(np.int16))
    rng = np.random.default_rng(13)
    forger = RtpSender(ssrc=0x5EED)
    sent = 0
    stray = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        stray.bind(("127.0.0.1", 0))
        for _ in range(100):  # 2 s: 3 packets every 20 ms
            for _ in range(2):
                stray.sendto(RtpSender(ssrc=int(rng.integers(1, 2**32))).packet(0, loud), target)
            stray.sendto(forger.packet(0, loud), target)
            forger.advance(160)
            sent += 3
            await asyncio.sleep(0.02)
        await wait_until(
            lambda: call.stats()["rtp_dropped_strays"] >= sent, 3, what="strays counted"
        )
        await asyncio.sleep(0.8)  # the rest of the chirp
    finally:
        stray.close()
    stats = call.stats()
    await call.hangup()
    assert stats["rtp_dropped_strays"] == sent
    assert stats["ssrc_changes"] == 0 and stats["rtp_source_changes"] == 0
    assert call.media.remote_address == source
    received = np.concatenate(frames)
    assert best_correlation(chirp, received) > 0.95
