"""cProfile of the two hot paths, so optimisation follows measurement:

* the SIP setup path: the embedded UserAgent placing calls at a fixed rate (light media);
* the media tick: N calls held with 20 ms RTP both ways.

Each runs in the worker process under ``cProfile``; the tables list the top functions by
own time and by cumulative time (profiling roughly doubles the CPU cost; the ranking is
what matters). The raw ``.prof`` files stay in the work directory (``--workdir``) for
``python -m pstats`` or snakeviz.

The setup path is also summed **by stage** (:func:`stages`): every function's own time goes
to the layer its file belongs to (message parsing, transactions, dialogs, the endpoint,
SDP, media, call control, API, store, webhooks, asyncio...), and the time of a built-in (a
regex match, ``str.split``, a socket call) to the layer of the function that called it, so
the stages add up to the whole profile and the next bottleneck shows without reading
profiles. ``python -m benchmarks.profile stages FILE.prof [--calls N]`` prints that table
for any profile (e.g. one of ``softswitch serve`` taken with ``python -m cProfile -o``).
"""

from __future__ import annotations

import argparse
import io
import pstats
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks import _common as common
from benchmarks import concurrency

WORKER = [sys.executable, "-m", "benchmarks._ua_worker"]
TOP = 25


def table(path: Path, sort: str, top: int = TOP) -> str:
    """The ``top`` rows of a cProfile dump sorted by ``sort`` (tottime or cumulative), with
    paths shortened to the repository or the standard library."""
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.strip_dirs().sort_stats(sort).print_stats(top)
    text = out.getvalue()
    start = text.find("   ncalls")
    return text[start:] if start >= 0 else text


# (path fragment, stage), first match wins: the stages of issue 14's breakdown.
STAGES: tuple[tuple[str, str], ...] = (
    ("/sip/message.py", "SIP message parse/serialize"),
    ("/sip/_parser.py", "SIP message parse/serialize"),
    ("/sip/_framer.py", "SIP message parse/serialize"),
    ("/sip/_message.py", "SIP message parse/serialize"),
    ("/sip/_abnf.py", "SIP message parse/serialize"),
    ("/sip/headers.py", "SIP message parse/serialize"),
    ("/sip/uri.py", "SIP message parse/serialize"),
    ("/sip/transaction.py", "SIP transactions + timers"),
    ("/sip/_timers.py", "SIP transactions + timers"),
    ("/sip/dialog.py", "SIP dialogs + INVITE sessions"),
    ("/sip/invite.py", "SIP dialogs + INVITE sessions"),
    ("/sip/invite_server.py", "SIP dialogs + INVITE sessions"),
    ("/sip/_session.py", "SIP dialogs + INVITE sessions"),
    ("/sip/auth.py", "SIP dialogs + INVITE sessions"),
    ("/sip/aio/", "SIP asyncio adapter (sockets, DNS)"),
    ("/sip/", "SIP endpoint (matching, stateless, policy)"),
    ("/media/sdp/", "SDP"),
    ("/media/", "media setup + engine"),
    ("/softswitch/api/", "API (HTTP, dialects)"),
    ("/softswitch/server.py", "API (HTTP, dialects)"),
    ("/aiohttp/", "API (HTTP, dialects)"),
    ("/multidict/", "API (HTTP, dialects)"),
    ("/yarl/", "API (HTTP, dialects)"),
    ("/softswitch/store", "store"),
    ("sqlite3", "store"),
    ("/softswitch/webhook", "webhooks"),
    ("/softswitch/signing.py", "webhooks"),
    ("/softswitch/", "call control (legs, CallManager, app)"),
    ("/benchmarks/", "benchmark driver"),
    ("/asyncio/", "asyncio + selectors"),
    ("selectors.py", "asyncio + selectors"),
    ("/socket.py", "asyncio + selectors"),
)


#: Built-ins that wait rather than work: cProfile's clock is wall time, so the event loop's
#: sleep in epoll would otherwise count as CPU.
IDLE = ("of 'select.epoll' objects", "of 'select.poll' objects", "select.select", "time.sleep")
IDLE_STAGE = "idle (waiting in epoll/sleep; not CPU)"


def _stage(key: tuple[str, int, str]) -> str | None:
    """The stage of a profiled function, None for a built-in (``~``)."""
    filename = key[0]
    if filename == "~" or filename.startswith("<"):
        if any(idle in key[2] for idle in IDLE):
            return IDLE_STAGE
        return None
    for fragment, stage in STAGES:
        if fragment in filename:
            return stage
    return "other Python (stdlib, libraries)"


