"""cProfile of the two hot paths, so optimisation follows measurement:

* the SIP setup path: the embedded UserAgent placing calls at a fixed rate (light media);
* the media tick: N calls held with 20 ms RTP both ways.

Each runs in the worker process under ``cProfile``; the tables list the top functions by
own time and by cumulative time (profiling roughly doubles the CPU cost; the ranking is
what matters). The raw ``.prof`` files stay in the work directory (``--workdir``) for
``python -m pstats`` or snakeviz.
"""

from __future__ import annotations

import argparse
import io
import pstats
import sys
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


def run(args: argparse.Namespace, workdir: Path, budget: common.Budget) -> dict[str, Any]:
    rate = 20.0 if args.quick else 300.0
    seconds = 1.0 if args.quick else 6.0
    level = 10 if args.quick else 1000
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
        hold_args = argparse.Namespace(**{**vars(args), "window": seconds})
        res = concurrency._hold("softswitch", server, [level], hold_args, workdir, budget,
                                profile=str(hold_prof))
        out["hold_result"] = res
        if hold_prof.exists():
            out["files"]["hold"] = str(hold_prof)
            out["tables"][f"Media, {level} calls held, by own time"] = table(hold_prof, "tottime")
            out["tables"][f"Media, {level} calls held, by cumulative time"] = table(hold_prof, "cumulative")
    return out
