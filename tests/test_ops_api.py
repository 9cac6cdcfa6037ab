"""The operators' API against sipp callees: a call's SIP trace (live and stored), the failure
reason in the Plivo record, ``/metrics`` in Prometheus format and ``/ready``."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import needs_sipp
from tests.peers import plivo_api as api
from tests.peers.baresip import needs_baresip
from tests.peers.plivo_api import AUTH_ID, OTHER_ID, OTHER_TOKEN, Env, basic, sipp_done, wait_record
from tests.peers.webhooks import WebhookReceiver

pytestmark = [pytest.mark.peer, needs_sipp]

env = api.env
receiver = api.receiver
sdk_base = api.sdk_base


async def _get(env: Env, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(env.base + path, headers=headers) as resp:
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.text()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _firsts(trace: dict[str, Any]) -> list[str]:
    return [
        m["first_line"].split(" ")[0]
        if not m["first_line"].startswith("SIP/")
        else m["first_line"][8:11]
        for m in trace["messages"]
    ]


async def test_trace_live_and_stored_metrics_and_failure_reason(
    sipp: Any, env: Env, receiver: WebhookReceiver
) -> None:
    answer, busy = sipp("uas_answer.xml"), sipp("uas_busy.xml")
    common = {
        "from_": "1000",
        "answer_url": receiver.url("/answer"),
        "hangup_url": receiver.url("/hangup"),
    }
    ok = await env.sdk(env.client.calls.create, to_=answer.uri, **common)
    # the busy call's hangup callback is refused (a 4xx is not retried): a delivery failure
    receiver.routes["/hangup-refused"] = (403, "no", "text/plain")
    bad = await env.sdk(
        env.client.calls.create,
        to_=busy.uri,
        **{**common, "hangup_url": receiver.url("/hangup-refused")},
    )

    # the answered call, live: INVITE 100 180 200 ACK, sent and received on UDP
    ans = await receiver.wait_for(lambda h: h.path == "/answer", timeout=10)
    uid = ans[0].params["CallUUID"]
    path = f"/v1/Account/{AUTH_ID}/Call/{uid}/Trace/"
    status, trace = await _get(env, path, basic())
    assert status == 200 and trace["live"] is True
    for _ in range(50):
        if "ACK" in _firsts(trace):
            break
        await asyncio.sleep(0.1)
        trace = (await _get(env, path, basic()))[1]
    assert _firsts(trace)[:5] == ["INVITE", "100", "180", "200", "ACK"]
    invite = trace["messages"][0]
    assert invite["direction"] == "out" and invite["transport"] == "udp"
    assert invite["destination"] == f"127.0.0.1:{answer.port}" and invite["text"].startswith(
        "INVITE "
    )
    assert (
        trace["messages"][1]["direction"] == "in"
        and trace["messages"][1]["source"] == f"127.0.0.1:{answer.port}"
    )
    assert all(m["call_id"] == invite["call_id"] for m in trace["messages"])
    monos = [m["monotonic"] for m in trace["messages"]]
    assert monos == sorted(monos)

    # /metrics while it is up
    status, text = await _get(env, "/metrics")
    assert status == 200
    live = _samples(text)
    assert live[("softswitch_live_calls", (("direction", "outbound"),))] == 1
    assert live[("softswitch_call_setups_total", (("direction", "outbound"),))] == 2
    assert live[("softswitch_call_setup_seconds_count", ())] == 1
    assert live[("softswitch_media_clock_lateness_seconds_gcount", ())] > 0

    # another account sees nothing of it
    status, body = await _get(
        env, f"/v1/Account/{OTHER_ID}/Call/{uid}/Trace/", basic(OTHER_ID, OTHER_TOKEN)
    )
    assert status == 404

    # hang up once sipp's echo of our RTP has come back (slow on a loaded machine)
    call = env.server.manager.table.get(uid)
    for _ in range(100):
        if call is None or call.leg is None or call.leg.stats().get("packets_received", 0) > 0:
            break
        await asyncio.sleep(0.05)
    await env.sdk(env.client.calls.delete, uid)
    rec = await wait_record(env.server, ok.request_uuid)
    status, trace = await _get(env, path, basic())
    assert status == 200 and trace["live"] is False
    assert _firsts(trace) == ["INVITE", "100", "180", "200", "ACK", "BYE", "200"]
    assert (
        trace["media"]["stats"]["codec"] == "PCMU"
        and trace["media"]["stats"]["packets_received"] > 0
    )
    assert [d["event"] for d in trace["media"]["documents"]] == ["answer"]
    status, cdr = await _get(env, f"/v1/Account/{AUTH_ID}/Call/{rec['call_uuid']}/", basic())
    assert cdr["call_status"] == "completed" and cdr["failure_reason"] is None

    # the busy callee: the reason in the record and the 486 in the ladder
    rec = await wait_record(env.server, bad.request_uuid)
    status, cdr = await _get(env, f"/v1/Account/{AUTH_ID}/Call/{rec['call_uuid']}/", basic())
    assert status == 200 and cdr["call_status"] == "busy"
    assert cdr["failure_reason"].startswith("SIP 486"), cdr["failure_reason"]
    status, trace = await _get(
        env, f"/v1/Account/{AUTH_ID}/Call/{rec['call_uuid']}/Trace/", basic()
    )
    assert "486" in _firsts(trace) and _firsts(trace)[-1] == "ACK"

    status, text = await _get(env, "/metrics")
    after = _samples(text)
    assert after[("softswitch_live_calls", (("direction", "outbound"),))] == 0
    assert after[("softswitch_calls_answered_total", (("direction", "outbound"),))] == 1
    assert after[("softswitch_calls_failed_total", (("cause", "USER_BUSY"),))] == 1
    assert (
        after[
            ("softswitch_calls_ended_total", (("answered", "true"), ("cause", "NORMAL_CLEARING")))
        ]
        == 1
    )
    assert after[("softswitch_rtp_packets_received_total", ())] > 0
    await receiver.wait_for(lambda h: h.path == "/hangup-refused", timeout=10)
    assert await env.server.outbox.wait_idle(timeout=10)
    status, text = await _get(env, "/metrics")
    assert _samples(text)[("softswitch_webhook_delivery_failures_total", ())] == 1
    assert _samples(text)[("softswitch_webhook_queue_depth", ())] == 0
    await sipp_done(answer, busy)


async def test_ready_is_503_once_the_server_stops_taking_calls(env: Env) -> None:
    status, body = await _get(env, "/ready")
    assert (status, body["status"], body["accepting"]) == (200, "ready", True)
    status, body = await _get(env, "/health")
    assert status == 200 and body["status"] == "ok"
    assert env.server.manager is not None
    env.server.manager.accepting = False  # what a drain does first
    status, body = await _get(env, "/ready")
    assert status == 503 and body["accepting"] is False and body["reasons"]
    status, _ = await _get(env, f"/v1/Account/{AUTH_ID}/Call/nope/Trace/", basic())
    assert status == 404
    # the page's JSON: a snapshot unless asked for an event stream; hangup needs the page's header
    status, body = await _get(env, "/ui/api/events", basic())
    assert status == 200 and body == {"time": body["time"], "total": 0, "calls": []}
    status, body = await _get(env, "/ui/api/live")
    assert status == 401
    async with aiohttp.ClientSession(headers=basic()) as http:
        async with http.post(env.base + "/ui/api/calls/nope/hangup") as resp:
            assert resp.status == 403
        async with http.post(
            env.base + "/ui/api/calls/nope/hangup", headers={"X-Softswitch-UI": "1"}
        ) as resp:
            assert resp.status == 404


@pytest.fixture
async def inbound_server(tmp_path: Any, webhook_receiver: Any) -> Any:
    from softswitch.config import InboundRoute
    from softswitch.server import Server
    from tests.peers.plivo_api import AUTH_TOKEN, make_config

    web = await webhook_receiver(auth_token=AUTH_TOKEN)
    cfg = make_config(
        tmp_path,
        inbound=[
            InboundRoute(
                prefix="6",
                answer_url=web.url("/answer"),
                hangup_url=web.url("/hangup"),
                account=AUTH_ID,
            )
        ],
    )
    srv = Server(cfg)
    await srv.start()
    try:
        yield srv, web
    finally:
        await srv.stop("hangup", 2.0)


@needs_baresip
async def test_inbound_call_trace_holds_the_caller_and_the_dialed_b_leg(
    sipp: Any, baresip: Any, inbound_server: Any
) -> None:
    """The inbound INVITE arrives before its call exists; the Dial's B leg is another
    Call-ID: both are in the call's ladder, in order."""
    server, web = inbound_server
    callee = baresip()
    web.xml(
        "/answer",
        f'<?xml version="1.0"?><Response><Dial><User>{callee.uri}</User></Dial></Response>',
    )
    peer = sipp(
        "uac_inbound_bye.xml",
        extra=["-s", "6123", "-d", "3000", f"127.0.0.1:{server.ua.local_port}"],
    )
    uid = (await web.wait_for(lambda r: r.path == "/answer", timeout=10))[0].params["CallUUID"]
    await web.wait_for(lambda r: r.path == "/hangup", timeout=15)
    await sipp_done(peer)
    env = Env(server, None, server.base_url)  # type: ignore[arg-type]
    status, trace = await _get(env, f"/v1/Account/{AUTH_ID}/Call/{uid}/Trace/", basic())
    assert status == 200 and trace["live"] is False
    messages = trace["messages"]
    ids = list(dict.fromkeys(m["call_id"] for m in messages))
    assert len(ids) == 2, ids  # the caller's and the B leg's
    a = [
        (
            m["direction"],
            m["first_line"].split(" ")[0 if not m["first_line"].startswith("SIP/") else 1],
        )
        for m in messages
        if m["call_id"] == ids[0]
    ]
    assert (
        a[0] == ("in", "INVITE")
        and ("out", "200") in a
        and ("in", "ACK") in a
        and ("in", "BYE") in a
    )
    b = [m for m in messages if m["call_id"] == ids[1]]
    assert b[0]["direction"] == "out" and b[0]["first_line"].startswith("INVITE sip:baresip@")
    assert any(m["first_line"].startswith("BYE ") for m in b)


