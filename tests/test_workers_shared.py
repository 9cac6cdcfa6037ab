"""Two workers sharing PostgreSQL (records) and Redis (ownership, control, the request queue)
(issue 15): a live-call list from either worker shows the calls of both, a hangup-all from one
ends the calls of both; requests a saturated worker would queue wait on the shared Redis
queue and are taken by the other worker; a worker killed with requests on that queue loses
none of them, and each is placed once."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import free_port, needs_sipp
from tests.peers import plivo_api
from tests.peers.redis import RedisServer, needs_redis
from tests.peers.webhooks import WebhookReceiver
from tests.test_workers import AUTH, CALLS, Serve, api, create_call, sipp_via_ports, write_config

receiver = plivo_api.receiver

pytestmark = [needs_redis, needs_sipp, pytest.mark.xdist_group("timing")]


WAIT = '<?xml version="1.0"?><Response><Wait length="300"/></Response>'


async def start_workers(tmp_path: Path, config: Path) -> list[Serve]:
    """Workers 0 and 1 of 2, each on an HTTP port of its own (the test picks the worker)."""
    sip_port = int(re.search(r"sip_port = (\d+)", config.read_text()).group(1))  # type: ignore[union-attr]
    started = []
    for index in (0, 1):
        port = free_port(socket.SOCK_STREAM)
        w = Serve(
            tmp_path,
            f"worker{index}",
            "--config",
            str(config),
            "--workers",
            "2",
            "--worker-index",
            str(index),
            "--http",
            f"127.0.0.1:{port}",
        )
        w.base = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
        w.sip_port = sip_port + index  # type: ignore[attr-defined]
        started.append(w)
    for w in started:
        await w.wait_for(r"SIP on 127\.0\.0\.1:\d+\n")
    return started


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
        assert status == 201, body
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
