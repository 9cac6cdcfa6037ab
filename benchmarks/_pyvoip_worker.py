"""The Python peer: pyVoIP 1.6.8 placing the same calls at the same rates against the same
UAS, in its own process (pyVoIP is GPL: only this separate worker imports it).

pyVoIP must REGISTER before it may call; the UAS scenario answers REGISTER with 200.
Its ``VoIPPhone.call()`` blocks until the 100/180 arrives, and each answered call runs two
RTP threads that send 20 ms packets (it cannot be told not to), so its calls always carry
media. A monitor thread ages calls: hang up after ``--hold``, fail after ``--answer-timeout``.

    python -m benchmarks._pyvoip_worker setup --uas-port 5080 --rate 10 --count 50
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import sys
import threading
import time
from typing import Any

from benchmarks._common import emit, free_port, percentile, raise_nofile, rss_bytes, self_cpu

PROGRESS_EVERY = 0.5


def _phone(args: argparse.Namespace) -> Any:
    from pyVoIP.VoIP import VoIPPhone  # GPL: imported here only, in this separate process

    phone = VoIPPhone("127.0.0.1", args.uas_port, "bench", "bench", myIP="127.0.0.1",
                      sipPort=free_port(), rtpPortLow=args.rtp_min, rtpPortHigh=args.rtp_max)
    phone.start()
    return phone


class _Tracker:
    """Calls in flight; the monitor thread answers for their timing."""

    def __init__(self, hold: float, answer_timeout: float) -> None:
        from pyVoIP.VoIP import CallState

        self.answered_state = CallState.ANSWERED
        self.hold = hold
        self.answer_timeout = answer_timeout
        self.lock = threading.Lock()
        self.active: list[list[Any]] = []  # [call, dialled_at, answered_at]
        self.counts = {"launched": 0, "answered": 0, "ok": 0, "failed": 0}
        self.setup_times: list[float] = []
        self.hangup_at_hold = hold >= 0
        self.running = True

    def add(self, call: Any, t0: float) -> None:
        with self.lock:
            self.active.append([call, t0, None])

    def sweep(self) -> None:
        now = time.monotonic()
        with self.lock:
            keep = []
            for entry in self.active:
                call, t0, answered_at = entry
                if answered_at is None:
                    if call.state == self.answered_state:
                        entry[2] = answered_at = now
                        self.counts["answered"] += 1
                        self.setup_times.append(now - t0)
                    elif now - t0 > self.answer_timeout:
                        self.counts["failed"] += 1
                        continue
                if answered_at is not None and self.hangup_at_hold and now - answered_at >= self.hold:
                    try:
                        call.hangup()
                        self.counts["ok"] += 1
                    except Exception:
                        self.counts["failed"] += 1
                    continue
                keep.append(entry)
            self.active = keep

    def run(self) -> None:
        while self.running:
            self.sweep()
            time.sleep(0.005)


def run_setup(args: argparse.Namespace) -> dict[str, Any]:
    phone = _phone(args)
    tracker = _Tracker(args.hold, args.answer_timeout)
    monitor = threading.Thread(target=tracker.run, daemon=True)
    monitor.start()
    gc.collect()
    cpu0, t_start = self_cpu(), time.monotonic()
    deadline = t_start + args.max_seconds
    next_report = t_start + PROGRESS_EVERY
    max_lag = 0.0
    dial_errors = 0
    i = 0
    while i < args.count and time.monotonic() < deadline:
        due = t_start + i / args.rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
            now = time.monotonic()
        max_lag = max(max_lag, now - due)
        try:
            call = phone.call("bench")
            tracker.add(call, now)
        except Exception:
            dial_errors += 1
            with tracker.lock:
                tracker.counts["failed"] += 1
        tracker.counts["launched"] += 1
        i += 1
        if now >= next_report:
            emit("progress", **tracker.counts, elapsed=now - t_start)
            next_report = now + PROGRESS_EVERY
    t_last = time.monotonic()
    end = time.monotonic() + args.hold + args.answer_timeout + 5
    while tracker.active and time.monotonic() < end:
        time.sleep(0.05)
        if time.monotonic() >= next_report:
            emit("progress", **tracker.counts, elapsed=time.monotonic() - t_start)
            next_report = time.monotonic() + PROGRESS_EVERY
    time.sleep(0.3)
    cpu = self_cpu() - cpu0
    wall = time.monotonic() - t_start
    tracker.running = False
    unfinished = len(tracker.active)
    rss = rss_bytes()
    launched = tracker.counts["launched"]
    with contextlib.suppress(Exception):
        phone.stop()
    return {
        "peer": "pyvoip",
        "rate": args.rate,
        "launched": launched,
        "answered": tracker.counts["answered"],
        "ok": tracker.counts["ok"],
        "failed": tracker.counts["failed"] + unfinished,
        "unfinished": unfinished,
        "dial_errors": dial_errors,
        "launch_seconds": t_last - t_start,
        "achieved_rate": (launched - 1) / (t_last - t_start) if launched > 1 and t_last > t_start else float(launched),
        "max_launch_lag": max_lag,
        "wall": wall,
        "cpu": cpu,
        "cpu_per_call": cpu / launched if launched else 0.0,
        "setup_p50_ms": percentile(tracker.setup_times, 50) * 1000,
        "setup_p99_ms": percentile(tracker.setup_times, 99) * 1000,
        "threads_peak": threading.active_count(),
        "rss": rss,
    }


def run_hold(args: argparse.Namespace) -> dict[str, Any]:
    """Hold each level of calls (pyVoIP sends and receives RTP on two threads per call);
    report CPU %, RSS per call and the RTP packets it actually sent and received."""
    phone = _phone(args)
    tracker = _Tracker(-1, args.answer_timeout)
    tracker.hangup_at_hold = False
    monitor = threading.Thread(target=tracker.run, daemon=True)
    monitor.start()
    time.sleep(0.5)
    gc.collect()
    rss_base = rss_bytes()
    t_begin = time.monotonic()
    levels_out = []
    stop_reason = ""
    for level in args.levels:
        if time.monotonic() - t_begin > args.max_seconds:
            stop_reason = "max-seconds"
            break
        need = level - len(tracker.active)
        t0 = time.monotonic()
        for j in range(need):
            delay = t0 + j / args.ramp_rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                tracker.add(phone.call("bench"), time.monotonic())
            except Exception:
                tracker.counts["failed"] += 1
            if j % 20 == 0:
                emit("progress", level=level, phase="ramp", calls=len(tracker.active), elapsed=time.monotonic() - t_begin)
        wait_until = time.monotonic() + args.answer_timeout
        while time.monotonic() < wait_until and any(e[2] is None for e in tracker.active):
            time.sleep(0.05)
        time.sleep(args.settle)
        up = [e[0] for e in tracker.active if e[2] is not None]

        def packets(calls: list[Any]) -> tuple[int, int]:
            sent = received = 0
            for call in calls:
                for client in getattr(call, "RTPClients", []):
                    sent += getattr(client, "outSequence", 0)
                    received += getattr(client, "inPacketCount", 0) if hasattr(client, "inPacketCount") else 0
            return sent, received

        s0, _ = packets(up)
        cpu0, w0 = self_cpu(), time.monotonic()
        end = w0 + args.window
        while time.monotonic() < end:
            time.sleep(min(PROGRESS_EVERY, max(0.0, end - time.monotonic())))
            emit("progress", level=level, phase="measure", calls=len(up), elapsed=time.monotonic() - t_begin)
        cpu, wall = self_cpu() - cpu0, time.monotonic() - w0
        s1, _ = packets(up)
        n = len(up)
        rss = rss_bytes()
        out = {
            "level": level,
            "calls": n,
            "failed_setups": tracker.counts["failed"],
            "window": wall,
            "packets_expected": int(round(wall / 0.020)) * n,
            "packets_sent": s1 - s0,
            "cpu_pct": 100.0 * cpu / wall if wall else 0.0,
            "rss": rss,
            "rss_per_call": (rss - rss_base) / n if n else 0.0,
            "threads": threading.active_count(),
        }
        levels_out.append(out)
        emit("level", **out)
        if n < level * 0.99:
            stop_reason = f"only {n} of {level} calls up"
            break
    tracker.running = False
    for entry in list(tracker.active):
        with contextlib.suppress(Exception):
            entry[0].hangup()
    time.sleep(0.3)
    with contextlib.suppress(Exception):
        phone.stop()
    return {"peer": "pyvoip", "levels": levels_out, "rss_base": rss_base, "stop_reason": stop_reason}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks._pyvoip_worker")
    p.add_argument("mode", choices=("setup", "hold"))
    p.add_argument("--uas-port", type=int, required=True)
    p.add_argument("--rtp-min", type=int, default=30000)
    p.add_argument("--rtp-max", type=int, default=31999)
    p.add_argument("--answer-timeout", type=float, default=10.0)
    p.add_argument("--max-seconds", type=float, default=120.0)
    p.add_argument("--rate", type=float, default=10.0)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--hold", type=float, default=1.0)
    p.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[10])
    p.add_argument("--ramp-rate", type=float, default=50.0)
    p.add_argument("--window", type=float, default=10.0)
    p.add_argument("--settle", type=float, default=1.0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    raise_nofile()
    logging.disable(logging.WARNING)
    result = run_setup(args) if args.mode == "setup" else run_hold(args)
    emit("result", **result, python=sys.version.split()[0], time=time.time())
    sys.stdout.flush()
    import os

    os._exit(0)  # pyVoIP's non-daemon Timer threads would keep the process alive


if __name__ == "__main__":
    raise SystemExit(main())
