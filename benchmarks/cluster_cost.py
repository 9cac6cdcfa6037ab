"""What one call costs Redis with ``redis_url`` (``python -m benchmarks.cluster_cost``): the
per-call operations of :mod:`softswitch.cluster` (take a token and a slot, own call and
request uuid, disown), run ``--calls`` times by ``--clients`` concurrent clients against a
throw-away redis-server; prints calls/s and redis-server CPU per call, the figure that says
how many calls per second one Redis can carry for a cluster of workers."""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from pathlib import Path
from tempfile import TemporaryDirectory

from benchmarks import _common as common
from benchmarks.api import _Redis


async def _client(url: str, name: str, calls: int) -> None:
    from softswitch.cluster import Cluster, Slot

    cluster = Cluster(url, name)
    await cluster.start()
    slot = [Slot("account:bench", cps=0, max_concurrent=100000)]
    try:
        for _ in range(calls):
            call, request = str(uuid.uuid4()), str(uuid.uuid4())
            assert await cluster.take(slot, [call]) == 0.0
            await cluster.own(call, request)
            await cluster.disown(call, request)
    finally:
        await cluster.close()


async def _run(calls: int, clients: int, workdir: Path) -> None:
    redis = _Redis(workdir)
    try:
        cpu0 = common.proc_cpu(redis.proc.pid)
        t0 = time.perf_counter()
        await asyncio.gather(
            *(_client(redis.url, f"bench-{i}", calls // clients) for i in range(clients))
        )
        wall = time.perf_counter() - t0
        cpu = common.proc_cpu(redis.proc.pid) - cpu0
    finally:
        redis.stop()
    total = calls // clients * clients
    print(
        f"{total} calls by {clients} clients in {wall:.2f} s: {total / wall:.0f} calls/s; "
        f"redis-server CPU {cpu / total * 1e6:.0f} us/call (=> {total / cpu if cpu else float('inf'):.0f} calls/s per Redis core)"
    )


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cluster_cost")
    p.add_argument("--calls", type=int, default=20000)
    p.add_argument("--clients", type=int, default=4)
    args = p.parse_args()
    with TemporaryDirectory() as tmp:
        asyncio.run(_run(args.calls, args.clients, Path(tmp)))


if __name__ == "__main__":
    main()