async def test_callapi_trace_of_a_busy_call(sipp: Any, env: Env) -> None:
    busy = sipp("uas_busy.xml")
    base = f"{env.base}/2010-04-01/Accounts/{AUTH_ID}"
    async with aiohttp.ClientSession(headers=basic()) as http:
        form = {"From": "1000", "To": busy.uri, "Url": "http://127.0.0.1:9/answer"}
        async with http.post(f"{base}/Calls.json", data=form) as resp:
            assert resp.status == 201
            sid = (await resp.json())["sid"]
        for _ in range(100):
            async with http.get(f"{base}/Calls/{sid}.json") as resp:
                if (await resp.json())["status"] == "busy":
                    break
            await asyncio.sleep(0.1)
        async with http.get(f"{base}/Calls/{sid}/Trace.json") as resp:
            assert resp.status == 200
            trace = await resp.json()
        async with http.get(f"{base}/Calls/CA{'0' * 32}/Trace.json") as resp:
            assert resp.status == 404
    assert trace["sid"] == sid and trace["live"] is False
    firsts = [m["first_line"] for m in trace["messages"]]
    assert (
        firsts[0].startswith("INVITE ")
        and "SIP/2.0 486 Busy Here" in firsts
        and firsts[-1].startswith("ACK ")
    )
    await sipp_done(busy)
