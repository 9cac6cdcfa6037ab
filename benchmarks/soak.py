"""Soak: ``softswitch serve`` (its own process, SQLite) keeps N calls up for M minutes while
things break around it, then every call must be accounted for.

- Calls go through the HTTP API (``POST /v1/Account/{id}/Call/``) to a pool of real callees
  on loopback: sipp UASs (``benchmarks/sipp/uas.xml``: answer, wait for our BYE) and baresip
  (auto-answer, a sine as microphone). Each call's answer_url holds it 1-8 s (``<Wait/>``),
  then the document ends and the server hangs up; a few use ``time_limit`` instead.
- Chaos: a random callee is killed (SIGKILL) every few seconds and restarted on its port a
  moment later; once, in the middle, the server is killed (SIGKILL) and restarted on the same
  database and ports.
- At the end (no new calls; a grace period for the last calls and callbacks):
  **calls placed** (201s), **callbacks** (exactly one hangup callback per placed call: missing
  and duplicated ones are counted), **stuck calls** (live in the store after the grace: must
  be 0), **orphan callee legs** (calls a live callee still holds: must be 0; sipp's
  ``CurrentCall``, baresip's log) and the server's **RSS growth** (each incarnation, from
  warm to its end).

Loopback only; bounded in time (minutes + start-up + grace) and in calls (``--soak-calls``
live at once, at most ``--soak-rate`` POSTs/s). Prints a progress bar, a Markdown table,
and the summary as one JSON line last.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks import _common as common

AUTH_ID = "MASOAKSOAKSOAKSOAK01"
AUTH_TOKEN = "soak-token-0001"
BARESIP = shutil.which("baresip")
BARESIP_MODULES = Path("/usr/lib/baresip/modules")
LIVE_STATUSES = ("queued", "ringing", "early-media", "in-progress")
#: Each call's ring_timeout: a callee killed while we ring it costs this, not Timer B.
RING_TIMEOUT_S = 8


# ------------------------------------------------------------------------------- callees


class SippCallee:
    """A sipp UAS on a fixed port; each incarnation has its own stat file."""

    kind = "sipp"

    def __init__(self, workdir: Path, index: int) -> None:
        self.workdir = workdir
        self.index = index
        self.port = common.free_port()
        self.uas: common.SippUas | None = None
        self.incarnation = 0
        self.kills = 0

    @property
    def uri(self) -> str:
        return f"sip:soak{self.index}@127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.uas is not None and self.uas.proc.poll() is None

    def start(self) -> None:
        self.incarnation += 1
        self.uas = common.SippUas(
            self.workdir / f"sipp{self.index}_{self.incarnation}", port=self.port
        )

    def kill(self) -> None:
        if self.uas is not None and self.uas.proc.poll() is None:
            self.uas.proc.kill()
            self.uas.proc.wait(5)
            self.kills += 1
        self.uas = None

    def stop(self) -> None:
        if self.uas is not None:
            self.uas.stop()
        self.uas = None

    def open_calls(self) -> int:
        """Calls this incarnation still holds (answered, waiting for a BYE)."""
        return self.uas.counters().current if self.uas is not None else 0


class BaresipCallee:
    """baresip auto-answering on a fixed port with a sine as microphone; what it holds is
    read from its log (``Call established`` minus ``session closed``)."""

    kind = "baresip"

    def __init__(self, workdir: Path, index: int, lifetime_s: int) -> None:
        self.workdir = workdir / f"baresip{index}"
        self.index = index
        self.lifetime_s = lifetime_s
        self.port = common.free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: Path | None = None
        self.incarnation = 0
        self.kills = 0
        rtp = common.free_range(400, 33000, 60000)
        self.rtp = rtp

    @property
    def uri(self) -> str:
        return f"sip:baresip@127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self.incarnation += 1
        self.workdir.mkdir(parents=True, exist_ok=True)
        lines = [
            "poll_method\t\tepoll",
            f"sip_listen\t\t127.0.0.1:{self.port}",
            "net_interface\t\t127.0.0.1",
            "call_local_timeout\t120",
            "call_max_calls\t\t64",
            "audio_source\t\tausine,440",
            "ausrc_srate\t\t48000",  # ausine makes 48 kHz only; baresip resamples
            "ausrc_channels\t\t2",
            f"rtp_ports\t\t{self.rtp[0]}-{self.rtp[1]}",
            "rtcp_mux\t\tno",
            f"module_path\t\t{BARESIP_MODULES}",
            "module\t\t\tg711.so",
            "module\t\t\tausine.so",
            "module_tmp\t\taccount.so",
            "module_app\t\tmenu.so",
        ]
        (self.workdir / "config").write_text("\n".join(lines) + "\n")
        (self.workdir / "accounts").write_text(
            "<sip:baresip@127.0.0.1>;regint=0;answermode=auto;audio_codecs=PCMU,PCMA\n"
        )
        self.log = self.workdir / f"baresip_{self.incarnation}.log"
        out = open(self.log, "wb")  # noqa: SIM115 - the child owns it
        cmd = [BARESIP or "baresip", "-f", str(self.workdir), "-t", str(self.lifetime_s)]
        if shutil.which("stdbuf"):
            cmd = ["stdbuf", "-oL", *cmd]  # line-buffered log: counted while it runs
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
        )
        out.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if "baresip is ready" in self._text():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"baresip did not start: {self._text()[-1500:]}")

    def _text(self) -> str:
        try:
            return self.log.read_text(errors="replace") if self.log is not None else ""
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
            self.kills += 1
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def open_calls(self) -> int:
        if not self.alive:
            return 0
        text = self._text()
        established = len(re.findall(r"Call established", text))
        closed = len(re.findall(r"session closed|Call terminated", text))
        return max(0, established - closed)


Callee = SippCallee | BaresipCallee


# ------------------------------------------------------------------------------- the server


class ServerProcess:
    """``softswitch serve`` on fixed ports and one database, restartable."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.sip_port = common.free_port()
        self.http_port = common.free_port()
        self.rtp = common.free_range(4000, 20000, 32768)
        self.db = workdir / "soak.db"
        self.proc: subprocess.Popen[bytes] | None = None
        self.incarnation = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        self.incarnation += 1
        env = common.worker_env()
        env.update(
            {
                "SOFTSWITCH_LIMITS_CPS": "0",
                "SOFTSWITCH_LIMITS_MAX_CONCURRENT": "100000",
                "SOFTSWITCH_LIMITS_MAX_QUEUE": "100000",
            }
        )
        args = [
            sys.executable,
            "-m",
            "softswitch.cli",
            "serve",
            "--http",
            f"127.0.0.1:{self.http_port}",
            "--sip",
            f"127.0.0.1:{self.sip_port}",
            "--rtp-ports",
            f"{self.rtp[0]}-{self.rtp[1]}",
            "--db",
            str(self.db),
            "--auth-id",
            AUTH_ID,
            "--auth-token",
            AUTH_TOKEN,
        ]
        log = open(self.workdir / f"serve_{self.incarnation}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, env=env
        )
        log.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def rss(self) -> int:
        try:
            return common.rss_bytes(self.proc.pid) if self.proc is not None else 0
        except OSError:
            return 0

    def live_in_store(self) -> list[tuple[str, str, str]]:
        """(call uuid, status, callee) of the calls the store still calls live (read with a
        plain SQLite reader)."""
        marks = ", ".join("?" for _ in LIVE_STATUSES)
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5) as db:
            rows = db.execute(
                f"SELECT call_uuid, call_status, to_number FROM calls WHERE call_status IN ({marks})",
                LIVE_STATUSES,
            ).fetchall()
        return [(str(a), str(b), str(c)) for a, b, c in rows]


