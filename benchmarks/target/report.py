"""The run's HTML report: one self-contained page (plots drawn by matplotlib, inlined as
base64 PNG; no script, no external resource), and the same page for two runs side by side
(``--compare``)."""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt  # noqa: E402

Run = dict[str, Any]

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; } td.k { text-align: left; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; }
.plots figure { margin: 0; } .plots img { width: 560px; height: auto; border: 1px solid #ddd; }
.note { color: #555; font-size: .9em; max-width: 900px; }
"""


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _label(run: Run, index: int) -> str:
    return str(run.get("label") or f"run {index + 1}")


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


# ------------------------------------------------------------------------------ plots


def plot_timeline(runs: list[Run]) -> str:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax2 = ax.twinx()
    for i, run in enumerate(runs):
        tl = run.get("timeline") or []
        t = [p["t"] for p in tl]
        ax.plot(t, [p["up"] for p in tl], label=f"{_label(run, i)}: calls up", color=f"C{2 * i}")
        ax2.plot(
            t,
            [p["rate"] for p in tl],
            label=f"{_label(run, i)}: calls/s",
            color=f"C{2 * i + 1}",
            linestyle="--",
        )
    ax.set_xlabel("seconds")
    ax.set_ylabel("calls up (answered)")
    ax2.set_ylabel("calls placed per second")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="upper left")
    ax.set_title("Calls up and call rate over time")
    return _png(fig)


def plot_distribution(runs: list[Run], key: str, title: str) -> str:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    drawn = False
    for i, run in enumerate(runs):
        values = [c[key] for c in run["calls"] if c.get(key) is not None]
        if values:
            ax.hist(values, bins=min(40, max(5, len(values) // 3)), alpha=0.6, label=_label(run, i))
            drawn = True
    if not drawn:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=7)
    ax.set_xlabel("ms")
    ax.set_ylabel("calls")
    ax.set_title(title)
    return _png(fig)


def bucket_seconds(run: Run) -> int:
    """Quality is drawn per minute; a run shorter than five minutes per 10 s."""
    return 60 if float(run.get("elapsed_s") or 0) >= 300 else 10


def per_bucket(run: Run) -> dict[int, dict[str, float]]:
    """Mean MOS and loss of the answered calls by the bucket (:func:`bucket_seconds`) they
    ended in, keyed by the bucket's start in seconds."""
    size = bucket_seconds(run)
    buckets: dict[int, dict[str, list[float]]] = defaultdict(lambda: {"mos": [], "loss": []})
    for c in run["calls"]:
        if c.get("ended") is None or c.get("outcome") != "answered":
            continue
        b = buckets[int(c["ended"] // size) * size]
        if c.get("mos") is not None:
            b["mos"].append(c["mos"])
        if c.get("loss_pct") is not None:
            b["loss"].append(c["loss_pct"])
    out = {}
    for start, b in sorted(buckets.items()):
        out[start] = {
            "mos": sum(b["mos"]) / len(b["mos"]) if b["mos"] else float("nan"),
            "loss_pct": sum(b["loss"]) / len(b["loss"]) if b["loss"] else float("nan"),
            "calls": float(max(len(b["mos"]), len(b["loss"]))),
        }
    return out


def plot_quality(runs: list[Run]) -> str:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax2 = ax.twinx()
    size = max(bucket_seconds(r) for r in runs)
    width = 0.35 * size / max(1, len(runs))
    for i, run in enumerate(runs):
        rows = per_bucket(run)
        mids = [start + bucket_seconds(run) / 2 for start in rows]
        ax.plot(
            mids,
            [r["mos"] for r in rows.values()],
            marker="o",
            color=f"C{2 * i}",
            label=f"{_label(run, i)}: MOS",
        )
        ax2.bar(
            [m + width * (i - 0.5 * (len(runs) - 1)) for m in mids],
            [r["loss_pct"] for r in rows.values()],
            width=width,
            alpha=0.4,
            color=f"C{2 * i + 1}",
            label=f"{_label(run, i)}: loss %",
        )
    ax.set_ylim(1, 4.6)
    ax2.set_ylim(bottom=0)
    ax.set_xlabel("seconds into the run (calls by their end)")
    ax.set_ylabel("mean MOS (E-model)")
    ax2.set_ylabel("mean packet loss %")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="lower left")
    ax.set_title("MOS and loss per minute" if size == 60 else "MOS and loss per 10 s")
    return _png(fig)


def plot_failures(runs: list[Run]) -> str:
    keys: list[str] = []
    for run in runs:
        for k in run["aggregate"].get("failures", {}):
            if k not in keys:
                keys.append(k)
    keys = keys[:15]
    fig, ax = plt.subplots(figsize=(7, max(2.0, 0.45 * len(keys) + 1.0)))
    if not keys:
        ax.text(0.5, 0.5, "no failures", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
    else:
        height = 0.8 / len(runs)
        for i, run in enumerate(runs):
            fails = run["aggregate"].get("failures", {})
            ax.barh(
                [y + i * height for y in range(len(keys))],
                [fails.get(k, 0) for k in keys],
                height=height,
                label=_label(run, i),
                color=f"C{i}",
            )
        ax.set_yticks([y + 0.4 - height / 2 for y in range(len(keys))], keys, fontsize=8)
        ax.invert_yaxis()
        ax.legend(fontsize=7)
    ax.set_xlabel("calls")
    ax.set_title("Failures by SIP status and cause")
    return _png(fig)


# ------------------------------------------------------------------------------ tables

_ROWS: list[tuple[str, Any]] = [
    ("target", lambda r: r["plan"]["target"]),
    ("started", lambda r: r.get("started")),
    ("call attempts", lambda r: r["aggregate"]["attempts"]),
    ("answered", lambda r: r["aggregate"]["answered"]),
    ("ASR %", lambda r: r["aggregate"]["asr_pct"]),
    ("ACD s", lambda r: r["aggregate"]["acd_s"]),
    ("calls/s achieved", lambda r: r["aggregate"]["rate_achieved"]),
    ("PDD p50 / p95 ms", lambda r: _pair(r["aggregate"]["pdd_ms"])),
    ("setup p50 / p95 ms", lambda r: _pair(r["aggregate"]["setup_ms"])),
    ("setup max ms", lambda r: r["aggregate"]["setup_ms"]["max"]),
    ("BYE round trip p50 / p95 ms", lambda r: _pair(r["aggregate"]["bye_rtt_ms"])),
    (
        "SIP retransmissions (calls)",
        lambda r: (
            f"{r['aggregate']['retransmissions']} ({r['aggregate']['calls_with_retransmissions']})"
        ),
    ),
    (
        "RTP packets sent / received",
        lambda r: (
            f"{r['aggregate']['media']['packets_sent']} / "
            f"{r['aggregate']['media']['packets_received']}"
        ),
    ),
    ("RTP packets lost", lambda r: r["aggregate"]["media"]["lost"]),
    ("mean loss %", lambda r: r["aggregate"]["media"]["loss_pct_mean"]),
    ("mean jitter ms", lambda r: r["aggregate"]["media"]["jitter_ms_mean"]),
    (
        "mean RTT ms (calls with RTCP)",
        lambda r: (
            f"{_fmt(r['aggregate']['media']['rtt_ms_mean'])} "
            f"({r['aggregate']['media']['rtt_measured']})"
        ),
    ),
    (
        "mean R / MOS",
        lambda r: (
            f"{_fmt(r['aggregate']['media']['r_mean'])} / "
            f"{_fmt(r['aggregate']['media']['mos_mean'], 2)}"
        ),
    ),
    (
        "worst MOS / 5th percentile",
        lambda r: (
            f"{_fmt(r['aggregate']['media']['mos_min'], 2)} / "
            f"{_fmt(r['aggregate']['media']['mos_p5'], 2)}"
        ),
    ),
    ("DTMF digits sent", lambda r: r["aggregate"]["dtmf"]["digits_sent"]),
    (
        "DTMF checks ok / failed",
        lambda r: f"{r['aggregate']['dtmf']['ok']} / {r['aggregate']['dtmf']['failed']}",
    ),
    (
        "AMD",
        lambda r: ", ".join(f"{k} {v}" for k, v in r["aggregate"].get("amd", {}).items()) or "-",
    ),
]


def _pair(d: dict[str, Any]) -> str:
    return f"{_fmt(d.get('p50'))} / {_fmt(d.get('p95'))}"


def _summary_table(runs: list[Run]) -> str:
    head = "".join(f"<th>{html.escape(_label(r, i))}</th>" for i, r in enumerate(runs))
    rows = []
    for name, get in _ROWS:
        cells = []
        for run in runs:
            try:
                cells.append(f"<td>{_fmt(get(run), 2 if 'MOS' in name else 1)}</td>")
            except (KeyError, TypeError):
                cells.append("<td>-</td>")
        rows.append(f"<tr><td class=k>{html.escape(name)}</td>{''.join(cells)}</tr>")
    return f"<table id=summary><tr><th></th>{head}</tr>{''.join(rows)}</table>"


def _failure_table(run: Run) -> str:
    fails = run["aggregate"].get("failures", {})
    if not fails:
        return "<p>No failed call.</p>"
    rows = "".join(
        f"<tr><td class=k>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in fails.items()
    )
    return f"<table id=failures><tr><th>SIP status and cause</th><th>calls</th></tr>{rows}</table>"


def _plan_table(run: Run) -> str:
    keep = (
        "target",
        "rate",
        "concurrency",
        "hold",
        "calls",
        "duration",
        "ring_timeout",
        "transport",
        "codec",
        "play",
        "digits",
        "expect_digits",
        "amd",
        "gateway_host",
        "username",
    )
    rows = "".join(
        f"<tr><td class=k>{k}</td><td class=k>{html.escape(str(run['plan'].get(k)))}</td></tr>"
        for k in keep
        if run["plan"].get(k) not in (None, "", False)
    )
    return f"<table id=plan>{rows}</table>"


_NOTE = """<p class=note>PDD: first INVITE sent to first 18x received; setup: to the 200 OK
(both read off the wire, so a digest challenge counts in them). ASR: answered calls / attempts
(ITU-T E.411). Retransmissions: SIP messages this tool sent again with the same bytes. Media
figures are what this side received: loss from RTP sequence numbers, jitter per RFC 3550, RTT
from the far end's RTCP reports (absent when it sends none). R-factor and MOS: a simplified
ITU-T G.107 E-model (G.711 impairment values with packet loss concealment, Ie = 0, Bpl = 25.1,
random loss; one-way delay = RTT/2 + jitter buffer + packet time); G.722 and Opus are rated on
the same narrowband scale.</p>"""


def _plots(runs: list[Run]) -> str:
    figures = [
        ("plot-timeline", "calls up and rate over time", plot_timeline(runs)),
        (
            "plot-setup",
            "setup-time distribution",
            plot_distribution(runs, "setup_ms", "Setup time (INVITE to 200)"),
        ),
        (
            "plot-pdd",
            "post-dial delay distribution",
            plot_distribution(runs, "pdd_ms", "Post-dial delay (INVITE to 18x)"),
        ),
        ("plot-quality", "MOS and loss per minute", plot_quality(runs)),
        ("plot-failures", "failures by cause", plot_failures(runs)),
    ]
    return (
        "<div class=plots>"
        + "".join(
            f'<figure><img id="{pid}" alt="{alt}" src="data:image/png;base64,{data}"></figure>'
            for pid, alt, data in figures
        )
        + "</div>"
    )


def render(run: Run) -> str:
    """The report of one run."""
    title = f"softswitch bench target: {run['plan']['target']}"
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<h2>Summary</h2>{_summary_table([run])}<h2>Plots</h2>{_plots([run])}"
        f"<h2>Failures</h2>{_failure_table(run)}<h2>Plan</h2>{_plan_table(run)}{_NOTE}"
        f"<p class=note>Every call is in calls.json and calls.csv next to this page.</p></body></html>"
    )


def render_compare(runs: list[Run]) -> str:
    """Two (or more) runs side by side: one summary table, the plots overlaid."""
    title = "softswitch bench target: " + " vs ".join(_label(r, i) for i, r in enumerate(runs))
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<h2>Summary</h2>{_summary_table(runs)}<h2>Plots</h2>{_plots(runs)}{_NOTE}</body></html>"
    )
