"""Two workers sharing PostgreSQL (records) and Redis (ownership, control, the request queue)
(issue 15): a live-call list from either worker shows the calls of both, a hangup-all from one
ends the calls of both; requests a saturated worker would queue wait on the shared Redis
queue and are taken by the other worker; a worker killed with requests on that queue loses
none of them, and each is placed once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import needs_sipp
from tests.peers import plivo_api
from tests.peers.redis import RedisServer, needs_redis
from tests.peers.webhooks import WebhookReceiver
from tests.test_workers import (
    AUTH,
    CALLS,
    api,
    create_call,
    sipp_via_ports,
    start_workers,
    write_config,
)

receiver = plivo_api.receiver

pytestmark = [needs_redis, needs_sipp, pytest.mark.xdist_group("timing")]


WAIT = '<?xml version="1.0"?><Response><Wait length="300"/></Response>'


@pytest.fixture
async def shared_workers(tmp_path: Path, redis_server: RedisServer, postgres_url: str) -> Any:
    config = write_config(
        tmp_path, redis_server, shutdown_mode='"hangup"', store_url=f'"{postgres_url}"'
    )
    config.write_text(config.read_text() + "\n[limits]\ncps = 0\n")
    started = await start_workers(tmp_path, config)
    try:
        yield started
    finally:
        for w in started:
            w.stop()


async def live_uuids(base: str, status: str = "live") -> set[str]:
    code, body, _ = await api("GET", base, f"{CALLS}?status={status}")
    assert code == 200, body
    return set(body["calls"])


async def test_live_lists_and_hangup_all_cover_both_workers(
    shared_workers: Any, sipp: Any, receiver: WebhookReceiver
) -> None:
    a, b = shared_workers
    receiver.xml("/answer", WAIT)
    callee = sipp("uas_answer.xml", calls=4)
    for worker in (a, b, a, b):
        status, body = await create_call(worker.base, receiver, callee.uri)
        assert status in (200, 201), body
    answers = await receiver.wait_for(lambda h: h.path == "/answer", count=4, timeout=20)
    uuids = {h.params["CallUUID"] for h in answers}
    assert sipp_via_ports(callee) == {a.sip_port, b.sip_port}
    assert await live_uuids(a.base) == uuids
    assert await live_uuids(b.base) == uuids
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{a.base}/v0.1/HangupAllCalls/", data={}, headers={"Authorization": AUTH}
        ) as resp:
            body = await resp.json(content_type=None)
    assert resp.status == 200 and body["Success"] is True, body
    hangups = await receiver.wait_for(lambda h: h.path == "/hangup", count=4, timeout=15)
    assert {h.params["CallUUID"] for h in hangups} == uuids
    await asyncio.to_thread(callee.assert_ok, 10)
    assert await live_uuids(a.base) == set() and await live_uuids(b.base) == set()
    await asyncio.sleep(0.3)
    assert len(receiver.of("/hangup")) == 4


def limited_config(tmp_path: Path, redis: RedisServer, postgres_url: str, per_worker: int) -> Path:
    """Both workers at most ``per_worker`` calls each: more wait on the shared queue."""
    config = write_config(tmp_path, redis, shutdown_mode='"hangup"', store_url=f'"{postgres_url}"')
    config.write_text(  # the account's own limit (shared by the workers) is not the one hit
        config.read_text()
        + f"max_concurrent = 100\n[limits]\ncps = 0\nmax_concurrent = {per_worker}\n"
    )
    return config


async def test_requests_a_full_worker_would_queue_are_taken_by_the_other(
    tmp_path: Path,
    redis_server: RedisServer,
    postgres_url: str,
    sipp: Any,
    receiver: WebhookReceiver,
) -> None:
    receiver.xml("/answer", WAIT)
    callee = sipp("uas_answer.xml", calls=3)
    a, b = await start_workers(tmp_path, limited_config(tmp_path, redis_server, postgres_url, 1))
    try:
        created = []
        for _ in range(3):  # all three to A, which has room for one
            status, body = await create_call(a.base, receiver, callee.uri)
            assert status in (200, 201), body
            created.append(body["request_uuid"])
        answers = await receiver.wait_for(lambda h: h.path == "/answer", count=2, timeout=20)
        assert sipp_via_ports(callee) == {a.sip_port, b.sip_port}  # B took the second
        live = {h.params["CallUUID"] for h in answers}
        assert await live_uuids(a.base) == live and await live_uuids(b.base) == live
        # The third waits on the shared queue: listed as queued by both workers.
        assert len(await live_uuids(b.base, "queued")) == 1
        assert await live_uuids(a.base, "queued") == await live_uuids(b.base, "queued")
        # A slot frees (on A, asked through B): the waiting request is placed.
        first = next(h.params["CallUUID"] for h in answers if h.params["RequestUUID"] == created[0])
        code, _, _ = await api("DELETE", b.base, f"{CALLS}{first}/")
        assert code == 204
        answers = await receiver.wait_for(lambda h: h.path == "/answer", count=3, timeout=20)
        assert {h.params["RequestUUID"] for h in answers} == set(created)
        assert await live_uuids(a.base, "queued") == set()
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{b.base}/v0.1/HangupAllCalls/", data={}, headers={"Authorization": AUTH}
            ) as resp:
                assert resp.status == 200
        hangups = await receiver.wait_for(lambda h: h.path == "/hangup", count=3, timeout=15)
        assert len({h.params["CallUUID"] for h in hangups}) == 3
        await asyncio.to_thread(callee.assert_ok, 10)
    finally:
        for w in (a, b):
            w.stop()


async def test_a_queued_request_is_cancelled_from_either_worker(
    tmp_path: Path,
    redis_server: RedisServer,
    postgres_url: str,
    sipp: Any,
    receiver: WebhookReceiver,
) -> None:
    receiver.xml("/answer", WAIT)
    callee = sipp("uas_answer.xml", calls=2)
    a, b = await start_workers(tmp_path, limited_config(tmp_path, redis_server, postgres_url, 1))
    try:
        for _ in range(2):
            status, body = await create_call(a.base, receiver, callee.uri)
            assert status in (200, 201), body
        await receiver.wait_for(lambda h: h.path == "/answer", count=2, timeout=20)
        status, body = await create_call(a.base, receiver, callee.uri)
        assert status in (200, 201), body
        waiting = body["request_uuid"]
        # B holds a call and has no room: the Plivo DELETE of the request still finds it.
        code, _, _ = await api(
            "DELETE", b.base, f"/v1/Account/{plivo_api.AUTH_ID}/Request/{waiting}/"
        )
        assert code == 204
        [hangup] = await receiver.wait_for(
            lambda h: h.path == "/hangup" and h.params.get("RequestUUID") == waiting, timeout=10
        )
        assert hangup.params["HangupCause"] == "ORIGINATOR_CANCEL", hangup.params
        assert await live_uuids(a.base, "queued") == set()
    finally:
        for w in (a, b):
            w.stop()


async def test_kill_9_of_a_worker_loses_no_queued_request(
    tmp_path: Path,
    redis_server: RedisServer,
    postgres_url: str,
    sipp: Any,
    receiver: WebhookReceiver,
) -> None:
    receiver.xml("/answer", '<?xml version="1.0"?><Response><Wait length="3"/></Response>')
    callee = sipp("uas_answer.xml", calls=8)
    a, b = await start_workers(tmp_path, limited_config(tmp_path, redis_server, postgres_url, 2))
    try:
        created = set()
        for _ in range(8):  # 2 start on A, 2 on B, 4 wait on the shared queue
            status, body = await create_call(a.base, receiver, callee.uri)
            assert status in (200, 201), body
            created.add(body["request_uuid"])
        await receiver.wait_for(lambda h: h.path == "/answer", count=4, timeout=20)
        a.proc.kill()
        a.proc.wait(10)
        answers = await receiver.wait_for(lambda h: h.path == "/answer", count=8, timeout=60)
        assert {h.params["RequestUUID"] for h in answers} == created
        await asyncio.sleep(1.0)
        placed = [h.params["CallUUID"] for h in receiver.of("/answer")]
        assert len(placed) == len(set(placed)) == 8  # each placed exactly once
    finally:
        for w in (a, b):
            w.stop()
