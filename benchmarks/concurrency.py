"""Concurrency: hold N answered calls with 20 ms G.711 RTP both ways (the UAS echoes every
packet back) and measure, per level N, over a window after the ramp: media-clock lateness
p50/p99/max, skipped ticks (packets we did not send on time), packets lost on the way back,
CPU % of the process and resident memory per call.

pyVoIP is held at its own (smaller) levels: it runs two threads per call, and has no media
clock to measure, so only CPU %, memory per call and packets sent are compared.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from benchmarks import _common as common

WORKER = [sys.executable, "-m", "benchmarks._ua_worker"]
PYVOIP = [sys.executable, "-m", "benchmarks._pyvoip_worker"]


def _hold(peer: str, server: common.SippUas, levels: list[int], args: argparse.Namespace,
          workdir: Path, budget: common.Budget, profile: str | None = None) -> dict[str, Any]:
    top = max(levels)
    lo, hi = common.free_range(2 * top + 64)
    ramp = args.ramp_rate if peer == "softswitch" else min(args.ramp_rate, 20.0)
    est = sum(args.window + 2 for _ in levels) + top / ramp + 20
    timeout = min(budget.remaining() + 30, est * 3 + 60)
    if peer == "softswitch":
        cmd = WORKER + ["hold", "--target", server.uri, "--media", "full",
                        "--sip-rcvbuf", str(args.sip_rcvbuf)]
    else:
        cmd = PYVOIP + ["hold", "--uas-port", str(server.port)]
    cmd += ["--levels", ",".join(map(str, levels)), "--ramp-rate", f"{ramp:g}",
            "--window", f"{args.window:g}", "--rtp-min", str(lo), "--rtp-max", str(hi),
            "--max-seconds", f"{max(10.0, budget.remaining() - 10):g}"]
    if profile:
        cmd += ["--profile", profile]
    with common.Progress(not args.no_progress, top, f"hold {peer}") as bar:
        def on_progress(msg: dict[str, Any]) -> None:
            if msg.get("kind") == "level" and "late_p99_ms" not in msg:
                print(f"  {peer:10s} N={msg['level']:5d}: {msg['calls']} up, {msg['packets_sent']} of "
                      f"{msg['packets_expected']} packets sent, CPU {msg['cpu_pct']:.0f} %, "
                      f"{msg['rss_per_call'] / 1024:.1f} KiB/call", file=sys.stderr)
                return
            if msg.get("kind") == "level":
                print(f"  {peer:10s} N={msg['level']:5d}: {msg['calls']} up, lateness p50 "
                      f"{msg.get('late_p50_ms', 0):.2f} p99 {msg.get('late_p99_ms', 0):.2f} "
                      f"max {msg.get('late_max_ms', 0):.1f} ms, CPU {msg['cpu_pct']:.0f} %, "
                      f"{msg['rss_per_call'] / 1024:.1f} KiB/call", file=sys.stderr)
                return
            bar.set_description(f"hold {peer} N={msg.get('level')} {msg.get('phase', '')}")
            bar.update_to(msg.get("calls", 0))

        run = common.run_worker(cmd, timeout=timeout, on_progress=on_progress, cwd=workdir)
    result = dict(run.result) or {"error": f"worker exited {run.returncode}: {run.stderr[-500:]}"}
    result["process_cpu"] = run.cpu_total
    result["max_rss"] = run.max_rss
    return result


def run(args: argparse.Namespace, workdir: Path, budget: common.Budget) -> dict[str, Any]:
    out: dict[str, Any] = {"window": args.window, "ramp_rate": args.ramp_rate, "peers": {}}
    with common.uas(workdir / "concurrency") as server:
        if "softswitch" in args.peer_list:
            out["peers"]["softswitch"] = _hold("softswitch", server, args.levels, args, workdir, budget)
            out["uas_cpu"] = server.cpu()
        if "pyvoip" in args.peer_list and not budget.expired():
            out["peers"]["pyvoip"] = _hold("pyvoip", server, args.pyvoip_levels, args, workdir, budget)
    return out
