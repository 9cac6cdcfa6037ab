"""What the store costs per call: wall time of one call record's lifecycle in the store, as the
server writes it, SQLite against PostgreSQL (issue 15).

One lifecycle is what one answered outbound call with ring, answer and hangup callbacks
writes: the record (insert, ringing, answered, media stats merged into ``extra``, final
fields), its SIP dialog (saved at the answer, deleted at the end), and three webhook
deliveries (the ring callback, the answer document's fetch, the hangup callback), each stored,
its attempt logged and finished: 16 statements, as the event loop runs them (synchronously).
The figures are the event loop's time blocked per call (wall time: on a loaded machine mostly
waiting for the database process to be scheduled) and this process's CPU time per call.

Engines: SQLite in a temp file (WAL, ``synchronous=NORMAL``: the embedded default); a
throw-away PostgreSQL 15 cluster started here (``initdb`` under a temp dir, fsync on, TCP on
127.0.0.1, the server's defaults but ``shared_buffers=32MB``), once with the default
``synchronous_commit=on`` (each commit waits for its WAL flush) and once with
``synchronous_commit=off`` (a ``store_url`` option; see ``softswitch/store_pg.py``).

    python -m benchmarks.store [--calls 2000] [--engines sqlite,pg,pg-async-commit] [--per-turn 1,20]

Each engine runs three ways: every write committed at once (``batch_writes=False``), and
batched per event-loop turn with 1 and with 20 calls' steps in each turn (``--per-turn``): the
writes a turn makes go in one transaction at the next turn (PostgreSQL: one round trip,
pipeline mode); ``add_delivery`` (its id is needed at once) stays immediate.

Bounded: ``--calls`` <= 20000.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from softswitch.store import SqlStore, format_time, open_store  # noqa: E402

ACC = "MAAAAAAAAAAAAAAAAAAA"
STATEMENTS = 16
DIALOG = {
    "call_id": "x@127.0.0.1",
    "local_tag": "a",
    "remote_tag": "b",
    "local_seq": 1,
    "route_set": [],
}


def steps(store: SqlStore, n: int) -> list[Callable[[], None]]:
    """One call's writes (see the module docstring), as the loop turns they happen in."""
    uuid = f"call-{n}"
    now = format_time()

    def callback(event: str, kind: str = "post") -> Callable[[], None]:
        def post() -> None:
            d = store.add_delivery(
                call_uuid=uuid, event=event, url="http://127.0.0.1/cb", method="POST",
                params={"CallUUID": uuid, "Event": event}, headers={"X-Sig": "s"}, kind=kind,
            )  # fmt: skip
            store.record_attempt(d, 1, status=200, error=None, duration_ms=1.0)
            store.finish_delivery(d, "delivered")

        return post

    return [
        lambda: store.insert_call(
            {
                "call_uuid": uuid,
                "request_uuid": f"req-{n}",
                "account_id": ACC,
                "call_status": "queued",
                "from_number": "1000",
                "to_number": "2000",
                "answer_url": "http://127.0.0.1/answer",
                "dialect": "plivo",
                "params": {"from": "1000", "to": "2000"},
            }
        ),  # fmt: skip
        lambda: store.update_call(uuid, call_status="ringing", ring_time=now, sip_status=180),
        callback("ring"),
        lambda: store.update_call(uuid, call_status="in-progress", answer_time=now, sip_status=200),
        callback("answer", kind="fetch"),
        lambda: store.save_dialog(uuid, DIALOG),
        lambda: store.update_call(uuid, extra={"media": {"rx_packets": 250, "tx_packets": 250}}),
        lambda: store.update_call(
            uuid,
            call_status="completed",
            end_time=now,
            call_duration=5,
            bill_duration=5,
            hangup_cause_name="NORMAL_CLEARING",
            hangup_cause_code=4000,
            hangup_source="Callee",
        ),  # fmt: skip
        lambda: store.delete_dialog(uuid),
        callback("hangup"),
    ]


async def run_calls(store: SqlStore, first: int, calls: int, per_turn: int) -> list[float]:
    """``calls`` lifecycles, ``per_turn`` calls at a time: each step of those calls in one loop
    turn (the writes of a turn are what a batch can join). Returns seconds per group."""
    times = []
    for group in range(first, first + calls, per_turn):
        t0 = time.perf_counter()
        plans = [steps(store, n) for n in range(group, min(group + per_turn, first + calls))]
        for k in range(len(plans[0])):
            for plan in plans:
                plan[k]()
            await asyncio.sleep(0)  # the next turn: batched writes are flushed
        store.flush()
        times.append((time.perf_counter() - t0) / len(plans))
    return times


_runs = itertools.count()


def measure(make: Callable[[], SqlStore], calls: int, per_turn: int) -> dict[str, float]:
    store = make()
    base = next(_runs) * 1_000_000  # call uuids new to the database in every run
    try:
        warm = min(200, calls)
        asyncio.run(run_calls(store, base + 500_000, warm, per_turn))  # prepared statements
        start, cpu0 = time.perf_counter(), time.process_time()
        samples = asyncio.run(run_calls(store, base, calls, per_turn))
        total, cpu = time.perf_counter() - start, time.process_time() - cpu0
    finally:
        store.close()
    samples.sort()
    return {
        "mean_us": total / calls * 1e6,
        "cpu_us": cpu / calls * 1e6,
        "median_us": statistics.median(samples) * 1e6,
        "p99_us": samples[max(0, int(len(samples) * 0.99) - 1)] * 1e6,
        "per_statement_us": total / calls / STATEMENTS * 1e6,
        "calls_per_s": calls / total,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--engines", default="sqlite,pg,pg-async-commit")
    p.add_argument("--per-turn", default="1,20", help="calls whose steps share a loop turn")
    args = p.parse_args(argv)
    calls = max(1, min(args.calls, 20000))
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    per_turns = [max(1, min(int(x), 500)) for x in args.per_turn.split(",") if x.strip()]
    results: dict[str, dict[str, float]] = {}

    def run(name: str, url: str) -> None:
        # every write its own commit, as before batching; then batched per loop turn
        results[f"{name} | each write committed | 1"] = measure(
            lambda: open_store(url, batch_writes=False), calls, 1
        )
        for k in per_turns:
            results[f"{name} | batched per turn | {k}"] = measure(
                lambda: open_store(url, batch_writes=True), calls, k
            )

    with tempfile.TemporaryDirectory(prefix="softswitch-store-bench-") as tmp:
        if "sqlite" in engines:
            run("SQLite (WAL, synchronous=NORMAL)", f"sqlite:///{tmp}/calls.db")
        pg = [e for e in engines if e.startswith("pg")]
        if pg:
            from tests.peers.postgres import PostgresCluster

            with PostgresCluster(fsync=True) as cluster:
                if "pg" in pg:
                    run("PostgreSQL 15, TCP loopback", cluster.create_database())
                if "pg-async-commit" in pg:
                    off = "?options=" + quote("-c synchronous_commit=off")
                    run("PostgreSQL 15, synchronous_commit=off", cluster.create_database() + off)
    print(f"Store cost of one call's lifecycle ({STATEMENTS} statements), {calls} calls\n")
    print(
        "| engine | writes | calls per turn | loop blocked µs per call (mean) | median | p99 "
        "| our CPU µs per call | calls/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['mean_us']:.0f} | {r['median_us']:.0f} | {r['p99_us']:.0f} | "
            f"{r['cpu_us']:.0f} | {r['calls_per_s']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
