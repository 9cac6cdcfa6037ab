"""SRTP with SDES against real peers on loopback (issue 17): baresip with its ``srtp`` module
hears our audio and we hear baresip's, both ways encrypted; a baresip without SRTP refuses a
mandatory offer (488); sipp, as a trunk behind a ``srtp = "mandatory"`` gateway, checks the
INVITE's SDP (RTP/SAVP, both a=crypto lines) and answers without crypto, and the call ends
with INCOMPATIBLE_DESTINATION.

That the media is encrypted both ways shows in the result: baresip's ``srtp`` module only
decodes packets that pass its authentication (ours), and our stream only decodes packets
that pass ours (``stats()["srtp"]`` names the suite). baresip also sends one plain RTCP APP
("PING") packet at the start of a call, which our stream drops and counts in
``srtp_auth_failures``.
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pytest

from media.play import ArraySource, tts_to_pcm
from sip import causes
from softswitch.ua import GatewayConfig, UserAgent, UserAgentConfig
from tests.conftest import needs_sipp
from tests.peers.baresip import needs_baresip, needs_baresip_srtp, read_wav
from tests.test_media_peers import best_correlation, tone_frames

pytestmark = [pytest.mark.peer]

RATE = 8000
SUITE = "AES_CM_128_HMAC_SHA1_80"


@pytest.fixture
async def ua():
    agent = UserAgent(UserAgentConfig(host="127.0.0.1", port=0))
    await agent.start()
    yield agent
    await agent.close()


def _write_wav(path: Path, pcm: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.asarray(pcm, dtype="<i2").tobytes())


@needs_baresip_srtp
@pytest.mark.parametrize(("mediaenc", "policy"), [("srtp-mand", "mandatory"), ("srtp", "optional")])
async def test_audio_crosses_both_ways_encrypted_with_baresip(
    ua: UserAgent, baresip, tmp_path: Path, mediaenc: str, policy: str
) -> None:
    speech = np.asarray(
        await asyncio.to_thread(tts_to_pcm, "This call is encrypted with secure RTP."), np.int16
    )
    tone = (8000 * np.sin(2 * np.pi * 1000 * np.arange(RATE) / RATE)).astype(np.int16)
    src = tmp_path / "tone.wav"
    _write_wav(src, tone)
    peer = baresip(play_wav=src, mediaenc=mediaenc)
    call = await ua.dial(peer.uri, from_user="1000", srtp=policy)
    heard: list[np.ndarray] = []
    call.media.add_tap(lambda f: heard.append(f.copy()))
    assert await asyncio.wait_for(call.wait_answered(), 10), "not answered"
    offer = call.session.invite.body.decode()
    assert ("RTP/SAVP" in offer) == (policy == "mandatory") and f"a=crypto:1 {SUITE}" in offer
    assert call.stats()["srtp"] == SUITE
    assert await asyncio.wait_for(call.media.play(ArraySource(speech)), 15) == "completed"
    await asyncio.sleep(0.3)
    await call.hangup()
    end = await asyncio.wait_for(call.wait_terminated(), 5)
    assert end.cause == causes.NORMAL_CLEARING
    peer.stop()
    assert "SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)" in peer.log()
    # baresip -> us: its one-second tone, decrypted.
    got = np.concatenate(heard)
    tone_ms = int(tone_frames(got, 1000.0).sum()) * 20
    assert abs(tone_ms - 1000) <= 60, tone_ms
    # us -> baresip: our speech, decrypted by baresip, nearly sample for sample (G.711).
    recording = peer.recording()
    assert recording is not None
    assert best_correlation(speech, read_wav(recording)) > 0.95
    stats = call.final_stats
    assert stats["srtp"] == SUITE and stats["packets_received"] > 50
    assert stats["srtp_auth_failures"] <= 2 and stats["srtp_replays"] == 0  # baresip's APP PING


@needs_baresip
async def test_mandatory_srtp_to_baresip_without_srtp_fails_with_a_clear_cause(
    ua: UserAgent, baresip
) -> None:
    peer = baresip()  # no srtp module: RTP/SAVP is not acceptable to it
    call = await ua.dial(peer.uri, from_user="1000", srtp="mandatory")
    end = await asyncio.wait_for(call.wait_terminated(), 10)
    assert end.cause == causes.INCOMPATIBLE_DESTINATION and end.sip_status == 488
    assert call.answered_at is None


@needs_baresip
async def test_optional_srtp_to_baresip_without_srtp_is_plain_rtp(ua: UserAgent, baresip) -> None:
    peer = baresip()
    call = await ua.dial(peer.uri, from_user="1000", srtp="optional")
    assert await asyncio.wait_for(call.wait_answered(), 10)
    assert "a=crypto:1" in call.session.invite.body.decode()
    await asyncio.wait_for(call.media.play(ArraySource(np.zeros(8000, np.int16))), 5)
    assert call.stats()["srtp"] is None and call.stats()["packets_received"] > 20
    await call.hangup()
    assert (await asyncio.wait_for(call.wait_terminated(), 5)).cause == causes.NORMAL_CLEARING


@needs_sipp
async def test_mandatory_gateway_offers_savp_and_fails_on_a_plain_answer(sipp) -> None:
    trunk = sipp("uas_srtp_plain_answer.xml")
    gw = GatewayConfig(name="secure", host="127.0.0.1", port=trunk.port, prefix="1")
    config = UserAgentConfig(
        host="127.0.0.1", port=0, gateways=[gw], gateway_srtp={"secure": "mandatory"}
    )
    async with UserAgent(config) as agent:
        call = await agent.dial("+14155550100", from_user="+12025550000")
        end = await asyncio.wait_for(call.wait_terminated(), 10)
        assert end.cause == causes.INCOMPATIBLE_DESTINATION
        assert call.final_stats is not None and call.final_stats["srtp"] is None
    await asyncio.to_thread(trunk.assert_ok)
