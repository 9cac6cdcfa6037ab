"""The legacy framework API (``/v0.1/``) against a real server, sipp callees and a real
webhook receiver: routing and auth, the framework's exact messages, gateway failover,
callbacks with its parameter names and an ``X-Plivo-Signature`` checked here by an
independent HMAC-SHA1, and the live call endpoints (DIALECTS.md §1)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from softswitch.config import Gateway
from softswitch.server import Server
from tests.conftest import needs_sipp
from tests.peers.plivo_api import (
    AUTH_ID,
    AUTH_TOKEN,
    OTHER_ID,
    OTHER_TOKEN,
    basic,
    make_config,
    sipp_done,
    sipp_messages,
)
from tests.peers.webhooks import Request, WebhookReceiver

HOLD = '<?xml version="1.0"?><Response><Wait length="30"/></Response>'
SHORT = '<?xml version="1.0"?><Response><Wait length="1"/></Response>'


def framework_signature(url: str, params: dict[str, str], token: str) -> str:
    """The framework's own algorithm, written out here independently of softswitch."""
    message = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(
        hmac.new(token.encode(), message.encode(), hashlib.sha1).digest()
    ).decode()


def assert_signed(receiver: WebhookReceiver, token: str = AUTH_TOKEN) -> None:
    assert receiver.requests
    for r in receiver.requests:
        assert r.method == "POST"
        assert r.headers.get("X-Plivo-Signature") == framework_signature(r.url, r.form, token), r


def is_hangup(r: Request) -> bool:
    return "HangupCause" in r.form


class Legacy:
    """A real server and a form-posting client with Basic auth."""

    def __init__(self, server: Server, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.session = session
        self.base = server.base_url

    async def post(
        self, endpoint: str, auth: tuple[str, str] | None = (AUTH_ID, AUTH_TOKEN), **form: Any
    ) -> tuple[int, dict[str, Any]]:
        headers = basic(*auth) if auth else {}
        async with self.session.post(
            f"{self.base}/v0.1/{endpoint}/",
            data={k: str(v) for k, v in form.items()},
            headers=headers,
        ) as resp:
            body = await resp.json(content_type=None) if resp.status == 200 else {}
            return resp.status, body


@pytest.fixture
async def legacy(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Legacy]]]:
    """``await legacy(gateways=[...])``: a started server (stopped after the test)."""
    started: list[Server] = []
    session = aiohttp.ClientSession()

    async def start(**over: Any) -> Legacy:
        server = Server(make_config(tmp_path, **over))
        await server.start()
        started.append(server)
        return Legacy(server, session)

    try:
        yield start
    finally:
        for s in started:
            await s.stop(mode="hangup", drain_timeout_s=2.0)
        await session.close()


@pytest.fixture
async def receiver(webhook_receiver: Any) -> WebhookReceiver:
    def reply(r: Request) -> Any:
        if is_hangup(r) or r.path.startswith("/ring"):
            return (200, "ok", "text/plain")
        if r.path.startswith("/short"):
            return SHORT
        return HOLD

    return await webhook_receiver(respond=reply)


def gw(peer: Any) -> str:
    """softswitch's ``sip:host:port/`` gateway string for a sipp peer (dialled as ``To@host:port``)."""
    return f"sip:127.0.0.1:{peer.port}/"


# --- routing, auth, messages (no SIP needed) --------------------------------------------------


