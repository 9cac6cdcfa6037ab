"""Eqivo's answering-machine detection on ``POST /v0.1/Call/`` (``MachineDetection``,
``AsyncAMD``, ``AsyncAmdStatusCallback``; DIALECTS.md §1.3) against baresip answering with a
recorded human "Hello?" or a voicemail greeting ending in a beep: ``AnsweredBy`` and
``MachineDetectionDuration`` in the callbacks, signed ``X-Plivo-Signature``."""

from __future__ import annotations

from typing import Any

import pytest

from tests import test_api_legacy as base
from tests.peers import amd_clips
from tests.peers import baresip as baresip_peer
from tests.peers.baresip import needs_baresip
from tests.peers.plivo_api import AUTH_TOKEN
from tests.peers.webhooks import Request, WebhookReceiver
from tests.test_api_legacy import framework_signature, is_hangup

pytestmark = [pytest.mark.peer, needs_baresip]

# fixtures: baresip callees, a started server, the callee's recorded clips
baresip = baresip_peer.baresip
legacy = base.legacy
human_clip = amd_clips.human_clip
machine_clip = amd_clips.machine_clip

HOLD = '<?xml version="1.0"?><Response><Wait length="30"/></Response>'
SHORT = '<?xml version="1.0"?><Response><Wait length="1"/></Response>'


async def _receiver(webhook_receiver: Any, answer: str) -> WebhookReceiver:
    def reply(r: Request) -> Any:
        if is_hangup(r) or r.path == "/amd":
            return (200, "ok", "text/plain")
        return answer

    receiver: WebhookReceiver = await webhook_receiver(respond=reply)
    return receiver


def _signed(r: Request) -> bool:
    return r.headers.get("X-Plivo-Signature") == framework_signature(r.url, r.form, AUTH_TOKEN)


async def test_sync_detection_waits_and_answers_human(
    baresip: Any, legacy: Any, webhook_receiver: Any, human_clip: Any
) -> None:
    receiver = await _receiver(webhook_receiver, SHORT)
    peer = baresip(play_wav=human_clip)
    api = await legacy()
    _, body = await api.post(
        "Call",
        From="1000",
        To=peer.uri,
        Gateways="sofia/internal/",
        AnswerUrl=receiver.url("/answer"),
        HangupUrl=receiver.url("/hangup"),
        MachineDetection="Enable",
        MachineDetectionTimeout="5",
    )
    assert body["Success"] is True, body
    (fetch,) = await receiver.wait_for(path="/answer", timeout=20)
    p = fetch.form
    assert _signed(fetch)
    assert p["AnsweredBy"] == "human", p
    assert 0 < int(p["MachineDetectionDuration"]) < 5000
    (hangup,) = await receiver.wait_for(path="/hangup", timeout=15)
    assert hangup.form["AnsweredBy"] == "human"  # every later callback carries the decision
    assert hangup.form["HangupCause"] == "NORMAL_CLEARING"


async def test_async_detect_message_end_posts_machine_end_beep(
    baresip: Any, legacy: Any, webhook_receiver: Any, machine_clip: Any
) -> None:
    receiver = await _receiver(webhook_receiver, HOLD)
    peer = baresip(play_wav=machine_clip)
    api = await legacy()
    amd_url = receiver.url("/amd?campaign=7")  # its query is merged and signed, as for any callback
    _, body = await api.post(
        "Call",
        From="1000",
        To=peer.uri,
        Gateways="sofia/internal/",
        AnswerUrl=receiver.url("/answer"),
        HangupUrl=receiver.url("/hangup"),
        MachineDetection="DetectMessageEnd",
        AsyncAMD="true",
        AsyncAmdStatusCallback=amd_url,
    )
    assert body["Success"] is True, body
    (fetch,) = await receiver.wait_for(path="/answer", timeout=15)
    assert "AnsweredBy" not in fetch.form  # async: the application starts at once
    (amd,) = await receiver.wait_for(path="/amd", timeout=30)
    p = amd.form
    assert _signed(amd) and p["campaign"] == "7"
    assert p["AnsweredBy"] == "machine_end_beep", p
    assert int(p["MachineDetectionDuration"]) > 3000  # the end of the greeting, not the decision
    assert p["CallUUID"] == fetch.form["CallUUID"] and p["ALegRequestUUID"] == body["RequestUUID"]
    assert p["CoreUUID"] and p["RestApiServer"] == body["RestApiServer"]
    _, hung = await api.post("HangupCall", CallUUID=p["CallUUID"])
    assert hung["Success"] is True
    (hangup,) = await receiver.wait_for(path="/hangup", timeout=10)
    assert hangup.form["AnsweredBy"] == "machine_end_beep"
