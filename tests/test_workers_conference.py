"""Conference rooms with several workers (issue 20): two workers started by hand share a
redis-server (tests/peers/redis.py) and call sipp callees on loopback.

* the worker where a room is made owns it (``ss:room:<account>:<name>`` under the call
  lease); the Conference API sent to the other worker is run by the owner (get, list, mute,
  the legacy ConferenceUnmute, hang up the room);
* a make-call request with ``parent_call_uuid`` sent to the other worker is run by the
  parent's worker, so the new call (its INVITE from that worker's SIP port) joins the room
  there.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from tests.conftest import needs_sipp
from tests.peers import plivo_api
from tests.peers.plivo_api import AUTH_ID
from tests.peers.redis import needs_redis
from tests.peers.webhooks import WebhookReceiver
from tests.test_workers import AUTH, CALLS, api, sipp_via_ports, two_workers

receiver = plivo_api.receiver
__all__ = ["two_workers"]

pytestmark = [needs_redis, needs_sipp, pytest.mark.xdist_group("timing")]

ROOM = f"/v1/Account/{AUTH_ID}/Conference/"


async def until_status(method: str, base: str, path: str, want: int, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        status, body, _ = await api(method, base, path)
        if status == want:
            return body
        assert time.monotonic() < deadline, (status, body)
        await asyncio.sleep(0.1)


async def test_a_room_is_owned_by_its_worker_and_the_api_reaches_it_from_the_other(
    two_workers: Any, sipp: Any, receiver: WebhookReceiver
) -> None:
    a, b = two_workers
    callee = sipp("uas_answer.xml", calls=2)
    document = "<Response><Conference>team</Conference></Response>"
    receiver.xml("/room", document)
    status, body, _ = await api(
        "POST",
        a.base,
        CALLS,
        {
            "from": "1000",
            "to": callee.uri,
            "answer_url": receiver.url("/room"),
            "hangup_url": receiver.url("/hangup"),
        },
    )
    assert status == 201, body
    [answer] = await receiver.wait_for(lambda h: h.path == "/room", timeout=15)
    first = answer.params["CallUUID"]
    # B holds neither the call nor the room: its answers come from A.
    room = await until_status("GET", b.base, f"{ROOM}team/", 200)
    assert room["conference_member_count"] == "1" and room["members"][0]["call_uuid"] == first
    status, listed, _ = await api("GET", b.base, ROOM)
    assert status == 200 and listed["conferences"] == ["team"], listed
    status, muted, _ = await api("POST", b.base, f"{ROOM}team/Member/1/Mute/")
    assert status == 202 and muted["member_id"] == ["1"], muted
    status, room, _ = await api("GET", b.base, f"{ROOM}team/")
    assert room["members"][0]["muted"] is True
    # the legacy API names the room in its form: forwarded too
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{b.base}/v0.1/ConferenceUnmute/",
            data={"ConferenceName": "team", "MemberID": "1"},
            headers={"Authorization": AUTH},
        ) as resp:
            legacy = await resp.json(content_type=None)
    assert legacy["Success"] is True and legacy["MemberID"] == ["1"], legacy
    status, room, _ = await api("GET", b.base, f"{ROOM}team/")
    assert room["members"][0]["muted"] is False

    # parent_call_uuid sent to B: the new call is placed by A (the parent's worker) and
    # joins the room there.
    status, body, _ = await api(
        "POST",
        b.base,
        CALLS,
        {
            "from": "1000",
            "to": callee.uri,
            "parent_call_uuid": first,
            "error_if_parent_not_found": True,
            "answer_url": receiver.url("/room"),
            "hangup_url": receiver.url("/hangup"),
        },
    )
    assert status == 201, body
    second = body["request_uuid"]
    await receiver.wait_for(lambda h: h.path == "/room", count=2, timeout=15)
    room = await until_status("GET", b.base, f"{ROOM}team/", 200)
    deadline = time.monotonic() + 10
    while room["conference_member_count"] != "2":
        assert time.monotonic() < deadline, room
        await asyncio.sleep(0.1)
        _, room, _ = await api("GET", b.base, f"{ROOM}team/")
    assert sipp_via_ports(callee) == {a.sip_port}  # both INVITEs from A
    status, record, _ = await api(
        "GET", a.base, f"{CALLS}{room['members'][1]['call_uuid']}/?status=live"
    )
    assert status == 200, record
    assert second  # the request was A's

    # The room's hangup through B ends both calls (run by A).
    status, _, _ = await api("DELETE", b.base, f"{ROOM}team/")
    assert status == 204
    hangups = await receiver.wait_for(lambda h: h.path == "/hangup", count=2, timeout=15)
    assert {h.params["HangupSource"] for h in hangups} == {"API Request"}
    await until_status("GET", b.base, f"{ROOM}team/", 404)
    status, listed, _ = await api("GET", b.base, ROOM)
    assert listed["conferences"] == [], listed
    await asyncio.to_thread(callee.assert_ok, 15)