async def test_routing_auth_and_validation_messages(legacy: Any, receiver: WebhookReceiver) -> None:
    api = await legacy()
    url = receiver.url("/answer")
    assert (await api.post("Call", auth=None))[0] == 401
    assert (await api.post("Call", auth=(AUTH_ID, OTHER_TOKEN)))[0] == 401
    assert (await api.post("NoSuchThing"))[0] == 404
    async with api.session.get(f"{api.base}/v0.1/Call/", headers=basic()) as resp:
        assert resp.status == 405
    async with api.session.get(f"{api.base}/v0.1/Call/") as resp:
        assert resp.status == 405  # A15: 405 regardless of auth

    full = {"From": "1000", "To": "bob", "Gateways": "bogus/", "AnswerUrl": url}
    for missing in full:
        status, body = await api.post("Call", **{k: v for k, v in full.items() if k != missing})
        assert body.pop("RestApiServer")  # Eqivo's extra key on every Call answer
        assert (status, body) == (
            200,
            {"Success": False, "Message": "Mandatory Parameters Missing", "RequestUUID": ""},
        )
    for name, message in (
        ("AnswerUrl", "AnswerUrl is not Valid"),
        ("HangupUrl", "HangupUrl is not Valid"),
        ("RingUrl", "RingUrl is not Valid"),
    ):
        status, body = await api.post("Call", **{**full, name: "ftp://example.com/x"})
        assert (status, body["Success"], body["Message"], body["RequestUUID"]) == (
            200,
            False,
            message,
            "",
        )
    # a JSON body has no form fields
    async with api.session.post(f"{api.base}/v0.1/Call/", json=full, headers=basic()) as resp:
        assert (
            resp.status == 200 and (await resp.json())["Message"] == "Mandatory Parameters Missing"
        )

    nil = "00000000-0000-0000-0000-000000000000"
    cases = [
        ("HangupCall", {}, "CallUUID or RequestUUID Parameter must be present"),
        (
            "HangupCall",
            {"CallUUID": nil, "RequestUUID": nil},
            "Both CallUUID and RequestUUID Parameters cannot be present",
        ),
        ("HangupCall", {"CallUUID": nil}, "Hangup Call Failed"),
        ("HangupCall", {"RequestUUID": nil}, "Hangup Call Failed"),
        ("TransferCall", {"Url": url}, "CallUUID Parameter must be present"),
        ("TransferCall", {"CallUUID": nil}, "Url Parameter must be present"),
        ("TransferCall", {"CallUUID": nil, "Url": "nope"}, "Url is not Valid"),
        ("TransferCall", {"CallUUID": nil, "Url": url}, "Transfer Call Failed -- Call not found"),
        ("ScheduleHangup", {"Time": "5"}, "CallUUID Parameter must be present"),
        ("ScheduleHangup", {"CallUUID": nil}, "Time Parameter must be present"),
        ("ScheduleHangup", {"CallUUID": nil, "Time": "x"}, "Invalid Time Parameter !"),
        ("ScheduleHangup", {"CallUUID": nil, "Time": "0"}, "Time Parameter must be > 0 !"),
        (
            "ScheduleHangup",
            {"CallUUID": nil, "Time": "5"},
            f"ScheduleHangup Failed: CallUUID {nil} not found",
        ),
        ("CancelScheduledHangup", {}, "SchedHangupId Parameter must be present"),
        (
            "CancelScheduledHangup",
            {"SchedHangupId": nil},
            f"Scheduled Hangup Cancelation Failed: SchedHangupId {nil} not found",
        ),
        ("SendDigits", {"Digits": "1"}, "CallUUID Parameter Missing"),
        ("SendDigits", {"CallUUID": nil}, "Digits Parameter Missing"),
        ("SendDigits", {"CallUUID": nil, "Digits": "1", "Leg": "cleg"}, "Invalid Leg Parameter"),
        ("SendDigits", {"CallUUID": nil, "Digits": "1"}, "SendDigits Failed"),
        ("ConferenceMute", {}, "ConferenceName Parameter must be present"),
        ("ConferenceKick", {"ConferenceName": "r"}, "MemberID Parameter must be present"),
        (
            "ConferenceSpeak",
            {"ConferenceName": "r", "MemberID": "all"},
            "Text Parameter must be present",
        ),
        (
            "ConferencePlay",
            {"ConferenceName": "nope", "FilePath": "http://127.0.0.1:9/a.wav", "MemberID": "all"},
            "Conference Play Conference nope not found",
        ),
        (
            "ConferenceRecordStart",
            {"ConferenceName": "r", "FileFormat": "ogg"},
            "FileFormat Parameter must be 'mp3' or 'wav'",
        ),
        ("ConferenceRecordStop", {"ConferenceName": "r"}, "RecordFile Parameter must be present"),
        (
            "ConferenceListMembers",
            {"ConferenceName": "r"},
            "Conference ListMembers Conference r not found",
        ),
        ("SoundTouch", {}, "SoundTouch is not supported by this server"),
    ]
    for endpoint, form, message in cases:
        status, body = await api.post(endpoint, **form)
        assert (status, body["Success"], body["Message"]) == (200, False, message), (
            endpoint,
            form,
            body,
        )
        if endpoint == "ScheduleHangup":
            assert body["SchedHangupId"] == ""
    status, body = await api.post("HangupAllCalls")
    assert (status, body) == (200, {"Success": True, "Message": "All Calls Hungup"})

    async with api.session.get(f"{api.base}/openapi.json") as resp:
        doc = await resp.json()
    assert {"/v0.1/Call/", "/v0.1/HangupCall/", "/v0.1/ScheduleHangup/"} <= set(doc["paths"])
    conference = {
        f"/v0.1/Conference{a}/"
        for a in (
            "Mute Unmute Kick Hangup Deaf Undeaf RecordStart RecordStop Play Speak ListMembers "
            "List"
        ).split()
    }
    assert conference <= set(doc["paths"])
    start = doc["paths"]["/v0.1/ConferenceRecordStart/"]["post"]["requestBody"]["content"]
    assert "FileName" in start["application/x-www-form-urlencoded"]["schema"]["properties"]
    assert any(p.startswith("/v1/Account/") for p in doc["paths"])  # Plivo v1 still described