async def _wait_ready(session: Any, server: ServerProcess, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc is None or server.proc.poll() is not None:
            return "softswitch serve exited"
        try:
            async with session.get(f"{server.base}/v1/Account/{AUTH_ID}/Call/") as resp:
                if resp.status < 500:
                    return None
        except OSError:
            pass
        await asyncio.sleep(0.1)
    return "softswitch serve did not answer HTTP in time"


# ------------------------------------------------------------------------------- webhooks


class Hooks:
    """answer_url (holds the call ``hold`` s) and hangup_url (counted per RequestUUID)."""

    def __init__(self) -> None:
        self.answered = 0
        self.hangups: Counter[str] = Counter()
        self.causes: Counter[str] = Counter()
        self.runner: Any = None
        self.port = 0

    async def start(self) -> None:
        from aiohttp import web

        async def answer(request: web.Request) -> web.Response:
            self.answered += 1
            hold = request.query.get("hold", "2")
            xml = f'<?xml version="1.0" encoding="UTF-8"?><Response><Wait length="{hold}"/></Response>'
            return web.Response(text=xml, content_type="application/xml")

        async def hangup(request: web.Request) -> web.Response:
            data = await request.post()
            self.hangups[str(data.get("RequestUUID", "?"))] += 1
            self.causes[str(data.get("HangupCause", "?"))] += 1
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_route("*", "/answer", answer)
        app.router.add_route("POST", "/hangup", hangup)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


# ------------------------------------------------------------------------------- the run


def _holds(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    return int(low), int(high or low)


async def _soak(args: argparse.Namespace, workdir: Path, budget: common.Budget) -> dict[str, Any]:
    import aiohttp

    rng = random.Random(args.soak_seed)
    minutes = args.soak_minutes
    duration = minutes * 60.0
    hold_min, hold_max = _holds(args.soak_hold)
    out: dict[str, Any] = {
        "minutes": minutes,
        "target_live": args.soak_calls,
        "hold": args.soak_hold,
    }
    lifetime = int(duration + args.soak_grace + 120)
    callees: list[Callee] = [SippCallee(workdir, i) for i in range(args.soak_sipp)]
    if args.soak_baresip and BARESIP and (BARESIP_MODULES / "ausine.so").exists():
        callees += [BaresipCallee(workdir, i, lifetime) for i in range(args.soak_baresip)]
    hooks = Hooks()
    await hooks.start()
    server = ServerProcess(workdir)
    token = base64.b64encode(f"{AUTH_ID}:{AUTH_TOKEN}".encode()).decode()
    placed: dict[str, float] = {}  # request uuid -> time placed
    statuses: Counter[int] = Counter()
    post_errors = 0
    kills = {"callee": 0, "server": 0}
    rss: dict[str, int] = {}
    pending_restarts: list[tuple[float, Callee]] = []
    tasks: set[asyncio.Task[None]] = set()
    try:
        for callee in callees:
            await asyncio.to_thread(callee.start)
        server.start()
        connector = aiohttp.TCPConnector(limit=100)
        async with aiohttp.ClientSession(
            headers={"Authorization": f"Basic {token}"},
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=10),
        ) as session:
            problem = await _wait_ready(session, server, 30.0)
            if problem:
                out["error"] = problem
                return out
            loop = asyncio.get_running_loop()
            url = f"{server.base}/v1/Account/{AUTH_ID}/Call/"
            hook = f"http://127.0.0.1:{hooks.port}"

            async def place() -> None:
                nonlocal post_errors
                callee = rng.choice(callees)
                hold = rng.randint(hold_min, hold_max)
                body = {
                    "from": "14155550100",
                    "to": callee.uri,
                    "answer_url": f"{hook}/answer?hold={hold}",
                    "answer_method": "GET",
                    "hangup_url": f"{hook}/hangup",
                    "hangup_method": "POST",
                    "time_limit": hold + 30,
                    # a callee killed while we ring it: the call ends at the ring timeout
                    "ring_timeout": RING_TIMEOUT_S,
                }
                if rng.random() < 0.1:  # a few end by time_limit, not by the document
                    body["answer_url"] = f"{hook}/answer?hold={hold + 60}"
                    body["time_limit"] = hold
                try:
                    async with session.post(url, json=body) as resp:
                        statuses[resp.status] += 1
                        data = await resp.json(content_type=None)
                        if (
                            resp.status == 201
                            and isinstance(data, dict)
                            and data.get("request_uuid")
                        ):
                            placed[str(data["request_uuid"])] = loop.time()
                except (aiohttp.ClientError, TimeoutError, ValueError):
                    post_errors += 1

            t0 = loop.time()
            end = t0 + duration
            kill_at = t0 + duration / 2
            warm = min(10.0, duration / 4)
            next_chaos = t0 + rng.uniform(0.5, 1.5) * args.soak_chaos_s
            server_down = False
            restarted_at = 0.0
            last_post = last_bar = 0.0
            with common.Progress(not args.no_progress, round(duration), "soak", unit="s") as bar:
                while (now := loop.time()) < end and not budget.expired():
                    if "server_1_warm" not in rss and now - t0 >= warm:
                        rss["server_1_warm"] = server.rss()
                    if not server_down and kills["server"] == 0 and now >= kill_at:
                        rss["server_1_end"] = server.rss()
                        server.kill()
                        kills["server"] += 1
                        server_down = True
                        out["live_at_server_kill"] = len(placed) - sum(
                            1 for u in placed if hooks.hangups[u]
                        )
                        server.start()
                        restart_t0 = loop.time()
                        problem = await _wait_ready(session, server, 60.0)
                        if problem:
                            out["error"] = f"restart: {problem}"
                            return out
                        out["restart_seconds"] = loop.time() - restart_t0
                        server_down = False
                        restarted_at = loop.time()
                    if (
                        "server_2_warm" not in rss
                        and kills["server"]
                        and loop.time() - restarted_at >= warm
                    ):
                        rss["server_2_warm"] = server.rss()
                    if now >= next_chaos:
                        alive = [c for c in callees if c.alive]
                        if len(alive) > 1:
                            victim = rng.choice(alive)
                            await asyncio.to_thread(victim.kill)
                            kills["callee"] += 1
                            pending_restarts.append((now + rng.uniform(0.5, 2.0), victim))
                        next_chaos = now + rng.uniform(0.5, 1.5) * args.soak_chaos_s
                    for due, callee in list(pending_restarts):
                        if now >= due:
                            pending_restarts.remove((due, callee))
                            await asyncio.to_thread(callee.start)
                    live = sum(1 for u in placed if not hooks.hangups[u]) + len(tasks)
                    if live < args.soak_calls and now - last_post >= 1.0 / args.soak_rate:
                        last_post = now
                        task = loop.create_task(place())
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    if now - last_bar >= 0.5:
                        last_bar = now
                        bar.update_to(
                            min(round(now - t0), round(duration)),
                            placed=len(placed),
                            live=live,
                            callbacks=sum(1 for u in placed if hooks.hangups[u]),
                            kills=kills["callee"],
                        )
                    await asyncio.sleep(0.02)
            if tasks:
                await asyncio.wait(tasks, timeout=15)
            for _, callee in pending_restarts:
                await asyncio.to_thread(callee.start)
            # Grace: every placed call gets its callback (or the grace ends).
            grace_end = loop.time() + args.soak_grace
            while loop.time() < grace_end and any(not hooks.hangups[u] for u in placed):
                await asyncio.sleep(0.2)
            await asyncio.sleep(3.0)  # the last BYEs reach the callees; sipp writes its stats
            rss["server_2_end"] = server.rss()
            stuck_calls = await asyncio.to_thread(server.live_in_store)
            stuck = len(stuck_calls)
            orphans = {f"{c.kind}{c.index}": c.open_calls() for c in callees}
    finally:
        for callee in callees:
            await asyncio.to_thread(callee.stop)
        await asyncio.to_thread(server.stop)
        await hooks.stop()
    missing = sum(1 for u in placed if hooks.hangups[u] == 0)
    duplicated = sum(1 for u in placed if hooks.hangups[u] > 1)
    unexpected = sum(n for u, n in hooks.hangups.items() if u not in placed)
    growth = {}
    for inc in (1, 2):
        if f"server_{inc}_warm" in rss and f"server_{inc}_end" in rss:
            growth[f"server_{inc}"] = rss[f"server_{inc}_end"] - rss[f"server_{inc}_warm"]
    out.update(
        {
            "placed": len(placed),
            "post_statuses": dict(statuses),
            "post_errors": post_errors,
            "answered": hooks.answered,
            "callbacks": sum(hooks.hangups[u] for u in placed),
            "missing_callbacks": missing,
            "duplicate_callbacks": duplicated,
            "unexpected_callbacks": unexpected,
            "hangup_causes": dict(hooks.causes),
            "stuck_calls": stuck,
            "stuck_detail": stuck_calls[:20],
            "orphan_legs": sum(orphans.values()),
            "orphans_by_callee": orphans,
            "callee_kills": kills["callee"],
            "server_kills": kills["server"],
            "callees": [f"{c.kind}{c.index}" for c in callees],
            "rss": rss,
            "rss_growth": growth,
        }
    )
    out["ok"] = (
        not out.get("error")
        and missing == 0
        and duplicated == 0
        and stuck == 0
        and out["orphan_legs"] == 0
        and len(placed) > 0
        and kills["server"] == 1
    )
    return out


def run(args: argparse.Namespace, workdir: Path, budget: common.Budget) -> dict[str, Any]:
    workdir = workdir / "soak"
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return asyncio.run(_soak(args, workdir, budget))
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "ok": False}


def summary(result: dict[str, Any]) -> str:
    """The one JSON line the soak ends with."""
    keys = (
        "ok",
        "minutes",
        "target_live",
        "placed",
        "callbacks",
        "missing_callbacks",
        "duplicate_callbacks",
        "unexpected_callbacks",
        "stuck_calls",
        "orphan_legs",
        "callee_kills",
        "server_kills",
        "live_at_server_kill",
        "restart_seconds",
        "post_errors",
        "rss_growth",
        "error",
    )
    return json.dumps({"soak": {k: result[k] for k in keys if k in result}}, default=str)


__all__ = ["run", "summary"]
