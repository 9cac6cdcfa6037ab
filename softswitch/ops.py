"""The operators' view of one :class:`~softswitch.call.CallManager`: SIP ladders, metrics,
media quality over time, and a change signal for live pages.

:class:`Operations` is the manager's observer (``CallManager.observers``): the manager tells
it when a call is dialed, gets a leg, rings, is answered, fetches a document and ends. It
owns the :class:`~softswitch.trace.TraceBook` fed by the SIP user agent's tracer, the
:class:`~softswitch.metrics.Metrics`, and a sampler task that reads every live leg's media
statistics once per ``sample_interval_s`` (a bounded series per call). When a call ends its
messages, series, digits and documents are stored with its record (``CallStore.save_trace``).

Everything here is dialect-neutral JSON; the web page (``softswitch/api/ops``) and each
dialect's trace route show it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from array import array
from typing import Any

from .events import DigitReceived
from .metrics import Metrics
from .trace import TraceBook

log = logging.getLogger("softswitch.ops")

__all__ = ["Operations"]

#: Documents (answer, fallback, action URLs) kept per call, and bytes kept of each.
MAX_DOCUMENTS = 10
MAX_DOCUMENT_BYTES = 16 * 1024
#: How long an ended call's trace waits for its other legs to end (their BYE transactions).
LINGER_S = 5.0
#: Media statistics kept for the live view and the plot.
_MEDIA_KEYS = (
    "codec",
    "packets_sent",
    "packets_received",
    "lost",
    "loss_fraction",
    "jitter_ms",
    "rtt_ms",
    "remote_loss_fraction",
    "direction",
    "srtp",
    "dtmf_sent",
    "dtmf_received",
)


class MediaSeries:
    """One call's media figures over time in a few KiB: rows of float32 (seconds since the
    first row, loss fraction, jitter ms, RTT ms or -1, packets received, packets lost). When
    ``max_points`` rows are kept, every other one is dropped and the sampling stride doubles,
    so the series spans the whole call at a coarser step."""

    COLUMNS = 6

    def __init__(self, max_points: int) -> None:
        self.max_points = max(2, max_points)
        self.start: float | None = None
        self.rows = array("f")
        self.stride = 1
        self._ticks = 0

    def due(self, force: bool = False) -> bool:
        """Whether this sampling tick takes a row (every ``stride``-th; always when forced)."""
        self._ticks += 1
        if force or self._ticks >= self.stride:
            self._ticks = 0
            return True
        return False

    def add(self, now: float, stats: dict[str, Any]) -> None:
        if self.start is None:
            self.start = now
        n = self.COLUMNS
        if len(self.rows) >= self.max_points * n:
            kept = array("f")
            for i in range(0, len(self.rows), 2 * n):
                kept.extend(self.rows[i : i + n])
            self.rows = kept
            self.stride *= 2
        rtt = stats.get("rtt_ms")
        self.rows.extend(
            [
                now - self.start,
                float(stats.get("loss_fraction") or 0.0),
                float(stats.get("jitter_ms") or 0.0),
                -1.0 if rtt is None else float(rtt),
                float(stats.get("packets_received") or 0),
                float(stats.get("lost") or 0),
            ]
        )

    def points(self) -> list[list[Any]]:
        """``[time, loss_fraction, jitter_ms, rtt_ms | None, packets_received, lost]`` rows."""
        start = self.start or 0.0
        n = self.COLUMNS
        out = []
        for i in range(0, len(self.rows), n):
            t, loss, jitter, rtt, received, lost = self.rows[i : i + n]
            out.append(
                [
                    round(start + t, 3),
                    round(loss, 4),
                    round(jitter, 2),
                    None if rtt < 0 else round(rtt, 2),
                    int(received),
                    int(lost),
                ]
            )
        return out


def _over(call: Any) -> bool:
    """The call has ended (what is filed under it now would never be taken)."""
    finished = getattr(call, "finished", None)
    return finished is not None and finished.is_set()


def _leg_stats(leg: Any) -> dict[str, Any]:
    stats = getattr(leg, "stats", None)
    if not callable(stats):
        return {}
    try:
        raw = stats()
    except Exception:
        return {}
    return {k: raw.get(k) for k in _MEDIA_KEYS if k in raw}


def _round(value: Any, digits: int = 4) -> Any:
    return round(value, digits) if isinstance(value, float) else value


class Operations:
    """See the module docstring. ``store``: where ended calls' traces go (``save_trace``,
    ``get_trace``); ``outbox``: the webhook outbox (queue depth); ``media``: the media
    engine (clock lateness)."""

    def __init__(
        self,
        manager: Any,
        *,
        store: Any = None,
        outbox: Any = None,
        media: Any = None,
        traces: TraceBook | None = None,
        sample_interval_s: float = 1.0,
        series_points: int = 120,
    ) -> None:
        self.manager = manager
        self.store = store
        self.outbox = outbox
        self.media = media
        self.traces = traces or TraceBook()
        self.metrics = Metrics(self._snapshot)
        self.sample_interval_s = sample_interval_s
        self.series_points = series_points
        self._series: dict[str, MediaSeries] = {}
        self._sip_call_ids: dict[str, list[str]] = {}
        self._documents: dict[str, list[dict[str, Any]]] = {}
        #: Bumped at every change a live page shows; :meth:`wait_change` waits for the next.
        self.version = 0
        self._changed: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._lingering: set[asyncio.Task[None]] = set()

    # --- wiring -------------------------------------------------------------------------------

    def attach(self, ua: Any) -> None:
        """Trace the SIP user agent's messages (``softswitch.ua.UserAgent`` or ``sip.aio``'s)
        and read its media engine's clock."""
        sip_ua = getattr(ua, "sip", ua)
        if hasattr(sip_ua, "tracer"):
            sip_ua.tracer = self.traces.record
        if self.media is None:
            self.media = getattr(ua, "media", None)
        if self.outbox is not None and hasattr(self.outbox, "on_delivery_failed"):
            self.outbox.on_delivery_failed = self.metrics.on_webhook_failed

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._sample_loop(), name="ops-sampler"
            )

    async def stop(self) -> None:
        """Stop sampling; traces waiting for their last legs are stored as they are."""
        task, self._task = self._task, None
        for t in [task, *self._lingering]:
            if t is not None:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        self._changed_event().set()

    def _changed_event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def changed(self) -> None:
        """Something a live page shows changed: wake :meth:`wait_change`."""
        self.version += 1
        event = self._changed_event()
        self._changed = asyncio.Event()
        event.set()

    async def wait_change(self, timeout: float) -> bool:
        """Wait for the next change, at most ``timeout`` seconds; True if one came."""
        event = self._changed_event()
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # --- the manager's observer ------------------------------------------------------------------

    def call_dialed(self, call: Any) -> None:
        self.metrics.on_dialed(call.direction)
        self.changed()

    def leg_started(self, call: Any, leg: Any) -> None:
        call_id = getattr(leg, "call_id", None)
        if isinstance(call_id, str) and not _over(call):
            self.traces.claim(call_id)
            ids = self._sip_call_ids.setdefault(call.call_uuid, [])
            if call_id not in ids:
                ids.append(call_id)
        self.changed()

    def call_progress(self, call: Any) -> None:
        self.changed()

    def call_answered(self, call: Any) -> None:
        started = call.dialed_at if call.dialed_at is not None else call.created_at
        setup = call.answered_at - started if call.answered_at is not None else None
        self.metrics.on_answered(call.direction, setup)
        self.changed()

    def document_fetched(self, call: Any, event: str, url: str, result: Any) -> None:
        if _over(call):
            return  # fetched as the call ended: nobody would take it from here
        docs = self._documents.setdefault(call.call_uuid, [])
        if len(docs) >= MAX_DOCUMENTS:
            return
        body = getattr(result, "body", None)
        if isinstance(body, bytes | bytearray):
            text = bytes(body[:MAX_DOCUMENT_BYTES]).decode("utf-8", "replace")
        else:
            text = str(body or "")[:MAX_DOCUMENT_BYTES]
        docs.append(
            {
                "time": round(time.time(), 3),
                "event": event,
                "url": getattr(result, "url", None) or url,
                "ok": bool(getattr(result, "ok", False)),
                "status": getattr(result, "status", None),
                "error": getattr(result, "error", None),
                "body": text,
            }
        )

    def call_ended(self, call: Any, end: Any) -> None:
        """Count the end, store the call's SIP messages and media figures. Legs still
        ending (a B leg's BYE goes out after the A leg's end) keep their Call-IDs here until
        they are over (at most :data:`LINGER_S`); the trace is then stored again, whole."""
        leg = call.leg
        stats = _leg_stats(leg) if leg is not None else {}
        self.metrics.on_ended(end.cause, bool(end.answered), stats)
        ids = self._call_ids(call)
        self._sample(call, last=True)  # the last point: the figures at the end
        media = self._media(call, stats)
        self._sip_call_ids.pop(call.call_uuid, None)
        self._series.pop(call.call_uuid, None)
        self._documents.pop(call.call_uuid, None)
        legs = [x for x in (leg, *getattr(call, "b_legs", ())) if x is not None]
        ending = [
            x
            for x in legs
            if getattr(x, "terminated", True) is None and hasattr(x, "wait_terminated")
        ]
        if ending:
            self._save(call.call_uuid, *self.traces.messages(ids), media)
            task = asyncio.get_running_loop().create_task(
                self._linger(call.call_uuid, ids, ending, media)
            )
            self._lingering.add(task)
            task.add_done_callback(self._lingering.discard)
        else:
            self._save(call.call_uuid, *self.traces.take(ids), media)
        self.changed()

    async def _linger(
        self, call_uuid: str, ids: list[str], legs: list[Any], media: dict[str, Any]
    ) -> None:
        try:
            await asyncio.wait(
                [asyncio.ensure_future(x.wait_terminated()) for x in legs], timeout=LINGER_S
            )
        finally:
            self._save(call_uuid, *self.traces.take(ids), media)

    def _save(
        self, call_uuid: str, messages: list[dict[str, Any]], dropped: int, media: dict[str, Any]
    ) -> None:
        save = getattr(self.store, "save_trace", None)
        if save is None:
            return
        try:
            save(call_uuid, messages, dropped=dropped, media=media)
        except Exception:
            log.exception("call %s: could not store its SIP trace", call_uuid)

    # --- what the pages and routes read -------------------------------------------------------

    def _call_ids(self, call: Any) -> list[str]:
        ids = list(self._sip_call_ids.get(call.call_uuid, ()))
        for leg in getattr(call, "b_legs", ()):
            call_id = getattr(leg, "call_id", None)
            if isinstance(call_id, str) and call_id not in ids:
                ids.append(call_id)
        return ids

    def _media(self, call: Any, stats: dict[str, Any]) -> dict[str, Any]:
        leg = call.leg
        digits = []
        for ev in getattr(leg, "history", ()) if leg is not None else ():
            if isinstance(ev, DigitReceived):
                digits.append(
                    {
                        "time": round(ev.at, 3),
                        "digit": ev.digit,
                        "duration_ms": ev.duration_ms,
                        "source": ev.source,
                    }
                )
        machine = call.machine
        amd = None
        if machine is not None:
            amd = {
                k: _round(getattr(machine, k))
                for k in (
                    "machine",
                    "status",
                    "reason",
                    "decided_at_ms",
                    "initial_silence_ms",
                    "greeting_ms",
                    "words",
                    "beep_at_ms",
                    "message_end",
                )
                if hasattr(machine, k)
            }
        return {
            "stats": {k: _round(v) for k, v in stats.items()},
            "series": series.points() if (series := self._series.get(call.call_uuid)) else [],
            "series_columns": [
                "time",
                "loss_fraction",
                "jitter_ms",
                "rtt_ms",
                "packets_received",
                "lost",
            ],
            "digits": digits,
            "amd": amd,
            "documents": list(self._documents.get(call.call_uuid, ())),
        }

    def live_view(self, call: Any, now: float | None = None) -> dict[str, Any]:
        """One live (or queued) call as the web page's table shows it."""
        now = time.time() if now is None else now
        stats = _leg_stats(call.leg) if call.leg is not None else {}
        answered = call.answered_at
        started = call.dialed_at or call.created_at
        return {
            "call_uuid": call.call_uuid,
            "request_uuid": call.request_uuid,
            "direction": call.direction,
            "from": call.from_,
            "to": call.to,
            "state": call.state.name.lower(),
            "status": call.status,
            "dialect": call.dialect.name,
            "created_at": round(call.created_at, 3),
            "answered_at": None if answered is None else round(answered, 3),
            "duration": round(now - answered, 1) if answered is not None else 0.0,
            "age": round(now - started, 1),
            "sip_call_ids": self._call_ids(call),
            "codec": stats.get("codec"),
            "loss_fraction": _round(stats.get("loss_fraction")),
            "lost": stats.get("lost"),
            "jitter_ms": _round(stats.get("jitter_ms"), 2),
            "rtt_ms": _round(stats.get("rtt_ms"), 2),
            "packets_received": stats.get("packets_received"),
        }

    def live_calls(self, account_id: str) -> list[dict[str, Any]]:
        table = self.manager.table
        now = time.time()
        calls = table.live_calls(account_id) + table.live_calls(account_id, status="queued")
        return [self.live_view(c, now) for c in calls]

    def trace(self, account_id: str, call_uuid: str) -> dict[str, Any] | None:
        """``{"call_uuid", "live", "messages", "dropped", "media"}`` of a call of the
        account: live from memory, ended from the store; None if unknown."""
        call = self.manager.table.live_call(account_id, call_uuid)
        if call is not None:
            messages, dropped = self.traces.messages(self._call_ids(call))
            return {
                "call_uuid": call_uuid,
                "live": True,
                "messages": messages,
                "dropped": dropped,
                "media": self._media(call, _leg_stats(call.leg)),
            }
        store = self.store
        if store is None or store.call_account(call_uuid) != account_id:
            return None
        stored = store.get_trace(call_uuid) if hasattr(store, "get_trace") else None
        if stored is None:
            return {
                "call_uuid": call_uuid,
                "live": False,
                "messages": [],
                "dropped": 0,
                "media": {},
            }
        return {"call_uuid": call_uuid, "live": False, **stored}

    # --- sampling and scraping ----------------------------------------------------------------

    def _sample(self, call: Any, *, last: bool = False) -> None:
        if call.leg is None or call.answered_at is None:
            return
        series = self._series.get(call.call_uuid)
        if series is None:
            series = self._series[call.call_uuid] = MediaSeries(self.series_points)
        if not series.due(last):
            return
        stats = _leg_stats(call.leg)
        if stats:
            series.add(time.time(), stats)

    async def _sample_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sample_interval_s)
            try:
                self._sample_live()
            except Exception:
                log.exception("ops sampler failed")

    def _sample_live(self) -> None:
        # Its own frame: no call stays referenced from the loop's frame between two ticks.
        live = [c for c in self.manager.table.calls.values() if c.is_live]
        for call in live:
            self._sample(call)
        if live:
            self.changed()  # durations and media figures moved

    def _snapshot(self) -> dict[str, Any]:
        live: dict[str, int] = {"inbound": 0, "outbound": 0}
        queued = 0
        lost = 0
        loss_max = 0.0
        for call in list(self.manager.table.calls.values()):
            if call.is_queued:
                queued += 1
            elif call.is_live:
                live[call.direction] = live.get(call.direction, 0) + 1
                stats = _leg_stats(call.leg) if call.leg is not None else {}
                lost += int(stats.get("lost") or 0)
                loss_max = max(loss_max, float(stats.get("loss_fraction") or 0.0))
        out: dict[str, Any] = {
            "live": live,
            "queued": queued,
            "live_lost": lost,
            "live_loss_max": loss_max,
        }
        pending = getattr(self.outbox, "pending_count", None)
        if callable(pending):
            out["webhook_queue"] = pending()
        media = self.media
        if media is not None and hasattr(media, "clock_stats"):
            out["clock"] = media.clock_stats()
            if hasattr(media, "lateness_window"):
                out["lateness"] = media.lateness_window()
        return out