async def test_eqivo_extensions_admin_endpoints_and_index(
    legacy: Any, receiver: WebhookReceiver
) -> None:
    """Eqivo's MachineDetection/CoreUUID checks with its exact messages, ReloadConfig and
    ReloadCacheConfig (not supported: Success false), and the framework's ``GET /``."""
    api = await legacy()
    full = {"From": "1000", "To": "bob", "Gateways": "bogus/", "AnswerUrl": receiver.url("/answer")}
    cases = [
        ({"MachineDetection": "Maybe"}, "MachineDetection is not Valid"),
        (
            {"MachineDetection": "Enable", "AsyncAmdStatusCallbackMethod": "PUT"},
            "AsyncAmdStatusCallbackMethod must be 'GET' or 'POST'",
        ),
        (
            {"MachineDetection": "Enable", "AsyncAmdStatusCallback": "nope"},
            "AsyncAmdStatusCallback is not Valid",
        ),
        (
            {"MachineDetection": "Enable", "MachineDetectionTimeout": "x"},
            "MachineDetectionTimeout must be an integer",
        ),
        (
            {"MachineDetection": "Enable", "MachineDetectionTimeout": "60"},
            "MachineDetectionTimeout Parameter must be between 3 and 59",
        ),
        (
            {"MachineDetection": "DetectMessageEnd", "MachineDetectionSpeechThreshold": "999"},
            "MachineDetectionSpeechThreshold Parameter must be between 1000 and 6000",
        ),
        (
            {"MachineDetection": "Enable", "MachineDetectionSpeechEndThreshold": "5001"},
            "MachineDetectionSpeechEndThreshold Parameter must be between 500 and 5000",
        ),
        (
            {"MachineDetection": "Enable", "MachineDetectionSilenceTimeout": "1"},
            "MachineDetectionSilenceTimeout Parameter must be between 2000 and 10000",
        ),
        ({"CoreUUID": str(uuid.uuid4())}, "Unknown Core UUID"),
    ]
    for extra, message in cases:
        status, body = await api.post("Call", **full, **extra)
        assert (status, body["Success"], body["Message"], body["RequestUUID"]) == (
            200,
            False,
            message,
            "",
        ), extra
    # SendDigits present: MachineDetection's tuning is not even looked at (Eqivo, after Twilio)
    status, body = await api.post(
        "Call", **full, SendDigits="1", MachineDetection="Enable", MachineDetectionTimeout="99"
    )
    assert (status, body["Success"], body["Message"]) == (200, True, "Call Request Executed")
    assert body["RestApiServer"]
    hangup = (
        await receiver.wait_for(
            lambda r: r.form.get("RequestUUID") == body["RequestUUID"], timeout=10
        )
    )[0]
    assert hangup.form["HangupCause"] == "CHAN_NOT_IMPLEMENTED"
    assert hangup.form["RestApiServer"] == body["RestApiServer"]
    core = hangup.form["CoreUUID"]
    assert str(uuid.UUID(core)) == core
    status, body = await api.post("Call", **full, CoreUUID=core)  # this server's own core
    assert (status, body["Success"]) == (200, True)

    for endpoint in ("ReloadConfig", "ReloadCacheConfig"):
        status, body = await api.post(endpoint)
        assert (status, body["Success"]) == (200, False) and body["Message"].startswith(
            f"{endpoint} Failed"
        ), body
        async with api.session.get(f"{api.base}/v0.1/{endpoint}/", headers=basic()) as resp:
            assert resp.status == 200 and (await resp.json())["Success"] is False
        assert (await api.post(endpoint, auth=None))[0] == 401
    async with api.session.get(f"{api.base}/") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        assert "/v0.1/" in await resp.text()
    async with api.session.get(f"{api.base}/openapi.json") as resp:
        doc = await resp.json()
    call = doc["paths"]["/v0.1/Call/"]["post"]["requestBody"]["content"]
    props = call["application/x-www-form-urlencoded"]["schema"]["properties"]
    assert props["MachineDetection"]["enum"] == ["Enable", "DetectMessageEnd"]
    assert props["MachineDetectionTimeout"]["maximum"] == 59 and "CoreUUID" in props
    assert {"get", "post"} <= set(doc["paths"]["/v0.1/ReloadConfig/"]) and "/" in doc["paths"]


# --- calls against sipp -----------------------------------------------------------------------


