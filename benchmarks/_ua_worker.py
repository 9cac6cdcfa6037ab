"""The softswitch side of the benchmarks: one process running the embedded
:class:`softswitch.ua.UserAgent`, reporting JSON lines on stdout (see :func:`_common.emit`).

``setup``: place calls at a fixed rate (INVITE -> 200 -> ACK, hold, BYE) and report
failures, setup latency and CPU seconds per call.
``hold``: ramp to each concurrency level in turn, keep every call up with 20 ms G.711 RTP
both ways (the UAS echoes), and report media-clock lateness, packets, CPU % and RSS.

    python -m benchmarks._ua_worker setup --target sip:bench@127.0.0.1:5080 --rate 100 --count 500
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import socket
import sys
import time
from typing import Any

from benchmarks._common import emit, percentile, raise_nofile, rss_bytes, self_cpu
from media.engine import LATENESS_WINDOW, MediaConfig
from sip import causes
from softswitch.ua import UserAgent, UserAgentConfig

PROGRESS_EVERY = 0.5


def _media_config(args: argparse.Namespace) -> MediaConfig:
    if args.media == "light":
        # Signalling benchmark: ports, SDP offer/answer and a stream per call as usual, but
        # no packets are generated (sipp's uac sends none either).
        return MediaConfig(bind_host="127.0.0.1", port_min=args.rtp_min, port_max=args.rtp_max,
                           silence="none", inband_dtmf_detect=False)
    return MediaConfig(bind_host="127.0.0.1", port_min=args.rtp_min, port_max=args.rtp_max)


async def _start_ua(args: argparse.Namespace) -> UserAgent:
    ua = UserAgent(UserAgentConfig(host="127.0.0.1", port=0, transports=("udp",),
                                   media=_media_config(args), session_expires=0))
    await ua.start()
    if args.sip_rcvbuf and ua.udp is not None and ua.udp.transport is not None:
        sock = ua.udp.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.sip_rcvbuf)
    return ua


def udp_drops(port: int) -> int:
    """Datagrams the kernel dropped on our UDP socket bound to ``port`` (receive buffer
    full: the loop did not read in time), from /proc/net/udp's last column."""
    want = f":{port:04X}"
    with contextlib.suppress(OSError):
        with open("/proc/net/udp") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[1].endswith(want):
                    return int(fields[-1])
    return 0


