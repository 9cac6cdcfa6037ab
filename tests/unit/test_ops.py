"""The operators' observer without a network: metrics as calls move, the trace stored at the
end, and again once a leg still ending is over."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from sip.aio.trace import TracedMessage
from softswitch.events import DigitReceived
from softswitch.ops import Operations


@dataclass
class FakeLeg:
    call_id: str
    terminated: Any = None
    history: list[Any] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def stats(self) -> dict[str, Any]:
        return {
            "codec": "PCMU",
            "packets_received": 50,
            "lost": 2,
            "loss_fraction": 0.04,
            "jitter_ms": 3.0,
        }

    async def wait_terminated(self) -> None:
        await self.done.wait()


@dataclass
class FakeCall:
    call_uuid: str
    leg: Any
    direction: str = "outbound"
    created_at: float = field(default_factory=time.time)
    dialed_at: float | None = None
    answered_at: float | None = None
    b_legs: list[Any] = field(default_factory=list)
    machine: Any = None


@dataclass
class FakeEnd:
    cause: str
    answered: bool


class FakeStore:
    def __init__(self) -> None:
        self.saved: list[tuple[str, list[dict[str, Any]], int, dict[str, Any]]] = []

    def save_trace(
        self, call_uuid: str, messages: Any, *, dropped: int = 0, media: Any = None
    ) -> None:
        self.saved.append((call_uuid, list(messages), dropped, dict(media or {})))


def _samples(ops: Operations) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(ops.metrics.exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _msg(call_id: str, first: str) -> TracedMessage:
    data = f"{first}\r\nCall-ID: {call_id}\r\nContent-Length: 0\r\n\r\n".encode()
    return TracedMessage.now("out", "udp", ("127.0.0.1", 1), ("127.0.0.1", 2), data)


async def test_metrics_and_the_stored_trace_with_a_b_leg_still_ending() -> None:
    store = FakeStore()
    manager = type("M", (), {"table": type("T", (), {"calls": {}})()})()
    ops = Operations(manager, store=store)
    a, b = FakeLeg("a-leg"), FakeLeg("b-leg")
    a.history.append(DigitReceived(time.time(), "5", 100))
    call = FakeCall("uuid-1", a)
    call.dialed_at = time.time() - 1.5
    ops.call_dialed(call)
    ops.traces.record(_msg("a-leg", "INVITE sip:x SIP/2.0"))  # before the leg is claimed
    ops.leg_started(call, a)
    call.answered_at = time.time()
    ops.call_answered(call)
    ops.leg_started(call, b)
    call.b_legs.append(b)
    ops.traces.record(_msg("b-leg", "INVITE sip:y SIP/2.0"))
    a.terminated = object()
    ops.call_ended(call, FakeEnd("NORMAL_CLEARING", True))

    ((uuid, messages, dropped, media),) = store.saved
    assert uuid == "uuid-1" and dropped == 0
    assert [m["first_line"] for m in messages] == ["INVITE sip:x SIP/2.0", "INVITE sip:y SIP/2.0"]
    assert media["digits"][0]["digit"] == "5" and media["stats"]["codec"] == "PCMU"
    assert media["series"] and media["series"][-1][1] == 0.04

    ops.traces.record(_msg("b-leg", "BYE sip:y SIP/2.0"))  # the B leg's BYE after the A leg's end
    b.done.set()
    for _ in range(100):
        if len(store.saved) == 2:
            break
        await asyncio.sleep(0.01)
    assert [m["first_line"] for m in store.saved[1][1]][-1] == "BYE sip:y SIP/2.0"
    assert len(ops.traces) == 0  # forgotten once stored whole

    samples = _samples(ops)
    assert samples[("softswitch_call_setups_total", (("direction", "outbound"),))] == 1
    assert samples[("softswitch_calls_answered_total", (("direction", "outbound"),))] == 1
    assert samples[("softswitch_call_setup_seconds_count", ())] == 1
    assert 1.0 < samples[("softswitch_call_setup_seconds_sum", ())] < 5
    assert samples[("softswitch_rtp_packets_lost_total", ())] == 2
    assert (
        samples[
            ("softswitch_calls_ended_total", (("answered", "true"), ("cause", "NORMAL_CLEARING")))
        ]
        == 1
    )
    ops.metrics.on_webhook_failed()
    assert _samples(ops)[("softswitch_webhook_delivery_failures_total", ())] == 1
    await ops.stop()


async def test_wait_change_wakes_on_a_change_and_times_out_without() -> None:
    ops = Operations(None)
    assert await ops.wait_change(0.01) is False
    waiter = asyncio.ensure_future(ops.wait_change(5))
    await asyncio.sleep(0)
    ops.changed()
    assert await waiter is True


def test_media_series_stays_bounded_and_spans_the_whole_call() -> None:
    from softswitch.ops import MediaSeries

    series = MediaSeries(10)
    t0 = 1_000_000.0
    taken = 0
    for second in range(100):
        if series.due():
            series.add(
                t0 + second,
                {
                    "loss_fraction": 0.01,
                    "jitter_ms": second / 10,
                    "rtt_ms": None,
                    "packets_received": second * 50,
                    "lost": 1,
                },
            )
            taken += 1
    points = series.points()
    assert len(points) <= 10 and series.stride == 16
    assert points[0][0] == t0 and points[-1][0] > t0 + 60  # first and recent seconds both there
    assert points[-1][3] is None and points[-1][4] > 3000
    assert len(series.rows) * 4 <= 10 * 6 * 4  # float32 rows: a few hundred bytes