@needs_sipp
async def test_basic_call_callbacks_and_signature(
    sipp: Any, legacy: Any, receiver: WebhookReceiver
) -> None:
    peer = sipp("uas_answer.xml")
    api = await legacy()
    answer = receiver.url("/short?app=1")  # the framework merges the URL's query into the params
    status, body = await api.post(
        "Call",
        From="+15551234567",
        To="+4420|evil,more",
        Gateways=f"bogus/,{gw(peer)}",
        AnswerUrl=answer,
        RingUrl=receiver.url("/ring"),
        CallerName="Alice O'Neill",
        AccountSID="AC123",
        ExtraDialString="sip_h_X-Test=hello,bridge_early_media=true",
    )
    assert status == 200 and body["Success"] is True and body["Message"] == "Call Request Executed"
    request_uuid = body["RequestUUID"]
    assert uuid.UUID(request_uuid).version == 4

    hangup = (await receiver.wait_for(is_hangup, timeout=15))[0].form
    ring = receiver.of("/ring")
    assert len(ring) == 1
    rp = ring[0].form
    assert (
        rp["CallStatus"] == "ringing"
        and rp["Direction"] == "outbound"
        and rp["RequestUUID"] == request_uuid
    )
    assert rp["From"] == "15551234567" and rp["To"] == "4420" and rp["AccountSID"] == "AC123"
    call_uuid = rp["CallUUID"]
    fetch = [r for r in receiver.of("/short") if not is_hangup(r)]
    assert len(fetch) == 1
    ap = fetch[0].form
    assert (
        ap["CallStatus"] == "in-progress"
        and ap["CallUUID"] == call_uuid
        and ap["ALegUUID"] == call_uuid
    )
    assert ap["ALegRequestUUID"] == request_uuid and "RequestUUID" not in ap
    assert ap["CallerName"] == "Alice O'Neill" and ap["app"] == "1" and ap["AccountSID"] == "AC123"
    assert ap["From"] == "15551234567" and ap["To"] == "4420" and "ScheduledHangupId" not in ap
    # HangupUrl defaults to AnswerUrl
    assert hangup["CallStatus"] == "completed" and hangup["HangupCause"] == "NORMAL_CLEARING"
    assert (
        hangup["CallUUID"] == call_uuid
        and hangup["RequestUUID"] == request_uuid
        and hangup["app"] == "1"
    )
    await sipp_done(peer)
    wire = sipp_messages(peer)
    assert "X-Test: hello" in wire and "Alice O'Neill" in wire
    assert "INVITE sip:+4420@127.0.0.1" in wire and "evil" not in wire  # To cut at the first '|'
    assert_signed(receiver)
    rec = api.server.store.get_call_by_request(AUTH_ID, request_uuid)
    assert rec["dialect"] == "legacy" and rec["hangup_cause_name"] == "NORMAL_CLEARING"
    assert rec["params"]["extra_dial_string"] == {"bridge_early_media": "true"}


@needs_sipp
async def test_failover_across_bogus_gateways_then_trunk(
    sipp: Any, legacy: Any, receiver: WebhookReceiver
) -> None:
    """The framework's RetryTest: 3+3+1+1 failed attempts (unknown kinds, user/, an unknown
    trunk), then the configured trunk connects."""
    peer = sipp("uas_answer.xml")
    api = await legacy(gateways=[Gateway(name="trunk", host="127.0.0.1", port=peer.port)])
    status, body = await api.post(
        "Call",
        From="Alice",
        To="1000",
        AnswerUrl=receiver.url("/short"),
        HangupUrl=receiver.url("/hangup"),
        Gateways="really/,bogus/,user/,sofia/gateway/nosuch/,sofia/gateway/trunk/",
        GatewayRetries="3,3,1,1,1",
        GatewayTimeouts="1,1,1,1,5",
    )
    assert body["Success"] is True
    hangup = (await receiver.wait_for(path="/hangup", timeout=15))[0].form
    assert hangup["HangupCause"] == "NORMAL_CLEARING" and hangup["CallUUID"]
    (fetch,) = receiver.of("/short")
    assert fetch.form["CallStatus"] == "in-progress"
    await sipp_done(peer)
    assert "sip:1000@127.0.0.1" in sipp_messages(peer)
    assert_signed(receiver)


@needs_sipp
async def test_sip_failure_before_ringing_fails_over(
    sipp: Any, legacy: Any, receiver: WebhookReceiver
) -> None:
    """A 503 without any 18x is a failed attempt: the next gateway is tried, no callback for it."""
    down, up = sipp("uas_503.xml"), sipp("uas_answer.xml")
    api = await legacy()
    _, body = await api.post(
        "Call",
        From="1000",
        To="bob",
        AnswerUrl=receiver.url("/short"),
        HangupUrl=receiver.url("/hangup"),
        Gateways=f"{gw(down)},{gw(up)}",
    )
    assert body["Success"] is True
    hangup = (await receiver.wait_for(path="/hangup", timeout=15))[0].form
    assert hangup["HangupCause"] == "NORMAL_CLEARING"
    await sipp_done(down, up)
    assert len(receiver.of("/hangup")) == 1