class LoopLag:
    """How late a 10 ms heartbeat runs: event-loop stalls (GC pauses, long callbacks, CPU
    starvation) show here before they show as retransmissions or failed calls."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + 0.010
            await asyncio.sleep(0.010)
            self.samples.append(max(0.0, loop.time() - due))

    def stop(self) -> dict[str, float]:
        if self._task is not None:
            self._task.cancel()
        return {"loop_lag_p99_ms": percentile(self.samples, 99) * 1000,
                "loop_lag_max_ms": max(self.samples, default=0.0) * 1000}


def _gc_stats() -> dict[str, Any]:
    return {"gc_collections": [g["collections"] for g in gc.get_stats()]}


# ------------------------------------------------------------------------------ setup rate


async def run_setup(args: argparse.Namespace) -> dict[str, Any]:
    ua = await _start_ua(args)
    loop = asyncio.get_running_loop()
    counts = {"launched": 0, "answered": 0, "ok": 0, "failed": 0, "dial_errors": 0}
    setup_times: list[float] = []
    failures: dict[str, int] = {}

    def fail(reason: str) -> None:
        counts["failed"] += 1
        failures[reason] = failures.get(reason, 0) + 1

    async def one_call() -> None:
        t0 = loop.time()
        try:
            call = await ua.dial(args.target, from_user="1000")
        except Exception as exc:  # port pool exhausted, ...
            counts["dial_errors"] += 1
            fail(type(exc).__name__)
            return
        try:
            answered = await asyncio.wait_for(call.wait_answered(), args.answer_timeout)
        except TimeoutError:
            answered = False
        if not answered:
            await call.hangup()
            end = call.terminated
            fail(f"not answered ({end.cause if end else 'timeout'})")
            return
        counts["answered"] += 1
        setup_times.append(loop.time() - t0)
        if args.hold > 0:
            await asyncio.sleep(args.hold)
        await call.hangup()
        try:
            end = await asyncio.wait_for(call.wait_terminated(), 5)
        except TimeoutError:
            fail("no Terminated")
            return
        if end.cause != causes.NORMAL_CLEARING or end.hangup_source != "caller":
            fail(f"ended {end.cause}/{end.hangup_source}")
            return
        counts["ok"] += 1

    gc.collect()
    lag = LoopLag()
    lag.start()
    cpu0, t_start = self_cpu(), loop.time()
    deadline = t_start + args.max_seconds
    tasks: set[asyncio.Task[None]] = set()
    next_report = t_start + PROGRESS_EVERY
    max_lag = 0.0
    i = 0
    while i < args.count:
        now = loop.time()
        if now > deadline:
            break
        # Launch every call that is due (a busy loop falls behind and catches up in bursts;
        # the lag is reported and judged by the orchestrator).
        while i < args.count and t_start + i / args.rate <= now:
            max_lag = max(max_lag, now - (t_start + i / args.rate))
            task = loop.create_task(one_call())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
            counts["launched"] += 1
        if now >= next_report:
            emit("progress", **counts, elapsed=now - t_start)
            next_report = now + PROGRESS_EVERY
        if i < args.count:
            await asyncio.sleep(max(0.0, t_start + i / args.rate - loop.time()))
    t_last_launch = loop.time()
    while tasks and loop.time() < deadline + args.hold + args.answer_timeout + 10:
        await asyncio.sleep(0.1)
        if loop.time() >= next_report:
            emit("progress", **counts, elapsed=loop.time() - t_start)
            next_report = loop.time() + PROGRESS_EVERY
    # Let the last BYE transactions complete (their 200s count as CPU of these calls).
    end_wait = loop.time() + 2.0
    while loop.time() < end_wait and ua.sip.endpoint.has_pending(("BYE",)):
        await asyncio.sleep(0.05)
    cpu = self_cpu() - cpu0
    wall = loop.time() - t_start
    lag_stats = lag.stop()
    unfinished = len(tasks)
    for task in list(tasks):
        task.cancel()
    stats = dict(ua.stats)
    drops = udp_drops(ua.local_port)
    rss = rss_bytes()
    await ua.close(grace=0.5)
    launched = counts["launched"]
    return {
        "peer": "softswitch",
        "rate": args.rate,
        "launched": launched,
        "answered": counts["answered"],
        "ok": counts["ok"],
        "failed": counts["failed"] + unfinished,
        "unfinished": unfinished,
        "failures": failures,
        "launch_seconds": t_last_launch - t_start,
        "achieved_rate": (launched - 1) / (t_last_launch - t_start) if launched > 1 and t_last_launch > t_start else float(launched),
        "max_launch_lag": max_lag,
        "wall": wall,
        "cpu": cpu,
        "cpu_per_call": cpu / launched if launched else 0.0,
        "setup_p50_ms": percentile(setup_times, 50) * 1000,
        "setup_p99_ms": percentile(setup_times, 99) * 1000,
        "sip_sent": stats.get("sent", 0),
        "sip_received": stats.get("responses_in", 0) + stats.get("requests_in", 0),
        # INVITE, ACK, BYE per answered call: the rest are retransmissions (or CANCELs).
        "sip_retransmissions": max(0, stats.get("sent", 0) - 3 * counts["answered"]
                                   - 2 * (launched - counts["answered"])),
        "rss": rss,
        "sip_socket_drops": drops,
        **lag_stats,
        **_gc_stats(),
    }


# ------------------------------------------------------------------------------ concurrency


def _lateness_window(engine: Any, first_tick: int) -> list[float]:
    """Lateness (s) of every tick since ``first_tick`` from the engine's ring buffer
    (private, but the benchmark must not mix the ramp-up into a level's figures)."""
    ring = engine._lateness
    last = engine._ticks
    first = max(first_tick, last - LATENESS_WINDOW)
    return [float(ring[k % LATENESS_WINDOW]) for k in range(first, last)]


def _media_totals(calls: list[Any]) -> dict[str, int]:
    totals = {"sent": 0, "received": 0, "lost": 0, "dropped": 0, "send_errors": 0}
    for call in calls:
        media = call.media
        if media is None or media.closed:
            continue
        stats = media.stats()  # (the fast path keeps its counts apart until asked)
        totals["sent"] += stats["packets_sent"]
        totals["received"] += stats["packets_received"]
        totals["lost"] += stats["lost"]
        totals["dropped"] += stats["packets_dropped"]
        totals["send_errors"] += stats["send_errors"]
    return totals


async def run_hold(args: argparse.Namespace) -> dict[str, Any]:
    ua = await _start_ua(args)
    engine = ua.media
    assert engine is not None
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0.5)
    gc.collect()
    rss_base = rss_bytes()
    levels_out: list[dict[str, Any]] = []
    calls: list[Any] = []
    failed = 0
    t_begin = loop.time()
    stop_reason = ""

    async def dial_one() -> Any:
        call = await ua.dial(args.target, from_user="1000")
        try:
            ok = await asyncio.wait_for(call.wait_answered(), args.answer_timeout)
        except TimeoutError:
            ok = False
        if not ok:
            await call.hangup()
            return None
        return call

    for level in args.levels:
        if loop.time() - t_begin > args.max_seconds:
            stop_reason = "max-seconds"
            break
        # Ramp to the level at the ramp rate.
        need = level - len(calls)
        pending: list[asyncio.Task[Any]] = []
        t0 = loop.time()
        for j in range(need):
            delay = t0 + j / args.ramp_rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(loop.create_task(dial_one()))
            if j % 50 == 0:
                emit("progress", level=level, phase="ramp", calls=len(calls) + j, elapsed=loop.time() - t_begin)
        results = await asyncio.gather(*pending, return_exceptions=True)
        new = [c for c in results if c is not None and not isinstance(c, BaseException)]
        failed += len(results) - len(new)
        calls.extend(new)
        calls = [c for c in calls if c.terminated is None]
        gc.collect()  # not inside the window: a full collection is a visible clock stall
        await asyncio.sleep(args.settle)
        # The measured window.
        first_tick = engine._ticks
        skipped0 = engine._skipped
        before = _media_totals(calls)
        cpu0, w0 = self_cpu(), loop.time()
        end = w0 + args.window
        while loop.time() < end:
            await asyncio.sleep(min(PROGRESS_EVERY, max(0.0, end - loop.time())))
            emit("progress", level=level, phase="measure", calls=len(calls), elapsed=loop.time() - t_begin)
        cpu, wall = self_cpu() - cpu0, loop.time() - w0
        after = _media_totals(calls)
        lateness = _lateness_window(engine, first_tick)
        alive = [c for c in calls if c.terminated is None]
        rss = rss_bytes()
        n = len(alive)
        skipped = engine._skipped - skipped0
        expected = (len(lateness) + skipped) * n
        sent = after["sent"] - before["sent"]
        received = after["received"] - before["received"]
        out = {
            "level": level,
            "calls": n,
            "failed_setups": failed,
            "ended_early": len(calls) - n,
            "window": wall,
            "ticks": len(lateness),
            "late_p50_ms": percentile(lateness, 50) * 1000,
            "late_p99_ms": percentile(lateness, 99) * 1000,
            "late_max_ms": max(lateness, default=0.0) * 1000,
            "skipped_ticks": skipped,
            "packets_expected": expected,
            "packets_sent": sent,
            "packets_received": received,
            # Not sent on time (skipped ticks) + not received back (socket overflow etc.).
            "tx_shortfall": skipped * n,
            "rx_lost": after["lost"] - before["lost"],
            "rx_missing": max(0, sent - received),
            "cpu_pct": 100.0 * cpu / wall if wall else 0.0,
            "rss": rss,
            "rss_per_call": (rss - rss_base) / n if n else 0.0,
        }
        levels_out.append(out)
        emit("level", **out)
        if n < level * 0.99:
            stop_reason = f"only {n} of {level} calls up"
            break
    for call in calls:
        with contextlib.suppress(Exception):
            await call.hangup()
    await asyncio.sleep(0.5)
    await ua.close(grace=1.0)
    return {"peer": "softswitch", "levels": levels_out, "rss_base": rss_base, "stop_reason": stop_reason}


