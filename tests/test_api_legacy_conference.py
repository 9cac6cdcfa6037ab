"""The legacy framework's RESTXML ``<Conference>`` and ``/v0.1/Conference*/`` endpoints
against a live room: two calls placed with ``/v0.1/Call/`` to sipp callees join one room;
the endpoints list, mute, deaf, speak, play into, record, kick and hang up, with the
framework's messages; the room's callbacks carry its parameters.
"""

from __future__ import annotations

import asyncio
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests import test_api_legacy as legacy_suite
from tests.conftest import needs_sipp
from tests.peers.plivo_api import AUTH_ID, basic
from tests.peers.webhooks import Request, WebhookReceiver
from tests.test_api_legacy import gw, is_hangup

pytestmark = [pytest.mark.peer, needs_sipp]

legacy = legacy_suite.legacy  # the fixture: a started server and a form-posting client

ROOM_XML = (
    '<?xml version="1.0"?><Response><Conference callbackUrl="{cb}" enterSound="beep:2">'
    'room</Conference><Wait length="1"/></Response>'
)


async def poll(pred: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def wav_bytes(path: Path) -> bytes:
    t = np.arange(8000 * 2) / 8000
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes((6000 * np.sin(2 * np.pi * 500 * t)).astype("<i2").tobytes())
    return path.read_bytes()


async def test_restxml_conference_and_the_conference_endpoints(
    sipp: Any, legacy: Any, webhook_receiver: Any, tmp_path: Path
) -> None:
    web: WebhookReceiver

    def reply(r: Request) -> Any:
        if is_hangup(r) or r.path.startswith("/cb"):
            return (200, "ok", "text/plain")
        return ROOM_XML.format(cb=web.url("/cb"))

    web = await webhook_receiver(respond=reply)
    web.file("/tone.wav", wav_bytes(tmp_path / "tone.wav"))
    api = await legacy()
    conferences = api.server.manager.conferences

    def count() -> int:
        room = conferences.get(AUTH_ID, "room")
        return 0 if room is None else len(room.members)

    for n in (1, 2):
        peer = sipp("uas_answer.xml")
        status, body = await api.post(
            "Call", From="1000", To="bob", Gateways=gw(peer), AnswerUrl=web.url(f"/answer{n}")
        )
        assert body["Success"] is True
        assert await poll(lambda n=n: count() == n)  # noqa: B023

    status, body = await api.post("ConferenceList")
    assert (status, body["Success"], body["Message"]) == (200, True, "Conference List Executed")
    room = body["List"]["room"]
    assert room["ConferenceMemberCount"] == "2" and room["ConferenceName"] == "room"
    assert [m["MemberID"] for m in room["Members"]] == ["1", "2"]
    assert room["Members"][0]["Muted"] is False and room["Members"][0]["CallNumber"] == "1000"
    live = conferences.get(AUTH_ID, "room")
    assert room["ConferenceUUID"] == live.uuid

    body = (await api.post("ConferenceMute", ConferenceName="room", MemberID="1"))[1]
    assert (body["Success"], body["Message"], body["MemberID"]) == (
        True,
        "Conference Mute Executed",
        ["1"],
    )
    body = (await api.post("ConferenceListMembers", ConferenceName="room", MutedFilter="true"))[1]
    assert body["Message"] == "Conference ListMembers Executed"
    assert [m["MemberID"] for m in body["List"]["room"]["Members"]] == ["1"]
    body = (await api.post("ConferenceUnmute", ConferenceName="room", MemberID="1"))[1]
    assert body["Message"] == "Conference Unmute Executed" and not live.members["1"].muted
    body = (await api.post("ConferenceDeaf", ConferenceName="room", MemberID="all"))[1]
    assert body["MemberID"] == ["1", "2"] and live.members["2"].deaf
    body = (await api.post("ConferenceUndeaf", ConferenceName="room", MemberID="1,2"))[1]
    assert body["Message"] == "Conference Undeaf Executed" and not live.members["2"].deaf
    body = (await api.post("ConferenceMute", ConferenceName="nope", MemberID="1"))[1]
    assert (body["Success"], body["MemberID"]) == (True, [])  # the framework only logs it

    body = (await api.post("ConferenceSpeak", ConferenceName="room", MemberID="all", Text="hi"))[1]
    assert (body["Success"], body["Message"]) == (True, "Conference Speak Executed")
    body = (
        await api.post(
            "ConferencePlay", ConferenceName="room", MemberID="2", FilePath=web.url("/tone.wav")
        )
    )[1]
    assert (body["Success"], body["Message"]) == (True, "Conference Play Executed")
    body = (
        await api.post(
            "ConferencePlay", ConferenceName="room", MemberID="9", FilePath=web.url("/tone.wav")
        )
    )[1]
    assert body["Success"] is False

    body = (
        await api.post(
            "ConferenceRecordStart", ConferenceName="room", FileFormat="wav", FileName="rec1"
        )
    )[1]
    assert (body["Success"], body["Message"]) == (True, "Conference RecordStart Executed")
    url = body["RecordFile"]
    assert "/v0.1/Recording/" in url and url.split("?")[0].endswith("/rec1.wav")  # FileName
    await asyncio.sleep(0.5)
    body = (await api.post("ConferenceRecordStop", ConferenceName="room", RecordFile="all"))[1]
    assert body["Message"] == "Conference RecordStop Executed"
    async with api.session.get(url, headers=basic()) as resp:  # served like a call's recording
        assert resp.status == 200 and len(await resp.read()) > 44 + 6400

    kicked = live.members["2"].call_uuid
    body = (await api.post("ConferenceKick", ConferenceName="room", MemberID="2"))[1]
    assert (body["Message"], body["MemberID"]) == ("Conference Kick Executed", ["2"])
    assert await poll(lambda: count() == 1)
    # the kicked call goes on with its RESTXML (<Wait length="1"/>), then ends
    await web.wait_for(lambda r: is_hangup(r) and r.form.get("CallUUID") == kicked, timeout=10)
    body = (await api.post("ConferenceHangup", ConferenceName="room", MemberID="all"))[1]
    assert (body["Message"], body["MemberID"]) == ("Conference Hangup Executed", ["1"])
    await web.wait_for(lambda r: is_hangup(r), count=2, timeout=10)
    assert await poll(lambda: conferences.get(AUTH_ID, "room") is None)
    body = (await api.post("ConferenceList"))[1]
    assert body["List"] == {}

    actions = [(r.form["ConferenceMemberID"], r.form["ConferenceAction"]) for r in web.of("/cb")]
    assert ("1", "enter") in actions and ("2", "enter") in actions and ("2", "exit") in actions
    assert {r.form["ConferenceName"] for r in web.of("/cb")} == {"room"}
