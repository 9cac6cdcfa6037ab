"""The Plivo v1 API end to end: the official ``plivo`` SDK → an in-process :class:`Server`
(real SIP user agent, real media engine, real SQLite file, real webhook outbox) → sipp
callees on loopback, with a real HTTP receiver checking every callback and its
``X-Plivo-Signature-V3`` with the SDK's own validator.

Every call here goes to a real peer: sipp scenarios from ``tests/sipp/`` (``sipp`` fixture
of ``tests/conftest.py``), each on its own port, most of them started together so the calls
run in parallel. ``test_api_plivo_sipp.py`` checks what the peers see on the wire (hangup
causes, CANCEL/BYE Reason, early media), ``test_api_plivo_baresip.py`` calls baresip, and
``test_api_plivo_races.py`` keeps the few cases only a scripted dialer can stage.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import plivo
import pytest
from plivo import exceptions as plivo_exc

from softswitch.api.plivo import ApiError, parse_call_request, parse_sip_headers
from softswitch.config import Limits
from softswitch.server import serve
from tests.conftest import needs_sipp
from tests.peers import plivo_api
from tests.peers.plivo_api import (
    AUTH_ID,
    AUTH_TOKEN,
    OTHER_ID,
    OTHER_TOKEN,
    Env,
    basic,
    free_tcp_port,
    make_config,
    plivo_receiver,
    sdk,
    sdk_client,
    sig_ok,
    sipp_done,
    sipp_messages,
    start_server,
    wait_record,
)
from tests.peers.webhooks import WebhookReceiver

# the shared fixtures: a real server (``env``), the webhook receiver, the SDK redirection
env = plivo_api.env
receiver = plivo_api.receiver
sdk_base = plivo_api.sdk_base

COMMON = ("From", "To", "RequestUUID", "ALegRequestUUID", "CallUUID", "ALegUUID", "Direction",
          "Event", "CallStatus", "SessionStart", "STIRAttestation")


# --- tests: make a call ---------------------------------------------------------------------------------


@needs_sipp
async def test_sdk_call_fires_all_callbacks_signed(sipp: Any, env: Env, receiver: WebhookReceiver) -> None:
    # The peer checks the INVITE (From display name and user, X-PH-* headers), answers,
    # echoes our RTP back (so the digits we send come back to our own DTMF receiver) and
    # hangs up after 1.5 s.
    peer = sipp("uas_api_headers.xml")
    resp = await env.sdk(
        env.client.calls.create,
        from_="+14155550100",
        to_=peer.uri,
        answer_url=receiver.url("/answer"),
        answer_method="GET",
        ring_url=receiver.url("/ring"),
        hangup_url=receiver.url("/hangup"),
        caller_name="Alice Example",
        sip_headers="Foo=bar,Acct=42",
        send_digits="1w2@100",
    )
    assert resp.message == "call fired"
    assert isinstance(resp.request_uuid, str) and len(resp.request_uuid) == 36
    assert resp.api_id
    answered = await receiver.wait_for(lambda h: h.path == "/answer" and h.params["RequestUUID"] == resp.request_uuid,
                                       timeout=10)
    leg = env.leg(answered[0].params["CallUUID"])
    hang = await receiver.wait_hangup(request_uuid=resp.request_uuid, timeout=10)
    await sipp_done(peer)  # every check in the scenario matched
    call_uuid = hang.params["CallUUID"]
    ring = receiver.of("/ring", call_uuid)
    answer = receiver.of("/answer", call_uuid)
    assert len(ring) == 1 and len(answer) == 1 and len(receiver.of("/hangup", call_uuid)) == 1
    for hit in (ring[0], answer[0], hang):
        for key in COMMON:
            assert key in hit.params, (hit.path, key)
        assert hit.params["From"] == "+14155550100"
        assert hit.params["To"] == peer.uri
        assert hit.params["RequestUUID"] == resp.request_uuid == hit.params["ALegRequestUUID"]
        assert hit.params["ALegUUID"] == call_uuid
        assert hit.params["Direction"] == "outbound"
        assert hit.params["X-PH-Foo"] == "bar" and hit.params["X-PH-Acct"] == "42"
        assert hit.params["CallerName"] == "Alice Example"
    assert ring[0].method == "POST" and ring[0].params["Event"] == "Ring"
    assert ring[0].params["CallStatus"] == "ringing"
    assert answer[0].method == "GET" and answer[0].params["Event"] == "StartApp"
    assert answer[0].params["CallStatus"] == "in-progress"
    p = hang.params
    assert p["Event"] == "Hangup" and p["CallStatus"] == "completed"
    assert p["HangupCause"] == "NORMAL_CLEARING" and p["HangupSource"] == "Callee"
    assert p["HangupCauseCode"] == "4000" and p["HangupCauseName"] == "Normal Hangup"
    assert int(p["Duration"]) >= 1 and int(p["BillDuration"]) >= 2  # 1.5 s, billed per started second
    for key in ("StartTime", "AnswerTime", "EndTime"):
        time.strptime(p[key], "%Y-%m-%d %H:%M:%S")
    assert ring[0].at <= answer[0].at <= hang.at
    sig_ok(receiver)
    # send_digits went out after the answer as RFC 4733 events; sipp echoed them back
    assert [d.digit for d in leg.digits] == ["1", "2"], leg.digits
    # the record, through the SDK
    rec = await env.sdk(env.client.calls.get, call_uuid)
    assert rec.call_uuid == call_uuid and rec.call_status == "completed"
    assert rec.from_number == "+14155550100" and rec.to_number == peer.uri
    assert rec.hangup_source == "Callee" and rec.hangup_cause_code == 4000
    assert rec.call_direction == "outbound" and rec.answer_time and rec.end_time
    assert rec.bill_duration >= 2
    # the StartApp fetch and the posts are recorded by the outbox
    kinds = [(d.event, d.status) for d in env.server.outbox.deliveries(call_uuid)]
    assert ("answer", "delivered") in kinds and ("hangup", "delivered") in kinds


@needs_sipp
async def test_json_and_form_bodies_raw_http(sipp: Any, env: Env, receiver: WebhookReceiver) -> None:
    peer = sipp("uas_callee_bye.xml", calls=3)  # one sipp, three concurrent calls
    url = f"{env.base}/v1/Account/{AUTH_ID}/Call/"
    dest = [f"sip:{user}@127.0.0.1:{peer.port}" for user in ("form", "curl", "json")]
    reqs = []
    async with aiohttp.ClientSession(headers=basic()) as s:
        form = {"from": "1000", "to": dest[0], "answer_url": receiver.url("/answer"),
                "hangup_url": receiver.url("/hangup"), "answer_method": "POSt", "time_limit": "300"}
        async with s.post(url, data=form) as r:
            assert r.status == 201
            body = await r.json()
            assert body["message"] == "call fired" and body["api_id"]
            reqs.append(body["request_uuid"])
        # curl -d '{...}' sends JSON as a form content type: the seed's own example
        async with s.post(url, data=json.dumps({**form, "to": dest[1]}),
                          headers={"Content-Type": "application/x-www-form-urlencoded"}) as r:
            assert r.status == 201
            reqs.append((await r.json())["request_uuid"])
        async with s.post(url.rstrip("/"), json={**form, "to": dest[2]}) as r:
            assert r.status == 201, await r.text()
            reqs.append((await r.json())["request_uuid"])
    hangs = [await receiver.wait_hangup(request_uuid=r, timeout=10) for r in reqs]
    assert [h.params["To"] for h in hangs] == dest
    assert all(h.params["CallStatus"] == "completed" and h.params["HangupSource"] == "Callee" for h in hangs)
    await sipp_done(peer)
    sig_ok(receiver)


# --- tests: bad requests ------------------------------------------------------------------------------------


async def test_bad_requests_status_and_error(env: Env, receiver: WebhookReceiver) -> None:
    url = f"{env.base}/v1/Account/{AUTH_ID}/Call/"
    ok = {"from": "1000", "to": "sip:bob@127.0.0.1", "answer_url": receiver.url("/answer")}
    cases = [
        ({k: v for k, v in ok.items() if k != "to"}, 400, "to"),
        ({k: v for k, v in ok.items() if k != "from"}, 400, "from"),
        ({k: v for k, v in ok.items() if k != "answer_url"}, 400, "answer_url"),
        ({**ok, "answer_url": "ftp://example.com/x"}, 400, "answer_url"),
        ({**ok, "answer_url": "not a url"}, 400, "answer_url"),
        ({**ok, "hangup_url": "http//broken"}, 400, "hangup_url"),
        ({**ok, "caller_name": "x" * 51}, 400, "caller_name"),
        ({**ok, "to": "<".join(str(15550000000 + i) for i in range(1001))}, 400, "to"),
        ({**ok, "to": "sip:"}, 400, "to"),
        ({**ok, "time_limit": "0"}, 400, "time_limit"),
        ({**ok, "time_limit": "abc"}, 400, "time_limit"),
        ({**ok, "ring_timeout": "-5"}, 400, "ring_timeout"),
        ({**ok, "hangup_on_ring": "0"}, 400, "hangup_on_ring"),
        ({**ok, "machine_detection": "maybe"}, 400, "machine_detection"),
        ({**ok, "machine_detection_time": "1999"}, 400, "machine_detection_time"),
        ({**ok, "machine_detection_time": "10001"}, 400, "machine_detection_time"),
        ({**ok, "sip_headers": "a=b=c"}, 400, "sip_headers"),
        ({**ok, "sip_headers": "bad key=v"}, 400, "sip_headers"),
        ({**ok, "send_digits": "12x"}, 400, "send_digits"),
        ({**ok, "send_digits": "12@10"}, 400, "send_digits"),
        ({**ok, "answer_method": "PUT"}, 400, "answer_method"),
        ({**ok, "send_on_preanswer": "maybe"}, 400, "send_on_preanswer"),
        ({**ok, "parent_call_uuid": "nope"}, 400, "parent_call_uuid"),
        ({**ok, "parent_call_uuid": "11111111-2222-3333-4444-555555555555",
          "error_if_parent_not_found": "true"}, 404, "parent_call_uuid"),
    ]
    async with aiohttp.ClientSession(headers=basic()) as s:
        for body, status, name in cases:
            async with s.post(url, json=body) as r:
                data = await r.json()
                assert r.status == status, (body, data)
                assert set(data) == {"api_id", "error"}
                assert name in data["error"], (name, data)
        async with s.post(url, data=b"{not json", headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400
        async with s.put(url, json=ok) as r:
            assert r.status == 405 and set(await r.json()) == {"api_id", "error"}
        async with s.get(f"{env.base}/v1/Account/{AUTH_ID}/Call/{'0' * 8}-0000-0000-0000-{'0' * 12}/") as r:
            assert r.status == 404 and "error" in await r.json()
        async with s.get(f"{env.base}/v1/Account/{AUTH_ID}/Nothing/") as r:
            assert r.status == 404 and "error" in await r.json()
    for headers in (basic(AUTH_ID, "wrong"), basic("MAZZZZZZZZZZZZZZZZZZ", AUTH_TOKEN),
                    basic(OTHER_ID, OTHER_TOKEN), {"Authorization": "Basic !!!"}, {}):
        async with aiohttp.ClientSession(headers=headers) as s, s.post(url, json=ok) as r:
            assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
            assert (await r.text()).startswith("Could not verify your access level")
    # nothing was dialed, nothing was recorded
    assert env.server.ua.calls == []
    assert (await env.sdk(env.client.calls.list)).meta.total_count == 0


async def test_bad_requests_through_sdk(env: Env, receiver: WebhookReceiver) -> None:
    c = env.client
    with pytest.raises(plivo_exc.ValidationError, match="caller_name"):
        await env.sdk(c.calls.create, from_="1000", to_="sip:bob@127.0.0.1", answer_url=receiver.url("/a"),
                      caller_name="y" * 51)
    many = "<".join(str(15550000000 + i) for i in range(1001))
    with pytest.raises(plivo_exc.ValidationError, match="1000"):
        await env.sdk(c.calls.create, from_="1000", to_=many, answer_url=receiver.url("/a"))
    with pytest.raises(plivo_exc.ValidationError, match="to"):
        await env.sdk(c.calls.create, from_="1000", to_="sip:", answer_url=receiver.url("/a"))
    with pytest.raises(plivo_exc.ValidationError, match="answer_url"):
        await env.sdk(c.calls.create, from_="1000", to_="sip:bob@127.0.0.1", answer_url="not a url")
    wrong = plivo.RestClient(AUTH_ID, "not-the-token")
    with pytest.raises(plivo_exc.AuthenticationError):
        await env.sdk(wrong.calls.create, from_="1000", to_="sip:bob@127.0.0.1", answer_url=receiver.url("/a"))
    # Every resource, lists included (a JSON 401 made calls.list() an AttributeError).
    for fn, args in ((wrong.calls.list, ()), (wrong.calls.get, ("11111111-2222-3333-4444-555555555555",)),
                     (wrong.live_calls.list_ids, ())):
        with pytest.raises(plivo_exc.AuthenticationError):
            await env.sdk(fn, *args)
    with pytest.raises(plivo_exc.ResourceNotFoundError):
        await env.sdk(c.calls.get, "11111111-2222-3333-4444-555555555555")
    with pytest.raises(plivo_exc.ResourceNotFoundError):
        await env.sdk(c.calls.delete, "11111111-2222-3333-4444-555555555555")
    with pytest.raises(plivo_exc.ResourceNotFoundError):
        await env.sdk(c.calls.cancel, "11111111-2222-3333-4444-555555555555")
    assert env.server.ua.calls == []


# --- tests: records, live calls, hangup, cancel ----------------------------------------------------------------


@needs_sipp
async def test_live_calls_and_api_hangup(sipp: Any, env: Env, receiver: WebhookReceiver) -> None:
    peer = sipp("uas_answer.xml")  # answers, waits for our BYE
    busy = sipp("uas_busy.xml")
    c = env.client
    resp = await env.sdk(c.calls.create, from_="1000", to_=peer.uri, answer_url=receiver.url("/answer"),
                         hangup_url=receiver.url("/hangup"), ring_url=receiver.url("/ring"))
    hits = await receiver.wait_for(lambda h: h.path == "/answer" and h.params["RequestUUID"] == resp.request_uuid,
                                   timeout=10)
    call_uuid = hits[0].params["CallUUID"]
    live = await env.sdk(c.live_calls.list_ids)
    assert call_uuid in live.calls and live.api_id
    one = await env.sdk(c.live_calls.get, call_uuid)
    assert one.call_uuid == call_uuid and one.call_status == "in-progress"
    assert one.direction == "outbound" and one.to == peer.uri and getattr(one, "from") == "1000"
    rec = await env.sdk(c.calls.get, call_uuid)
    assert rec.call_status == "in-progress" and rec.end_time is None
    # the other account sees nothing of it
    other = plivo.RestClient(OTHER_ID, OTHER_TOKEN)
    assert call_uuid not in (await env.sdk(other.live_calls.list_ids)).calls
    with pytest.raises(plivo_exc.ResourceNotFoundError):
        await env.sdk(other.calls.get, call_uuid)
    with pytest.raises(plivo_exc.ResourceNotFoundError):
        await env.sdk(other.calls.delete, call_uuid)
    assert (await env.sdk(other.calls.list)).meta.total_count == 0
    # a second call names the live one as its parent (Plivo "Make a call": parent_call_uuid)
    child = await env.sdk(c.calls.create, from_="1000", to_=busy.uri, answer_url=receiver.url("/answer"),
                          hangup_url=receiver.url("/hangup"), parent_call_uuid=call_uuid,
                          error_if_parent_not_found=True)
    p = (await receiver.wait_hangup(request_uuid=child.request_uuid, timeout=10)).params
    assert p["ParentCallUUID"] == call_uuid and p["CallStatus"] == "busy"
    assert (await env.sdk(c.calls.get, p["CallUUID"])).parent_call_uuid == call_uuid
    # hang up through the API: a BYE reaches the peer
    await env.sdk(c.calls.delete, call_uuid)
    hang = await receiver.wait_hangup(call_uuid, timeout=10)
    assert hang.params["CallStatus"] == "completed" and hang.params["HangupSource"] == "API Request"
    assert hang.params["HangupCause"] == "NORMAL_CLEARING"
    await sipp_done(peer)
    assert call_uuid not in (await env.sdk(c.live_calls.list_ids)).calls
    with pytest.raises(plivo_exc.ResourceNotFoundError):
        await env.sdk(c.live_calls.get, call_uuid)
    rec = await env.sdk(c.calls.get, call_uuid)
    assert rec.call_status == "completed" and rec.hangup_source == "API Request"
    # the parent has ended: with error_if_parent_not_found the next child is refused
    with pytest.raises(plivo_exc.ResourceNotFoundError, match="parent_call_uuid"):
        await env.sdk(c.calls.create, from_="1000", to_=busy.uri, answer_url=receiver.url("/answer"),
                      parent_call_uuid=call_uuid, error_if_parent_not_found=True)
    await sipp_done(busy)
    await asyncio.sleep(0.1)
    assert len(receiver.of("/hangup", call_uuid)) == 1
    sig_ok(receiver)


@needs_sipp
async def test_hangup_and_cancel_ringing_calls(sipp: Any, env: Env, receiver: WebhookReceiver) -> None:
    ringers = [sipp("uas_ring_cancel.xml"), sipp("uas_ring_cancel.xml")]  # ring until CANCEL
    c = env.client
    common = {"from_": "1000", "answer_url": receiver.url("/answer"), "hangup_url": receiver.url("/hangup"),
              "ring_url": receiver.url("/ring")}
    a = await env.sdk(c.calls.create, to_=ringers[0].uri, **common)
    b = await env.sdk(c.calls.create, to_=ringers[1].uri, **common)
    ring_a = (await receiver.wait_for(lambda h: h.path == "/ring" and h.params["RequestUUID"] == a.request_uuid,
                                      timeout=10))[0]
    await receiver.wait_for(lambda h: h.path == "/ring" and h.params["RequestUUID"] == b.request_uuid, timeout=10)
    live = await env.sdk(c.live_calls.get, ring_a.params["CallUUID"])
    assert live.call_status == "ringing"
    await env.sdk(c.calls.delete, ring_a.params["CallUUID"])  # DELETE Call/{uuid}/ on a ringing call
    await env.sdk(c.calls.cancel, b.request_uuid)  # DELETE Request/{uuid}/
    for req in (a.request_uuid, b.request_uuid):
        hang = await receiver.wait_hangup(request_uuid=req, timeout=10)
        assert hang.params["CallStatus"] == "cancel"
        assert hang.params["HangupCause"] == "ORIGINATOR_CANCEL"
        assert hang.params["HangupSource"] == "API Request"
        assert hang.params["HangupCauseName"] == "Canceled" and hang.params["HangupCauseCode"] == "1000"
        assert hang.params["AnswerTime"] == "" and hang.params["Duration"] == "0"
    await sipp_done(*ringers)  # each took a CANCEL, answered 487 and got the ACK
    assert not receiver.of("/answer")
    sig_ok(receiver)


@needs_sipp
async def test_list_calls_paging_and_filters(sipp: Any, env: Env, receiver: WebhookReceiver) -> None:
    peer = sipp("uas_callee_bye.xml", calls=5)
    busy = sipp("uas_busy.xml")
    c = env.client
    reqs = []
    for i in range(5):
        r = await env.sdk(c.calls.create, from_="1000", to_=f"sip:u{i}@127.0.0.1:{peer.port}",
                          answer_url=receiver.url("/answer"), hangup_url=receiver.url("/hangup"))
        reqs.append(r.request_uuid)
    b = await env.sdk(c.calls.create, from_="1000", to_=busy.uri,
                      answer_url=receiver.url("/answer"), hangup_url=receiver.url("/hangup"))
    for r in [*reqs, b.request_uuid]:
        await receiver.wait_hangup(request_uuid=r, timeout=10)
    await sipp_done(peer, busy)
    page = await env.sdk(c.calls.list, limit=2, offset=0)
    assert page.meta.total_count == 6 and page.meta.limit == 2 and page.meta.offset == 0
    assert page.meta.next and "offset=2" in page.meta.next and page.meta.previous is None
    assert len(page.objects) == 2 and all(o.call_uuid for o in page.objects)
    last = await env.sdk(c.calls.list, limit=2, offset=4)
    assert len(last.objects) == 2 and last.meta.next is None and last.meta.previous
    found = await env.sdk(c.calls.list, to_number=busy.uri)
    assert [o.call_status for o in found.objects] == ["busy"]
    assert found.objects[0].hangup_cause_name == "Busy Line"
    hang = receiver.of("/hangup")
    assert any(h.params["CallStatus"] == "busy" and h.params["HangupCause"] == "USER_BUSY" for h in hang)
    # the SDK walks every page by itself
    walked = await asyncio.to_thread(lambda: [o.call_uuid for o in env.client.calls])
    assert len(walked) == 6 and len(set(walked)) == 6
    with pytest.raises(plivo_exc.ValidationError):
        await env.sdk(c.calls.list, hangup_cause_code=4000, end_time__gt="not a time")
    # a record is also reachable by its request uuid
    rec = await env.sdk(c.calls.get, b.request_uuid)
    assert rec.call_status == "busy"


@needs_sipp
async def test_cps_gate_queues_calls(sipp: Any, tmp_path: Path, sdk_base: Any, receiver: WebhookReceiver) -> None:
    peer = sipp("uas_callee_bye.xml", calls=3)
    cfg = make_config(tmp_path, limits=Limits(cps=1.0, max_concurrent=100, max_queue=3, bulk_max=1000))
    server = await start_server(cfg, sdk_base)
    try:
        c = sdk_client(server.base_url)
        to = "<".join(f"sip:q{i}@127.0.0.1:{peer.port}" for i in range(3))
        first = await sdk(c.calls.create, from_="1000", to_=to, answer_url=receiver.url("/answer"),
                          ring_url=receiver.url("/ring"), hangup_url=receiver.url("/hangup"))
        assert first.message == "call queued"  # three calls, one token: two wait, 1 s apart
        queued = await sdk(c.queued_calls.list_ids)
        assert 1 <= len(queued.calls) <= 2
        q = await sdk(c.queued_calls.get, queued.calls[-1])
        assert q.call_status == "queued"
        async with aiohttp.ClientSession(headers=basic()) as s:
            body = {"from": "1000", "to": "<".join(f"sip:x{i}@127.0.0.1:{peer.port}" for i in range(4)),
                    "answer_url": receiver.url("/answer")}
            async with s.post(f"{server.base_url}/v1/Account/{AUTH_ID}/Call/", json=body) as r:
                assert r.status == 429 and "error" in await r.json()
        for r in first.request_uuid:
            await receiver.wait_hangup(request_uuid=r, timeout=10)
        await sipp_done(peer)
        # the INVITEs went out at the CPS rate: the third rang ~2 s after the first
        rings = sorted(h.at for h in receiver.of("/ring"))
        assert len(rings) == 3 and rings[2] - rings[0] >= 1.5
    finally:
        await server.stop(drain_timeout_s=1.0)


# --- tests: answer_url retries and fallback, receiver down then up -----------------------------------------------


@needs_sipp
async def test_answer_url_retries_then_fallback(sipp: Any, env: Env, receiver: WebhookReceiver) -> None:
    held, failed = sipp("uas_answer.xml"), sipp("uas_answer.xml")
    receiver.fail["/answer"] = 99
    r = await env.sdk(env.client.calls.create, from_="1000", to_=held.uri,
                      answer_url=receiver.url("/answer"), fallback_url=receiver.url("/fallback"),
                      fallback_method="GET", hangup_url=receiver.url("/hangup"))
    hit = (await receiver.wait_for(lambda h: h.path == "/fallback" and h.params["RequestUUID"] == r.request_uuid,
                                   timeout=10))[0]
    assert hit.method == "GET" and hit.params["Event"] == "StartApp"
    assert receiver.fail["/answer"] == 99 - 3  # exactly three attempts at answer_url
    call_uuid = hit.params["CallUUID"]
    rec = await env.sdk(env.client.calls.get, call_uuid)
    assert rec.call_status == "in-progress"  # the fallback's XML holds the call
    # and when neither answers, the call is hung up as an error: a BYE reaches the peer
    receiver.fail["/fallback"] = 99
    r2 = await env.sdk(env.client.calls.create, from_="1000", to_=failed.uri,
                       answer_url=receiver.url("/answer"), fallback_url=receiver.url("/fallback"),
                       hangup_url=receiver.url("/hangup"))
    p = (await receiver.wait_hangup(request_uuid=r2.request_uuid, timeout=10)).params
    assert p["HangupSource"] == "Error" and p["CallStatus"] == "completed"
    assert p["HangupCauseName"] == "Error Reaching Answer URL" and p["HangupCauseCode"] == "8011"
    await env.sdk(env.client.calls.delete, call_uuid)
    p = (await receiver.wait_hangup(call_uuid, timeout=10)).params
    assert p["HangupSource"] == "API Request"
    await sipp_done(held, failed)
    sig_ok(receiver)


@needs_sipp
async def test_receiver_down_then_up_gets_every_callback(sipp: Any, env: Env, receiver: WebhookReceiver) -> None:
    bye, answer = sipp("uas_callee_bye.xml"), sipp("uas_answer.xml")
    port = free_tcp_port()
    late = plivo_receiver(port=port)
    down = f"http://127.0.0.1:{port}"
    # a: the app server is up, the ring/hangup receiver is down while the callee rings,
    #    answers and hangs up. b: everything is down, so answer_url fails and we hang up.
    a = await env.sdk(env.client.calls.create, from_="1000", to_=bye.uri, answer_url=receiver.url("/answer"),
                      ring_url=f"{down}/ring", hangup_url=f"{down}/hangup")
    b = await env.sdk(env.client.calls.create, from_="1000", to_=answer.uri, answer_url=f"{down}/answer",
                      ring_url=f"{down}/ring", hangup_url=f"{down}/hangup")
    rec_a = await wait_record(env.server, a.request_uuid)
    rec_b = await wait_record(env.server, b.request_uuid)
    assert rec_a["call_status"] == rec_b["call_status"] == "completed"
    assert (rec_a["hangup_source"], rec_b["hangup_source"]) == ("Callee", "Error")
    await sipp_done(bye, answer)
    await late.start()  # the receiver comes up: the outbox's retries reach it, in order
    try:
        for req, source in ((a.request_uuid, "Callee"), (b.request_uuid, "Error")):
            hang = await late.wait_hangup(request_uuid=req, timeout=10)
            assert hang.params["HangupSource"] == source
            call_uuid = hang.params["CallUUID"]
            ring = late.of("/ring", call_uuid)
            assert len(ring) == 1 and ring[0].at <= hang.at
            assert len(late.of("/hangup", call_uuid)) == 1
        assert not late.of("/answer")  # answer_url is fetched while the call waits, never later
        sig_ok(late)
    finally:
        await late.stop()


@needs_sipp
async def test_flaky_receiver_retried_in_order(sipp: Any, env: Env, receiver: WebhookReceiver) -> None:
    peer = sipp("uas_callee_bye.xml")
    receiver.fail["/ring"] = 2
    receiver.fail["/hangup"] = 2
    r = await env.sdk(env.client.calls.create, from_="1000", to_=peer.uri,
                      answer_url=receiver.url("/answer"), ring_url=receiver.url("/ring"),
                      hangup_url=receiver.url("/hangup"))
    hang = await receiver.wait_hangup(request_uuid=r.request_uuid, timeout=10)
    ring = receiver.of("/ring", hang.params["CallUUID"])
    assert len(ring) == 1 and ring[0].at <= hang.at
    assert receiver.fail == {"/ring": 0, "/hangup": 0}
    await sipp_done(peer)
    sig_ok(receiver)


# --- tests: restart and shutdown ---------------------------------------------------------------------------


@needs_sipp
async def test_records_survive_restart(sipp: Any, tmp_path: Path, sdk_base: Any, receiver: WebhookReceiver) -> None:
    done_peer, held_peer, late_peer = sipp("uas_callee_bye.xml"), sipp("uas_answer.xml"), sipp("uas_callee_bye.xml")
    cfg = make_config(tmp_path)
    late_port = free_tcp_port()
    late = plivo_receiver(port=late_port)
    server = await start_server(cfg, sdk_base)
    try:
        c = sdk_client(server.base_url)
        done = await sdk(c.calls.create, from_="1000", to_=done_peer.uri,
                         answer_url=receiver.url("/answer"), hangup_url=receiver.url("/hangup"))
        held = await sdk(c.calls.create, from_="1000", to_=held_peer.uri,
                         answer_url=receiver.url("/answer"), hangup_url=receiver.url("/hangup"))
        # this one's hangup receiver is down until after the restart
        pending = await sdk(c.calls.create, from_="1000", to_=late_peer.uri,
                            answer_url=receiver.url("/answer"), hangup_url=f"http://127.0.0.1:{late_port}/hangup")
        done_uuid = (await receiver.wait_hangup(request_uuid=done.request_uuid, timeout=10)).params["CallUUID"]
        held_uuid = (await receiver.wait_for(lambda h: h.path == "/answer"
                                             and h.params["RequestUUID"] == held.request_uuid,
                                             timeout=10))[0].params["CallUUID"]
        pending_uuid = (await wait_record(server, pending.request_uuid))["call_uuid"]
    finally:
        # graceful: live calls hung up, callbacks flushed for 1 s (the one to the down
        # receiver stays pending in SQLite)
        await server.stop(mode="hangup", drain_timeout_s=1.0)
    p = (await receiver.wait_hangup(held_uuid)).params
    assert p["HangupCause"] == "SYSTEM_SHUTDOWN" and p["HangupSource"] == "Plivo"
    await sipp_done(done_peer, held_peer, late_peer)  # the held callee got our BYE
    assert 'text="SYSTEM_SHUTDOWN"' in sipp_messages(held_peer)  # RFC 3326 Reason on it
    assert not late.of()
    await late.start()
    try:
        # a new process on the same SQLite file: the records are there, and the callback the
        # first one could not deliver is delivered by the second
        server2 = await start_server(cfg, sdk_base)
        try:
            c2 = sdk_client(server2.base_url)
            a = await sdk(c2.calls.get, done_uuid)
            b = await sdk(c2.calls.get, held_uuid)
            d = await sdk(c2.calls.get, pending_uuid)
            assert a.call_status == "completed" and a.hangup_source == "Callee"
            assert b.call_status == "completed" and b.hangup_source == "Plivo"
            assert b.hangup_cause_name == "Server Shutdown"
            assert d.call_status == "completed" and d.hangup_source == "Callee"
            assert a.to_number == done_peer.uri and a.bill_duration >= 1
            assert (await sdk(c2.calls.list)).meta.total_count == 3
            assert (await sdk(c2.live_calls.list_ids)).calls == []
            hang = await late.wait_hangup(pending_uuid, timeout=10)
            assert hang.params["HangupSource"] == "Callee" and hang.params["CallStatus"] == "completed"
            assert len(late.of("/hangup", pending_uuid)) == 1
            sig_ok(late)
        finally:
            await server2.stop()
    finally:
        await late.stop()
    sig_ok(receiver)


async def _serve_subprocess(tmp_path: Path, db: Path, sdk_base: Any) -> tuple[subprocess.Popen[bytes], Any]:
    """``softswitch serve`` as its own process (so it can be killed), the SDK pointed at it."""
    http_port, sip_port = free_tcp_port(), free_tcp_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "softswitch.cli", "serve", "-q", "--http", f"127.0.0.1:{http_port}",
         "--sip", f"127.0.0.1:{sip_port}", "--db", str(db), "--auth-id", AUTH_ID, "--auth-token", AUTH_TOKEN],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path,
    )
    assert proc.stderr is not None
    try:
        ready = await asyncio.wait_for(asyncio.to_thread(_read_until, proc.stderr, "HTTP API on"), 20)
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise
    assert ready, "softswitch serve did not start"
    base = f"http://127.0.0.1:{http_port}"
    sdk_base(base)
    return proc, sdk_client(base)


async def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()  # no shutdown: live dialogs and media die with the process
    await asyncio.to_thread(proc.wait, 10)


@needs_sipp
async def test_records_survive_a_crash(sipp: Any, tmp_path: Path, sdk_base: Any, receiver: WebhookReceiver) -> None:
    """``softswitch serve`` killed with SIGKILL mid-call; a new server on the same SQLite file
    closes the call the crash left live and delivers the callback the dead one still owed."""
    held_peer, bye_peer = sipp("uas_answer.xml"), sipp("uas_callee_bye.xml")
    db = tmp_path / "crash.db"
    late_port = free_tcp_port()
    late = plivo_receiver(port=late_port)
    proc, c = await _serve_subprocess(tmp_path, db, sdk_base)
    try:
        held = await sdk(c.calls.create, from_="1000", to_=held_peer.uri, answer_url=receiver.url("/answer"),
                         hangup_url=receiver.url("/hangup"))
        ended = await sdk(c.calls.create, from_="1000", to_=bye_peer.uri, answer_url=receiver.url("/answer"),
                          hangup_url=f"http://127.0.0.1:{late_port}/hangup")  # down for now
        held_uuid = (await receiver.wait_for(lambda h: h.path == "/answer"
                                             and h.params["RequestUUID"] == held.request_uuid,
                                             timeout=10))[0].params["CallUUID"]
        deadline = time.monotonic() + 10
        while (rec := await sdk(c.calls.get, ended.request_uuid)).end_time is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        ended_uuid = rec.call_uuid
        await sipp_done(bye_peer)
    finally:
        await _kill(proc)
    await late.start()
    server = await start_server(make_config(tmp_path, db_path=str(db)), sdk_base)
    try:
        assert server.interrupted == 1
        c2 = sdk_client(server.base_url)
        a = await sdk(c2.calls.get, held_uuid)
        assert a.call_status == "completed" and a.hangup_source == "Error" and a.end_time and a.answer_time
        b = await sdk(c2.calls.get, ended_uuid)
        assert b.call_status == "completed" and b.hangup_source == "Callee" and b.bill_duration >= 1
        assert (await sdk(c2.calls.list)).meta.total_count == 2
        assert (await sdk(c2.live_calls.list_ids)).calls == []
        hang = await late.wait_hangup(ended_uuid, timeout=15)  # resumed from the SQLite outbox
        assert hang.params["HangupSource"] == "Callee" and len(late.of("/hangup", ended_uuid)) == 1
        sig_ok(late)
    finally:
        await server.stop(drain_timeout_s=0.5)
        await late.stop()


@needs_sipp
async def test_call_interrupted_by_a_crash_gets_its_hangup_callback(sipp: Any, tmp_path: Path, sdk_base: Any,
                                                                    receiver: WebhookReceiver) -> None:
    """call.py: "hangup_url fires exactly once, when the call ends, however it ends" (Plivo "Make a call":
    hangup_url is notified when the call is hung up). The recovering process knows the call,
    its hangup_url and how it ended, so it can send the one hangup callback."""
    peer = sipp("uas_answer.xml")
    db = tmp_path / "crash.db"
    proc, c = await _serve_subprocess(tmp_path, db, sdk_base)
    try:
        r = await sdk(c.calls.create, from_="1000", to_=peer.uri, answer_url=receiver.url("/answer"),
                      hangup_url=receiver.url("/hangup"))
        call_uuid = (await receiver.wait_for(lambda h: h.path == "/answer"
                                             and h.params["RequestUUID"] == r.request_uuid,
                                             timeout=10))[0].params["CallUUID"]
    finally:
        await _kill(proc)
    server = await start_server(make_config(tmp_path, db_path=str(db)), sdk_base)
    try:
        assert server.interrupted == 1
        p = (await receiver.wait_hangup(call_uuid, timeout=3)).params
        assert p["CallStatus"] == "completed" and p["HangupSource"] == "Error"
        sig_ok(receiver)
    finally:
        await server.stop(drain_timeout_s=0.5)


@needs_sipp
async def test_second_serve_on_the_same_database_refuses_to_start(sipp: Any, tmp_path: Path, sdk_base: Any,
                                                                  receiver: WebhookReceiver) -> None:
    """Two servers on one SQLite file would close each other's live calls as "left live by the
    previous run": the second ``softswitch serve`` exits 3 with the reason, the first keeps its
    call, and an in-process :class:`Server` is refused the same way."""
    from softswitch.store import DatabaseInUse

    peer = sipp("uas_answer.xml")
    db = tmp_path / "shared.db"
    proc, c = await _serve_subprocess(tmp_path, db, sdk_base)
    try:
        r = await sdk(c.calls.create, from_="1000", to_=peer.uri, answer_url=receiver.url("/answer"),
                      hangup_url=receiver.url("/hangup"))
        call_uuid = (await receiver.wait_for(lambda h: h.path == "/answer"
                                             and h.params["RequestUUID"] == r.request_uuid,
                                             timeout=10))[0].params["CallUUID"]
        second = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "softswitch.cli", "serve", "--http", f"127.0.0.1:{free_tcp_port()}",
             "--sip", f"127.0.0.1:{free_tcp_port()}", "--db", str(db), "--auth-id", AUTH_ID,
             "--auth-token", AUTH_TOKEN],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=tmp_path, timeout=30,
        )
        assert second.returncode == 3, second.stderr
        assert "refusing to start" in second.stderr and "in use by another softswitch" in second.stderr
        assert f"pid {proc.pid}" in second.stderr
        with pytest.raises(DatabaseInUse):
            await start_server(make_config(tmp_path, db_path=str(db)), sdk_base)
        # The first server still owns its call: live, not closed by the refused starts.
        assert call_uuid in (await sdk(c.live_calls.list_ids)).calls
        from softswitch.store import CallStore

        reader = CallStore(str(db), checkpoint_interval_s=0)
        try:
            assert reader.get_call(AUTH_ID, call_uuid)["call_status"] == "in-progress"  # type: ignore[index]
        finally:
            reader.close()
        assert not receiver.of("/hangup")
        await sdk(c.calls.delete, call_uuid)
        hang = await receiver.wait_hangup(call_uuid, timeout=10)
        assert hang.params["HangupSource"] == "API Request"
    finally:
        await _kill(proc)


def _read_until(stream: Any, text: str, limit: int = 200) -> bool:
    for _ in range(limit):
        line = stream.readline()
        if not line:
            return False
        if text in line.decode(errors="replace"):
            return True
    return False


@needs_sipp
async def test_shutdown_refuses_new_calls_and_drains(sipp: Any, tmp_path: Path, sdk_base: Any,
                                                     receiver: WebhookReceiver) -> None:
    peer = sipp("uas_callee_bye.xml")  # hangs up 1 s after answering
    server = await start_server(make_config(tmp_path), sdk_base)
    c = sdk_client(server.base_url)
    r = await sdk(c.calls.create, from_="1000", to_=peer.uri,
                  answer_url=receiver.url("/answer"), hangup_url=receiver.url("/hangup"))
    await receiver.wait_for(lambda h: h.path == "/answer", timeout=10)
    stopping = asyncio.create_task(server.stop(mode="drain", drain_timeout_s=5.0))
    await asyncio.sleep(0.05)
    async with aiohttp.ClientSession(headers=basic()) as s:
        body = {"from": "1000", "to": "sip:bob@127.0.0.1", "answer_url": receiver.url("/answer")}
        async with s.post(f"{server.base_url}/v1/Account/{AUTH_ID}/Call/", json=body) as resp:
            assert resp.status == 503 and "error" in await resp.json()
    await stopping
    p = (await receiver.wait_hangup(request_uuid=r.request_uuid)).params
    assert p["HangupSource"] == "Callee"  # drained: the callee ended it, not the shutdown
    await sipp_done(peer)


async def test_openapi_document(env: Env) -> None:
    async with aiohttp.ClientSession() as s, s.get(f"{env.base}/openapi.json") as r:
        assert r.status == 200
        doc = await r.json()
    assert doc["openapi"].startswith("3.")
    props = doc["components"]["schemas"]["MakeCall"]["properties"]
    for name in ("from", "to", "answer_url", "answer_method", "ring_url", "ring_method", "hangup_url",
                 "hangup_method", "fallback_url", "fallback_method", "caller_name", "send_digits",
                 "send_on_preanswer", "time_limit", "hangup_on_ring", "machine_detection",
                 "machine_detection_time", "machine_detection_url", "machine_detection_method", "sip_headers",
                 "ring_timeout", "parent_call_uuid", "error_if_parent_not_found"):
        assert name in props
    assert props["time_limit"]["default"] == 14400 and props["ring_timeout"]["default"] == 120
    assert props["caller_name"]["maxLength"] == 50
    # Every machine_detection_* tuning parameter the server accepts, with its range.
    from softswitch.api.plivo.amd import PLIVO_PARAMETERS

    for name, (_, lo, hi, default) in PLIVO_PARAMETERS.items():
        assert (props[name]["minimum"], props[name]["maximum"], props[name]["default"]) == (lo, hi, default), name
    paths = doc["paths"]
    assert {"post", "get"} <= set(paths["/v1/Account/{auth_id}/Call/"])
    assert {"get", "delete"} <= set(paths["/v1/Account/{auth_id}/Call/{call_uuid}/"])
    assert "delete" in paths["/v1/Account/{auth_id}/Request/{request_uuid}/"]


# --- unit tests of the dialect ------------------------------------------------------------------------------


def test_parse_defaults_and_ranges() -> None:
    req = parse_call_request({"from": "+14155550100", "to": "14155550101", "answer_url": "https://x.example/a"})
    assert req.answer_method == "POST" and req.time_limit == 14400 and req.ring_timeout == 120
    assert req.machine_detection is None and req.machine_detection_time == 5000
    assert req.send_on_preanswer is False and req.error_if_parent_not_found is False
    req = parse_call_request({"from": "1000", "to": "sip:a@h", "answer_url": "http://h/a", "time_limit": 999999,
                              "machine_detection": "hangup", "machine_detection_time": "2000",
                              "send_on_preanswer": "true", "ring_timeout": "30", "hangup_on_ring": 5})
    assert req.time_limit == 86400  # capped at 24 h
    assert req.machine_detection == "hangup" and req.machine_detection_time == 2000
    assert req.send_on_preanswer is True and req.ring_timeout == 30 and req.hangup_on_ring == 5
    req = parse_call_request({"from": "1000", "to": "+1555000<1555000<sip:b@h<b@h:5070", "answer_url": "http://h/a"})
    assert req.to == ("+1555000", "sip:b@h", "b@h:5070")
    with pytest.raises(ApiError, match="overlap"):
        parse_call_request({"from": "1555", "to": "+1555", "answer_url": "http://h/a"})
    with pytest.raises(ApiError, match="at most 3"):
        parse_call_request({"from": "1", "to": "<".join(f"sip:u{i}@h" for i in range(4)), "answer_url": "http://h/a"},
                           bulk_max=3)
    assert len(parse_call_request({"from": "1", "to": "<".join(f"sip:u{i}@h" for i in range(1000)),
                                   "answer_url": "http://h/a"}).to) == 1000


def test_sip_headers() -> None:
    assert parse_sip_headers("head1=val1,head2=val2") == {"X-PH-head1": "val1", "X-PH-head2": "val2"}
    assert parse_sip_headers("") == {}
    for bad in ("novalue", "k=", "=v", "k=v v", "k=v;x", "k\r\nInjected=1"):
        with pytest.raises(ApiError, match="sip_headers"):
            parse_sip_headers(bad)


async def test_serve_runs_until_stopped(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    stop, ready = asyncio.Event(), asyncio.Event()
    cfg = make_config(tmp_path)
    cfg.generated = True
    task = asyncio.create_task(serve(cfg, stop=stop, ready=ready))  # the real user agent
    await asyncio.wait_for(ready.wait(), 10)
    err = capsys.readouterr().err
    assert "HTTP API on http://127.0.0.1:" in err and "SIP on 127.0.0.1:" in err
    assert f"auth_id={AUTH_ID} auth_token={AUTH_TOKEN}" in err
    stop.set()
    await asyncio.wait_for(task, 10)