# ------------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks._ua_worker")
    p.add_argument("mode", choices=("setup", "hold"))
    p.add_argument("--target", required=True)
    p.add_argument("--rtp-min", type=int, default=20000)
    p.add_argument("--rtp-max", type=int, default=29999)
    p.add_argument("--media", choices=("light", "full"), default="full")
    p.add_argument("--answer-timeout", type=float, default=10.0)
    p.add_argument("--max-seconds", type=float, default=120.0)
    p.add_argument("--profile", metavar="FILE", help="write cProfile stats of the run here")
    p.add_argument("--sip-rcvbuf", type=int, default=0, metavar="BYTES",
                   help="experiment: SO_RCVBUF of the SIP UDP socket (kernel default otherwise)")
    p.add_argument("--gc", choices=("default", "freeze", "off"), default="default",
                   help="experiment: gc.freeze() after start-up, or no cyclic GC at all")
    # setup
    p.add_argument("--rate", type=float, default=10.0)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--hold", type=float, default=1.0)
    # hold
    p.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[10])
    p.add_argument("--ramp-rate", type=float, default=200.0)
    p.add_argument("--window", type=float, default=10.0)
    p.add_argument("--settle", type=float, default=1.0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    raise_nofile()
    run = run_setup if args.mode == "setup" else run_hold
    if args.gc == "off":
        gc.disable()
    elif args.gc == "freeze":
        gc.freeze()
    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None:
        profiler.enable()
    try:
        result = asyncio.run(run(args))
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
    emit("result", **result, python=sys.version.split()[0], time=time.time())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