def stages(path: Path) -> dict[str, float]:
    """Seconds of own time per stage in a cProfile dump; a built-in's time goes to the stage
    of its callers (as each called it), so the stages add up to the profile's total."""
    raw = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    out: dict[str, float] = defaultdict(float)
    for key, (_cc, _nc, tt, _ct, callers) in raw.items():
        stage = _stage(key)
        if stage is not None:
            out[stage] += tt
            continue
        if not callers:
            out["other C (no Python caller)"] += tt
            continue
        for caller, value in callers.items():
            out[_stage(caller) or "other C (no Python caller)"] += value[2]
    return dict(out)


def stages_table(seconds: dict[str, float], calls: int) -> str:
    """Markdown: ms per call and share of the busy time, per stage, largest first (the idle
    wait is shown last, outside the total)."""
    busy = {k: v for k, v in seconds.items() if k != IDLE_STAGE}
    total = sum(busy.values()) or 1.0
    n = max(1, calls)
    lines = ["| stage | ms per call (under cProfile) | share |", "|---|---:|---:|"]
    for stage, sec in sorted(busy.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {stage} | {sec / n * 1000:.3f} | {sec / total:.1%} |")
    lines.append(f"| **total (busy)** | **{total / n * 1000:.3f}** | 100% |")
    if IDLE_STAGE in seconds:
        lines.append(f"| {IDLE_STAGE} | {seconds[IDLE_STAGE] / n * 1000:.3f} | – |")
    return "\n".join(lines)


def run(args: argparse.Namespace, workdir: Path, budget: common.Budget) -> dict[str, Any]:
    rate = getattr(args, "profile_rate", None) or (20.0 if args.quick else 300.0)
    seconds = getattr(args, "profile_seconds", None) or (1.0 if args.quick else 6.0)
    level = getattr(args, "profile_level", None) or (10 if args.quick else 1000)
    out: dict[str, Any] = {"rate": rate, "seconds": seconds, "level": level, "tables": {}, "files": {}}
    setup_prof = workdir / "setup.prof"
    hold_prof = workdir / "hold.prof"
    with common.uas(workdir / "profile") as server:
        lo, hi = common.free_range(2 * int(rate * (args.hold + 3)) + 64)
        count = int(rate * seconds)
        cmd = WORKER + ["setup", "--target", server.uri, "--media", args.setup_media,
                        "--rate", f"{rate:g}", "--count", str(count), "--hold", f"{args.hold:g}",
                        "--rtp-min", str(lo), "--rtp-max", str(hi), "--profile", str(setup_prof),
                        "--sip-rcvbuf", str(args.sip_rcvbuf)]
        with common.Progress(not args.no_progress, count, f"profile setup {rate:g}/s") as bar:
            run_ = common.run_worker(cmd, timeout=seconds * 6 + 60, cwd=workdir,
                                     on_progress=lambda m: bar.update_to(m.get("launched", 0)))
        out["setup_result"] = run_.result
        if setup_prof.exists():
            out["files"]["setup"] = str(setup_prof)
            out["tables"][f"Setup path, {rate:g} calls/s for {seconds:g} s, by own time"] = table(setup_prof, "tottime")
            out["tables"][f"Setup path, {rate:g} calls/s for {seconds:g} s, by cumulative time"] = table(setup_prof, "cumulative")
            calls = int((run_.result or {}).get("launched", 0)) or count
            out["stages"] = stages(setup_prof)
            out["tables"][f"Setup path, {rate:g} calls/s for {seconds:g} s ({calls} calls), CPU by stage"] = (
                stages_table(out["stages"], calls))
        hold_args = argparse.Namespace(**{**vars(args), "window": seconds})
        res = concurrency._hold("softswitch", server, [level], hold_args, workdir, budget,
                                profile=str(hold_prof))
        out["hold_result"] = res
        if hold_prof.exists():
            out["files"]["hold"] = str(hold_prof)
            out["tables"][f"Media, {level} calls held, by own time"] = table(hold_prof, "tottime")
            out["tables"][f"Media, {level} calls held, by cumulative time"] = table(hold_prof, "cumulative")
    return out


def main(argv: list[str]) -> int:
    """``python -m benchmarks.profile stages FILE.prof [--calls N]``: the stage table of a
    cProfile dump."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    p.add_argument("what", choices=("stages",))
    p.add_argument("file", type=Path)
    p.add_argument("--calls", type=int, default=1, help="divide by this many calls (1)")
    args = p.parse_args(argv)
    print(stages_table(stages(args.file), args.calls))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
