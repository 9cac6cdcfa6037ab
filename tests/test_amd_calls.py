"""Answering-machine detection on real calls: baresip answers and plays a human "Hello?" or a
voicemail greeting with a beep; the detector runs on what our media engine receives."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys

import pytest

from media.amd import AmdParams
from softswitch.amd import MachineDetection
from softswitch.ua import UserAgent, UserAgentConfig
from tests.peers import amd_clips
from tests.peers.baresip import needs_baresip

pytestmark = [needs_baresip, pytest.mark.peer,
              pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                                 reason="espeak-ng and sox are needed to make the clips")]

# the callee's clips
human_clip = amd_clips.human_clip
machine_clip = amd_clips.machine_clip


async def _detect(peer_uri: str) -> tuple:
    async with UserAgent(UserAgentConfig(port=0)) as ua:
        call = await ua.dial(peer_uri, from_user="1000")
        assert await asyncio.wait_for(call.wait_answered(), 10), call.terminated
        detection = MachineDetection(call, AmdParams()).start()
        decision = await asyncio.wait_for(detection.decision, 12)
        beep = await asyncio.wait_for(detection.beep, 35) if decision is not None and decision.machine else None
        await call.hangup()
        return decision, beep


async def test_human_hello_is_human(baresip, human_clip):
    peer = baresip(play_wav=human_clip)
    decision, _ = await _detect(peer.uri)
    assert decision is not None and not decision.machine and decision.status == "HUMAN", decision
    assert decision.decided_at_ms < 3500  # "Hello?" ends ~1 s in; decided ≤ 2.5 s after


async def test_voicemail_greeting_is_machine_and_beep_found(baresip, machine_clip):
    peer = baresip(play_wav=machine_clip)
    decision, beep = await _detect(peer.uri)
    assert decision is not None and decision.machine, decision
    assert decision.reason in ("LONGGREETING", "MAXWORDS", "MAXWORDLENGTH")
    assert beep is not None and beep.beep_hz is not None and abs(beep.beep_hz - 1000) < 30, beep
    assert 300 <= (beep.beep_ms or 0) <= 500


def test_cli_machine_detection_hangup(baresip, machine_clip):
    peer = baresip(play_wav=machine_clip)
    out = subprocess.run(
        [sys.executable, "-m", "softswitch.cli", "call", peer.uri, "--from", "1000",
         "--machine-detection", "hangup", "--machine-detection-time", "5000"],
        capture_output=True, text=True, timeout=60,
    )
    lines = out.stdout.strip().splitlines()
    assert any("machine detection: machine" in ln for ln in lines), out.stdout + out.stderr
    summary = json.loads(lines[-1])
    assert summary["hangup_cause"] == "MACHINE_DETECTED"
    assert summary["machine_detection"]["Machine"] == "true"
