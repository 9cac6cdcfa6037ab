"""softswitch.cluster against a real redis-server (tests/peers/redis.py): the shared limits,
the request queue's hand-over from a dead worker, ownership and control forwarding."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable

import pytest

from softswitch.cluster import Cluster, ControlTimeout, RequestQueue, Slot
from tests.peers.redis import RedisServer, needs_redis

pytestmark = needs_redis


@pytest.fixture
async def workers(redis_server: RedisServer) -> AsyncIterator[Callable[..., Cluster]]:
    started: list[Cluster] = []

    async def start(worker_id: str, **kw: float) -> Cluster:
        c = Cluster(redis_server.url, worker_id, **kw)
        await c.start()
        started.append(c)
        return c

    yield start  # type: ignore[misc]
    for c in started:
        await c.close()


async def test_cps_bucket_holds_across_workers(workers) -> None:
    a, b = await workers("w0"), await workers("w1")
    slot = [Slot("account:A", cps=4.0, max_concurrent=-1)]
    # One second's burst (4 tokens) shared by both workers, then the rate.
    waits = [await (a if i % 2 else b).take(slot, [f"c{i}"]) for i in range(4)]
    assert waits == [0.0] * 4
    wait = await a.take(slot, ["c4"])
    assert 0.15 < wait <= 0.25
    await asyncio.sleep(wait)
    assert await b.take(slot, ["c4"]) == 0.0


async def test_concurrency_slots_and_their_lease(workers) -> None:
    a = await workers("w0", lease_s=0.6)
    b = await workers("w1", lease_s=0.6)
    slot = [Slot("account:A", cps=0, max_concurrent=2)]
    assert await a.take(slot, ["c1"]) == 0.0
    assert await b.take(slot, ["c2"]) == 0.0
    assert math.isinf(await a.take(slot, ["c3"]))
    assert await a.in_use("account:A") == 2
    await b.disown("c2")  # the call ended on w1: its slot is free at once
    assert await a.take(slot, ["c3"]) == 0.0
    # A worker that stops renewing (dead) loses its slots when the lease runs out.
    b._closed = True
    for task in b._tasks:
        task.cancel()
    assert await b.take([Slot("account:B", cps=0, max_concurrent=1)], ["d1"]) == 0.0
    assert math.isinf(await a.take([Slot("account:B", cps=0, max_concurrent=1)], ["d2"]))
    deadline = time.monotonic() + 5
    while math.isinf(await a.take([Slot("account:B", cps=0, max_concurrent=1)], ["d2"])):
        assert time.monotonic() < deadline, "the dead worker's slot never expired"
        await asyncio.sleep(0.1)
    # The live worker's slots were renewed meanwhile.
    assert await a.in_use("account:A") == 2


async def test_a_dead_workers_request_is_taken_by_another(workers) -> None:
    a = await workers("w0", lease_s=0.5)
    b = await workers("w1", lease_s=0.5)
    qa, qb = RequestQueue(a), RequestQueue(b)
    await qa.create()
    await qb.create()
    await qa.put({"n": 1})
    got = await qa.get(block_ms=500)
    assert [r for _, r in got] == [{"n": 1}]
    # w0 dies without acknowledging: w1 finds nothing new, then claims it once idle.
    assert await qb.pending() == 1
    deadline = time.monotonic() + 5
    taken: list = []
    while not taken:
        assert time.monotonic() < deadline
        taken = await qb.get(block_ms=100)
    assert [r for _, r in taken] == [{"n": 1}]
    await qb.ack(taken[0][0])
    assert await qb.pending() == 0
    assert await qa.get(block_ms=100) == []


async def test_ownership_and_control_reach_the_owner(workers) -> None:
    a, b = await workers("w0"), await workers("w1")
    seen: list[dict] = []

    async def handle(payload: dict) -> dict:
        seen.append(payload)
        return {"status": 204, "worker": "w0"}

    a.on_control = handle
    await a.own("call-1", "req-1")
    assert await b.owner("call-1") == "w0" and await b.owner("req-1") == "w0"
    assert await b.forward("w0", {"op": "hangup", "call": "call-1"}) == {
        "status": 204,
        "worker": "w0",
    }
    assert seen == [{"op": "hangup", "call": "call-1"}]
    await a.disown("call-1", "req-1")
    assert await b.owner("call-1") is None
    with pytest.raises(ControlTimeout):
        await a.forward("w-gone", {"op": "hangup"}, timeout=1)


async def test_a_call_holds_its_account_and_gateway_slots_apart(workers) -> None:
    a, b = await workers("w0"), await workers("w1")
    account = [Slot("account:A", cps=0, max_concurrent=10)]
    gateway = [Slot("gateway:trunk", cps=0, max_concurrent=1)]
    assert await a.take(account, ["c1"]) == 0.0
    assert await a.take(gateway, ["c1"]) == 0.0
    assert a.owned["c1"] == ("account:A", "gateway:trunk")
    assert math.isinf(await b.take(gateway, ["c2"]))  # the trunk is full across workers
    await a.release("gateway:trunk", ["c1"])  # the attempt failed over: the trunk slot only
    assert a.owned["c1"] == ("account:A",)
    assert await b.take(gateway, ["c2"]) == 0.0
    assert await a.in_use("account:A") == 1
    await a.disown("c1")
    assert await a.in_use("account:A") == 0
