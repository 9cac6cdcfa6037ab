"""One call's figures (:class:`CallResult`), the run's aggregate, and the files they go to
(JSON of the whole run, CSV of every call)."""

from __future__ import annotations

import csv
import json
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

#: Outcomes of a call attempt.
ANSWERED, BUSY, NO_ANSWER, FAILED, STOPPED = "answered", "busy", "no_answer", "failed", "stopped"


@dataclass
class CallResult:
    """What one call measured. Times are seconds from the run's start; ``None``: not
    measured (no 18x, not answered, no RTCP from the far end...)."""

    seq: int
    call_id: str = ""
    started: float = 0.0
    ended: float | None = None
    outcome: str = FAILED
    sip_status: int | None = None
    cause: str = ""
    hangup_source: str = ""
    error: str = ""
    pdd_ms: float | None = None  #: first INVITE sent -> first 18x received
    setup_ms: float | None = None  #: first INVITE sent -> 200 received
    duration_s: float = 0.0  #: answer -> end
    hold_s: float | None = None  #: the hold drawn for this call
    bye_rtt_ms: float | None = None  #: our BYE sent -> its final response received
    retransmissions: int = 0  #: SIP messages we sent again (same bytes; UDP timers)
    packets_sent: int = 0
    packets_received: int = 0
    lost: int = 0
    loss_pct: float | None = None
    jitter_ms: float | None = None
    rtt_ms: float | None = None
    remote_loss_pct: float | None = None
    codec: str | None = None
    delay_ms: float | None = None  #: the one-way delay the E-model used
    r_factor: float | None = None
    mos: float | None = None
    dtmf_sent: int = 0
    dtmf_expected: str = ""
    dtmf_received: str = ""
    dtmf_ok: bool | None = None
    amd_status: str = ""
    amd_ms: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallResult:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; None for none."""
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))
    return ordered[k]


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def failure_key(call: CallResult) -> str:
    """How failures are counted: the SIP status and the cause (``486 USER_BUSY``)."""
    status = str(call.sip_status) if call.sip_status else "-"
    return f"{status} {call.cause or call.error or 'UNKNOWN'}"


def aggregate(
    calls: list[CallResult], elapsed_s: float = 0.0, placing_s: float = 0.0
) -> dict[str, Any]:
    """The run's figures: ASR (answered / attempts, ITU-T E.411), ACD, PDD and setup time
    percentiles, failures by status and cause, media and DTMF totals."""
    attempts = len(calls)
    answered = [c for c in calls if c.outcome == ANSWERED]
    setups = [c.setup_ms for c in answered if c.setup_ms is not None]
    pdds = [c.pdd_ms for c in calls if c.pdd_ms is not None]
    byes = [c.bye_rtt_ms for c in calls if c.bye_rtt_ms is not None]
    rated = [c for c in answered if c.mos is not None]
    dtmf = [c for c in answered if c.dtmf_ok is not None]
    return {
        "attempts": attempts,
        "answered": len(answered),
        "outcomes": dict(Counter(c.outcome for c in calls)),
        "asr_pct": 100.0 * len(answered) / attempts if attempts else None,
        "acd_s": _mean([c.duration_s for c in answered]),
        "failures": dict(
            Counter(failure_key(c) for c in calls if c.outcome != ANSWERED).most_common()
        ),
        "pdd_ms": {
            "p50": percentile(pdds, 50),
            "p95": percentile(pdds, 95),
            "mean": _mean(pdds),
            "max": max(pdds) if pdds else None,
            "n": len(pdds),
        },
        "setup_ms": {
            "p50": percentile(setups, 50),
            "p95": percentile(setups, 95),
            "mean": _mean(setups),
            "max": max(setups) if setups else None,
            "n": len(setups),
        },
        "bye_rtt_ms": {"p50": percentile(byes, 50), "p95": percentile(byes, 95), "n": len(byes)},
        "retransmissions": sum(c.retransmissions for c in calls),
        "calls_with_retransmissions": sum(1 for c in calls if c.retransmissions),
        "media": {
            "packets_sent": sum(c.packets_sent for c in answered),
            "packets_received": sum(c.packets_received for c in answered),
            "lost": sum(c.lost for c in answered),
            "loss_pct_mean": _mean([c.loss_pct for c in answered if c.loss_pct is not None]),
            "jitter_ms_mean": _mean([c.jitter_ms for c in answered if c.jitter_ms is not None]),
            "rtt_ms_mean": _mean([c.rtt_ms for c in answered if c.rtt_ms is not None]),
            "rtt_measured": sum(1 for c in answered if c.rtt_ms is not None),
            "mos_mean": _mean([c.mos for c in rated if c.mos is not None]),
            "mos_min": min((c.mos for c in rated if c.mos is not None), default=None),
            "mos_p5": percentile([c.mos for c in rated if c.mos is not None], 5),
            "r_mean": _mean([c.r_factor for c in rated if c.r_factor is not None]),
        },
        "dtmf": {
            "calls": len(dtmf),
            "digits_sent": sum(c.dtmf_sent for c in answered),
            "ok": sum(1 for c in dtmf if c.dtmf_ok),
            "failed": sum(1 for c in dtmf if not c.dtmf_ok),
        },
        "amd": dict(Counter(c.amd_status for c in answered if c.amd_status)),
        "elapsed_s": elapsed_s,
        "placing_s": placing_s,
        "rate_achieved": _rate(calls),
    }


def _rate(calls: list[CallResult]) -> float | None:
    """Attempts per second between the first and the last one placed."""
    if len(calls) < 2:
        return None
    starts = [c.started for c in calls]
    span = max(starts) - min(starts)
    return (len(calls) - 1) / span if span > 0 else None


def write_json(path: Path, run: dict[str, Any]) -> None:
    path.write_text(json.dumps(run, indent=1, default=str))


def read_json(path: Path) -> dict[str, Any]:
    run = json.loads(Path(path).read_text())
    if not isinstance(run, dict) or "calls" not in run or "aggregate" not in run:
        raise ValueError(f"{path}: not a bench target run (no calls/aggregate)")
    return run


def write_csv(path: Path, calls: list[CallResult]) -> None:
    names = [f.name for f in fields(CallResult)]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for call in calls:
            writer.writerow({k: ("" if v is None else v) for k, v in asdict(call).items()})
