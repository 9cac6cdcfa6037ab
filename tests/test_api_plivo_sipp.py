"""The Plivo v1 API against sipp callees, checked on both sides of the softswitch.

The official SDK places the calls on an in-process :class:`Server` (real SIP user agent
and media engine); each sipp peer runs a scenario from ``tests/sipp/`` on its own loopback
port and the calls of a test run in parallel. We assert the callbacks a real HTTP receiver
gets (signed, with Plivo's hangup causes) and what the peer saw on the wire: the CANCEL or
BYE, its RFC 3326 Reason, the digits echoed back on RTP.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from softswitch.events import Answered, DigitReceived
from tests.conftest import free_port, needs_sipp, wait_until
from tests.peers import plivo_api as api
from tests.peers.plivo_api import Env, sig_ok, sipp_done, sipp_messages
from tests.peers.webhooks import WebhookReceiver

pytestmark = [pytest.mark.peer, needs_sipp]

# the shared fixtures: a real server (``env``), the webhook receiver, the SDK redirection
env = api.env
receiver = api.receiver
sdk_base = api.sdk_base


async def test_bulk_call_to_three_sipp_peers_live_and_delete(sipp: Any, env: Env, receiver: WebhookReceiver) -> None:
    peers = [sipp("uas_answer.xml") for _ in range(3)]
    client = env.client
    to = "<".join([*(p.uri for p in peers), peers[0].uri])  # the duplicate is dropped
    resp = await env.sdk(client.calls.create, from_="1000", to_=to,
                         answer_url=receiver.url("/answer"), hangup_url=receiver.url("/hangup"))
    assert resp.message == "call fired"
    assert isinstance(resp.request_uuid, list) and len(resp.request_uuid) == 3
    answers = await receiver.wait_for(lambda h: h.path == "/answer" and len(receiver.of("/answer")) >= 3,
                                      timeout=10)
    uuids = {h.params["CallUUID"] for h in answers}
    assert len(uuids) == 3
    live = await env.sdk(client.live_calls.list_ids)
    assert uuids <= set(live.calls)
    for uid in uuids:
        one = await env.sdk(client.live_calls.get, uid)
        assert one.call_status == "in-progress"
        await env.sdk(client.calls.delete, uid)
    for req in resp.request_uuid:
        p = (await receiver.wait_hangup(request_uuid=req, timeout=10)).params
        assert p["CallStatus"] == "completed" and p["HangupSource"] == "API Request"
    assert sorted(h.params["To"] for h in receiver.of("/hangup")) == sorted(p.uri for p in peers)
    await sipp_done(*peers)  # each got its BYE
    sig_ok(receiver)


async def test_hangup_causes_against_sipp(sipp: Any, env: Env, receiver: WebhookReceiver) -> None:
    """time_limit, ring_timeout, hangup_on_ring (ringing and answered) and busy, in parallel."""
    answer, ringer, ringer2, answer2, busy = (
        sipp("uas_answer.xml"), sipp("uas_ring_cancel.xml"), sipp("uas_ring_cancel.xml"),
        sipp("uas_answer.xml"), sipp("uas_busy.xml"),
    )
    common = {"from_": "1000", "answer_url": receiver.url("/answer"), "hangup_url": receiver.url("/hangup"),
              "ring_url": receiver.url("/ring")}
    c = env.client
    tl = await env.sdk(c.calls.create, to_=answer.uri, time_limit=1, **common)
    rt = await env.sdk(c.calls.create, to_=ringer.uri, ring_timeout=1, **common)
    hr = await env.sdk(c.calls.create, to_=ringer2.uri, hangup_on_ring=1, **common)
    # answered at once after the 180: hangup_on_ring counts from the ring, through the answer
    ha = await env.sdk(c.calls.create, to_=answer2.uri, hangup_on_ring=2, **common)
    bz = await env.sdk(c.calls.create, to_=busy.uri, **common)

    async def hangup(r: Any) -> dict[str, str]:
        return (await receiver.wait_hangup(request_uuid=r.request_uuid, timeout=10)).params

    p = await hangup(tl)
    assert (p["CallStatus"], p["HangupCause"], p["HangupSource"]) == ("completed", "ALLOTTED_TIMEOUT", "Plivo")
    assert (p["HangupCauseCode"], p["HangupCauseName"]) == ("5010", "Max Call Duration Reached")
    assert int(p["BillDuration"]) >= 1 and p["AnswerTime"]
    p = await hangup(rt)
    assert (p["CallStatus"], p["HangupCause"], p["HangupSource"]) == ("no-answer", "NO_ANSWER", "Plivo")
    assert (p["HangupCauseCode"], p["HangupCauseName"]) == ("3030", "Ring Timeout Reached")
    assert p["AnswerTime"] == "" and p["BillDuration"] == "0"
    p = await hangup(hr)
    assert (p["CallStatus"], p["HangupSource"]) == ("no-answer", "Plivo")
    assert (p["HangupCauseCode"], p["HangupCauseName"]) == ("3030", "Ring Timeout Reached")
    p = await hangup(ha)
    assert (p["CallStatus"], p["HangupCause"], p["HangupSource"]) == ("completed", "ALLOTTED_TIMEOUT", "Plivo")
    assert p["HangupCauseName"] == "Max Call Duration Reached" and p["AnswerTime"]
    p = await hangup(bz)
    assert (p["CallStatus"], p["HangupCause"], p["HangupSource"]) == ("busy", "USER_BUSY", "Callee")
    assert (p["HangupCauseCode"], p["HangupCauseName"]) == ("3000", "Busy Line")
    # what the peers saw: BYE for the answered calls, CANCEL for the ringing ones (RFC 3261
    # §9.1), each with an RFC 3326 Reason
    await sipp_done(answer, ringer, ringer2, answer2, busy)
    assert 'text="ALLOTTED_TIMEOUT"' in sipp_messages(answer).split("BYE sip:", 1)[1]
    assert 'text="ALLOTTED_TIMEOUT"' in sipp_messages(answer2).split("BYE sip:", 1)[1]
    assert "cause=19" in sipp_messages(ringer).split("CANCEL sip:", 1)[1]  # Q.850 19: no answer
    assert "CANCEL sip:" in sipp_messages(ringer2)
    rings = {h.params["RequestUUID"] for h in receiver.of("/ring")}
    assert rings == {r.request_uuid for r in (tl, rt, hr, ha)}  # sipp's busy sends no 18x
    assert {h.params["RequestUUID"] for h in receiver.of("/answer")} == {tl.request_uuid, ha.request_uuid}
    sig_ok(receiver)


async def _events_of(leg: Any) -> list[Any]:
    return [ev async for ev in leg.events()]


async def test_send_digits_on_preanswer_and_after_answer(sipp: Any, env: Env, receiver: WebhookReceiver) -> None:
    """send_digits reach the peer: sipp echoes our RTP, so our own RFC 4733 receiver hears
    them. With send_on_preanswer they go during the 183 early media, else after the 200."""
    early, late = sipp("uas_early_media.xml"), sipp("uas_early_media.xml")  # 183 + SDP, 200 after 1.5 s
    common = {"from_": "1000", "answer_url": receiver.url("/answer"), "hangup_url": receiver.url("/hangup"),
              "ring_url": receiver.url("/ring"), "send_digits": "12"}
    c = env.client
    pre = await env.sdk(c.calls.create, to_=early.uri, send_on_preanswer=True, **common)
    post = await env.sdk(c.calls.create, to_=late.uri, **common)
    rings = await receiver.wait_for(lambda h: h.path == "/ring" and len(receiver.of("/ring")) >= 2,
                                    timeout=10)
    legs = {h.params["RequestUUID"]: env.leg(h.params["CallUUID"]) for h in rings}
    uuids = {h.params["RequestUUID"]: h.params["CallUUID"] for h in rings}
    collectors = {req: asyncio.create_task(_events_of(leg)) for req, leg in legs.items()}
    for r in (pre, post):
        hit = (await receiver.wait_for(lambda h, r=r: h.path == "/answer" and h.params["RequestUUID"] == r.request_uuid,
                                       timeout=10))[0]
        rec = await env.sdk(c.calls.get, hit.params["CallUUID"])
        assert rec.call_status == "in-progress" and rec.ring_time
    # the post-answer digits take ~0.6 s to go out and come back through sipp's echo
    await wait_until(lambda: all(len(leg.digits) >= 2 for leg in legs.values()), 5,
                     what="both calls heard their digits echoed")
    for r in (pre, post):
        await env.sdk(c.calls.delete, uuids[r.request_uuid])
    for r in (pre, post):
        p = (await receiver.wait_hangup(request_uuid=r.request_uuid, timeout=10)).params
        assert p["CallStatus"] == "completed" and p["HangupSource"] == "API Request"
    await sipp_done(early, late)
    for r, before_answer in ((pre, True), (post, False)):
        events = await asyncio.wait_for(collectors[r.request_uuid], 5)
        kinds = [type(ev) for ev in events]
        answered_at = kinds.index(Answered)
        digits = [(i, ev.digit) for i, ev in enumerate(events) if isinstance(ev, DigitReceived)]
        assert [d for _, d in digits] == ["1", "2"], events
        assert all((i < answered_at) == before_answer for i, _ in digits), events
    ring = [h for h in receiver.of("/ring") if h.params["RequestUUID"] == pre.request_uuid]
    assert len(ring) == 1 and ring[0].params["CallStatus"] == "ringing"
    sig_ok(receiver)


async def test_unroutable_number_and_dead_peer(sipp: Any, env: Env, receiver: WebhookReceiver) -> None:
    """A number with no gateway fails at once; so does a SIP URI nobody listens on: the
    ICMP port unreachable is read from the UDP socket's error queue (RFC 3261 §18.4,
    §8.1.3.1: a transport error, as a 503), long before ring_timeout or Timer B."""
    c = env.client
    common = {"from_": "1000", "answer_url": receiver.url("/answer"), "hangup_url": receiver.url("/hangup")}
    n = await env.sdk(c.calls.create, to_="14155550123", **common)
    dead = await env.sdk(c.calls.create, to_=f"sip:nobody@127.0.0.1:{free_port()}", ring_timeout=30, **common)
    p = (await receiver.wait_hangup(request_uuid=n.request_uuid, timeout=10)).params
    assert p["CallStatus"] == "failed" and p["HangupCause"] == "NO_ROUTE_DESTINATION"
    assert p["HangupSource"] == "Error" and p["HangupCauseName"] == "Invalid Destination Address"
    p = (await receiver.wait_hangup(request_uuid=dead.request_uuid, timeout=10)).params
    assert (p["CallStatus"], p["HangupCause"], p["HangupSource"]) == ("failed", "DESTINATION_OUT_OF_ORDER", "Error")
    assert p["AnswerTime"] == "" and p["HangupCauseName"] == "Destination Out Of Service"
    assert not receiver.of("/answer")
    sig_ok(receiver)


async def test_api_cancel_crossed_by_200_ok(sipp: Any, env: Env, receiver: WebhookReceiver) -> None:
    """We CANCEL a ringing call and the callee's 200 OK crosses it: the UA ACKs and BYEs the
    answered dialog (RFC 3261 §9.1, §15), the call application is never fetched, and exactly
    one hangup callback says the API cancelled it (the app never ran, nothing is billed)."""
    peer = sipp("uas_api_cancel_crossing.xml")
    c = env.client
    r = await env.sdk(c.calls.create, from_="1000", to_=peer.uri, answer_url=receiver.url("/answer"),
                      ring_url=receiver.url("/ring"), hangup_url=receiver.url("/hangup"))
    await receiver.wait_for(lambda h: h.path == "/ring" and h.params["RequestUUID"] == r.request_uuid, timeout=10)
    await env.sdk(c.calls.cancel, r.request_uuid)
    p = (await receiver.wait_hangup(request_uuid=r.request_uuid, timeout=10)).params
    await sipp_done(peer)  # it got the CANCEL, then the ACK and the BYE for its 200
    assert (p["CallStatus"], p["HangupCause"], p["HangupSource"]) == ("cancel", "ORIGINATOR_CANCEL", "API Request")
    assert p["AnswerTime"] == "" and p["BillDuration"] == "0"
    await asyncio.sleep(0.2)
    assert not receiver.of("/answer")
    assert len(receiver.of("/hangup")) == 1
    sig_ok(receiver)


async def test_call_over_tcp(sipp: Any, env: Env, receiver: WebhookReceiver) -> None:
    """A ``;transport=tcp`` destination goes over TCP (RFC 3261 §18.1.1) end to end."""
    peer = sipp("uas_answer.xml", transport="t1")
    to = f"sip:service@127.0.0.1:{peer.port};transport=tcp"
    r = await env.sdk(env.client.calls.create, from_="1000", to_=to, answer_url=receiver.url("/answer"),
                      hangup_url=receiver.url("/hangup"), time_limit=1)
    p = (await receiver.wait_hangup(request_uuid=r.request_uuid, timeout=10)).params
    assert (p["CallStatus"], p["HangupCause"], p["To"]) == ("completed", "ALLOTTED_TIMEOUT", to)
    await sipp_done(peer)
    assert "SIP/2.0/TCP" in sipp_messages(peer)
    sig_ok(receiver)