@needs_sipp
async def test_gateway_codecs_pcma_negotiated_at_the_callee(
    sipp: Any, legacy: Any, receiver: WebhookReceiver
) -> None:
    """The framework's acceptance test: ``GatewayCodecs='PCMA'`` → the INVITE offers PCMA
    only (sipp checks the SDP: payload 8, then telephone-event) and the callee answers it."""
    peer = sipp("uas_codecs_pcma.xml")
    api = await legacy()
    _, body = await api.post(
        "Call",
        From="1000",
        To="bob",
        AnswerUrl=receiver.url("/short"),
        HangupUrl=receiver.url("/hangup"),
        Gateways=gw(peer),
        GatewayCodecs="'PCMA'",
    )
    assert body["Success"] is True
    hangup = (await receiver.wait_for(path="/hangup", timeout=15))[0].form
    assert hangup["HangupCause"] == "NORMAL_CLEARING" and hangup["CallUUID"]
    await sipp_done(peer)
    invite = sipp_messages(peer).split("SIP/2.0 180 Ringing", 1)[0]
    assert "RTP/AVP 8 101" in invite and "PCMU" not in invite
    # Only codecs the engine lacks: dropped, none left, the attempt fails without an INVITE.
    _, body = await api.post(
        "Call",
        From="1000",
        To="bob",
        AnswerUrl=receiver.url("/answer"),
        Gateways=gw(peer),
        GatewayCodecs="'G729'",
    )
    hangup = (
        await receiver.wait_for(
            lambda r: is_hangup(r) and r.form["RequestUUID"] == body["RequestUUID"]
        )
    )[0]
    assert (
        hangup.form["HangupCause"] == "INCOMPATIBLE_DESTINATION" and hangup.form["CallUUID"] == ""
    )


async def test_retry_exhaustion_one_hangup_without_call_uuid(
    legacy: Any, receiver: WebhookReceiver
) -> None:
    api = await legacy()
    _, body = await api.post(
        "Call",
        From="1000",
        To="bob",
        AnswerUrl=receiver.url("/answer"),
        Gateways="really/,bogus/,gateway/,strings/",
        GatewayRetries="2,1,1,1",
        RingUrl=receiver.url("/ring"),
    )
    assert body["Success"] is True and body["Message"] == "Call Request Executed"
    hangup = (await receiver.wait_for(is_hangup, timeout=10))[0].form
    assert hangup["CallUUID"] == "" and hangup["RequestUUID"] == body["RequestUUID"]
    assert hangup["HangupCause"] == "CHAN_NOT_IMPLEMENTED" and hangup["CallStatus"] == "completed"
    await asyncio.sleep(0.5)
    assert len(receiver.requests) == 1  # no ring, no answer fetch, exactly one hangup
    assert_signed(receiver)
    _, body = await api.post(
        "Call",
        From="1000",
        To="bob",
        AnswerUrl=receiver.url("/answer"),
        Gateways="sofia/gateway/nosuch/",
    )
    hangup = (
        await receiver.wait_for(
            lambda r: is_hangup(r) and r.form["RequestUUID"] == body["RequestUUID"]
        )
    )[0]
    assert hangup.form["HangupCause"] == "INVALID_GATEWAY"


@needs_sipp
async def test_hangup_call_while_ringing(sipp: Any, legacy: Any, receiver: WebhookReceiver) -> None:
    peer = sipp("uas_ring_cancel.xml")
    api = await legacy()
    _, body = await api.post(
        "Call",
        From="1000",
        To="bob",
        AnswerUrl=receiver.url("/answer"),
        RingUrl=receiver.url("/ring"),
        HangupUrl=receiver.url("/hangup"),
        Gateways=gw(peer),
    )
    await receiver.wait_for(path="/ring", timeout=10)
    status, resp = await api.post("HangupCall", RequestUUID=body["RequestUUID"])
    assert (status, resp) == (200, {"Success": True, "Message": "Hangup Call Executed"})
    hangup = (await receiver.wait_for(path="/hangup", timeout=10))[0].form
    assert (
        hangup["RequestUUID"] == body["RequestUUID"]
        and hangup["HangupCause"] == "ORIGINATOR_CANCEL"
    )
    await sipp_done(peer)  # it got its CANCEL
    assert not receiver.of("/answer")

    # by CallUUID (from the ring callback), still ringing
    peer2 = sipp("uas_ring_cancel.xml")
    _, body = await api.post(
        "Call",
        From="1000",
        To="bob",
        AnswerUrl=receiver.url("/answer"),
        RingUrl=receiver.url("/ring2"),
        HangupUrl=receiver.url("/hangup2"),
        Gateways=gw(peer2),
    )
    ring = (await receiver.wait_for(path="/ring2", timeout=10))[0].form
    assert (await api.post("HangupCall", CallUUID=ring["CallUUID"]))[1][
        "Message"
    ] == "Hangup Call Executed"
    hangup = (await receiver.wait_for(path="/hangup2", timeout=10))[0].form
    assert hangup["CallUUID"] == ring["CallUUID"] and hangup["HangupCause"] == "ORIGINATOR_CANCEL"
    await sipp_done(peer2)
    assert_signed(receiver)


