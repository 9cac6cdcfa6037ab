"""The CallAPI dialect against real peers: the official ``twilio`` SDK (its base URL pointed at
a real in-process server) creating, fetching, listing, redirecting and ending calls to sipp
callees; status callbacks received by a real web server and checked with the SDK's own
``RequestValidator``; a TwiML ``<Gather>`` receiving the RFC 2833 digits sipp sends."""

from __future__ import annotations

import asyncio
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from softswitch.api.callapi.codes import call_uuid_of
from softswitch.config import InboundRoute
from softswitch.server import Server
from tests.conftest import needs_sipp
from tests.peers import amd_clips
from tests.peers.baresip import needs_baresip
from tests.peers.plivo_api import (
    AUTH_ID,
    AUTH_TOKEN,
    OTHER_ID,
    OTHER_TOKEN,
    basic,
    make_config,
    sipp_done,
)
from tests.peers.webhooks import Request, WebhookReceiver

pytestmark = [pytest.mark.peer]

HOLD = '<Response><Pause length="30"/></Response>'


def client(base_url: str, sid: str = AUTH_ID, token: str = AUTH_TOKEN) -> Client:
    """The official SDK, sending its requests to ``base_url`` instead of api.twilio.com."""
    c = Client(sid, token)
    c.api.base_url = base_url
    return c


def twilio_signed(r: Request, token: str = AUTH_TOKEN) -> bool:
    """The check a Twilio customer's server makes."""
    return RequestValidator(token).validate(r.url, r.form, r.headers.get("X-Twilio-Signature", ""))


