"""``softswitch bench target TARGET``: load someone's PBX, trunk or SBC with real calls
(SIP + RTP) and measure it; ``softswitch bench target --compare A.json B.json``."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.target import report
from benchmarks.target.plan import CAPS, Hold, Media, Plan, PlanError, Ramp
from benchmarks.target.results import CallResult, aggregate, read_json, write_csv, write_json
from benchmarks.target.runner import Progress, TargetRun

EPILOG = f"""Hard caps (no flag lifts them): {CAPS["rate"]:g} calls/s, {CAPS["concurrency"]:g} calls
up at once, {CAPS["calls"]:g} calls, {CAPS["duration"]:g} s of placing calls, {CAPS["hold"]:g} s
of hold. The first run against a target asks for confirmation (--yes skips it).

examples:
  softswitch bench target sip:echo@pbx.example.net --rate 2 --calls 100 --hold 30 --digits 1234
  softswitch bench target 0044201234567 --gateway sbc.example.net --username u --password p \\
      --rate 1:20:120 --concurrency 200 --duration 600 --hold exp:90 --play speech:"hello"
  softswitch bench target --compare before/calls.json after/calls.json --out cmp/
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="softswitch bench target",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "target", nargs="?", help="a SIP URI (sip:user@host:port), or a number with --gateway"
    )
    p.add_argument(
        "--compare", nargs=2, metavar="RUN.json", help="draw two runs side by side, place no call"
    )
    g = p.add_argument_group("load")
    g.add_argument("--rate", default="1", help="calls/s: RATE, or a ramp START:END:SECONDS (1)")
    g.add_argument(
        "--concurrency", type=int, default=10, help="at most this many calls at once (10)"
    )
    g.add_argument(
        "--hold", default="10", help="seconds answered calls are held: S, LOW-HIGH or exp:MEAN (10)"
    )
    g.add_argument("--calls", type=int, default=10, help="calls to place (10)")
    g.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="stop placing calls after this many seconds (0: the cap)",
    )
    g.add_argument(
        "--ring-timeout", type=float, default=30.0, help="CANCEL after ringing this long (30)"
    )
    g.add_argument("--seed", type=int, default=1, help="random seed of the hold times (1)")
    g = p.add_argument_group("SIP and media")
    g.add_argument("--transport", choices=("udp", "tcp", "tls"), default=None)
    g.add_argument(
        "--codec",
        choices=("PCMU", "PCMA", "G722", "OPUS"),
        type=str.upper,
        default=None,
        help="offer only this codec (default PCMU, PCMA)",
    )
    g.add_argument(
        "--play",
        default="tone:1004",
        help="tone[:HZ[+HZ]], file:PATH, speech:TEXT (espeak-ng) or silence (tone:1004)",
    )
    g.add_argument(
        "--digits", default="", help="send these digits after the answer (send_digits grammar)"
    )
    g.add_argument("--digits-delay", type=float, default=0.5, help="seconds after the answer (0.5)")
    g.add_argument(
        "--expect-digits",
        default=None,
        help="digits the far end must send back (default: the ones sent, an echo; '' = no check)",
    )
    g.add_argument(
        "--amd", action="store_true", help="answering-machine detection on each answered call"
    )
    g.add_argument("--from-user", default="bench", help="the From user (bench)")
    g.add_argument(
        "--gateway", metavar="HOST[:PORT]", help="send calls to TARGET through this trunk"
    )
    g.add_argument("--username", help="digest username (the trunk's, or the target's)")
    g.add_argument(
        "--password",
        default=os.environ.get("SOFTSWITCH_BENCH_PASSWORD"),
        help="digest password (or SOFTSWITCH_BENCH_PASSWORD)",
    )
    g.add_argument("--local-host", help="address to bind (default: the route's source address)")
    g.add_argument("--sip-port", type=int, default=0, help="local SIP port (0: any)")
    g.add_argument("--rtp-ports", default="40000-49999", help="local RTP port range (40000-49999)")
    g.add_argument(
        "--jitter-buffer-ms",
        type=float,
        default=40.0,
        help="the receiver's jitter buffer the E-model assumes (40)",
    )
    g = p.add_argument_group("output")
    g.add_argument(
        "--out",
        help="directory for report.html, calls.json, calls.csv (default: ./bench-target-DATE)",
    )
    g.add_argument("--label", default="", help="this run's name in reports and comparisons")
    g.add_argument("--yes", action="store_true", help="skip the confirmation prompt (automation)")
    g.add_argument("--quiet", action="store_true", help="no live progress line")
    return p


def plan_from_args(args: argparse.Namespace) -> Plan:
    try:
        low, high = (int(x) for x in args.rtp_ports.split("-"))
    except ValueError as exc:
        raise PlanError("--rtp-ports: LOW-HIGH") from exc
    gateway_host = gateway_port = None
    if args.gateway:
        host, _, port = (
            args.gateway.rpartition(":") if args.gateway.count(":") == 1 else (args.gateway, "", "")
        )
        gateway_host = host or args.gateway
        gateway_port = int(port) if port else None
    return Plan(
        target=args.target or "",
        rate=Ramp.parse(args.rate),
        concurrency=args.concurrency,
        hold=Hold.parse(args.hold),
        calls=args.calls,
        duration=args.duration or CAPS["duration"],
        ring_timeout=args.ring_timeout,
        transport=args.transport,
        codec=args.codec,
        play=Media.parse(args.play),
        digits=args.digits,
        digits_delay=args.digits_delay,
        expect_digits=args.expect_digits,
        amd=args.amd,
        from_user=args.from_user,
        gateway_host=gateway_host,
        gateway_port=gateway_port,
        username=args.username,
        password=args.password,
        local_host=args.local_host,
        sip_port=args.sip_port,
        rtp_ports=(low, high),
        jitter_buffer_ms=args.jitter_buffer_ms,
        seed=args.seed,
    )


