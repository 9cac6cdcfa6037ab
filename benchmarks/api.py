"""Calls created through the HTTP API: ``softswitch serve`` in its own process receives
``POST /v1/Account/{auth_id}/Call/`` at a fixed rate; each call dials the sipp UAS, fetches
the answer_url (``<Wait/><Hangup/>``, with ``time_limit`` as a backstop) and posts its
hangup_url. The same rate through the embedded UserAgent, with the same media settings and
hold, runs right after, so the difference in CPU per call is what the API layer costs
(HTTP, validation, the call record in SQLite, answer_url fetch, XML, webhooks).

Needs ``python -m softswitch.cli serve`` to work; if it does not start, the mode reports why.

``--workers 1,2`` measures the same ladder with ``serve --workers N`` (one HTTP port shared with
SO_REUSEPORT, a SIP port and RTP slice per worker, a redis-server started here for the shared
limits and call ownership, each worker on its own SQLite file until a shared store exists);
CPU is then the sum over the supervisor and its workers.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import _common as common
from benchmarks import _profiled_serve, setup_rate

AUTH_ID = "MABENCHMARKBENCH0001"
AUTH_TOKEN = "bench-token-0001"


class _Hooks:
    """The answer_url and hangup_url endpoints (run in the orchestrator, not the server)."""

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self.answered = 0
        self.hangups: list[dict[str, str]] = []
        self.runner: Any = None
        self.port = 0
        #: the server's connections to these hooks (peer address): keep-alive reuses them
        self.connections: set[Any] = set()
        self.requests = 0

    def _seen(self, request: Any) -> None:
        self.requests += 1
        if request.transport is not None:
            self.connections.add(request.transport.get_extra_info("peername"))

    async def start(self) -> None:
        from aiohttp import web

        async def answer(request: web.Request) -> web.Response:
            self._seen(request)
            self.answered += 1
            xml = (f'<?xml version="1.0" encoding="UTF-8"?><Response><Wait length="{max(1, round(self.hold))}"/>'
                   "<Hangup/></Response>")
            return web.Response(text=xml, content_type="application/xml")

        async def hangup(request: web.Request) -> web.Response:
            self._seen(request)
            data = await request.post() if request.method == "POST" else request.query
            self.hangups.append({k: str(v) for k, v in data.items()})
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_route("*", "/answer", answer)
        app.router.add_route("*", "/hangup", hangup)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def _start_server(workdir: Path, sip_port: int, http_port: int, rtp: tuple[int, int], *,
                  workers: int = 1, redis_url: str | None = None,
                  profile: str | None = None) -> subprocess.Popen[bytes]:
    env = common.worker_env()
    env.update({"SOFTSWITCH_LIMITS_CPS": "0", "SOFTSWITCH_LIMITS_MAX_CONCURRENT": "100000",
                "SOFTSWITCH_LIMITS_MAX_QUEUE": "100000"})
    if redis_url:
        env["SOFTSWITCH_REDIS_URL"] = redis_url
    db = workdir / f"api_{http_port}.db"
    # Profiled: PROFILE_START/PROFILE_STOP around the load window start and stop cProfile (_run).
    entry = ["-m", "benchmarks._profiled_serve", profile] if profile else ["-m", "softswitch.cli"]
    args = [sys.executable, *entry, "serve", "--http", f"127.0.0.1:{http_port}",
            "--sip", f"127.0.0.1:{sip_port}", "--rtp-ports", f"{rtp[0]}-{rtp[1]}", "--db", str(db),
            "--auth-id", AUTH_ID, "--auth-token", AUTH_TOKEN, "--workers", str(workers)]
    log = open(workdir / f"serve_{http_port}.log", "wb")  # noqa: SIM115
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env)


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (the workers of ``serve --workers``)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def _tree_cpu(pid: int) -> float:
    total = 0.0
    for p in _descendants(pid):
        try:
            total += common.proc_cpu(p)
        except OSError:
            continue
    return total


def _port_run(count: int) -> int:
    """A UDP/TCP port p with p .. p + count - 1 all free: the workers' SIP ports."""
    for _ in range(200):
        base = common.free_port()
        try:
            for p in range(base, base + count):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    with socket.socket(socket.AF_INET, kind) as s:
                        s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no {count} consecutive free ports")


