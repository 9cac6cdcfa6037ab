"""The legacy framework API (``/v0.1/``) calling baresip: a real callee with its own media
stack records what it hears and logs the RFC 4733 events it receives, so RESTXML
``<Speak>``/``<Play>``, the ``SendDigits`` endpoint and ``HangupCall`` are checked from the
far end."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests import test_api_legacy as base
from tests.peers import baresip as baresip_peer
from tests.peers.baresip import needs_baresip
from tests.peers.webhooks import Request, WebhookReceiver
from tests.test_api_legacy import framework_signature, is_hangup, tone_wav
from tests.test_xml_calls import RATE, baresip_heard, dominant_hz, needs_espeak, segments

pytestmark = [pytest.mark.peer, needs_baresip, needs_espeak]

# fixtures: baresip callees, a started server
baresip = baresip_peer.baresip
legacy = base.legacy


async def _poll(pred: Any, timeout: float) -> bool:
    """For what only baresip's log shows (nothing signals it)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_call_to_baresip_speak_play_send_digits_and_hangup(
    baresip: Any, legacy: Any, webhook_receiver: Any
) -> None:
    peer = baresip(answer_delay_ms=300)
    tone_url = ""

    def reply(r: Request) -> Any:
        if is_hangup(r) or r.path == "/ring":
            return (200, "ok", "text/plain")
        if r.path == "/tone.wav":
            return (200, tone_wav(1.0, 1000.0), "audio/wav")
        if r.path == "/answer":  # the Redirect tells the test when Play has finished
            return (
                f'<?xml version="1.0"?><Response><Speak>Hello from the framework</Speak><Wait length="1"/>'
                f"<Play>{tone_url}</Play><Redirect>{receiver.url('/after')}</Redirect></Response>"
            )
        return '<?xml version="1.0"?><Response><Wait length="30"/></Response>'

    receiver: WebhookReceiver = await webhook_receiver(respond=reply)
    tone_url = receiver.url("/tone.wav")
    api = await legacy()
    _, body = await api.post(
        "Call",
        From="+15551234567",
        To=peer.uri,
        Gateways="sofia/internal/",
        AnswerUrl=receiver.url("/answer"),
        RingUrl=receiver.url("/ring"),
        HangupUrl=receiver.url("/hangup"),
        CallerName="Alice",
    )
    assert body["Success"] is True
    (fetch,) = await receiver.wait_for(path="/answer", timeout=10)
    call_uuid = fetch.form["CallUUID"]
    (ring,) = receiver.of("/ring")
    assert ring.form["CallUUID"] == call_uuid and ring.form["CallStatus"] == "ringing"
    await receiver.wait_for(path="/after", timeout=20)  # Speak and Play are over

    _, sent = await api.post("SendDigits", CallUUID=call_uuid, Digits="1#")
    assert sent == {"Success": True, "Message": "SendDigits executed"}
    assert await _poll(lambda: len(peer.received_dtmf()) >= 2, 5), peer.log()[-3000:]
    assert [d for d, _ in peer.received_dtmf()] == ["1", "#"]

    assert await api.post("HangupCall", CallUUID=call_uuid) == (
        200,
        {"Success": True, "Message": "Hangup Call Executed"},
    )
    (hangup,) = await receiver.wait_for(path="/hangup", timeout=10)
    assert hangup.form["CallUUID"] == call_uuid and hangup.form["HangupCause"] == "NORMAL_CLEARING"
    assert "Alice" in peer.log()
    callbacks = [r for r in receiver.requests if r.method == "POST"]  # not the audio GET
    assert len(callbacks) == 4  # ring, answer, after (the Redirect), hangup
    for r in callbacks:
        assert r.headers.get("X-Plivo-Signature") == framework_signature(
            r.url, r.form, base.AUTH_TOKEN
        ), r

    heard = baresip_heard(peer)
    found = segments(heard)
    assert len(found) >= 2, found  # the speech, then the tone
    t0, t1 = found[-1]
    tone_part = heard[int(t0 * RATE) + 400 : int(t1 * RATE) - 400]
    assert abs(dominant_hz(tone_part) - 1000.0) < 20, found
    assert 0.8 < t1 - t0 < 1.3, found
