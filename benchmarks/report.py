"""Markdown tables from the raw results, and the generated block of RESULTS.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

BEGIN = "<!-- BEGIN GENERATED: python -m benchmarks --write -->"
END = "<!-- END GENERATED -->"

GOAL_CPS = 1000
GOAL_CALLS = 2000
GOAL_P99_MS = 5.0
GOAL_KIB_PER_CALL = 64


def _f(value: Any, fmt: str = "{:.2f}", none: str = "–") -> str:
    if value is None:
        return none
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "–"
    return f"{a / b:.2f}×"


def _setup(results: dict[str, Any]) -> list[str]:
    setup = results["setup"]
    lines = [
        "### Call setup rate",
        "",
        f"INVITE → 100/180/200 → ACK, hold {setup['hold']:g} s, BYE → 200, against one sipp UAS; "
        f"ramp steps of {setup['step_seconds']:g} s through {', '.join(f'{r:g}' for r in setup['rates'])} calls/s, "
        f"then the best rate re-run for {setup['confirm_seconds']:g} s. Softswitch media: "
        f"`{setup['setup_media']}` ({'RTP ports, streams and SDP per call, no packets generated' if setup['setup_media'] == 'light' else 'default MediaConfig: 20 ms RTP both ways'}). "
        "CPU is the caller process only (user + system).",
        "",
        "| caller | sustained calls/s (confirmed) | failed (caller / UAS) | CPU ms/call | CPU-bound ceiling (1 core) | setup p50 / p99 ms | vs softswitch (rate) | vs softswitch (CPU/call) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    peers = setup["peers"]
    ours = peers.get("softswitch", {}).get("confirmed") or {}
    for name, data in peers.items():
        c = data.get("confirmed")
        best_step = data.get("best_step_rate")
        capped = bool(c) and c["rate"] >= max(setup["rates"])
        if c:
            rate = f"**{'≥ ' if capped else ''}{c['rate']:g}** ({c['seconds']:g} s{', top of the ramp' if capped else ''})"
            cpu = c.get("cpu_per_call")
            src = c
        else:
            rate = f"none ({best_step:g}/s for {setup['step_seconds']:g} s only)" if best_step else "none"
            last = data["steps"][-1] if data.get("steps") else {}
            cpu = last.get("cpu_per_call")
            src = last
        ceiling = 1.0 / cpu if cpu else None
        lines.append(
            f"| {name} | {rate} | {src.get('failed', '–')} / {src.get('uas_failed', '–')} | {_f(cpu * 1000 if cpu else None)} | "
            f"{_f(ceiling, '{:.0f}')}/s | {_f(src.get('setup_p50_ms'), '{:.1f}')} / {_f(src.get('setup_p99_ms'), '{:.1f}')} | "
            f"{'≥ ' if capped else ''}{_ratio(c.get('rate') if c else None, ours.get('rate'))} | "
            f"{_ratio(cpu, ours.get('cpu_per_call'))} |"
        )
    lines += [
        "",
        "Every step (a step fails on one failed call, or when the caller falls behind the schedule):",
        "",
        "| caller | target/s | s | calls | cleared | failed | UAS failed | achieved/s | CPU ms/call | SIP retrans | SIP socket drops | loop stall max ms | setup p99 ms | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, data in peers.items():
        for s in data.get("steps", []):
            lines.append(
                f"| {name} | {s.get('rate', 0):g} | {s.get('seconds', 0):g} | {s.get('count', '–')} | {s.get('ok', '–')} | "
                f"{s.get('failed', '–')} | {s.get('uas_failed', '–')} | {_f(s.get('achieved_rate'), '{:.0f}')} | "
                f"{_f((s.get('cpu_per_call') or 0) * 1000)} | {s.get('sip_retransmissions', '–')} | "
                f"{s.get('sip_socket_drops', '–')} | {_f(s.get('loop_lag_max_ms'), '{:.0f}')} | "
                f"{_f(s.get('setup_p99_ms'), '{:.1f}')} | {s.get('verdict', '')} |"
            )
    return lines


def _concurrency(results: dict[str, Any]) -> list[str]:
    conc = results["concurrency"]
    lines = [
        "### Concurrent calls with media",
        "",
        f"N answered calls, each sending 20 ms PCMU and receiving it back from sipp's `-rtp_echo`; "
        f"ramp at {conc['ramp_rate']:g} calls/s, then {conc['window']:g} s measured per level. "
        "Lateness = media clock tick time minus its deadline. *Skipped* ticks are packets not sent "
        "(the clock jumps rather than drifts); *rx lost* are sequence gaps in what came back.",
        "",
    ]
    ours = conc["peers"].get("softswitch")
    if ours:
        lines += [
            "| N | calls up | lateness p50 / p99 / max ms | skipped ticks | packets sent / expected | rx lost | CPU % | RSS MiB | KiB/call | goal met |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for lv in ours.get("levels", []):
            goal = (lv["late_p99_ms"] <= GOAL_P99_MS and lv["rss_per_call"] / 1024 <= GOAL_KIB_PER_CALL
                    and lv["calls"] >= lv["level"])
            lines.append(
                f"| {lv['level']} | {lv['calls']} | {lv['late_p50_ms']:.2f} / {lv['late_p99_ms']:.2f} / {lv['late_max_ms']:.1f} | "
                f"{lv['skipped_ticks']} | {lv['packets_sent']} / {lv['packets_expected']} | {lv['rx_lost']} | "
                f"{lv['cpu_pct']:.0f} | {lv['rss'] / 2**20:.0f} | {lv['rss_per_call'] / 1024:.1f} | {'yes' if goal else 'no'} |"
            )
        if ours.get("stop_reason"):
            lines.append(f"\nStopped: {ours['stop_reason']}.")
        if ours.get("error"):
            lines.append(f"\nError: {ours['error']}.")
    py = conc["peers"].get("pyvoip")
    if py:
        lines += [
            "",
            "pyVoIP holding calls (two RTP threads per call; no media clock to measure):",
            "",
            "| N | calls up | packets sent / expected | CPU % | KiB/call | threads | softswitch CPU % at N (interpolated) |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        ref = [(lv["calls"], lv["cpu_pct"]) for lv in (ours or {}).get("levels", []) if lv["calls"]]
        for lv in py.get("levels", []):
            est = None
            if ref:
                n0, c0 = ref[0]
                est = c0 * lv["calls"] / n0  # CPU scales ~linearly with N
            lines.append(
                f"| {lv['level']} | {lv['calls']} | {lv['packets_sent']} / {lv['packets_expected']} | "
                f"{lv['cpu_pct']:.0f} | {lv['rss_per_call'] / 1024:.1f} | {lv.get('threads', '–')} | {_f(est, '{:.1f}')} |"
            )
        if py.get("error"):
            lines.append(f"\npyVoIP error: {py['error']}.")
    return lines


def _api(results: dict[str, Any]) -> list[str]:
    api = results["api"]
    lines = ["### Calls created through the HTTP API", ""]
    if api.get("error"):
        return lines + [f"Not measured: {api['error']}"]
    lines += [
        f"`softswitch serve` (one process) receiving `POST /v1/Account/{{id}}/Call/` at each rate for "
        f"{api['seconds']:g} s; each call dials the sipp UAS, the answer_url returns "
        f"`<Wait length=\"{api['hold']:g}\"/><Hangup/>`. CPU is the server process only; the same "
        "rate through the embedded UserAgent right after (same default media, same hold) shows what the API layer adds.",
        "",
        "| POSTs/s | posted | 201 | answered (answer_url hits) | hangups reported | UAS failed | POST p50 / p99 ms | server CPU ms/call | embedded UA CPU ms/call (API ×) | answer/hangup requests / new connections | verdict |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in api.get("steps", []):
        conns = f"{s['hook_requests']} / {s['hook_connections']}" if "hook_requests" in s else "–"
        lines.append(
            f"| {s['rate']:g} | {s['posted']} | {s['created']} | {s['answered']} | {s['hangups']} | {s.get('uas_failed', '–')} | "
            f"{s['post_p50_ms']:.1f} / {s['post_p99_ms']:.1f} | {s['cpu_per_call'] * 1000:.2f} | "
            f"{_f((s.get('ua_cpu_per_call') or 0) * 1000)} ({_ratio(s['cpu_per_call'], s.get('ua_cpu_per_call'))}) | {conns} | {s['verdict']} |"
        )
    if api.get("stages_table"):
        calls = sum(s["posted"] for s in api.get("steps", []))
        lines += ["", f"Server CPU by stage per API call under cProfile (`--api-profile`, {calls} calls, "
                  "the load windows only; cProfile inflates Python-heavy code: read shares):", "",
                  api["stages_table"]]
    return lines + _api_workers(api)


def _api_workers(api: dict[str, Any]) -> list[str]:
    """``--workers 1,2``: the same ladder per worker count; the scaling is the ratio of the
    highest rates held."""
    runs = api.get("by_workers") or []
    if len(runs) < 2:
        return []
    lines = ["", "`serve --workers N` (N > 1: a redis-server for the shared limits and call ownership; "
             "CPU summed over the supervisor and its workers):", "",
             "| workers | POSTs/s | 201 | hangups | POST p50 / p99 ms | CPU ms/call | verdict |",
             "|---:|---:|---:|---:|---:|---:|---|"]
    best: dict[int, float] = {}
    for run in runs:
        if run.get("error"):
            lines.append(f"| {run['workers']} | – | – | – | – | – | not measured: {run['error']} |")
            continue
        for s in run["steps"]:
            lines.append(f"| {run['workers']} | {s['rate']:g} | {s['created']} | {s['hangups']} | "
                         f"{s['post_p50_ms']:.1f} / {s['post_p99_ms']:.1f} | {s['cpu_per_call'] * 1000:.2f} | {s['verdict']} |")
            if s["sustained"]:
                best[run["workers"]] = max(best.get(run["workers"], 0.0), s["rate"])
    if 1 in best:
        ratios = ", ".join(f"{n} workers {rate / best[1]:.2f}x" for n, rate in sorted(best.items()) if n != 1)
        lines += ["", f"Highest rate held: {', '.join(f'{n}: {r:g}/s' for n, r in sorted(best.items()))}; scaling: {ratios or '–'}."]
    return lines


def _soak(results: dict[str, Any]) -> list[str]:
    s = results["soak"]
    if s.get("error") and "placed" not in s:
        return ["### Soak", "", f"Did not run: {s['error']}"]
    growth = s.get("rss_growth", {})
    mib = ", ".join(f"{name} {value / 2**20:+.1f} MiB" for name, value in growth.items()) or "–"
    return [
        "### Soak (calls through the API while callees and the server are killed)",
        "",
        "| minutes | live target | placed | hangup callbacks | missing | duplicated | stuck calls "
        "| orphan callee legs | callee kills | server kills | calls live at the kill | restart (s) "
        "| server RSS growth (warm → end) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        f"| {_f(s.get('minutes'), '{:g}')} | {s.get('target_live')} | {s.get('placed')} | {s.get('callbacks')} "
        f"| {s.get('missing_callbacks')} | {s.get('duplicate_callbacks')} | {s.get('stuck_calls')} "
        f"| {s.get('orphan_legs')} | {s.get('callee_kills')} | {s.get('server_kills')} "
        f"| {s.get('live_at_server_kill', '–')} | {_f(s.get('restart_seconds'), '{:.1f}')} | {mib} |",
        "",
        f"Verdict: {'**ok**' if s.get('ok') else '**FAILED**'}"
        + (f" ({s['error']})" if s.get("error") else "")
        + f"; hangup causes {s.get('hangup_causes', {})}; POST statuses {s.get('post_statuses', {})}, "
        f"{s.get('post_errors', 0)} POSTs failed (server down); callees {', '.join(s.get('callees', []))}.",
    ]


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"Measured {m['date']} on {m['cores']} cores ({m['cpu']}), {m['implementation']} {m['python']}, "
        f"Linux {m['kernel']}, {m['sipp']}, pyVoIP {m['pyvoip'] or 'not installed'}; "
        f"load average at start {', '.join(f'{x:.2f}' for x in m['loadavg'])} (shared machine).",
        "",
        ("Settings: **tuned** (worker env OPENBLAS_NUM_THREADS=1, SIP UDP SO_RCVBUF "
         f"{results['settings'].get('sip_rcvbuf', 0)} bytes)." if results.get("settings", {}).get("tuned")
         else "Settings: **as shipped** (defaults; no environment or socket tuning)."),
        "",
        "Command:",
        "",
        "```",
        results["command"].strip(),
        "```",
        "",
    ]
    if "setup" in results:
        lines += _setup(results) + [""]
    if "concurrency" in results:
        lines += _concurrency(results) + [""]
    if "api" in results:
        lines += _api(results) + [""]
    if "soak" in results:
        lines += _soak(results) + [""]
    if "profile" in results:
        prof = results["profile"]
        lines += ["### Profiles", ""]
        for name, text in prof.get("tables", {}).items():
            lines += [f"{name}:", "", "```", text.rstrip(), "```", ""]
    return "\n".join(lines)


def write(path: Path, generated: str, label: str = "") -> None:
    """Replace the generated block of ``path`` named ``label`` (create the file if needed);
    the text around the blocks is kept."""
    begin = BEGIN if not label else BEGIN.replace("-->", f"[{label}] -->")
    end = END if not label else END.replace("-->", f"[{label}] -->")
    block = f"{begin}\n\n{generated.rstrip()}\n\n{end}"
    if path.exists():
        text = path.read_text()
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            _, tail = rest.split(end, 1)
            path.write_text(head + block + tail)
            return
        path.write_text(text.rstrip() + "\n\n" + block + "\n")
        return
    path.write_text("# Benchmark results\n\n" + block + "\n")


def healthy(results: dict[str, Any]) -> bool:
    """Did every mode run (not: did it meet the goals)?"""
    for mode in ("setup", "concurrency", "api"):
        data = results.get(mode)
        if isinstance(data, dict) and data.get("error") and mode != "api":
            return False
    soak = results.get("soak")
    return not (isinstance(soak, dict) and not soak.get("ok"))