# ------------------------------------------------------------------------- the prompt


def _ack_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "softswitch" / "bench-target-ack.json"


def confirmed(plan: Plan, *, yes: bool) -> bool:
    """The first run against a target asks for a typed ``yes`` (remembered per target);
    ``--yes`` skips it, a run without a terminal and without ``--yes`` is refused."""
    if yes:
        return True
    path = _ack_file()
    try:
        known = set(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        known = set()
    if plan.target in known:
        return True
    print(
        f"About to place up to {plan.calls} calls to {plan.target} at up to "
        f"{max(plan.rate.start, plan.rate.end):g} calls/s, {plan.concurrency} at once, held "
        f"{plan.hold.mean:.0f} s on average.\nLoad only systems you operate or are allowed to "
        "test: this is real traffic (and may cost money on a trunk).",
        file=sys.stderr,
    )
    if not sys.stdin.isatty():
        print("no terminal to confirm on: run again with --yes", file=sys.stderr)
        return False
    answer = input("Type yes to go on: ").strip().lower()
    if answer != "yes":
        return False
    known.add(plan.target)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sorted(known)))
    return True


# ------------------------------------------------------------------------- main


class _StatusLine:
    def __init__(self, total: int, quiet: bool) -> None:
        self.total = total
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self._last = 0.0

    def __call__(self, progress: Progress) -> None:
        if self.quiet:
            return
        line = progress.line(self.total)
        if self.tty:
            sys.stderr.write("\r" + line[:200].ljust(120))
            sys.stderr.flush()
        elif time.monotonic() - self._last >= 5.0:
            self._last = time.monotonic()
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty and not self.quiet:
            sys.stderr.write("\n")


async def _run(plan: Plan, status: _StatusLine) -> dict[str, Any]:
    run = TargetRun(plan, on_progress=status)
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    interrupts = 0

    def interrupt() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            print(
                "\nstopping: no new calls, hanging up the live ones (again to abort)",
                file=sys.stderr,
            )
            run.stop()
        elif main is not None:
            main.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt)
    try:
        result = await run.run()
        result["interrupted"] = interrupts > 0
        return result
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def write_outputs(out: Path, run: dict[str, Any], calls: list[CallResult]) -> None:
    """``calls.json`` (the run: plan, aggregate, timeline, every call), ``calls.csv`` (every
    call) and ``report.html``."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "calls.json", run)
    write_csv(out / "calls.csv", calls)
    (out / "report.html").write_text(report.render(run))


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.compare:
        runs = []
        for i, name in enumerate(args.compare):
            try:
                runs.append(read_json(Path(name)))
            except (OSError, ValueError) as exc:
                parser.error(f"--compare: {exc}")
            runs[-1].setdefault("label", "") or runs[-1].update(
                label=Path(name).parent.name or f"run {i + 1}"
            )
        out = Path(args.out or "bench-compare")
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.html").write_text(report.render_compare(runs))
        print(out / "compare.html")
        return 0
    if not args.target:
        parser.error("TARGET is required: the system to call must be named explicitly")
    try:
        plan = plan_from_args(args)
    except PlanError as exc:
        parser.error(str(exc))
    if not confirmed(plan, yes=args.yes):
        return 2
    started = datetime.datetime.now(datetime.UTC)
    out = Path(args.out or f"bench-target-{started:%Y%m%d-%H%M%S}")
    status = _StatusLine(plan.calls, args.quiet)
    try:
        result = asyncio.run(_run(plan, status))
    except (OSError, RuntimeError) as exc:
        status.close()
        print(f"bench target: {exc}", file=sys.stderr)
        return 2
    except (asyncio.CancelledError, KeyboardInterrupt):
        status.close()
        print("bench target: aborted, nothing written", file=sys.stderr)
        return 130
    status.close()
    calls = result["calls"]
    run: dict[str, Any] = {
        "tool": "softswitch bench target",
        "label": args.label,
        "started": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "plan": plan.to_dict(),
        "elapsed_s": result["elapsed_s"],
        "aggregate": aggregate(calls, result["elapsed_s"], result["placing_s"]),
        "timeline": result["timeline"],
        "calls": [asdict(c) for c in calls],
    }
    write_outputs(out, run, calls)
    agg = run["aggregate"]
    print(
        json.dumps(
            {
                "out": str(out),
                "attempts": agg["attempts"],
                "answered": agg["answered"],
                "asr_pct": agg["asr_pct"],
                "setup_p95_ms": agg["setup_ms"]["p95"],
                "mos_mean": agg["media"]["mos_mean"],
                "failures": agg["failures"],
            }
        )
    )
    # Stopped by SIGINT/SIGTERM: the calls so far are written, the exit says it stopped.
    return 130 if result.get("interrupted") else 0