async def sdk(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    srv = Server(make_config(tmp_path))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop(mode="hangup", drain_timeout_s=2.0)


@pytest.fixture
async def web(webhook_receiver: Any) -> WebhookReceiver:
    return await webhook_receiver(WebhookReceiver(respond=(200, "ok", "text/plain")))


async def wait_status(
    server: Server, sid: str, statuses: set[str], timeout: float = 10
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    uid = f"{sid[2:10]}-{sid[10:14]}-{sid[14:18]}-{sid[18:22]}-{sid[22:]}"
    while True:
        rec = server.store.get_call(AUTH_ID, uid)
        if rec and rec["call_status"] in statuses:
            return rec
        assert time.monotonic() < deadline, f"{sid}: {rec and rec['call_status']} not in {statuses}"
        await asyncio.sleep(0.05)


def events(web: WebhookReceiver, sid: str) -> list[Request]:
    return web.of("/status", where=lambda r: r.params.get("CallSid") == sid)


@needs_sipp
async def test_sdk_create_fetch_list_and_end_with_all_status_events(sipp, server, web) -> None:
    peer = sipp("uas_answer.xml")
    web.xml("/answer", HOLD)
    tw = client(server.base_url)
    call = await sdk(
        tw.calls.create,
        to=peer.uri,
        from_="+15551230000",
        url=web.url("/answer"),
        status_callback=web.url("/status"),
        status_callback_event=["initiated", "ringing", "answered", "completed"],
    )
    assert call.sid.startswith("CA") and len(call.sid) == 34
    assert call.status == "queued" and call.direction == "outbound-api"
    assert call.account_sid == AUTH_ID and call.api_version == "2012-04-24"
    assert call.uri == f"/2010-04-01/Accounts/{AUTH_ID}/Calls/{call.sid}.json"
    assert call.date_created is not None  # the SDK parsed the RFC 2822 date

    (fetch,) = await web.wait_for(path="/answer")
    assert fetch.params["CallSid"] == call.sid and fetch.params["CallStatus"] == "in-progress"
    assert twilio_signed(fetch)
    live = await sdk(tw.calls(call.sid).fetch)
    assert live.status == "in-progress"
    base = f"{server.base_url}/call/2012-04-24/Accounts/{AUTH_ID}"
    async with aiohttp.ClientSession(headers=basic()) as s:
        for alias in (f"Calls/{call.sid}", f"Calls.json/{call.sid}"):  # RestComm's spellings
            async with s.get(f"{base}/{alias}") as r:
                assert r.status == 200 and (await r.json())["sid"] == call.sid

    listed = await sdk(tw.calls.list, to=peer.uri)
    assert [c.sid for c in listed] == [call.sid]
    assert await sdk(tw.calls.list, status="busy") == []

    ended = await sdk(tw.calls(call.sid).update, status="completed")
    assert ended.status == "completed"
    await web.wait_for(lambda r: r.params.get("CallStatus") == "completed", path="/status")
    got = events(web, call.sid)
    assert [r.params["CallStatus"] for r in got] == [
        "initiated",
        "ringing",
        "in-progress",
        "completed",
    ]
    assert [r.params["SequenceNumber"] for r in got] == ["0", "1", "2", "3"]
    assert all(r.params["CallbackSource"] == "call-progress-events" for r in got)
    assert all(r.params["Timestamp"].endswith("+0000") for r in got)
    assert all(twilio_signed(r) for r in got)
    assert "CallDuration" in got[3].params and "CallDuration" not in got[2].params
    final = await sdk(tw.calls(call.sid).fetch)
    assert final.status == "completed" and final.end_time is not None and final.duration is not None
    await sipp_done(peer)


async def test_seed_path_form_body_errors_and_other_account(server, web) -> None:
    base = f"{server.base_url}/call/2012-04-24/Accounts/{AUTH_ID}"
    auth = basic()
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"{base}/Calls.json", data={"From": "+1555", "Url": web.url("/a")}, headers=auth
        ) as r:
            body = await r.json()
            assert r.status == 400 and body["status"] == 400 and isinstance(body["code"], int)
            assert "To" in body["message"] and body["more_info"].startswith("https://")
        async with s.post(
            f"{base}/Calls.json",
            json={"To": "15551112222", "From": "+15553334444", "Url": "ftp://x"},
            headers=auth,
        ) as r:
            assert r.status == 400 and "Url" in (await r.json())["message"]
        async with s.get(f"{base}/Calls.json", headers=basic(AUTH_ID, "wrong")) as r:
            assert r.status == 401 and (await r.json())["status"] == 401
        async with s.get(
            f"{server.base_url}/call/2012-04-24/Accounts/{OTHER_ID}/Calls.json", headers=auth
        ) as r:
            assert r.status == 404 and (await r.json())["status"] == 404
        async with s.delete(f"{base}/Calls.json", headers=auth) as r:
            assert r.status == 405 and (await r.json())["status"] == 405
        async with s.get(f"{base}/Calls/CA{'0' * 32}.json", headers=auth) as r:
            assert r.status == 404
        async with s.get(f"{base}/Calls.json?Status=bogus", headers=auth) as r:
            assert r.status == 400 and "Status" in (await r.json())["message"]
        async with s.get(f"{server.base_url}/openapi.json") as r:
            doc = await r.json()
            assert "/call/2012-04-24/Accounts/{AccountSid}/Calls.json" in doc["paths"]
            assert "/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json" in doc["paths"]
    other = client(server.base_url, OTHER_ID, OTHER_TOKEN)
    with pytest.raises(TwilioRestException) as exc:
        await sdk(other.calls(f"CA{'1' * 32}").fetch)
    assert exc.value.status == 404


@needs_sipp
async def test_to_with_x_headers_and_caller_name_reach_the_invite(sipp, server, web) -> None:
    peer = sipp("uas_api_headers.xml")  # checks the From display name and the X-PH- headers
    web.xml("/answer", HOLD)
    async with (
        aiohttp.ClientSession(headers=basic()) as s,
        s.post(
            f"{server.base_url}/2010-04-01/Accounts/{AUTH_ID}/Calls.json",
            data={
                "To": f"{peer.uri}?X-PH-Foo=bar&X-PH-Acct=42",
                "From": "+14155550100",
                "Url": web.url("/answer"),
                "CallerName": "Alice Example",
            },
        ) as r,
    ):
        body = await r.json()
        assert r.status == 201 and body["to"] == peer.uri, body
    await wait_status(server, body["sid"], {"completed"}, timeout=15)
    await sipp_done(peer)


@needs_sipp
async def test_sip_auth_credentials_answer_the_callee_challenge(sipp, server, web) -> None:
    peer = sipp("uas_auth_401.xml")  # 401, then checks alice/secret; answers and BYEs
    web.xml("/answer", HOLD)
    tw = client(server.base_url)
    call = await sdk(
        tw.calls.create,
        to=peer.uri,
        from_="+15551230000",
        url=web.url("/answer"),
        sip_auth_username="alice",
        sip_auth_password="secret",
    )
    await web.wait_for(path="/answer", timeout=10)  # answered: the digest was accepted
    await wait_status(server, call.sid, {"completed"}, timeout=15)
    await sipp_done(peer)


@needs_sipp
async def test_busy_callee(sipp, server, web) -> None:
    peer = sipp("uas_busy.xml")
    tw = client(server.base_url)
    call = await sdk(
        tw.calls.create,
        to=peer.uri,
        from_="+15551230000",
        url=web.url("/answer"),
        status_callback=web.url("/status"),
    )
    (done,) = await web.wait_for(path="/status")
    assert done.params["CallStatus"] == "busy" and done.params["SequenceNumber"] == "0"
    assert done.params["CallDuration"] == "0" and twilio_signed(done)
    assert (await sdk(tw.calls(call.sid).fetch)).status == "busy"
    assert [c.sid for c in await sdk(tw.calls.list, status="busy")] == [call.sid]
    # A call placed through this API is not one of the Plivo v1 API's (another shape).
    uid = call_uuid_of(call.sid)
    async with aiohttp.ClientSession(headers=basic()) as http:
        async with http.get(f"{server.base_url}/v1/Account/{AUTH_ID}/Call/") as resp:
            assert resp.status == 200 and (await resp.json())["objects"] == []
        async with http.get(f"{server.base_url}/v1/Account/{AUTH_ID}/Call/{uid}/") as resp:
            assert resp.status == 404
    await sipp_done(peer)


@needs_sipp
async def test_no_answer_after_timeout_and_cancel_while_ringing(sipp, server, web) -> None:
    ringer, ringer2 = sipp("uas_ring_cancel.xml"), sipp("uas_ring_cancel.xml")
    tw = client(server.base_url)
    slow = await sdk(
        tw.calls.create,
        to=ringer.uri,
        from_="+15551230000",
        url=web.url("/answer"),
        timeout=2,
        status_callback=web.url("/status"),
        status_callback_event="ringing completed",
    )
    other = await sdk(tw.calls.create, to=ringer2.uri, from_="+15551230000", url=web.url("/answer"))
    await wait_status(server, other.sid, {"ringing"})
    canceled = await sdk(tw.calls(other.sid).update, status="canceled")
    assert canceled.status == "canceled"
    await web.wait_for(
        lambda r: r.params.get("CallStatus") == "no-answer", path="/status", timeout=10
    )
    got = events(web, slow.sid)
    assert [(r.params["CallStatus"], r.params["SequenceNumber"]) for r in got] == [
        ("ringing", "0"),
        ("no-answer", "1"),
    ]
    assert (await sdk(tw.calls(slow.sid).fetch)).status == "no-answer"
    await sipp_done(ringer, ringer2)


@needs_sipp
async def test_gather_receives_sipp_digits_then_redirect(sipp, server, web) -> None:
    peer = sipp("uas_xml_digits.xml", rtp_echo=False)
    web.xml(
        "/answer",
        f'<Response><Gather action="{web.url("/digits")}" timeout="8" numDigits="10">'
        '<Pause length="6"/></Gather><Say>not reached</Say></Response>',
    )
    web.xml("/digits", "<Response><Hangup/></Response>")
    tw = client(server.base_url)
    call = await sdk(tw.calls.create, to=peer.uri, from_="+15551230000", url=web.url("/answer"))
    (got,) = await web.wait_for(path="/digits", timeout=15)
    assert got.params["Digits"] == "123" and got.params["CallSid"] == call.sid
    assert twilio_signed(got)
    rec = await wait_status(server, call.sid, {"completed"})
    assert rec["call_status"] == "completed"
    await sipp_done(peer)


@needs_sipp
async def test_gather_without_action_posts_digits_to_the_document(sipp, server, web) -> None:
    peer = sipp("uas_xml_digits.xml", rtp_echo=False)
    web.xml(
        "/app/answer",
        '<Response><Gather timeout="8"><Pause length="6"/></Gather></Response>',
    )
    tw = client(server.base_url)
    call = await sdk(tw.calls.create, to=peer.uri, from_="+15551230000", url=web.url("/app/answer"))
    first, again = await web.wait_for(path="/app/answer", count=2, timeout=15)
    assert "Digits" not in first.params and again.params["Digits"] == "123"
    assert again.method == "POST" and again.params["CallSid"] == call.sid and twilio_signed(again)
    await sdk(tw.calls(call.sid).update, status="completed")
    await wait_status(server, call.sid, {"completed"})
    await sipp_done(peer)


@needs_sipp
async def test_redirect_interrupts_a_running_pause(sipp, server, web) -> None:
    peer = sipp("uas_answer.xml")
    web.xml("/answer", HOLD)
    web.xml("/next", "<Response><Hangup/></Response>")
    tw = client(server.base_url)
    call = await sdk(tw.calls.create, to=peer.uri, from_="+15551230000", url=web.url("/answer"))
    await web.wait_for(path="/answer")
    await wait_status(server, call.sid, {"in-progress"})
    started = time.monotonic()
    await sdk(tw.calls(call.sid).update, url=web.url("/next"), method="POST")
    (nxt,) = await web.wait_for(path="/next")
    assert nxt.params["CallSid"] == call.sid and twilio_signed(nxt)
    await wait_status(server, call.sid, {"completed"})
    assert time.monotonic() - started < 10  # the 30 s Pause did not run out
    with pytest.raises(TwilioRestException) as exc:  # an ended call cannot be redirected
        await sdk(tw.calls(call.sid).update, url=web.url("/next"))
    assert exc.value.status == 400
    await sipp_done(peer)


@needs_sipp
async def test_update_sets_fallback_and_status_callback_then_redirects_to_twiml(
    sipp, server, web
) -> None:
    peer = sipp("uas_answer.xml")
    web.xml("/answer", HOLD)
    web.routes["/broken"] = (500, "oops", "text/plain")
    web.xml("/fallback", HOLD)
    tw = client(server.base_url)
    call = await sdk(
        tw.calls.create,
        to=peer.uri,
        from_="+15551230000",
        url=web.url("/answer"),
        status_callback=web.url("/status"),
        status_callback_event=["answered", "completed"],
    )
    await web.wait_for(path="/answer")
    await wait_status(server, call.sid, {"in-progress"})
    # The new webhooks apply from now on: the redirect fails over to the new FallbackUrl.
    await sdk(
        tw.calls(call.sid).update,
        url=web.url("/broken"),
        fallback_url=web.url("/fallback"),
        status_callback=web.url("/status2"),
        status_callback_method="GET",
    )
    (fb,) = await web.wait_for(path="/fallback", timeout=15)
    assert (fb.params["ErrorCode"], fb.params["ErrorUrl"]) == ("11200", web.url("/broken"))
    assert fb.params["CallSid"] == call.sid and twilio_signed(fb)
    started = time.monotonic()
    updated = await sdk(
        tw.calls(call.sid).update, twiml='<Response><Pause length="1"/><Hangup/></Response>'
    )
    assert updated.sid == call.sid
    (done,) = await web.wait_for(path="/status2", timeout=15)
    assert time.monotonic() - started < 10  # the fallback's 30 s Pause did not run out
    assert done.method == "GET" and twilio_signed(done)
    assert (done.params["CallStatus"], done.params["SequenceNumber"]) == ("completed", "1")
    assert [r.params["CallStatus"] for r in web.of("/status")] == ["in-progress"]
    rec = await wait_status(server, call.sid, {"completed"})
    assert rec["params"]["StatusCallback"] == web.url("/status2")
    assert rec["params"]["FallbackUrl"] == web.url("/fallback")
    await sipp_done(peer)


@needs_sipp
async def test_unsupported_verb_goes_to_fallback_url(sipp, server, web) -> None:
    peer = sipp("uas_answer.xml")
    web.xml("/answer", "<Response><Enqueue>support</Enqueue></Response>")
    web.xml("/fallback", "<Response><Hangup/></Response>")
    tw = client(server.base_url)
    call = await sdk(
        tw.calls.create,
        to=peer.uri,
        from_="+15551230000",
        url=web.url("/answer"),
        fallback_url=web.url("/fallback"),
        fallback_method="GET",
    )
    (fb,) = await web.wait_for(path="/fallback")
    assert fb.method == "GET" and fb.params["CallSid"] == call.sid and twilio_signed(fb)
    assert (fb.params["ErrorCode"], fb.params["ErrorUrl"]) == ("12100", web.url("/answer"))
    rec = await wait_status(server, call.sid, {"completed"})
    assert rec["call_status"] == "completed"
    await sipp_done(peer)


@needs_sipp
async def test_fallback_url_gets_twilio_error_codes(sipp, server, web) -> None:
    peer = sipp("uas_answer.xml", calls=2)
    web.routes["/error"] = (500, "oops", "text/plain")
    web.routes["/text"] = (200, "hello", "text/plain")
    web.xml("/fallback", "<Response><Hangup/></Response>")
    tw = client(server.base_url)
    for path, code in (("/error", "11200"), ("/text", "12300")):
        call = await sdk(
            tw.calls.create,
            to=peer.uri,
            from_="+15551230000",
            url=web.url(path),
            fallback_url=web.url("/fallback"),
        )
        sid = call.sid
        (fb,) = await web.wait_for(
            lambda r, sid=sid: r.params.get("CallSid") == sid, path="/fallback"
        )
        assert (fb.params["ErrorCode"], fb.params["ErrorUrl"]) == (code, web.url(path))
        assert twilio_signed(fb)
        await wait_status(server, call.sid, {"completed"})
    await sipp_done(peer)


@needs_sipp
async def test_dial_bridges_to_a_sip_callee_and_reports_dial_call_status(sipp, server, web) -> None:
    a_side, b_side = sipp("uas_answer.xml"), sipp("uas_callee_bye.xml")
    web.xml(
        "/answer",
        f'<Response><Dial action="{web.url("/dialed")}" timeout="10">'
        f"<Sip>{b_side.uri}</Sip></Dial></Response>",
    )
    web.xml("/dialed", "<Response><Hangup/></Response>")
    tw = client(server.base_url)
    call = await sdk(tw.calls.create, to=a_side.uri, from_="+15551230000", url=web.url("/answer"))
    (dialed,) = await web.wait_for(path="/dialed", timeout=15)
    assert dialed.params["DialCallStatus"] == "completed" and dialed.params["CallSid"] == call.sid
    assert twilio_signed(dialed)
    await wait_status(server, call.sid, {"completed"})
    await sipp_done(a_side, b_side)


@needs_sipp
async def test_dial_sip_noun_with_digest_credentials_and_relative_action(sipp, server, web) -> None:
    a_side, b_side = sipp("uas_answer.xml"), sipp("uas_auth_401.xml")  # checks alice/secret
    web.xml(
        "/app/answer",
        '<Response><Dial action="dialed" timeout="10">'
        f'<Sip username="alice" password="secret">{b_side.uri}</Sip></Dial></Response>',
    )
    web.xml("/app/dialed", "<Response><Hangup/></Response>")
    tw = client(server.base_url)
    call = await sdk(
        tw.calls.create, to=a_side.uri, from_="+15551230000", url=web.url("/app/answer")
    )
    (dialed,) = await web.wait_for(path="/app/dialed", timeout=15)
    assert dialed.params["DialCallStatus"] == "completed", dialed.params
    assert (
        dialed.params["DialCallSid"].startswith("CA") and dialed.params["DialCallSid"] != call.sid
    )
    assert int(dialed.params["DialCallDuration"]) >= 0 and twilio_signed(dialed)
    await wait_status(server, call.sid, {"completed"})
    await sipp_done(a_side, b_side)


@needs_sipp
async def test_record_stops_on_a_sipp_digit_and_serves_the_file(sipp, server, web) -> None:
    peer = sipp("uas_xml_digits.xml", rtp_echo=False)
    web.xml(
        "/answer",
        f'<Response><Record action="{web.url("/recorded")}" maxLength="20" '
        'playBeep="false" finishOnKey="#"/></Response>',
    )
    web.xml("/recorded", "<Response><Hangup/></Response>")
    tw = client(server.base_url)
    call = await sdk(tw.calls.create, to=peer.uri, from_="+15551230000", url=web.url("/answer"))
    (got,) = await web.wait_for(path="/recorded", timeout=15)
    assert got.params["Digits"] == "#" and got.params["CallSid"] == call.sid
    url = got.params["RecordingUrl"]
    assert url.startswith(f"{server.base_url}/2010-04-01/Accounts/{AUTH_ID}/Recordings/files/")
    assert 1 <= int(got.params["RecordingDuration"]) <= 5
    await wait_status(server, call.sid, {"completed"})
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        assert r.status == 200 and (await r.read())[:4] == b"RIFF"
    await sipp_done(peer)


@needs_sipp
async def test_record_without_action_posts_the_recording_to_the_document(sipp, server, web) -> None:
    peer = sipp("uas_xml_digits.xml", rtp_echo=False)
    web.xml(
        "/app/answer",
        '<Response><Record maxLength="20" playBeep="false" finishOnKey="#"/></Response>',
    )
    tw = client(server.base_url)
    call = await sdk(tw.calls.create, to=peer.uri, from_="+15551230000", url=web.url("/app/answer"))
    first, again = await web.wait_for(path="/app/answer", count=2, timeout=15)
    assert "RecordingUrl" not in first.params
    assert again.method == "POST" and again.params["CallSid"] == call.sid and twilio_signed(again)
    assert again.params["Digits"] == "#"
    assert again.params["RecordingUrl"].startswith(
        f"{server.base_url}/2010-04-01/Accounts/{AUTH_ID}/Recordings/files/"
    )
    await sdk(tw.calls(call.sid).update, status="completed")
    await wait_status(server, call.sid, {"completed"})
    await sipp_done(peer)


# --- voicemail detection: baresip answers with a recorded greeting --------------------------

human_clip = amd_clips.human_clip
machine_clip = amd_clips.machine_clip


@needs_baresip
async def test_detect_voicemail_on_a_baresip_greeting(server, web, baresip, machine_clip) -> None:
    web.xml("/answer", '<Response><Pause length="1"/></Response>')
    peer = baresip(play_wav=machine_clip)
    tw = client(server.base_url)
    async with (
        aiohttp.ClientSession() as s,
        s.post(  # the seed's path and parameter
            f"{server.base_url}/call/2012-04-24/Accounts/{AUTH_ID}/Calls.json",
            headers=basic(),
            data={
                "To": peer.uri,
                "From": "+15551230000",
                "Url": web.url("/answer"),
                "DetectVoicemail": "true",
                "MachineDetection": "Enable",
                "StatusCallback": web.url("/status"),
            },
        ) as r,
    ):
        assert r.status == 201
        sid = (await r.json())["sid"]
    (fetch,) = await web.wait_for(path="/answer", timeout=20)
    assert fetch.params["VoicemailDetector"] == "voicemail", fetch.params
    assert fetch.params["AnsweredBy"] in ("machine_start", "machine_end_beep")
    assert int(fetch.params["MachineDetectionDuration"]) > 0 and twilio_signed(fetch)
    (done,) = await web.wait_for(path="/status", timeout=15)
    assert (
        done.params["VoicemailDetector"] == "voicemail" and done.params["CallStatus"] == "completed"
    )
    assert (await sdk(tw.calls(sid).fetch)).answered_by in ("machine_start", "machine_end_beep")


silent_end_clip = amd_clips.silent_end_clip


@needs_baresip
@pytest.mark.parametrize(
    ("clip", "answered_by"),
    [("machine_clip", "machine_end_beep"), ("silent_end_clip", "machine_end_silence")],
)
async def test_detect_message_end_waits_for_the_end_of_the_greeting(
    server, web, baresip, request, clip, answered_by
) -> None:
    wav = request.getfixturevalue(clip)
    with wave.open(str(wav)) as w:  # the greeting lasts until the clip's last loud sample
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    greeting_ms = int(np.flatnonzero(np.abs(pcm) > 1000)[-1] / 8)
    web.xml("/answer", '<Response><Pause length="1"/></Response>')
    peer = baresip(play_wav=wav)
    tw = client(server.base_url)
    call = await sdk(
        tw.calls.create,
        to=peer.uri,
        from_="+15551230000",
        url=web.url("/answer"),
        machine_detection="DetectMessageEnd",
        status_callback=web.url("/status"),
    )
    (fetch,) = await web.wait_for(path="/answer", timeout=40)
    assert fetch.params["AnsweredBy"] == answered_by, fetch.params
    # The Url is fetched once the greeting is over, not at the (earlier) decision.
    assert int(fetch.params["MachineDetectionDuration"]) >= greeting_ms - 500
    assert twilio_signed(fetch)
    (done,) = await web.wait_for(path="/status", timeout=15)
    assert done.params["AnsweredBy"] == answered_by
    assert (await sdk(tw.calls(call.sid).fetch)).answered_by == answered_by


@needs_baresip
async def test_send_digits_reach_a_baresip_callee(server, web, baresip) -> None:
    peer = baresip()
    web.xml("/answer", HOLD)
    tw = client(server.base_url)
    call = await sdk(
        tw.calls.create,
        to=peer.uri,
        from_="+15551230000",
        url=web.url("/answer"),
        send_digits="1w2#",
    )
    deadline = time.monotonic() + 10
    while len(peer.received_dtmf()) < 3:  # RFC 4733 events, as baresip logs them
        assert time.monotonic() < deadline, peer.log()[-3000:]
        await asyncio.sleep(0.1)
    assert [d for d, _ in peer.received_dtmf()] == ["1", "2", "#"]
    await sdk(tw.calls(call.sid).update, status="completed")
    await wait_status(server, call.sid, {"completed"})


@needs_baresip
async def test_sdk_machine_detection_human(server, web, baresip, human_clip) -> None:
    web.xml("/answer", '<Response><Pause length="1"/></Response>')
    peer = baresip(play_wav=human_clip)
    tw = client(server.base_url)
    await sdk(
        tw.calls.create,
        to=peer.uri,
        from_="+15551230000",
        url=web.url("/answer"),
        machine_detection="Enable",
        machine_detection_timeout=10,
    )
    (fetch,) = await web.wait_for(path="/answer", timeout=20)
    assert fetch.params["AnsweredBy"] == "human" and "VoicemailDetector" not in fetch.params


@needs_sipp
async def test_failed_callee(sipp, server, web) -> None:
    peer = sipp("uas_503.xml")
    tw = client(server.base_url)
    call = await sdk(
        tw.calls.create,
        to=peer.uri,
        from_="+15551230000",
        url=web.url("/answer"),
        status_callback=web.url("/status"),
        status_callback_event="initiated completed",
    )
    await web.wait_for(lambda r: r.params.get("CallStatus") == "failed", path="/status")
    got = events(web, call.sid)
    assert [(r.params["CallStatus"], r.params["SequenceNumber"]) for r in got] == [
        ("initiated", "0"),
        ("failed", "1"),
    ]
    fetched = await sdk(tw.calls(call.sid).fetch)
    assert fetched.status == "failed" and fetched.duration == 0
    await sipp_done(peer)


@needs_sipp
async def test_inline_twiml_instead_of_url(sipp, server, web) -> None:
    peer = sipp("uas_answer.xml")
    tw = client(server.base_url)
    call = await sdk(
        tw.calls.create,
        to=peer.uri,
        from_="+15551230000",
        twiml='<Response><Pause length="1"/><Hangup/></Response>',
        status_callback=web.url("/status"),
    )
    (done,) = await web.wait_for(path="/status", timeout=15)
    assert done.params["CallSid"] == call.sid and done.params["CallStatus"] == "completed"
    assert int(done.params["CallDuration"]) >= 1
    with pytest.raises(TwilioRestException) as exc:
        await sdk(
            tw.calls.create,
            to=peer.uri,
            from_="+15551230000",
            twiml="<Response><Enqueue/></Response>",
        )
    assert exc.value.status == 400 and "Twiml" in exc.value.msg
    await sipp_done(peer)


@needs_sipp
async def test_queued_call_is_canceled_and_a_full_queue_is_429(sipp, tmp_path, web) -> None:
    from softswitch.config import Limits

    ringer = sipp("uas_ring_cancel.xml")
    srv = Server(
        make_config(tmp_path, limits=Limits(cps=0.2, max_concurrent=100, max_queue=1, bulk_max=10))
    )
    await srv.start()
    try:
        tw = client(srv.base_url)
        first = await sdk(tw.calls.create, to=ringer.uri, from_="+15551230000", url=web.url("/a"))
        second = await sdk(tw.calls.create, to=ringer.uri, from_="+15551230000", url=web.url("/a"))
        with pytest.raises(TwilioRestException) as exc:
            await sdk(tw.calls.create, to=ringer.uri, from_="+15551230000", url=web.url("/a"))
        assert exc.value.status == 429
        assert (await sdk(tw.calls(second.sid).fetch)).status == "queued"
        assert (await sdk(tw.calls(second.sid).update, status="canceled")).status == "canceled"
        await wait_status(srv, first.sid, {"ringing"})
        assert (await sdk(tw.calls(first.sid).update, status="completed")).status == "canceled"
        assert {c.status for c in await sdk(tw.calls.list)} == {"canceled"}
        await sipp_done(ringer)
    finally:
        await srv.stop(mode="hangup", drain_timeout_s=1.0)


@needs_sipp
async def test_list_pages_through_the_sdk(sipp, server, web) -> None:
    busy = sipp("uas_busy.xml", calls=3)
    tw = client(server.base_url)
    sids = []
    for _ in range(3):
        call = await sdk(tw.calls.create, to=busy.uri, from_="+15551230000", url=web.url("/a"))
        sids.append(call.sid)
        await wait_status(server, call.sid, {"busy"})
    page = await sdk(tw.calls.page, page_size=2)
    assert [c.sid for c in page] == sids[:0:-1]  # newest first
    assert page.next_page_url is not None and "Page=1" in page.next_page_url
    nxt = await sdk(page.next_page)
    assert [c.sid for c in nxt] == sids[:1] and nxt.next_page_url is None
    everything = await sdk(tw.calls.list, page_size=2)  # the SDK follows next_page_uri
    assert [c.sid for c in everything] == sids[::-1]
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert len(await sdk(tw.calls.list, start_time_after=today, from_="+15551230000")) == 3
    base = f"{server.base_url}/2010-04-01/Accounts/{AUTH_ID}/Calls.json"
    async with aiohttp.ClientSession(headers=basic()) as s:
        async with s.get(base, params={"SortBy": "DateCreated:asc", "PageSize": "2"}) as r:
            body = await r.json()
            assert r.status == 200 and [c["sid"] for c in body["calls"]] == sids[:2]
            assert "SortBy=DateCreated%3Aasc" in body["next_page_uri"]
        async with s.get(base, params={"SortBy": "Colour:asc"}) as r:
            assert r.status == 400 and "SortBy" in (await r.json())["message"]
    await sipp_done(busy)


@needs_sipp
async def test_inbound_call_runs_twiml_and_is_an_inbound_resource(sipp, tmp_path, web) -> None:
    route = InboundRoute(
        number="5000",
        answer_url=web.url("/voice"),
        hangup_url=web.url("/status"),
        dialect="callapi",
        account=AUTH_ID,
    )
    srv = Server(make_config(tmp_path, inbound=[route]))
    await srv.start()
    try:
        web.xml("/voice", '<Response><Pause length="1"/><Hangup/></Response>')
        extra = ["-s", "5000", f"127.0.0.1:{srv.ua.local_port}"]
        peer = sipp("uac_inbound.xml", extra=extra)
        (voice,) = await web.wait_for(path="/voice", timeout=10)
        assert (voice.params["Direction"], voice.params["To"]) == ("inbound", "5000")
        assert twilio_signed(voice)
        sid = voice.params["CallSid"]
        (done,) = await web.wait_for(path="/status", timeout=15)
        assert done.params["Direction"] == "inbound" and done.params["CallSid"] == sid
        assert done.params["CallStatus"] == "completed" and twilio_signed(done)
        await sipp_done(peer)
        tw = client(srv.base_url)
        call = await sdk(tw.calls(sid).fetch)
        assert (call.direction, call.status, call.to) == ("inbound", "completed", "5000")
        listed = await sdk(tw.calls.list, to="5000")
        assert [c.direction for c in listed] == ["inbound"]
    finally:
        await srv.stop(mode="hangup", drain_timeout_s=2.0)