@needs_sipp
async def test_schedule_hangup_cancel_time_limit_and_hangup_all(
    sipp: Any, legacy: Any, receiver: WebhookReceiver
) -> None:
    peers = [sipp("uas_answer.xml") for _ in range(4)]
    api = await legacy()
    reqs = []
    for i, peer in enumerate(peers):
        extra = {"TimeLimit": "1"} if i == 3 else {}
        _, body = await api.post(
            "Call",
            From="1000",
            To=f"u{i}",
            AnswerUrl=receiver.url(f"/answer{i}"),
            HangupUrl=receiver.url(f"/hangup{i}"),
            Gateways=gw(peer),
            **extra,
        )
        reqs.append(body["RequestUUID"])
    fetches = [(await receiver.wait_for(path=f"/answer{i}", timeout=10))[0].form for i in range(4)]
    uuids = [f["CallUUID"] for f in fetches]

    # TimeLimit: ALLOTTED_TIMEOUT, with the ScheduledHangupId the answer fetch announced
    sched_tl = fetches[3]["ScheduledHangupId"]
    h3 = (await receiver.wait_for(path="/hangup3", timeout=10))[0].form
    assert h3["HangupCause"] == "ALLOTTED_TIMEOUT" and h3["ScheduledHangupId"] == sched_tl

    # ScheduleHangup on call 0; a cancelled one on call 1
    _, s0 = await api.post("ScheduleHangup", CallUUID=uuids[0], Time="1")
    assert (
        s0["Success"] is True
        and s0["Message"] == f"ScheduleHangup Done with SchedHangupId {s0['SchedHangupId']}"
    )
    _, s1 = await api.post("ScheduleHangup", CallUUID=uuids[1], Time="1")
    _, c1 = await api.post("CancelScheduledHangup", SchedHangupId=s1["SchedHangupId"])
    assert c1 == {"Success": True, "Message": "Scheduled Hangup Canceled"}
    h0 = (await receiver.wait_for(path="/hangup0", timeout=10))[0].form
    assert h0["HangupCause"] == "ALLOTTED_TIMEOUT"
    await asyncio.sleep(1.0)
    assert not receiver.of("/hangup1")

    # SendDigits on a live call; another account cannot see it
    _, d = await api.post("SendDigits", CallUUID=uuids[1], Digits="12#")
    assert d == {"Success": True, "Message": "SendDigits executed"}
    _, other = await api.post("HangupCall", auth=(OTHER_ID, OTHER_TOKEN), CallUUID=uuids[1])
    assert other["Message"] == "Hangup Call Failed"

    # HangupAllCalls: the two calls left
    _, all_ = await api.post("HangupAllCalls")
    assert all_ == {"Success": True, "Message": "All Calls Hungup"}
    for i in (1, 2):
        h = (await receiver.wait_for(path=f"/hangup{i}", timeout=10))[0].form
        assert h["HangupCause"] == "NORMAL_CLEARING" and h["CallUUID"] == uuids[i]
    await sipp_done(*peers)
    assert_signed(receiver)


@needs_sipp
async def test_bulk_call_transfer_and_hangup_on_ring(
    sipp: Any, legacy: Any, receiver: WebhookReceiver
) -> None:
    a, b = sipp("uas_answer.xml"), sipp("uas_answer.xml")
    receiver.routes["/reject"] = (
        '<?xml version="1.0"?><Response><Hangup reason="rejected"/></Response>'
    )
    api = await legacy()
    status, body = await api.post(
        "BulkCall",
        Delimiter="<",
        From="1000",
        To="ua<ub",
        Gateways=f"{gw(a)}<{gw(b)}",
        AnswerUrl=receiver.url("/answer"),
        HangupUrl=receiver.url("/hangup"),
        HangupOnRing="<3",
    )
    assert (
        status == 200
        and body["Success"] is True
        and body["Message"] == "BulkCalls Requests Executed"
    )
    first, second = body["RequestUUID"]
    fetches = await receiver.wait_for(path="/answer", count=2, timeout=10)
    by_to = {f.form["To"]: f.form["CallUUID"] for f in fetches}
    # TransferCall: call ua runs a document that rejects
    _, t = await api.post("TransferCall", CallUUID=by_to["ua"], Url=receiver.url("/reject"))
    assert t == {"Success": True, "Message": "Transfer Call Executed"}
    h = (
        await receiver.wait_for(
            lambda r: r.path == "/hangup" and r.form["RequestUUID"] == first, timeout=10
        )
    )[0]
    assert h.form["HangupCause"] == "CALL_REJECTED"
    assert receiver.of("/reject")[0].form["CallUUID"] == by_to["ua"]
    # HangupOnRing=3 on call ub: counted from the ring, not cancelled by the answer
    h = (
        await receiver.wait_for(
            lambda r: r.path == "/hangup" and r.form["RequestUUID"] == second, timeout=10
        )
    )[0]
    assert h.form["HangupCause"] == "ORIGINATOR_CANCEL"
    await sipp_done(a, b)
    assert_signed(receiver)


