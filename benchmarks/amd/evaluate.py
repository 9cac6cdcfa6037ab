"""Evaluate answering-machine detection on the labelled corpus from ``corpus.py``.

``--offline`` (the default) feeds every clip through a G.711 µ-law round trip into
:class:`media.amd.AnsweringMachineDetector`, 20 ms frame by 20 ms frame as the media clock would,
and reports:

* accuracy (human -> HUMAN, machine -> MACHINE, silence -> NOTSURE) and the confusion matrix;
* false-machine rate (humans called machines: these get hung up on in ``hangup`` mode) and
  false-human rate (machines called humans);
* decision latency from the answer, p50/p95 per class, and for humans the latency after the
  greeting ended (target: <= 2500 ms);
* beep detection: hit rate, onset error p50/p95, end error, result latency after the beep
  ended, frequency error, and false beeps (a standalone :class:`media.amd.BeepDetector` run
  over every clip without a beep).

It prints a table, then one JSON line with every number (for CI and for comparing runs).

``--calls`` places real SIP calls to baresip playing each clip: see :func:`evaluate_calls`.

Targets (issue 6): accuracy >= 95 %, false-machine <= 1 %, human decision <= 2.5 s after the
greeting ends.

Usage::

    python benchmarks/amd/corpus.py                 # builds benchmarks/amd/corpus/ (200 clips)
    python benchmarks/amd/evaluate.py --offline     # reads it
    python benchmarks/amd/evaluate.py --offline --corpus /tmp/c --param machine_detection_time=4000
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from media import g711  # noqa: E402
from media.amd import (  # noqa: E402
    AmdParams,
    AmdResult,
    AnsweringMachineDetector,
    BeepDetector,
)
from softswitch.api.plivo.amd import (  # noqa: E402
    PLIVO_PARAMETERS,
    amd_params_from_plivo,
    callback_params,
)

DEFAULT_CORPUS = Path(__file__).resolve().parent / "corpus"
EXPECTED = {"human": "HUMAN", "machine": "MACHINE", "silence": "NOTSURE"}
FRAME = 160  # 20 ms at 8 kHz


def ulaw_roundtrip(pcm: np.ndarray) -> np.ndarray:
    """What the far end's audio looks like after PCMU (G.711 µ-law): encode then decode."""
    return np.asarray(g711.ulaw_decode(g711.ulaw_encode(np.asarray(pcm, dtype=np.int16))))


# -- offline evaluation ---------------------------------------------------------------------------


@dataclass
class ClipOutcome:
    file: str
    cls: str
    kind: str
    status: str
    reason: str
    decided_at_ms: int
    after_greeting_ms: int | None
    has_beep: bool
    beep_onset_label: int | None
    beep_found: bool
    beep_onset_err_ms: float | None
    beep_end_err_ms: float | None
    beep_report_after_end_ms: float | None
    beep_freq_err_hz: float | None
    false_beep: bool
    result: dict[str, str]
    room: str = ""
    line: str = ""


