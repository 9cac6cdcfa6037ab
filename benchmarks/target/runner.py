"""The load: calls placed on the embedded user agent (:class:`softswitch.ua.UserAgent`) at
the plan's rate, at most ``concurrency`` up at once, each held for its drawn time while it
plays the plan's media, sends its digits and listens for them to come back; then its SIP,
RTP/RTCP and DTMF figures become a :class:`CallResult`.

Every loop is bounded: placing stops at ``calls`` or ``duration`` (whichever first), each
call's waits have timeouts (ring timeout, hold, digits, BYE), and the run waits for the last
calls at most the longest hold plus the ring timeout plus a margin before hanging them up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.target import emodel
from benchmarks.target.plan import Media, Plan
from benchmarks.target.results import (
    ANSWERED,
    BUSY,
    FAILED,
    NO_ANSWER,
    STOPPED,
    CallResult,
    failure_key,
    percentile,
)
from benchmarks.target.watch import SipWatch
from media.amd import AmdParams
from media.engine import MediaConfig
from media.play import ArraySource, FileSource, SilenceSource, ToneSource, tts_to_pcm
from sip import causes
from sip.auth import Credentials
from softswitch.amd import MachineDetection
from softswitch.cli import local_address_for
from softswitch.ua import GatewayConfig, OutboundCall, UserAgent, UserAgentConfig

log = logging.getLogger("benchmarks.target")

GATEWAY = "target"  #: the name of the trunk built from --gateway
BYE_WAIT_S = 35.0  #: a BYE's transaction ends within 64*T1 = 32 s
TAIL_MARGIN_S = 40.0


@dataclass
class Progress:
    """What the live status line shows."""

    elapsed: float = 0.0
    up: int = 0
    placed: int = 0
    done: int = 0
    answered: int = 0
    rate: float = 0.0
    p95_setup_ms: float | None = None
    failures: dict[str, int] = field(default_factory=dict)

    def line(self, total: int) -> str:
        asr = f"{100.0 * self.answered / self.done:.1f}%" if self.done else "-"
        p95 = f"{self.p95_setup_ms:.0f} ms" if self.p95_setup_ms is not None else "-"
        fails = " ".join(f"{k}x{v}" for k, v in list(self.failures.items())[:4]) or "none"
        return (
            f"{self.elapsed:7.1f}s  up {self.up:4d}  rate {self.rate:5.1f}/s  "
            f"calls {self.placed}/{total}  ASR {asr}  p95 setup {p95}  failures: {fails}"
        )


class _Sources:
    """Builds each call's audio source; speech is synthesized once for the run."""

    def __init__(self, media: Media) -> None:
        self.media = media
        self._pcm: Any = None

    async def prepare(self) -> None:
        if self.media.kind == "speech":
            self._pcm = await asyncio.to_thread(tts_to_pcm, self.media.value)
        elif self.media.kind == "file":
            FileSource(self.media.value)  # a bad file fails the run before any call

    def make(self) -> Any:
        kind = self.media.kind
        if kind == "tone":
            return ToneSource(tuple(float(x) for x in self.media.value.split("+")), None)
        if kind == "file":
            return FileSource(self.media.value, loop=0)
        if kind == "speech":
            return ArraySource(self._pcm, loop=0)
        return SilenceSource(None)