def tone_wav(seconds: float = 2.0, freq: float = 1000.0) -> bytes:
    import io
    import math
    import struct
    import wave

    rate = 8000
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * freq * i / rate)))
        for i in range(int(rate * seconds))
    )
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return buf.getvalue()


@needs_sipp
async def test_play_and_record(
    sipp: Any, legacy: Any, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    peer = sipp("uas_answer.xml")  # echoes our RTP back
    receiver.routes["/tone.wav"] = (200, tone_wav(), "audio/wav")
    api = await legacy()
    _, body = await api.post(
        "Call",
        From="1000",
        To="bob",
        Gateways=gw(peer),
        AnswerUrl=receiver.url("/answer"),
        HangupUrl=receiver.url("/hangup"),
    )
    call_uuid = (await receiver.wait_for(path="/answer", timeout=10))[0].form["CallUUID"]
    for endpoint, form, message in [
        ("Play", {"CallUUID": call_uuid}, "Sounds Parameter Missing"),
        ("Play", {"CallUUID": call_uuid, "Sounds": "/etc/passwd"}, "Sounds Parameter is Invalid"),
        (
            "Play",
            {"CallUUID": call_uuid, "Sounds": receiver.url("/tone.wav"), "Length": "-1"},
            "Length Parameter must be a positive integer",
        ),
        (
            "RecordStart",
            {"CallUUID": call_uuid, "FileFormat": "ogg"},
            "FileFormat Parameter must be 'mp3' or 'wav'",
        ),
        (
            "RecordStart",
            {"CallUUID": call_uuid, "TimeLimit": "x"},
            "RecordStart Failed: invalid TimeLimit 'x'",
        ),
        ("RecordStop", {"CallUUID": call_uuid}, "RecordFile Parameter must be present"),
    ]:
        _, resp = await api.post(endpoint, **form)
        assert (resp["Success"], resp["Message"]) == (False, message), (endpoint, resp)

    tone = receiver.url("/tone.wav")
    for form, message in [
        ({"Sounds": tone}, "Time Parameter Missing"),
        ({"Sounds": tone, "Time": "x"}, "Invalid Time Parameter !"),
        ({"Sounds": tone, "Time": "0"}, "Time Parameter must be > 0 !"),
    ]:
        _, resp = await api.post("SchedulePlay", CallUUID=call_uuid, **form)
        assert (resp["Success"], resp["Message"], resp["SchedPlayId"]) == (False, message, "")
    _, sp = await api.post("SchedulePlay", CallUUID=call_uuid, Sounds=tone, Time="30")
    assert (
        sp["Success"] is True
        and sp["Message"] == f"SchedulePlay Request Done with SchedPlayId {sp['SchedPlayId']}"
    )
    _, cp = await api.post("CancelScheduledPlay", SchedPlayId=sp["SchedPlayId"])
    assert cp == {"Success": True, "Message": "Scheduled Play Canceled"}
    _, cp = await api.post("CancelScheduledPlay", SchedPlayId=sp["SchedPlayId"])
    assert cp["Success"] is False and cp["Message"].startswith("Scheduled Play Cancelation Failed")
    _, sp = await api.post("SchedulePlay", CallUUID=call_uuid, Sounds=tone, Time="1")
    assert sp["Success"] is True

    _, rec = await api.post(
        "RecordStart", CallUUID=call_uuid, FileFormat="wav", FilePath="/tmp/evil", FileName="x"
    )
    assert (
        rec["Success"] is True
        and rec["Message"] == f"RecordStart Executed with RecordFile {rec['RecordFile']}"
    )
    assert rec["RecordFile"].startswith(f"{api.base}/v0.1/Recording/{AUTH_ID}/")
    # FileName names the file (FilePath, a directory on the framework's server, is not used)
    assert rec["RecordFile"].split("?")[0].endswith("/x.wav")  # signed: ?expires=...&sig=...
    for bad in ("../x", "a/b", ".hidden"):
        _, refused = await api.post("RecordStart", CallUUID=call_uuid, FileName=bad)
        assert refused == {"Success": False, "Message": "RecordStart Failed: invalid FileName"}
    _, played = await api.post("Play", CallUUID=call_uuid, Sounds=receiver.url("/tone.wav"))
    assert played == {"Success": True, "Message": "Play Request Executed"}
    await asyncio.sleep(1.5)
    assert (await api.post("PlayStop", CallUUID=call_uuid))[1] == {
        "Success": True,
        "Message": "PlayStop executed",
    }
    assert (await api.post("RecordStop", CallUUID=call_uuid, RecordFile="all"))[1] == {
        "Success": True,
        "Message": "RecordStop Executed",
    }
    for _ in range(50):
        async with api.session.get(rec["RecordFile"]) as resp:
            if resp.status == 200:
                data = await resp.read()
                break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the recording was never served")
    assert data[:4] == b"RIFF" and len(data) > 8000  # over a second of 8 kHz audio
    assert not (tmp_path / "evil").exists()
    await api.post("HangupCall", CallUUID=call_uuid)
    await receiver.wait_for(path="/hangup", timeout=10)
    await sipp_done(peer)


async def _events_of(leg: Any) -> list[Any]:
    return [ev async for ev in leg.events()]


@needs_sipp
async def test_send_digits_preanswer_answer_and_endpoint(
    sipp: Any, legacy: Any, receiver: WebhookReceiver
) -> None:
    """The digits reach the callee: sipp echoes our RTP, so our own RFC 4733 receiver hears
    them; with SendOnPreanswer=true during the 183 early media, else after the 200."""
    from softswitch.events import Answered, DigitReceived
    from tests.conftest import wait_until

    early, late, plain = (
        sipp("uas_early_media.xml"),
        sipp("uas_early_media.xml"),
        sipp("uas_answer.xml"),
    )
    api = await legacy()
    common = {
        "From": "1000",
        "To": "bob",
        "AnswerUrl": receiver.url("/answer"),
        "RingUrl": receiver.url("/ring"),
        "HangupUrl": receiver.url("/hangup"),
    }
    _, pre = await api.post(
        "Call", Gateways=gw(early), SendDigits="12", SendOnPreanswer="true", **common
    )
    _, post = await api.post("Call", Gateways=gw(late), SendDigits="12", **common)
    _, third = await api.post("Call", Gateways=gw(plain), **common)
    rings = await receiver.wait_for(path="/ring", count=3, timeout=10)
    uuids = {h.form["RequestUUID"]: h.form["CallUUID"] for h in rings}
    legs = {req: api.server.manager.calls[uid].leg for req, uid in uuids.items()}
    collectors = {req: asyncio.create_task(_events_of(leg)) for req, leg in legs.items()}
    await receiver.wait_for(path="/answer", count=3, timeout=10)
    _, sent = await api.post("SendDigits", CallUUID=uuids[third["RequestUUID"]], Digits="34")
    assert sent == {"Success": True, "Message": "SendDigits executed"}
    await wait_until(
        lambda: all(len(leg.digits) >= 2 for leg in legs.values()), 5, what="digits echoed"
    )
    assert (await api.post("HangupAllCalls"))[1]["Success"] is True
    await receiver.wait_for(path="/hangup", count=3, timeout=10)
    await sipp_done(early, late, plain)
    for req, before_answer, expected in (
        (pre["RequestUUID"], True, ["1", "2"]),
        (post["RequestUUID"], False, ["1", "2"]),
        (third["RequestUUID"], False, ["3", "4"]),
    ):
        events = await asyncio.wait_for(collectors[req], 5)
        answered_at = [type(ev) for ev in events].index(Answered)
        digits = [(i, ev.digit) for i, ev in enumerate(events) if isinstance(ev, DigitReceived)]
        assert [d for _, d in digits] == expected, events
        assert all((i < answered_at) == before_answer for i, _ in digits), events


@needs_sipp
async def test_example_client_program(sipp: Any, legacy: Any, receiver: WebhookReceiver) -> None:
    """``examples/legacy_framework_client.py`` (requests only) places and hangs up a call."""
    import json
    import subprocess
    import sys

    peer = sipp("uas_answer.xml")
    api = await legacy()
    script = Path(__file__).resolve().parents[1] / "examples" / "legacy_framework_client.py"
    run = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            str(script),
            api.base,
            AUTH_ID,
            AUTH_TOKEN,
            gw(peer),
            "bob",
            receiver.url("/answer"),
            "1.5",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stderr
    placed, hung = (json.loads(line) for line in run.stdout.splitlines())
    assert placed["Success"] is True and placed["Message"] == "Call Request Executed"
    assert hung == {"Success": True, "Message": "Hangup Call Executed"}
    hangup = (await receiver.wait_for(is_hangup, timeout=10))[0].form
    assert (
        hangup["RequestUUID"] == placed["RequestUUID"]
        and hangup["HangupCause"] == "NORMAL_CLEARING"
    )
    await sipp_done(peer)


@needs_sipp
async def test_hangup_on_ring_zero_cancels_at_the_first_ring(
    sipp: Any, legacy: Any, receiver: WebhookReceiver
) -> None:
    peer = sipp("uas_ring_cancel.xml")
    api = await legacy()
    _, body = await api.post(
        "Call",
        From="1000",
        To="bob",
        AnswerUrl=receiver.url("/answer"),
        HangupUrl=receiver.url("/hangup"),
        Gateways=gw(peer),
        HangupOnRing="0",
    )
    hangup = (await receiver.wait_for(path="/hangup", timeout=10))[0].form
    assert (
        hangup["RequestUUID"] == body["RequestUUID"]
        and hangup["HangupCause"] == "ORIGINATOR_CANCEL"
    )
    await sipp_done(peer)  # CANCELled
    assert not receiver.of("/answer")