class _Redis:
    """A throw-away redis-server on a unix socket in the work directory."""

    def __init__(self, workdir: Path) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server (Debian redis-server) not installed")
        workdir.mkdir(parents=True, exist_ok=True)
        self.socket = workdir / "redis.sock"
        self.proc = subprocess.Popen(
            [server, "--port", "0", "--unixsocket", str(self.socket), "--save", "", "--appendonly", "no",
             "--dir", str(workdir), "--logfile", str(workdir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.01)

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def _wait_ready(session: Any, base: str, proc: subprocess.Popen[bytes], timeout: float,
                      workers: int = 1) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"softswitch serve exited with {proc.returncode}"
        if workers > 1 and len(_descendants(proc.pid)) < workers + 1:
            await asyncio.sleep(0.2)
            continue
        try:
            async with session.get(f"{base}/v1/Account/{AUTH_ID}/Call/") as resp:
                if resp.status < 500:
                    return None
        except OSError:
            pass
        await asyncio.sleep(0.2)
    return "softswitch serve did not answer HTTP in time"


async def _stop_profile(proc: subprocess.Popen[bytes], path: Path) -> None:
    """PROFILE_STOP: the server stops profiling and writes the dump (accumulated over the steps)."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    proc.send_signal(_profiled_serve.PROFILE_STOP)
    for _ in range(100):
        await asyncio.sleep(0.1)
        if path.exists() and path.stat().st_mtime_ns != before and path.stat().st_size > 0:
            await asyncio.sleep(0.2)  # let the write finish
            return


async def _api_step(session: Any, base: str, hooks: _Hooks, uas: common.SippUas, pid: int, rate: float,
                    seconds: float, hold: float, bar: common.Progress) -> dict[str, Any]:
    count = max(2, int(round(rate * seconds)))
    url = f"{base}/v1/Account/{AUTH_ID}/Call/"
    hook = f"http://127.0.0.1:{hooks.port}"
    body = {"from": "14155550100", "to": uas.uri, "answer_url": f"{hook}/answer",
            "answer_method": "GET", "hangup_url": f"{hook}/hangup", "hangup_method": "POST",
            "time_limit": int(max(1, round(hold)))}
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    answered0, hangups0 = hooks.answered, len(hooks.hangups)
    requests0, connections0 = hooks.requests, len(hooks.connections)
    base_uas = uas.counters()
    loop = asyncio.get_running_loop()

    async def post() -> None:
        t0 = loop.time()
        try:
            async with session.post(url, json=body) as resp:
                await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
        except Exception:
            statuses[0] = statuses.get(0, 0) + 1
        latencies.append(loop.time() - t0)

    cpu0 = _tree_cpu(pid)
    t_start = loop.time()
    tasks = []
    max_lag = 0.0
    for i in range(count):
        due = t_start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        max_lag = max(max_lag, loop.time() - due)
        tasks.append(loop.create_task(post()))
        bar.update_to(i + 1, answered=hooks.answered - answered0, hangups=len(hooks.hangups) - hangups0)
    launch = loop.time() - t_start
    await asyncio.gather(*tasks)
    deadline = loop.time() + hold + 20
    while loop.time() < deadline and len(hooks.hangups) - hangups0 < count:
        await asyncio.sleep(0.2)
        bar.update_to(count, answered=hooks.answered - answered0, hangups=len(hooks.hangups) - hangups0)
    cpu = _tree_cpu(pid) - cpu0
    wall = loop.time() - t_start
    after = await asyncio.to_thread(uas.settle, base_uas, count, 8.0)
    hangups = hooks.hangups[hangups0:]
    hangup_causes: dict[str, int] = {}
    for h in hangups:
        cause = h.get("HangupCause") or h.get("HangupCauseName") or "?"
        hangup_causes[cause] = hangup_causes.get(cause, 0) + 1
    created = statuses.get(201, 0)
    answered = hooks.answered - answered0
    verdict = "sustained"
    if created < count:
        verdict = f"POST statuses {statuses}"
    elif answered < count:
        verdict = f"only {answered} answered"
    elif len(hangups) < count:
        verdict = f"only {len(hangups)} hangup callbacks"
    elif after.failed - base_uas.failed:
        verdict = f"UAS saw {after.failed - base_uas.failed} failed calls"
    elif launch - (count - 1) / rate > 0.05 * seconds + 0.25:
        verdict = f"fell behind by {launch - (count - 1) / rate:.2f} s"
    return {
        "rate": rate, "seconds": seconds, "posted": count, "created": created, "statuses": statuses,
        "answered": answered, "hangups": len(hangups), "hangup_causes": hangup_causes,
        "uas_ok": after.successful - base_uas.successful, "uas_failed": after.failed - base_uas.failed,
        "post_p50_ms": common.percentile(latencies, 50) * 1000,
        "post_p99_ms": common.percentile(latencies, 99) * 1000,
        "wall": wall, "cpu": cpu, "cpu_per_call": cpu / count, "max_launch_lag": max_lag,
        "verdict": verdict, "sustained": verdict == "sustained",
        "hook_requests": hooks.requests - requests0,
        "hook_connections": len(hooks.connections) - connections0,
    }


async def _run(args: argparse.Namespace, workdir: Path, budget: common.Budget) -> dict[str, Any]:
    counts = list(getattr(args, "api_workers", None) or [1])
    first: dict[str, Any] | None = None
    by_workers = []
    for workers in counts:
        redis = None
        try:
            if workers > 1:
                redis = _Redis(workdir / f"redis_{workers}")
            result = await _run_one(args, workdir, budget, workers, redis.url if redis else None,
                                    compare_ua=first is None)
        except Exception as exc:
            result = {"error": f"{type(exc).__name__}: {exc}", "seconds": args.api_seconds,
                      "hold": args.hold, "steps": []}
        finally:
            if redis is not None:
                redis.stop()
        result["workers"] = workers
        by_workers.append(result)
        if first is None:
            first = result
    assert first is not None
    if len(counts) > 1:
        first["by_workers"] = [{"workers": r["workers"], "steps": r.get("steps", []), "error": r.get("error"),
                                "redis": r["workers"] > 1} for r in by_workers]
    return first


async def _run_one(args: argparse.Namespace, workdir: Path, budget: common.Budget, workers: int,
                   redis_url: str | None, *, compare_ua: bool) -> dict[str, Any]:
    import aiohttp

    hold = max(1.0, round(args.hold))
    out: dict[str, Any] = {"seconds": args.api_seconds, "hold": hold, "steps": [], "ua_steps": []}
    hooks = _Hooks(hold)
    await hooks.start()
    sip_port, http_port = _port_run(workers), common.free_port()
    top = max(args.api_rates)
    profile = getattr(args, "api_profile", None)
    # Profiled, calls take longer and linger longer: more ports, so the pool is never the limit.
    rtp = common.free_range(min(12000, (8 if profile else 2) * int(top * (hold + 3)) + 64 * workers),
                            20000, 32768)
    proc = _start_server(workdir, sip_port, http_port, rtp, workers=workers, redis_url=redis_url,
                         profile=profile)
    base = f"http://127.0.0.1:{http_port}"
    token = base64.b64encode(f"{AUTH_ID}:{AUTH_TOKEN}".encode()).decode()
    connector = aiohttp.TCPConnector(limit=200)
    try:
        with common.uas(workdir / "api") as server:
            async with aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"},
                                     connector=connector) as session:
                problem = await _wait_ready(session, base, proc, 30.0, workers)
                if problem:
                    out["error"] = problem + f" (log: {workdir / f'serve_{http_port}.log'})"
                    return out
                out["server_rss_start"] = common.rss_bytes(proc.pid)
                for rate in args.api_rates:
                    if budget.remaining() < args.api_seconds + hold + 30:
                        break
                    count = max(2, int(round(rate * args.api_seconds)))
                    if profile:
                        proc.send_signal(_profiled_serve.PROFILE_START)  # profile this step's window only
                    with common.Progress(not args.no_progress, count, f"api {rate:g}/s") as bar:
                        step = await _api_step(session, base, hooks, server, proc.pid, rate,
                                               args.api_seconds, hold, bar)
                    if profile:
                        await _stop_profile(proc, Path(profile))
                    out["steps"].append(step)
                    print(f"  {'ok ' if step['sustained'] else 'NO '} api x{workers}     {rate:7g}/s x {args.api_seconds:g}s: "
                          f"{step['created']} created, {step['answered']} answered, {step['hangups']} hangups, "
                          f"server CPU {step['cpu_per_call'] * 1000:.2f} ms/call, "
                          f"{step['hook_requests']} answer/hangup requests on {step['hook_connections']} new "
                          f"connections, {step['verdict']}", file=sys.stderr)
                    if not compare_ua:
                        if not step["sustained"]:
                            break
                        continue
                    # The same calls through the embedded UserAgent, same media and hold.
                    ua_args = argparse.Namespace(**{**vars(args), "hold": hold, "setup_media": "full"})
                    ua_step = await asyncio.to_thread(setup_rate.run_step, "softswitch", server, rate,
                                                      args.api_seconds, ua_args, workdir, label=" (embedded, full media)")
                    out["ua_steps"].append(ua_step)
                    step["ua_cpu_per_call"] = ua_step.get("cpu_per_call")
                    if not step["sustained"]:
                        break
                out["server_rss_end"] = common.rss_bytes(proc.pid)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        await hooks.stop()
    if profile and Path(profile).exists():
        from benchmarks import profile as prof_mod

        calls = sum(s["posted"] for s in out["steps"]) or 1
        out["profile"] = profile
        out["stages"] = prof_mod.stages(Path(profile))
        out["stages_table"] = prof_mod.stages_table(out["stages"], calls)
        print(f"server CPU by stage per API call ({calls} calls, under cProfile):", file=sys.stderr)
        print(out["stages_table"], file=sys.stderr)
    return out


def run(args: argparse.Namespace, workdir: Path, budget: common.Budget) -> dict[str, Any]:
    try:
        return asyncio.run(_run(args, workdir, budget))
    except Exception as exc:  # the server is another helper's moving part: report, go on
        return {"error": f"{type(exc).__name__}: {exc}", "seconds": args.api_seconds, "hold": args.hold,
                "steps": []}


__all__ = ["run"]
