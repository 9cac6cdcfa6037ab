"""Call setup rate: ramp calls/s (INVITE -> 200 -> ACK, hold, BYE) for each peer against the
same sipp UAS, then re-run the best rate for ``--confirm-seconds`` to call it sustained.

A step is *sustained* when every call was answered and cleared (caller side: answered,
BYE sent and Terminated NORMAL_CLEARING; UAS side: no failed call), and the caller launched
its calls on schedule (the last one no later than 5 % + 0.25 s after it was due): a
caller that cannot keep up falls behind the rate rather than failing calls.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import _common as common

WORKER = [sys.executable, "-m", "benchmarks._ua_worker"]
PYVOIP = [sys.executable, "-m", "benchmarks._pyvoip_worker"]


def _verdict(result: dict[str, Any], rate: float, seconds: float, count: int) -> tuple[bool, str]:
    if result.get("error"):
        return False, str(result["error"])
    if result.get("launched", 0) < count:
        return False, f"launched {result.get('launched', 0)} of {count}"
    if result.get("failed", 0):
        return False, f"{result['failed']} failed {result.get('failures', '')}".strip()
    if result.get("uas_failed", 0):
        return False, f"UAS saw {result['uas_failed']} failed calls"
    if result.get("ok", 0) < count:
        return False, f"only {result.get('ok', 0)} of {count} cleared"
    due = (count - 1) / rate
    late = result.get("launch_seconds", 0.0) - due
    if late > 0.05 * seconds + 0.25:
        return False, f"fell behind: last call launched {late:.2f} s late"
    return True, "sustained"


def _run_sipp_caller(uas: common.SippUas, rate: float, count: int, hold: float, seconds: float,
                     workdir: Path, progress: common.Progress) -> dict[str, Any]:
    """sipp's built-in uac as the caller (the C++ ceiling); CPU from wait4."""
    stat = workdir / f"uac_{int(time.time() * 1000)}.csv"
    port = common.free_port()
    timeout = seconds * 3 + hold + 30
    args = ["sipp", "-sn", "uac", f"127.0.0.1:{uas.port}", "-s", "bench", "-i", "127.0.0.1",
            "-p", str(port), "-t", "u1", "-r", f"{rate:g}", "-m", str(count),
            "-d", str(int(hold * 1000)), "-l", str(max(1000, int(rate * (hold + 5)))),
            "-mi", "127.0.0.1", "-mp", str(common.free_port(pair=True)),
            "-nostdin", "-timeout", f"{int(timeout)}s", "-timeout_error",
            "-trace_stat", "-stf", str(stat), "-fd", "1", "-max_socket", "60000",
            "-buff_size", "4194304", "-trace_rtt", "-rtt_freq", str(count)]
    t0 = time.monotonic()
    proc = subprocess_popen(args, workdir)
    reaper = common.Reaped(proc)
    launched_at = None
    while reaper.poll() is None:
        time.sleep(0.25)
        c = common.SippCounters.from_stat(common._read_stat(stat))
        if launched_at is None and c.created >= count:
            launched_at = time.monotonic() - t0
        progress.update_to(c.created, ok=c.successful, failed=c.failed)
        if time.monotonic() - t0 > timeout + 5:
            proc.kill()
    reaper.wait()
    wall = time.monotonic() - t0
    c = common.SippCounters.from_stat(common._read_stat(stat))
    cpu = reaper.cpu
    # When each call got its 200 (ms since sipp started), from -trace_rtt: the spread from
    # the first to the last is how long launching took, give or take one setup time.
    answers = _rtt_dates(workdir, proc.pid)
    if len(answers) >= 2:
        launch = (max(answers) - min(answers)) / 1000.0
    else:
        launch = max(0.0, wall - hold - 0.3) if launched_at is None else launched_at
    return {
        "peer": "sipp",
        "rate": rate,
        "launched": c.created,
        "answered": c.successful,
        "ok": c.successful,
        "failed": c.failed + (count - c.created if proc.returncode not in (0, 1) else 0),
        "exit": proc.returncode,
        "launch_seconds": launch,
        "achieved_rate": (c.created - 1) / launch if launch > 0 and c.created > 1 else float(c.created),
        "wall": wall,
        "cpu": cpu,
        "cpu_per_call": cpu / c.created if c.created else 0.0,
        "sip_retransmissions": c.retransmissions,
        "rss": 0,
    }


