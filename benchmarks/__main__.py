"""``softswitch bench`` / ``python -m benchmarks``: capacity benchmarks on this machine.

    python -m benchmarks                  # everything, defaults (< 10 minutes)
    python -m benchmarks setup            # call setup rate: softswitch, sipp, pyVoIP
    python -m benchmarks concurrency      # N concurrent calls with 20 ms G.711 both ways
    python -m benchmarks api              # calls created by HTTP POSTs (softswitch serve)
    python -m benchmarks profile          # cProfile of the setup path and the media tick
    python -m benchmarks soak             # N calls for M minutes, callees and the server killed
    python -m benchmarks parse            # µs per SIP message parsed (no peers; --help)
    python -m benchmarks target TARGET    # load YOUR PBX/trunk/SBC: SIP, media, DTMF, report (--help)
    python -m benchmarks --quick ...      # seconds, tiny scale: proves the scripts work

Every load is bounded in count and time. Results print as Markdown tables; ``--write``
replaces the generated part of ``benchmarks/RESULTS.md`` (between the markers).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import _common as common
from benchmarks import report

MODES = ("setup", "concurrency", "api", "profile", "soak")
PEERS = ("softswitch", "sipp", "pyvoip")


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="softswitch bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("modes", nargs="*", choices=(*MODES, "all", []), default=[],
                   help="what to run (default: setup concurrency api)")
    p.add_argument("--quick", action="store_true", help="tiny scale, a few seconds per mode")
    p.add_argument("--peers", default=",".join(PEERS), help="callers to compare (default: all)")
    p.add_argument("--write", nargs="?", const=str(common.HERE / "RESULTS.md"), default=None,
                   metavar="FILE", help="write the tables into FILE (default benchmarks/RESULTS.md)")
    p.add_argument("--json", metavar="FILE", help="also dump raw results as JSON")
    p.add_argument("--workdir", help="sipp logs and scratch files (default: a temp dir)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    p.add_argument("--sip-rcvbuf", type=int, default=0, metavar="BYTES",
                   help="set SO_RCVBUF on the softswitch SIP UDP socket (default: kernel default)")
    p.add_argument("--tuned", action="store_true",
                   help="the two fixes the profiles point at, applied from outside the code: "
                        "OPENBLAS_NUM_THREADS=1 and a 4 MiB SIP receive buffer")
    p.add_argument("--label", default="", help="name of the generated block in --write (e.g. tuned)")
    g = p.add_argument_group("setup rate")
    g.add_argument("--rates", type=_floats, default=None,
                   help="calls/s to ramp through (default 10,25,50,100,200,400,700,1000,1400,2000)")
    g.add_argument("--step-seconds", type=float, default=None, help="length of each ramp step (5)")
    g.add_argument("--confirm-seconds", type=float, default=None,
                   help="re-run the best rate this long to call it sustained (30)")
    g.add_argument("--hold", type=float, default=None, help="seconds between ACK and BYE (1)")
    g.add_argument("--setup-media", choices=("light", "full"), default="light",
                   help="light: streams and SDP but no RTP generated (like sipp's uac); full: defaults")
    g = p.add_argument_group("concurrency")
    g.add_argument("--levels", type=_ints, default=None, help="concurrent calls (250,500,1000,2000)")
    g.add_argument("--pyvoip-levels", type=_ints, default=None, help="pyVoIP's levels (25,50,100)")
    g.add_argument("--window", type=float, default=None, help="seconds measured per level (10)")
    g.add_argument("--ramp-rate", type=float, default=None, help="calls/s while ramping (200)")
    g = p.add_argument_group("api")
    g.add_argument("--api-rates", type=_floats, default=None, help="POSTs/s (25,50,100,200,400)")
    g.add_argument("--api-seconds", type=float, default=None, help="seconds per API rate (10)")
    g.add_argument("--workers", dest="api_workers", type=_ints, default=[1], metavar="N[,M]",
                   help="serve --workers for the api mode, each measured in turn (1); N > 1 starts a "
                        "redis-server for the workers' shared limits and call ownership")
    g.add_argument("--api-profile", metavar="FILE", default=None,
                   help="run the server under cProfile, dump to FILE and print its CPU by stage "
                        "per call (profiling slows it: use one low rate)")
    g.add_argument("--max-minutes", type=float, default=15.0, help="overall time bound")
    g = p.add_argument_group("profile")
    g.add_argument("--profile-rate", type=float, default=None,
                   help="calls/s of the profiled setup path (300; --quick 20)")
    g.add_argument("--profile-seconds", type=float, default=None,
                   help="seconds of the profiled setup path (6; --quick 1)")
    g.add_argument("--profile-level", type=int, default=None,
                   help="calls held in the profiled media tick (1000; --quick 10)")
    g = p.add_argument_group("soak")
    g.add_argument("--soak-minutes", type=float, default=None, help="how long calls are placed (3)")
    g.add_argument("--soak-calls", type=int, default=None, help="calls kept live at once (20)")
    g.add_argument("--soak-rate", type=float, default=20.0, help="at most this many POSTs/s (20)")
    g.add_argument("--soak-hold", default=None, help="seconds a call is held, LOW-HIGH (1-8)")
    g.add_argument("--soak-sipp", type=int, default=None, help="sipp callees (3)")
    g.add_argument("--soak-baresip", type=int, default=None, help="baresip callees, if installed (1)")
    g.add_argument("--soak-chaos-s", type=float, default=None,
                   help="mean seconds between two callee kills (15)")
    g.add_argument("--soak-grace", type=float, default=60.0,
                   help="seconds after the last call for the last callbacks (60)")
    g.add_argument("--soak-seed", type=int, default=13, help="random seed of the chaos and the holds")
    return p


def _defaults(args: argparse.Namespace) -> None:
    quick = args.quick
    if args.rates is None:
        args.rates = [5.0, 10.0] if quick else [10.0, 25.0, 50.0, 100.0, 200.0, 400.0, 700.0, 1000.0, 1400.0, 2000.0]
    if args.step_seconds is None:
        args.step_seconds = 1.0 if quick else 5.0
    if args.confirm_seconds is None:
        args.confirm_seconds = 2.0 if quick else 30.0
    if args.hold is None:
        args.hold = 0.2 if quick else 1.0
    if args.levels is None:
        args.levels = [5, 10] if quick else [250, 500, 1000, 2000]
    if args.pyvoip_levels is None:
        args.pyvoip_levels = [3] if quick else [25, 50, 100]
    if args.window is None:
        args.window = 1.0 if quick else 10.0
    if args.ramp_rate is None:
        args.ramp_rate = 20.0 if quick else 200.0
    if args.api_rates is None:
        args.api_rates = [2.0] if quick else [25.0, 50.0, 100.0, 200.0, 400.0]
    if args.api_seconds is None:
        args.api_seconds = 1.5 if quick else 10.0
    if args.soak_minutes is None:
        args.soak_minutes = 0.25 if quick else 3.0
    if args.soak_calls is None:
        args.soak_calls = 4 if quick else 20
    if args.soak_hold is None:
        args.soak_hold = "1-2" if quick else "1-8"
    if args.soak_sipp is None:
        args.soak_sipp = 2 if quick else 3
    if args.soak_baresip is None:
        args.soak_baresip = 1
    if args.soak_chaos_s is None:
        args.soak_chaos_s = 4.0 if quick else 15.0
    if args.soak_grace == 60.0 and quick:
        args.soak_grace = 20.0
    args.peer_list = [x.strip() for x in args.peers.split(",") if x.strip()]
    unknown = set(args.peer_list) - set(PEERS)
    if unknown:
        raise SystemExit(f"unknown peers {sorted(unknown)}; choose from {PEERS}")
    modes = [m for m in args.modes if m != "all"]
    args.mode_list = modes or ["setup", "concurrency", "api"]


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    sipp = ""
    try:
        out = subprocess.run(["sipp", "-v"], capture_output=True, text=True, timeout=5).stdout
        sipp = next((ln.strip() for ln in out.splitlines() if "SIPp" in ln), "")
    except (OSError, subprocess.SubprocessError):
        pass
    pyvoip = ""
    try:
        from importlib.metadata import version

        pyvoip = version("pyVoIP")
    except Exception:
        pass
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "cpu": model,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "loadavg": os.getloadavg(),
        "sipp": sipp,
        "pyvoip": pyvoip,
    }


def main(argv: list[str]) -> int:
    """Entry point of ``softswitch bench ARGS...`` and ``python -m benchmarks ARGS...``."""
    if argv[:1] == ["parse"]:
        from benchmarks import parse

        return parse.main(list(argv[1:]))
    if argv[:1] == ["target"]:
        from benchmarks.target import cli as target

        return target.main(list(argv[1:]))
    args = build_parser().parse_args(list(argv))
    _defaults(args)
    if not common.have_sipp():
        print("sipp is not installed (Debian: sip-tester); the benchmarks need it as the UAS",
              file=sys.stderr)
        return 2
    common.raise_nofile()
    if args.tuned:
        common.EXTRA_ENV["OPENBLAS_NUM_THREADS"] = "1"
        args.sip_rcvbuf = args.sip_rcvbuf or 4 * 1024 * 1024
    if "pyvoip" in args.peer_list and not common.have_pyvoip():
        print("pyVoIP not installed: skipping the pyVoIP peer", file=sys.stderr)
        args.peer_list.remove("pyvoip")
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="softswitch-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    budget = common.Budget(args.max_minutes * 60.0)
    results: dict[str, Any] = {
        "command": "python -m benchmarks " + " ".join(argv),
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("modes",)},
    }
    from benchmarks import api, concurrency, profile, setup_rate, soak

    runners = {"setup": setup_rate.run, "concurrency": concurrency.run, "api": api.run,
               "profile": profile.run, "soak": soak.run}
    for mode in args.mode_list:
        if budget.expired():
            print(f"time budget spent: skipping {mode}", file=sys.stderr)
            continue
        t0 = time.monotonic()
        results[mode] = runners[mode](args, workdir, budget)
        results[mode + "_seconds"] = time.monotonic() - t0
    text = report.markdown(results)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    if args.write:
        report.write(Path(args.write), text, label=args.label)
        print(f"wrote {args.write}", file=sys.stderr)
    if "soak" in results:
        print(soak.summary(results["soak"]), flush=True)  # the last line: one JSON summary
    return 0 if report.healthy(results) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