def _read_clip(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        if w.getframerate() != 8000 or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 8 kHz mono 16-bit (rebuild with corpus.py)")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def _int(v: str) -> int | None:
    return int(v) if v not in ("", None) else None


def run_clip(path: Path, row: dict[str, str], params: AmdParams) -> ClipOutcome:
    """Feed one clip frame by frame (after µ-law, unless the corpus coded it already: the
    recorded corpus applies its line's law itself) and collect decision and beep."""
    x = _read_clip(path) if row.get("coded") == "1" else ulaw_roundtrip(_read_clip(path))
    amd = AnsweringMachineDetector(params)
    decision: AmdResult | None = None
    beep_res: AmdResult | None = None
    beep_reported_at: int | None = None
    n = x.size // FRAME
    for i in range(n):
        res = amd.feed(x[i * FRAME : (i + 1) * FRAME])
        if res is not None:
            if decision is None:
                decision = res
            if res.beep_at_ms is not None and beep_res is None:
                beep_res = res
                beep_reported_at = (i + 1) * 20
        if amd.done:
            break
    if decision is None:
        decision = amd.finish()
    # False beeps: a standalone detector over the whole clip (AMD stops listening on HUMAN).
    false_beep = False
    if row["has_beep"] != "1":
        false_beep = BeepDetector().feed(x) is not None
    return outcome(row, decision, beep_res, beep_reported_at, false_beep)


def outcome(
    row: dict[str, str],
    decision: AmdResult,
    beep_res: AmdResult | None,
    beep_reported_at: int | None,
    false_beep: bool = False,
) -> ClipOutcome:
    """One labelled clip's result, the same for the offline and the real-call mode."""
    has_beep = row["has_beep"] == "1"
    ge = _int(row["greeting_end_ms"])
    onset = _int(row["beep_onset_ms"])
    beep_ms_label = _int(row.get("beep_ms", ""))
    out = ClipOutcome(
        file=row["file"],
        cls=row["class"],
        kind=row.get("kind", ""),
        status=decision.status,
        reason=decision.reason,
        decided_at_ms=decision.decided_at_ms,
        after_greeting_ms=None if ge is None else decision.decided_at_ms - ge,
        has_beep=has_beep,
        beep_onset_label=onset,
        beep_found=beep_res is not None,
        beep_onset_err_ms=None,
        beep_end_err_ms=None,
        beep_report_after_end_ms=None,
        beep_freq_err_hz=None,
        false_beep=false_beep or (not has_beep and beep_res is not None),
        result=callback_params(beep_res or decision),
        room=row.get("room", ""),
        line=row.get("line", ""),
    )
    if beep_res is not None and onset is not None and beep_res.beep_at_ms is not None:
        out.beep_onset_err_ms = float(beep_res.beep_at_ms - onset)
        if beep_ms_label is not None and beep_res.beep_end_ms is not None:
            true_end = onset + beep_ms_label
            out.beep_end_err_ms = float(beep_res.beep_end_ms - true_end)
            if beep_reported_at is not None:
                out.beep_report_after_end_ms = float(beep_reported_at - true_end)
        hz = _int(row.get("beep_hz", ""))
        if hz is not None and beep_res.beep_hz is not None:
            out.beep_freq_err_hz = float(beep_res.beep_hz - hz)
    return out


def _pct(values: Sequence[float], q: float) -> float | None:
    return None if not values else float(np.percentile(np.asarray(values, dtype=float), q))


def summarise(outcomes: Sequence[ClipOutcome]) -> dict[str, object]:
    """Every metric of the report, JSON-ready."""
    total = len(outcomes)
    correct = sum(o.status == EXPECTED[o.cls] for o in outcomes)
    by_cls: dict[str, list[ClipOutcome]] = {}
    for o in outcomes:
        by_cls.setdefault(o.cls, []).append(o)
    humans = by_cls.get("human", [])
    machines = by_cls.get("machine", [])
    confusion = {
        c: {s: sum(o.status == s for o in lst) for s in ("HUMAN", "MACHINE", "NOTSURE")}
        for c, lst in sorted(by_cls.items())
    }
    latency = {
        c: {
            "p50_ms": _pct([o.decided_at_ms for o in lst], 50),
            "p95_ms": _pct([o.decided_at_ms for o in lst], 95),
        }
        for c, lst in sorted(by_cls.items())
    }
    human_after = [o.after_greeting_ms for o in humans if o.status == "HUMAN"]
    human_after_f = [float(v) for v in human_after if v is not None]
    beeps = [o for o in machines if o.has_beep]
    found = [o for o in beeps if o.beep_found]
    onset_err = [abs(o.beep_onset_err_ms) for o in found if o.beep_onset_err_ms is not None]
    end_err = [abs(o.beep_end_err_ms) for o in found if o.beep_end_err_ms is not None]
    rep = [o.beep_report_after_end_ms for o in found if o.beep_report_after_end_ms is not None]
    ferr = [abs(o.beep_freq_err_hz) for o in found if o.beep_freq_err_hz is not None]
    no_beep = [o for o in outcomes if not o.has_beep]
    kinds: dict[str, list[ClipOutcome]] = {}
    for o in outcomes:
        kinds.setdefault(f"{o.cls}/{o.kind}", []).append(o)
    def accuracy_by(key) -> dict[str, dict[str, float | int]]:  # type: ignore[no-untyped-def]
        groups: dict[str, list[ClipOutcome]] = {}
        for o in outcomes:
            k = key(o)
            if k:
                groups.setdefault(k, []).append(o)
        return {
            k: {
                "clips": len(v),
                "accuracy": sum(o.status == EXPECTED[o.cls] for o in v) / len(v),
                "humans_called_machines": sum(o.cls == "human" and o.status == "MACHINE" for o in v),
                "humans": sum(o.cls == "human" for o in v),
            }
            for k, v in sorted(groups.items())
        }

    def level_bucket(o: ClipOutcome) -> str:
        parts = o.line.split()
        if len(parts) < 3:
            return ""
        level = int(parts[1].removesuffix("dBm0"))
        return f"{parts[0]} {'-10..-20' if level >= -20 else '-21..-35'} dBm0 {parts[2]}"

    return {
        "clips": total,
        "accuracy_by_room": accuracy_by(lambda o: o.room),
        "accuracy_by_line": accuracy_by(level_bucket),
        "accuracy": correct / total if total else None,
        "false_machine_rate": (sum(o.status == "MACHINE" for o in humans) / len(humans))
        if humans
        else None,
        "false_human_rate": (sum(o.status == "HUMAN" for o in machines) / len(machines))
        if machines
        else None,
        "machine_notsure_rate": (sum(o.status == "NOTSURE" for o in machines) / len(machines))
        if machines
        else None,
        "confusion": confusion,
        "accuracy_by_kind": {
            k: sum(o.status == EXPECTED[o.cls] for o in v) / len(v)
            for k, v in sorted(kinds.items())
        },
        "latency": latency,
        "human_after_greeting_ms": {
            "p50": _pct(human_after_f, 50),
            "p95": _pct(human_after_f, 95),
            "max": max(human_after_f) if human_after_f else None,
            "within_2500": (sum(v <= 2500 for v in human_after_f) / len(human_after_f))
            if human_after_f
            else None,
        },
        "beep": {
            "clips": len(beeps),
            "found": len(found),
            "hit_rate": len(found) / len(beeps) if beeps else None,
            "onset_err_p50_ms": _pct(onset_err, 50),
            "onset_err_p95_ms": _pct(onset_err, 95),
            "onset_err_max_ms": max(onset_err) if onset_err else None,
            "end_err_p50_ms": _pct(end_err, 50),
            "end_err_p95_ms": _pct(end_err, 95),
            "reported_after_end_p50_ms": _pct(rep, 50),
            "reported_after_end_p95_ms": _pct(rep, 95),
            "freq_err_p95_hz": _pct(ferr, 95),
            "false_beeps": sum(o.false_beep for o in no_beep),
            "clips_without_beep": len(no_beep),
        },
    }


def _fmt(v: object, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if unit == "%":
            return f"{100 * v:.1f} %"
        return f"{v:.0f}{unit}"
    return f"{v}{unit}"


def print_report(s: dict[str, object], out=sys.stdout) -> None:  # type: ignore[no-untyped-def]
    p = print
    p(f"clips                      {s['clips']}", file=out)
    p(f"accuracy                   {_fmt(s['accuracy'], '%')}   (target >= 95 %)", file=out)
    p(
        f"false-machine (humans)     {_fmt(s['false_machine_rate'], '%')}   (target <= 1 %)",
        file=out,
    )
    p(f"false-human (machines)     {_fmt(s['false_human_rate'], '%')}", file=out)
    p(f"machines NOTSURE           {_fmt(s['machine_notsure_rate'], '%')}", file=out)
    p("", file=out)
    p(
        f"{'class':10} {'HUMAN':>7} {'MACHINE':>8} {'NOTSURE':>8} {'p50 ms':>8} {'p95 ms':>8}",
        file=out,
    )
    conf = s["confusion"]
    lat = s["latency"]
    assert isinstance(conf, dict) and isinstance(lat, dict)
    for c, row in conf.items():
        p(
            f"{c:10} {row['HUMAN']:7d} {row['MACHINE']:8d} {row['NOTSURE']:8d} "
            f"{_fmt(lat[c]['p50_ms']):>8} {_fmt(lat[c]['p95_ms']):>8}",
            file=out,
        )
    p("", file=out)
    acc_kind = s["accuracy_by_kind"]
    assert isinstance(acc_kind, dict)
    for k, v in acc_kind.items():
        p(f"  {k:28} {_fmt(v, '%')}", file=out)
    for title, key in (("room", "accuracy_by_room"), ("line", "accuracy_by_line")):
        groups = s.get(key)
        if isinstance(groups, dict) and groups:
            p("", file=out)
            p(f"  {title:28} {'clips':>6} {'accuracy':>9} {'humans->machine':>16}", file=out)
            for k, v in groups.items():
                p(f"  {k:28} {v['clips']:6d} {_fmt(v['accuracy'], '%'):>9} "
                  f"{v['humans_called_machines']:>9d}/{v['humans']}", file=out)
    h = s["human_after_greeting_ms"]
    assert isinstance(h, dict)
    p("", file=out)
    p(
        f"human decision after greeting end: p50 {_fmt(h['p50'], ' ms')}, p95 {_fmt(h['p95'], ' ms')}"
        f", max {_fmt(h['max'], ' ms')}, <= 2500 ms: {_fmt(h['within_2500'], '%')}",
        file=out,
    )
    b = s["beep"]
    assert isinstance(b, dict)
    p(
        f"beep: found {b['found']}/{b['clips']}; onset error p50 {_fmt(b['onset_err_p50_ms'], ' ms')}"
        f", p95 {_fmt(b['onset_err_p95_ms'], ' ms')}, max {_fmt(b['onset_err_max_ms'], ' ms')}; "
        f"end error p95 {_fmt(b['end_err_p95_ms'], ' ms')}; reported after end p50 "
        f"{_fmt(b['reported_after_end_p50_ms'], ' ms')}, p95 "
        f"{_fmt(b['reported_after_end_p95_ms'], ' ms')}; "
        f"false beeps {b['false_beeps']}/{b['clips_without_beep']}",
        file=out,
    )


def evaluate_offline(
    corpus: Path, params: AmdParams, verbose: bool = False
) -> tuple[list[ClipOutcome], dict[str, object]]:
    labels = corpus / "labels.csv"
    if not labels.exists():
        raise SystemExit(
            f"{labels} not found: build it with python benchmarks/amd/corpus.py {corpus}"
        )
    with open(labels, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    try:
        from tqdm import tqdm

        it = tqdm(rows, desc="amd eval", unit="clip", file=sys.stderr)
    except ImportError:  # pragma: no cover
        it = rows
    outcomes = [run_clip(corpus / r["file"], r, params) for r in it]
    if verbose:
        for o in outcomes:
            if o.status != EXPECTED[o.cls] or (o.has_beep and not o.beep_found) or o.false_beep:
                print(f"  MISS {o.file:40} {o.status:8} {o.reason:14} {o.result}", file=sys.stderr)
    return outcomes, summarise(outcomes)


def evaluate_calls(
    corpus: Path, params: AmdParams, *, limit: int | None = None, workers: int = 4
) -> dict[str, object]:
    """Real calls: for each clip, a baresip callee on 127.0.0.1 answers and plays the clip as
    its microphone; our user agent calls it and runs the detector on the audio the media
    engine receives (after the PCMU round trip of a real call). Decision time counts from the
    200 OK. Every call is bounded (clip length + 5 s); nothing leaves loopback."""
    import asyncio
    import tempfile

    from softswitch.amd import MachineDetection
    from softswitch.ua import UserAgent, UserAgentConfig
    from tests.peers.baresip import Baresip

    labels = corpus / "labels.csv"
    if not labels.exists():
        raise SystemExit(f"{labels} not found: build it with python benchmarks/amd/corpus.py {corpus}")
    with open(labels, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[: limit or None]

    async def one(ua: UserAgent, row: dict[str, str], workdir: Path) -> ClipOutcome | None:
        clip = corpus / row["file"]
        with wave.open(str(clip)) as w:
            seconds = w.getnframes() / w.getframerate()
        peer = await asyncio.to_thread(Baresip(workdir, play_wav=clip, max_call_s=seconds + 3).start)
        try:
            call = await ua.dial(peer.uri, from_user="amd-eval", ring_timeout=10)
            if not await asyncio.wait_for(call.wait_answered(), 15):
                return None
            detection = MachineDetection(call, params).start()
            decision = await asyncio.wait_for(detection.decision, params.total_ms / 1000 + 3)
            beep = None
            if decision is not None and decision.beep_at_ms is None and decision.status != "HUMAN":
                try:
                    beep = await asyncio.wait_for(detection.beep, max(1.0, seconds - decision.decided_at_ms / 1000 + 2))
                except TimeoutError:
                    beep = None
            elif decision is not None and decision.beep_at_ms is not None:
                beep = decision
            detection.stop()
            await call.hangup()
            if decision is None:
                return None
            reported = None if beep is None or beep.beep_end_ms is None else int(beep.beep_end_ms)
            return outcome(row, decision, beep, reported)
        finally:
            await asyncio.to_thread(peer.stop)

    async def run() -> list[ClipOutcome]:
        from tqdm import tqdm

        results: list[ClipOutcome] = []
        failed = 0
        queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        for r in rows:
            queue.put_nowait(r)
        bar = tqdm(total=len(rows), desc="amd calls", unit="call", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="amd-eval-") as tmp:
            async with UserAgent(UserAgentConfig(port=0)) as ua:

                async def worker() -> None:
                    nonlocal failed
                    while not queue.empty():
                        row = queue.get_nowait()
                        try:
                            res = await one(ua, row, Path(tmp))
                        except Exception as exc:  # a failed call is counted, not fatal
                            print(f"  call for {row['file']} failed: {exc!r}", file=sys.stderr)
                            res = None
                        if res is None:
                            failed += 1
                        else:
                            results.append(res)
                        bar.update(1)

                await asyncio.gather(*(worker() for _ in range(max(1, workers))))
        bar.close()
        if failed:
            print(f"  {failed} call(s) failed and are not in the statistics", file=sys.stderr)
        return results

    outcomes = asyncio.run(run())
    summary = summarise(outcomes)
    summary["mode"] = "calls"
    return summary


def _parse_overrides(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep:
            raise SystemExit(f"--param expects name=value, got {item!r}")
        out[k.strip()] = v.strip()
    return out


def make_params(overrides: dict[str, str]) -> AmdParams:
    """Plivo parameter names go through ``amd_params_from_plivo`` (validated); other names set
    ``AmdParams`` fields directly (tuning experiments)."""

    plivo = {k: v for k, v in overrides.items() if k in PLIVO_PARAMETERS}
    extra: dict[str, object] = {}
    for k, v in overrides.items():
        if k in PLIVO_PARAMETERS:
            continue
        if k not in AmdParams.__dataclass_fields__:
            raise SystemExit(f"unknown parameter {k!r}")
        default = getattr(AmdParams(), k)
        extra[k] = (
            (v.lower() in ("1", "true", "yes")) if isinstance(default, bool) else type(default)(v)
        )
    return amd_params_from_plivo(plivo, **extra)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--offline", action="store_true", help="feed clips directly (default)")
    mode.add_argument("--calls", action="store_true", help="real calls through baresip")
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="Plivo machine_detection_* parameter or AmdParams field",
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="list misclassified clips")
    ap.add_argument("--limit", type=int, default=None, help="--calls: only the first N clips")
    ap.add_argument("--workers", type=int, default=4, help="--calls: concurrent calls")
    args = ap.parse_args(argv)
    params = make_params(_parse_overrides(args.param))
    if args.calls:
        summary = evaluate_calls(args.corpus, params, limit=args.limit, workers=args.workers)
    else:
        _, summary = evaluate_offline(args.corpus, params, args.verbose)
    print_report(summary)
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