def _rtt_dates(workdir: Path, pid: int) -> list[float]:
    dates: list[float] = []
    for path in workdir.glob(f"*_{pid}_rtt.csv"):
        for line in path.read_text().splitlines()[1:]:
            with contextlib.suppress(ValueError, IndexError):
                dates.append(float(line.split(";")[0]))
    return dates


def subprocess_popen(args: list[str], workdir: Path) -> Any:
    import subprocess

    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir)


def run_step(peer: str, uas: common.SippUas, rate: float, seconds: float, args: argparse.Namespace,
             workdir: Path, *, label: str = "") -> dict[str, Any]:
    count = max(2, int(round(rate * seconds)))
    hold = args.hold
    base = uas.counters()
    desc = f"setup {peer} {rate:g}/s{label}"
    answer_timeout = 5.0
    worker_timeout = seconds * 4 + hold + answer_timeout + 30
    rtp_pairs = int(rate * (hold + 3)) + 64  # calls up at once, with slack
    with common.Progress(not args.no_progress, count, desc) as bar:
        def on_progress(msg: dict[str, Any]) -> None:
            bar.update_to(msg.get("launched", 0), ok=msg.get("ok", 0), failed=msg.get("failed", 0))

        if peer == "sipp":
            result = _run_sipp_caller(uas, rate, count, hold, seconds, workdir, bar)
        else:
            lo, hi = common.free_range(min(2 * rtp_pairs + 2, 20000))
            if peer == "softswitch":
                cmd = WORKER + ["setup", "--target", uas.uri, "--media", args.setup_media,
                                "--sip-rcvbuf", str(args.sip_rcvbuf)]
            else:
                cmd = PYVOIP + ["setup", "--uas-port", str(uas.port)]
            cmd += ["--rate", f"{rate:g}", "--count", str(count), "--hold", f"{hold:g}",
                    "--answer-timeout", f"{answer_timeout:g}", "--rtp-min", str(lo),
                    "--rtp-max", str(hi), "--max-seconds", f"{seconds * 3 + 10:g}"]
            run = common.run_worker(cmd, timeout=worker_timeout, on_progress=on_progress, cwd=workdir)
            result = dict(run.result) or {"error": f"worker exited {run.returncode}: {run.stderr[-500:]}"}
            result["process_cpu"] = run.cpu_total
            result["max_rss"] = run.max_rss
    after = uas.settle(base, result.get("launched", count), timeout=hold + 8)
    result["uas_ok"] = after.successful - base.successful
    result["uas_failed"] = after.failed - base.failed
    result["uas_cpu_per_call"] = None
    result["count"] = count
    result["seconds"] = seconds
    ok, why = _verdict(result, rate, seconds, count)
    result["sustained"] = ok
    result["verdict"] = why
    mark = "ok " if ok else "NO "
    print(f"  {mark} {peer:10s} {rate:7g}/s x {seconds:g}s: {count} calls, "
          f"{result.get('ok', 0)} cleared, {result.get('failed', 0)} failed, "
          f"CPU {1000 * result.get('cpu_per_call', 0):.2f} ms/call, {why}", file=sys.stderr)
    return result


def run(args: argparse.Namespace, workdir: Path, budget: common.Budget) -> dict[str, Any]:
    """Ramp each peer through the same rates against one UAS; confirm the best."""
    out: dict[str, Any] = {"peers": {}, "rates": args.rates, "hold": args.hold,
                           "step_seconds": args.step_seconds,
                           "confirm_seconds": args.confirm_seconds, "setup_media": args.setup_media}
    with common.uas(workdir / "setup") as server:
        for peer in args.peer_list:
            steps: list[dict[str, Any]] = []
            best: float | None = None
            for rate in args.rates:
                if budget.expired():
                    break
                step = run_step(peer, server, rate, args.step_seconds, args, workdir)
                steps.append(step)
                if not step["sustained"]:
                    break
                best = rate
            confirmed = None
            if best is not None and args.confirm_seconds > 0:
                # Down the ramp until one rate holds for the whole confirmation: at most
                # three tries, so the default run stays under 10 minutes.
                candidates = [r for r in args.rates if r <= best][::-1][:3]
                for rate in candidates:
                    if budget.remaining() < args.confirm_seconds + 10:
                        break
                    step = run_step(peer, server, rate, args.confirm_seconds, args, workdir,
                                    label=" (confirm)")
                    step["confirm"] = True
                    steps.append(step)
                    if step["sustained"]:
                        confirmed = step
                        break
            out["peers"][peer] = {"steps": steps, "best_step_rate": best,
                                  "confirmed": confirmed}
    return out
