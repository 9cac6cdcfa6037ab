"""Answered calls run the Plivo XML their answer_url returns: the official SDK → softswitch
(real SIP user agent and media) → a real callee (sipp), with a real HTTP server serving the
XML and receiving the signed callbacks.

What is checked: a document runs to its ``<Hangup/>`` and the hangup callback comes; an
invalid answer document makes the call fetch and run fallback_url; when both are invalid
(not XML, unknown verb, bad attribute) the call ends with the XML error's cause, Plivo's
code, an ``error`` in the call record, and the hangup callback still comes; running out of
verbs is Plivo's "End Of XML Instructions"; an unreachable action URL ends the call too.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import free_port
from tests.peers import xml_app
from tests.peers.xml_app import AUTH_ID, Env, hangup_of

# the shared fixtures: a real server with the user's web app (``env``), sipp callees (``uas``)
env = xml_app.env
uas = xml_app.uas

pytestmark = [
    pytest.mark.peer,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp not installed"),
]

HELLO_HANGUP = "<Response><Speak>Hello</Speak><Hangup/></Response>"


# --- the tests --------------------------------------------------------------------------------


async def test_speak_then_hangup_ends_the_call_with_the_hangup_callback(env: Env, uas: Any) -> None:
    env.web.routes["/answer"] = HELLO_HANGUP
    peer = uas()
    call_uuid = await env.call(peer.uri)
    answer = env.web.of("/answer", call_uuid)[0]
    assert answer.signed and answer.params["Event"] == "StartApp"
    hang = await hangup_of(env, call_uuid)
    assert hang["CallStatus"] == "completed"
    assert hang["HangupCause"] == "NORMAL_CLEARING"
    assert hang["HangupSource"] == "Answer XML"
    assert hang["HangupCauseCode"] == "4000"
    # "Hello" took some time to say before <Hangup/>: the call was up for it.
    assert int(hang["BillDuration"]) >= 1
    rec = env.record(call_uuid)
    assert rec["error"] is None
    assert rec["call_status"] == "completed"
    assert rec["extra"]["answer_xml"] == HELLO_HANGUP


async def test_end_of_xml_instructions(env: Env, uas: Any) -> None:
    env.web.routes["/answer"] = '<Response><Wait length="1"/></Response>'
    call_uuid = await env.call(uas().uri)
    hang = await hangup_of(env, call_uuid)
    assert (hang["HangupCauseCode"], hang["HangupCauseName"]) == ("4010", "End Of XML Instructions")
    assert hang["HangupSource"] == "Plivo"
    assert hang["HangupCause"] == "NORMAL_CLEARING"


async def test_invalid_answer_xml_runs_fallback_url(env: Env, uas: Any) -> None:
    env.web.routes["/answer"] = "this is not XML at all"
    env.web.routes["/fallback"] = "<Response><Hangup/></Response>"
    call_uuid = await env.call(uas().uri, fallback_url=env.web.url("/fallback"))
    fb = await env.web.wait_for(path="/fallback", call_uuid=call_uuid)
    assert fb[0].signed and fb[0].params["CallUUID"] == call_uuid
    hang = await hangup_of(env, call_uuid)
    assert hang["HangupCause"] == "NORMAL_CLEARING"
    assert hang["HangupSource"] == "Answer XML"
    assert env.record(call_uuid)["error"] is None


@pytest.mark.parametrize(
    ("answer", "fallback", "needle"),
    [
        ("not <xml", "<<<", "XML"),
        ("<Response><Dance/></Response>", "<Response><Speak>hi</Speak><Jump/></Response>", "Jump"),
        (
            '<Response><Speak loop="often">hi</Speak></Response>',
            '<Response><Wait length="lots"/></Response>',
            "length",
        ),
    ],
    ids=["not-xml", "unknown-verb", "bad-attribute"],
)
async def test_invalid_answer_and_fallback_end_the_call_with_the_xml_error(
    env: Env, uas: Any, answer: str, fallback: str, needle: str
) -> None:
    env.web.routes["/answer"] = answer
    env.web.routes["/fallback"] = fallback
    call_uuid = await env.call(uas().uri, fallback_url=env.web.url("/fallback"))
    await env.web.wait_for(path="/fallback", call_uuid=call_uuid)
    hang = await hangup_of(env, call_uuid)
    assert hang["HangupCause"] == "INVALID_MSG_UNSPECIFIED"
    assert (hang["HangupCauseCode"], hang["HangupCauseName"]) == ("8000", "Invalid Answer XML")
    assert hang["HangupSource"] == "Error"
    assert hang["CallStatus"] == "completed"
    rec = env.record(call_uuid)
    assert rec["error"] and needle in rec["error"], rec["error"]
    assert rec["hangup_cause_code"] == 8000
    # the SDK sees the end too
    cdr = await env.sdk(env.client.calls.get, call_uuid)
    assert cdr.hangup_cause == "INVALID_MSG_UNSPECIFIED" and cdr.hangup_source == "Error"


async def test_invalid_answer_without_fallback(env: Env, uas: Any) -> None:
    env.web.routes["/answer"] = "<Response><Speak>ok</Speak><MultiPartyCall>room</MultiPartyCall></Response>"
    call_uuid = await env.call(uas().uri)
    hang = await hangup_of(env, call_uuid)
    # valid Plivo XML this softswitch does not implement: refused before anything runs
    assert hang["HangupCause"] == "SERVICE_NOT_IMPLEMENTED"
    assert hang["HangupSource"] == "Error"
    assert "MultiPartyCall" in env.record(call_uuid)["error"]


async def test_unreachable_action_url_ends_the_call(env: Env, uas: Any) -> None:
    dead = f"http://127.0.0.1:{free_port(socket.SOCK_STREAM)}/gone"
    env.web.routes["/answer"] = f"<Response><Redirect>{dead}</Redirect></Response>"
    call_uuid = await env.call(uas().uri)
    hang = await hangup_of(env, call_uuid)
    assert hang["HangupCause"] == "NORMAL_TEMPORARY_FAILURE"
    assert (hang["HangupCauseCode"], hang["HangupCauseName"]) == (
        "8021",
        "Error Reaching Action URL",
    )
    assert dead in env.record(call_uuid)["error"]


async def test_redirect_and_action_requests_are_signed_and_carry_call_params(
    env: Env, uas: Any
) -> None:
    env.web.routes["/answer"] = (
        f'<Response><Redirect method="GET">{env.web.url("/next")}</Redirect></Response>'
    )
    env.web.routes["/next"] = "<Response><Hangup/></Response>"
    call_uuid = await env.call(uas().uri)
    nxt = (await env.web.wait_for(path="/next", call_uuid=call_uuid))[0]
    assert nxt.method == "GET" and nxt.signed
    assert nxt.params["CallStatus"] == "in-progress" and nxt.params["Direction"] == "outbound"
    assert "Event" not in nxt.params
    hang = await hangup_of(env, call_uuid)
    assert hang["HangupSource"] == "Answer XML"


async def test_xml_record_file_is_served_at_its_record_url(env: Env, uas: Any) -> None:
    # sipp echoes our RTP, so the recording holds the echo of what we say before <Record>.
    env.web.routes["/answer"] = (
        "<Response><Speak>Leave a message</Speak>"
        f'<Record maxLength="2" timeout="10" playBeep="true" fileFormat="wav" '
        f'action="{env.web.url("/recorded")}"/></Response>'
    )
    env.web.routes["/recorded"] = "<Response><Hangup/></Response>"
    call_uuid = await env.call(uas().uri)
    hit = (await env.web.wait_for(path="/recorded", call_uuid=call_uuid))[0]
    assert hit.signed
    url = hit.params["RecordUrl"]
    assert url.startswith(f"{env.server.base_url}/v1/Account/{AUTH_ID}/Recording/files/")
    assert url.split("?")[0].endswith(f"{hit.params['RecordingID']}.wav")  # signed: ?expires&sig
    assert 1500 <= int(hit.params["RecordingDurationMs"]) <= 3000
    await hangup_of(env, call_uuid)
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200 and resp.content_type == "audio/wav"
        body = await resp.read()
    assert body[:4] == b"RIFF" and len(body) > 8000 * 2  # 8 kHz 16-bit, over a second
    name = url.split("?")[0].rsplit("/", 1)[1]
    assert (Path(env.server.manager.data_dir) / "recordings" / AUTH_ID / name).is_file()  # type: ignore[union-attr]
