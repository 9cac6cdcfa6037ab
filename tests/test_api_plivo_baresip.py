"""The Plivo v1 API calling baresip: the official SDK → in-process :class:`Server` (real SIP
user agent and media engine) → a real baresip callee on loopback (``tests/peers/baresip.py``).

baresip is a full user agent with its own media stack, so what it reports is independent
evidence: it logs every RFC 4733 event it receives, and records the audio it decoded from
our RTP (where in-band digits are found with our Goertzel detector).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from media.dtmf import DtmfDetectorBank
from tests.peers import baresip as baresip_peer
from tests.peers import plivo_api as api
from tests.peers.baresip import needs_baresip, read_wav
from tests.peers.plivo_api import Env, sig_ok, sipp_done
from tests.peers.webhooks import WebhookReceiver

pytestmark = [pytest.mark.peer, needs_baresip]

# fixtures: baresip callees (``baresip(**kw)``), a real server, the webhook receiver
baresip = baresip_peer.baresip
env = api.env
receiver = api.receiver
sdk_base = api.sdk_base


async def _poll(pred: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _inband_digits(wav: Any) -> list[str]:
    """Digits our in-band detector finds in a recording (20 ms frames, one stream)."""
    pcm = read_wav(wav)
    bank = DtmfDetectorBank()
    slot = bank.allocate()
    out = []
    n = len(pcm) // 160
    for i in range(n):
        frame = pcm[i * 160:(i + 1) * 160].reshape(1, 160)
        out += [ev.digit for _, ev in bank.process(np.array([slot]), frame)]
    last = bank.flush(slot)
    if last is not None:
        out.append(last.digit)
    return out


async def test_sdk_call_to_baresip_rings_answers_and_hears_digits(baresip: Any, env: Env,
                                                                   receiver: WebhookReceiver) -> None:
    peer = baresip(answer_delay_ms=400)  # 180 Ringing for 0.4 s, then 200 OK
    c = env.client
    resp = await env.sdk(c.calls.create, from_="+14155550100", to_=peer.uri, caller_name="Alice",
                         answer_url=receiver.url("/answer"), ring_url=receiver.url("/ring"),
                         hangup_url=receiver.url("/hangup"), send_digits="1w2#@120")
    answer = (await receiver.wait_for(lambda h: h.path == "/answer" and h.params["RequestUUID"] == resp.request_uuid,
                                      timeout=10))[0]
    call_uuid = answer.params["CallUUID"]
    ring = receiver.of("/ring", call_uuid)
    assert len(ring) == 1 and ring[0].params["CallStatus"] == "ringing"
    assert answer.at - ring[0].at >= 0.3  # baresip rang before it answered
    # send_digits went out as RFC 4733 events (baresip offered telephone-event)
    assert await _poll(lambda: len(peer.received_dtmf()) >= 3, 5), peer.log()[-3000:]
    assert [d for d, _ in peer.received_dtmf()] == ["1", "2", "#"]
    assert "Alice" in peer.log()  # baresip shows the caller's display name
    await env.sdk(c.calls.delete, call_uuid)
    p = (await receiver.wait_hangup(call_uuid, timeout=10)).params
    assert (p["CallStatus"], p["HangupCause"], p["HangupSource"]) == ("completed", "NORMAL_CLEARING", "API Request")
    assert p["To"] == peer.uri and p["From"] == "+14155550100"
    rec = await env.sdk(c.calls.get, call_uuid)
    assert rec.call_status == "completed" and rec.to_number == peer.uri and rec.answer_time
    sig_ok(receiver)


async def test_send_digits_inband_to_baresip_without_telephone_event(baresip: Any, env: Env,
                                                                      receiver: WebhookReceiver) -> None:
    """baresip answers without telephone-event: the digits go in-band (``auto``), and our own
    detector finds them in what baresip recorded. The callee hangs up at time_limit."""
    peer = baresip(telephone_event=False)
    c = env.client
    resp = await env.sdk(c.calls.create, from_="1000", to_=peer.uri, answer_url=receiver.url("/answer"),
                         hangup_url=receiver.url("/hangup"), send_digits="4w5", time_limit=2)
    p = (await receiver.wait_hangup(request_uuid=resp.request_uuid, timeout=10)).params
    assert (p["CallStatus"], p["HangupCause"], p["HangupSource"]) == ("completed", "ALLOTTED_TIMEOUT", "Plivo")
    assert peer.received_dtmf() == []  # no RFC 4733 events were sent
    assert await _poll(lambda: peer.recording() is not None, 5)
    peer.stop()  # flushes the WAV header
    assert _inband_digits(peer.recording()) == ["4", "5"]
    sig_ok(receiver)


async def test_bulk_call_to_sipp_and_baresip(sipp: Any, baresip: Any, env: Env, receiver: WebhookReceiver) -> None:
    """One request, three different peers: two sipp scenarios and baresip."""
    held, bye = sipp("uas_answer.xml"), sipp("uas_callee_bye.xml")
    peer = baresip()
    c = env.client
    to = "<".join((held.uri, bye.uri, peer.uri))
    resp = await env.sdk(c.calls.create, from_="1000", to_=to, answer_url=receiver.url("/answer"),
                         hangup_url=receiver.url("/hangup"), time_limit=2)
    assert isinstance(resp.request_uuid, list) and len(resp.request_uuid) == 3
    hangs = {}
    for req in resp.request_uuid:
        hit = await receiver.wait_hangup(request_uuid=req, timeout=10)
        hangs[hit.params["To"]] = hit.params
    assert hangs[bye.uri]["HangupSource"] == "Callee"  # sipp hung up after 1 s
    for uri in (held.uri, peer.uri):
        assert (hangs[uri]["HangupCause"], hangs[uri]["HangupSource"]) == ("ALLOTTED_TIMEOUT", "Plivo")
    assert all(h["CallStatus"] == "completed" for h in hangs.values())
    await sipp_done(held, bye)
    assert len(receiver.of("/answer")) == 3
    sig_ok(receiver)
