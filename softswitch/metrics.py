"""Prometheus metrics of one server (``GET /metrics``), on a registry of its own.

Counted as calls move (:class:`softswitch.ops.Operations` calls the ``on_*`` methods):
setups, answers, ends by cause, setup latency, RTP packets lost and received by ended calls,
webhook deliveries that failed for good. Read at each scrape (:class:`_Snapshot`): live and
queued calls, webhook queue depth, RTP loss of the live calls, the media clock's tick
lateness over its recent window (a gauge histogram: the window moves).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

#: Seconds from the INVITE to the answer.
SETUP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)
#: Seconds a media clock tick ran after its deadline (a tick is 20 ms).
LATENESS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)


class _Snapshot(Collector):
    """What is read, not counted: one function returning the current values."""

    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        values = self._read()
        live = GaugeMetricFamily(
            "softswitch_live_calls", "Calls dialed and not ended", labels=["direction"]
        )
        for direction, count in sorted(values.get("live", {}).items()):
            live.add_metric([direction], count)
        yield live
        yield GaugeMetricFamily(
            "softswitch_queued_calls",
            "Calls admitted, waiting for the CPS gate or a slot",
            value=values.get("queued", 0),
        )
        yield GaugeMetricFamily(
            "softswitch_webhook_queue_depth",
            "Webhook deliveries queued in this process",
            value=values.get("webhook_queue", 0),
        )
        yield GaugeMetricFamily(
            "softswitch_rtp_live_packets_lost",
            "RTP packets lost (RFC 3550 cumulative) on the live calls' streams",
            value=values.get("live_lost", 0),
        )
        yield GaugeMetricFamily(
            "softswitch_rtp_live_loss_fraction_max",
            "The worst loss fraction among the live calls' streams",
            value=values.get("live_loss_max", 0.0),
        )
        clock = values.get("clock")
        if clock is not None:
            yield CounterMetricFamily(
                "softswitch_media_clock_ticks", "Media clock ticks", value=clock.get("ticks", 0)
            )
            yield CounterMetricFamily(
                "softswitch_media_clock_late_ticks",
                "Media clock ticks more than 5 ms late",
                value=clock.get("late_ticks", 0),
            )
            yield CounterMetricFamily(
                "softswitch_media_clock_skipped_ticks",
                "Media clock ticks skipped (a tick a whole period late)",
                value=clock.get("skipped", 0),
            )
        window = values.get("lateness")
        if window is not None:
            hist = GaugeHistogramMetricFamily(
                "softswitch_media_clock_lateness_seconds",
                "How late the media clock's recent ticks ran (its last ~82 s window)",
            )
            buckets = []
            for bound in LATENESS_BUCKETS:
                buckets.append((repr(bound), float((window <= bound).sum())))
            buckets.append(("+Inf", float(len(window))))
            hist.add_metric([], buckets, gsum_value=float(window.sum()))
            yield hist


class Metrics:
    """The counters and histograms of one server, and its scrape (:meth:`exposition`)."""

    def __init__(self, read: Callable[[], dict[str, Any]] | None = None) -> None:
        # No auto_describe: the snapshot is read at scrapes only, never at registration.
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.setups = Counter(
            "softswitch_call_setups",
            "Calls dialed (first INVITE of each call)",
            ["direction"],
            registry=r,
        )
        self.answered = Counter(
            "softswitch_calls_answered", "Calls answered", ["direction"], registry=r
        )
        self.failed = Counter(
            "softswitch_calls_failed",
            "Calls ended without an answer, by cause",
            ["cause"],
            registry=r,
        )
        self.ended = Counter(
            "softswitch_calls_ended",
            "Calls ended, by cause and whether answered",
            ["cause", "answered"],
            registry=r,
        )
        self.setup_latency = Histogram(
            "softswitch_call_setup_seconds",
            "From the first INVITE to the answer",
            buckets=SETUP_BUCKETS,
            registry=r,
        )
        self.rtp_lost = Counter(
            "softswitch_rtp_packets_lost", "RTP packets lost on ended calls' streams", registry=r
        )
        self.rtp_received = Counter(
            "softswitch_rtp_packets_received",
            "RTP packets received on ended calls' streams",
            registry=r,
        )
        self.webhook_failures = Counter(
            "softswitch_webhook_delivery_failures",
            "Webhook deliveries given up (retries exhausted or not retryable)",
            registry=r,
        )
        if read is not None:
            r.register(_Snapshot(read))

    def on_dialed(self, direction: str) -> None:
        self.setups.labels(direction).inc()

    def on_answered(self, direction: str, setup_s: float | None) -> None:
        self.answered.labels(direction).inc()
        if setup_s is not None:
            self.setup_latency.observe(max(0.0, setup_s))

    def on_ended(self, cause: str, answered: bool, stats: dict[str, Any] | None) -> None:
        self.ended.labels(cause, "true" if answered else "false").inc()
        if not answered:
            self.failed.labels(cause).inc()
        if stats:
            self.rtp_lost.inc(max(0, int(stats.get("lost") or 0)))
            self.rtp_received.inc(max(0, int(stats.get("packets_received") or 0)))

    def on_webhook_failed(self) -> None:
        self.webhook_failures.inc()

    def exposition(self) -> bytes:
        """The text format a Prometheus server scrapes."""
        return generate_latest(self.registry)