class TargetRun:
    """One run of a :class:`Plan`; :meth:`run` returns the calls' results and the timeline."""

    def __init__(
        self,
        plan: Plan,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        progress_interval: float = 0.5,
    ) -> None:
        self.plan = plan
        self.on_progress = on_progress
        self.progress_interval = progress_interval
        self.results: list[CallResult] = []
        self.timeline: list[dict[str, float]] = []
        self.watch = SipWatch(limit=max(20_000, 4 * plan.concurrency))
        self.rng = random.Random(plan.seed)
        self.stopping = asyncio.Event()
        self._live: set[asyncio.Task[None]] = set()
        self._slot = asyncio.Event()
        self._placed_at: deque[float] = deque()
        self._t0 = 0.0
        self._wall0 = 0.0
        self._placed = 0
        self._ua: UserAgent | None = None
        self._sources = _Sources(plan.play)
        self._status = Progress()
        self.placing_s = 0.0

    # ------------------------------------------------------------------ setup

    def _user_agent(self) -> UserAgent:
        plan = self.plan
        host = plan.local_host
        if host is None:
            first_hop = plan.gateway_host or _uri_host(plan.target)
            host = local_address_for(first_hop)
        gateways = []
        if plan.gateway_host:
            gateways.append(
                GatewayConfig(
                    name=GATEWAY,
                    host=plan.gateway_host,
                    port=plan.gateway_port,
                    transport=plan.transport or "udp",
                    username=plan.username,
                    password=plan.password,
                )
            )
        transports: tuple[str, ...] = (
            ("udp", "tcp", "tls") if plan.transport == "tls" else ("udp", "tcp")
        )
        media = MediaConfig(
            bind_host=host,
            port_min=plan.rtp_ports[0],
            port_max=plan.rtp_ports[1],
            codecs=[plan.codec] if plan.codec else ["PCMU", "PCMA"],
        )
        config = UserAgentConfig(
            host=host,
            port=plan.sip_port,
            transports=transports,
            media=media,
            gateways=gateways,
            tls_port=0,
            linger=5.0,
        )
        ua = UserAgent(config)
        ua.sip.tracer = self.watch
        return ua

    # ------------------------------------------------------------------ the run

    async def run(self) -> dict[str, Any]:
        plan = self.plan
        await self._sources.prepare()
        ua = self._ua = self._user_agent()
        await ua.start()
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()
        self._wall0 = time.time()
        sampler = loop.create_task(self._sample())
        try:
            await self._place()
            self.placing_s = loop.time() - self._t0
            # The last calls: at most their hold, ring and BYE times.
            tail = (
                plan.ring_timeout
                + max(plan.hold.a, plan.hold.b)
                + plan.digit_timeout
                + TAIL_MARGIN_S
            )
            if self._live:
                done, pending = await asyncio.wait(set(self._live), timeout=tail)
                if pending:
                    self.stopping.set()
                    await asyncio.wait(pending, timeout=BYE_WAIT_S)
                    for task in pending:
                        task.cancel()
        finally:
            elapsed = loop.time() - self._t0
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            self._sample_once()
            await ua.close(grace=5.0)
        self.results.sort(key=lambda c: c.seq)
        return {
            "started_wall": self._wall0,
            "elapsed_s": elapsed,
            "placing_s": self.placing_s,
            "calls": self.results,
            "timeline": self.timeline,
        }

    def stop(self) -> None:
        """Stop placing calls and hang up the live ones (SIGINT)."""
        self.stopping.set()
        self._slot.set()

    async def _place(self) -> None:
        plan = self.plan
        loop = asyncio.get_running_loop()
        deadline = self._t0 + plan.duration if plan.duration > 0 else float("inf")
        next_at = self._t0
        while self._placed < plan.calls and not self.stopping.is_set():
            now = loop.time()
            if now >= deadline:
                break
            if next_at > now:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), min(next_at, deadline) - now)
                continue
            while len(self._live) >= plan.concurrency and not self.stopping.is_set():
                self._slot.clear()
                # Woken by each call that ends; the deadline bounds the wait.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slot.wait(), max(0.01, deadline - loop.time()))
                if loop.time() >= deadline:
                    return
            if self.stopping.is_set():
                break
            now = loop.time()
            seq = self._placed
            self._placed += 1
            self._placed_at.append(now)
            task = loop.create_task(self._call(seq), name=f"bench-call-{seq}")
            self._live.add(task)
            task.add_done_callback(self._ended)
            rate = plan.rate.at(now - self._t0)
            # Behind schedule (a full cap, a slow loop): no burst to catch up.
            next_at = max(next_at + 1.0 / rate, now - 1.0 / rate)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._live.discard(task)
        self._slot.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("call task failed", exc_info=task.exception())

    # ------------------------------------------------------------------ one call

    async def _call(self, seq: int) -> None:
        plan = self.plan
        assert self._ua is not None
        loop = asyncio.get_running_loop()
        result = CallResult(seq=seq, started=loop.time() - self._t0)
        self.results.append(result)
        credentials = None
        if plan.username and not plan.gateway_host:
            credentials = Credentials(plan.username, plan.password or "")
        try:
            call = await self._ua.dial(
                plan.target,
                from_user=plan.from_user,
                ring_timeout=plan.ring_timeout,
                credentials=credentials,
                transport=None if plan.gateway_host else plan.transport,
                gateway=GATEWAY if plan.gateway_host else None,
                codecs=[plan.codec] if plan.codec else None,
            )
        except (ValueError, LookupError, OSError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"[:200]
            result.cause = "DIAL_ERROR"
            result.ended = loop.time() - self._t0
            return
        result.call_id = call.call_id
        try:
            await self._hold(call, result)
        finally:
            if call.terminated is None:
                with contextlib.suppress(Exception):
                    await call.hangup()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(call.wait_terminated(), BYE_WAIT_S)
            self._finish(call, result)

    async def _hold(self, call: OutboundCall, result: CallResult) -> None:
        plan = self.plan
        if call.media is not None and not call.media.closed and plan.play.kind != "silence":
            call.media.play(self._sources.make())
        # Until the answer, the end of the call, or a stop (then the caller CANCELs).
        answer = asyncio.ensure_future(call.wait_answered())
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait(
                {answer, stop},
                timeout=plan.ring_timeout + 10.0,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            stop.cancel()
            answer.cancel()
        if not (answer.done() and not answer.cancelled() and answer.result()):
            return
        if self.stopping.is_set():
            return
        hold = result.hold_s = plan.hold.draw(self.rng)
        detection = MachineDetection(call, AmdParams()).start() if plan.amd else None
        side: list[asyncio.Task[Any]] = []
        if plan.digits and call.media is not None:
            side.append(asyncio.get_running_loop().create_task(self._digits(call, result)))
        ended = asyncio.ensure_future(call.wait_terminated())
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({ended, stop}, timeout=hold, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            ended.cancel()
            for task in side:
                task.cancel()
            if detection is not None:
                decision = detection.decision.result() if detection.decision.done() else None
                if decision is not None:
                    result.amd_status = decision.status
                    result.amd_ms = decision.decided_at_ms
                else:
                    result.amd_status = "NONE"
                with contextlib.suppress(Exception):
                    detection.stop()

    async def _digits(self, call: OutboundCall, result: CallResult) -> None:
        plan = self.plan
        await asyncio.sleep(plan.digits_delay)
        if call.terminated is not None or call.media is None:
            return
        with contextlib.suppress(Exception):
            await _bounded(call.send_digits(plan.digits), 10.0 + 2 * len(plan.digits), None)

    def _finish(self, call: OutboundCall, result: CallResult) -> None:
        plan = self.plan
        end = call.terminated
        result.ended = (call.ended_at - self._wall0) if call.ended_at is not None else None
        result.sip_status = end.sip_status if end is not None else call.sip_status
        result.cause = end.cause if end is not None else "NOT_ENDED"
        result.hangup_source = end.hangup_source if end is not None else ""
        answered = call.answered_at is not None
        if answered:
            result.outcome = ANSWERED
            result.duration_s = round(call.duration, 3)
        elif self.stopping.is_set() and result.cause == causes.ORIGINATOR_CANCEL:
            result.outcome = STOPPED
        elif result.cause == causes.USER_BUSY or result.sip_status in (486, 600):
            result.outcome = BUSY
        elif result.cause in (causes.NO_ANSWER, causes.ORIGINATOR_CANCEL) or result.sip_status in (
            408,
            480,
            487,
        ):
            result.outcome = NO_ANSWER
        else:
            result.outcome = FAILED
        timings = self.watch.take(call.call_id)
        if timings.invite_out is not None:
            if timings.first_18x is not None:
                result.pdd_ms = 1000.0 * (timings.first_18x - timings.invite_out)
            if timings.answer_200 is not None:
                result.setup_ms = 1000.0 * (timings.answer_200 - timings.invite_out)
        if timings.bye_out is not None and timings.bye_final is not None:
            result.bye_rtt_ms = 1000.0 * (timings.bye_final - timings.bye_out)
        result.retransmissions = timings.retransmissions
        if answered:
            self._media_figures(call, result)
            if plan.digits:
                result.dtmf_expected = plan.expected_digits
                result.dtmf_received = "".join(d.digit for d in call.digits)
                # Nothing expected back (--expect-digits ""): delivered only, no check.
                if result.dtmf_expected:
                    result.dtmf_ok = result.dtmf_expected in result.dtmf_received
        self._update_status(result)

    def _media_figures(self, call: OutboundCall, result: CallResult) -> None:
        stats = call.stats()
        received = _count(stats, "packets_received")
        lost = _count(stats, "lost")
        result.packets_sent = _count(stats, "packets_sent")
        result.dtmf_sent = _count(stats, "dtmf_sent")
        result.packets_received = received
        result.lost = lost
        expected = received + lost
        loss = lost / expected if expected else 0.0
        result.loss_pct = 100.0 * loss if expected else None
        jitter = stats.get("jitter_ms")
        result.jitter_ms = float(jitter) if isinstance(jitter, int | float) else None
        rtt = stats.get("rtt_ms")
        result.rtt_ms = float(rtt) if isinstance(rtt, int | float) else None
        remote = stats.get("remote_loss_fraction")
        result.remote_loss_pct = (
            100.0 * float(remote)
            if isinstance(remote, int | float) and stats.get("rtcp_received")
            else None
        )
        codec = stats.get("codec")
        result.codec = str(codec) if codec else None
        if expected:
            ptime = stats.get("ptime")
            rating = emodel.rate(
                loss_fraction=loss,
                rtt_ms=result.rtt_ms,
                jitter_ms=result.jitter_ms or 0.0,
                jitter_buffer_ms=self.plan.jitter_buffer_ms,
                ptime_ms=float(ptime) if isinstance(ptime, int | float) else 20.0,
                codec=result.codec,
            )
            result.r_factor = round(rating.r, 2)
            result.mos = round(rating.mos, 3)
            result.delay_ms = round(rating.delay_ms, 1)

    # ------------------------------------------------------------------ progress

    def _update_status(self, result: CallResult) -> None:
        status = self._status
        status.done += 1
        if result.outcome == ANSWERED:
            status.answered += 1
        else:
            key = failure_key(result)
            status.failures[key] = status.failures.get(key, 0) + 1
            status.failures = dict(Counter(status.failures).most_common())

    async def _sample(self) -> None:
        while True:  # cancelled by run(); one sample per interval
            await asyncio.sleep(self.progress_interval)
            self._sample_once()

    def _sample_once(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._placed_at and self._placed_at[0] < now - 1.0:
            self._placed_at.popleft()
        status = self._status
        status.elapsed = now - self._t0
        status.up = (
            sum(1 for c in self._ua.calls if c.answered_at is not None and c.terminated is None)
            if self._ua
            else 0
        )
        status.placed = self._placed
        status.rate = float(len(self._placed_at))
        setups = [c.setup_ms for c in self.results[-2000:] if c.setup_ms is not None]
        status.p95_setup_ms = percentile(setups, 95)
        self.timeline.append(
            {
                "t": round(status.elapsed, 3),
                "up": status.up,
                "live": len(self._live),
                "rate": status.rate,
                "placed": status.placed,
                "done": status.done,
                "answered": status.answered,
            }
        )
        if self.on_progress is not None:
            self.on_progress(status)


def _count(stats: dict[str, object], key: str) -> int:
    value = stats.get(key)
    return int(value) if isinstance(value, int | float) else 0


async def _bounded(awaitable: Any, timeout: float, default: Any) -> Any:
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        return default


def _uri_host(target: str) -> str:
    """The host of ``sip:user@host:port;params`` (or ``user@host``), for the source address."""
    text = target.split(":", 1)[1] if target.startswith(("sip:", "sips:")) else target
    text = text.split("@", 1)[-1].split(";", 1)[0]
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text
