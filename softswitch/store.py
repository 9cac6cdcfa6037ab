"""Call records and the webhook outbox's tables in SQLite: the queries.

One file, WAL journal, ``synchronous=NORMAL``: a committed transaction survives a process crash
(not necessarily a power cut, which costs the last few commits: the trade SQLite documents for
WAL + NORMAL).  Calls are short statements on an indexed table, so the API is synchronous and is
meant to be called straight from the event loop: an insert + update costs about 0.1 ms
(median, measured on the shared CI box).  WAL checkpoints, which fsync and would put several ms
on an unlucky commit, run in a background thread instead (``checkpoint_interval_s``).

A record's fields are the call model's (:data:`CALL_FIELDS`); a dialect maps them onto its own
shapes, and its list filters onto :class:`Filter` (column, operator, stored value).  The schema,
its migrations, the time format and the database lock are in :mod:`softswitch.store_schema`.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .store_schema import (
    CALL_COLUMNS,
    CALL_FIELDS,
    JSON_FIELDS,
    LIVE_STATUSES,
    MIGRATIONS,
    SCHEMA_VERSION,
    TERMINAL_STATUSES,
    DatabaseInUse,
    acquire_lock,
    format_time,
    lock_path,
    parse_stored,
    parse_time,
    time_interval,
    utc_now,
)

__all__ = [
    "CALL_FIELDS",
    "FILTER_OPS",
    "LIVE_STATUSES",
    "SCHEMA_VERSION",
    "TERMINAL_STATUSES",
    "CallStore",
    "DatabaseInUse",
    "Filter",
    "format_time",
    "lock_path",
    "parse_time",
    "time_interval",
    "utc_now",
]

log = logging.getLogger(__name__)

#: The comparisons a :class:`Filter` may make.
FILTER_OPS = ("=", ">", ">=", "<", "<=")


@dataclass(frozen=True)
class Filter:
    """One condition of :meth:`CallStore.list_calls`: ``column op value``.

    ``column`` is a record field (:data:`CALL_FIELDS`), ``op`` one of :data:`FILTER_OPS`, and
    ``value`` is compared with the stored value as is (times as stored strings, see
    :func:`~softswitch.store_schema.time_interval`).
    """

    column: str
    op: str
    value: str | int


def _encode(name: str, value: Any) -> Any:
    if name in JSON_FIELDS:
        return None if value is None else json.dumps(value, separators=(",", ":"), default=str)
    return value


class CallStore:
    """SQLite-backed CDR store and webhook outbox tables.

    Thread-safe (one connection behind a lock) so that a helper thread may use it too, but built
    for the event loop: every method is one or two short statements.
    """

    def __init__(
        self, path: str, *, checkpoint_interval_s: float = 1.0, exclusive: bool = False
    ) -> None:
        """``exclusive``: own the database (the server does) or raise :class:`DatabaseInUse`.

        The server closes calls a previous run left live, which is only right if no other
        server is running on the file. The ownership is an ``flock`` on ``<path>.lock``: the
        kernel drops it when the process exits, crashes included, so no stale lock remains.
        Readers (tests, tools) open the store without ``exclusive``.
        """
        self.path = path
        self._lock = threading.RLock()
        self._lock_fd: int | None = None
        if exclusive and path != ":memory:" and not path.startswith("file::memory:"):
            self._lock_fd = acquire_lock(lock_path(path), path)
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            with self._lock:
                if path != ":memory:":
                    mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                    if str(mode).lower() != "wal":  # pragma: no cover - e.g. a network filesystem
                        raise sqlite3.OperationalError(f"cannot enable WAL on {path}: got {mode}")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute("PRAGMA foreign_keys=ON")
                self._db.execute("PRAGMA busy_timeout=5000")
                self._migrate()
        except BaseException:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            raise
        if path != ":memory:" and checkpoint_interval_s > 0:
            # Measured: a median insert+update costs ~0.1 ms, but SQLite's automatic WAL
            # checkpoint (with its fsync) lands on whichever commit crosses 1000 pages and costs
            # that commit several ms.  Checkpoints therefore run in a thread with its own
            # connection; PASSIVE never blocks the event loop's writers.
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop,
                args=(checkpoint_interval_s,),
                name=f"sqlite-checkpoint:{path}",
                daemon=True,
            )
            self._checkpointer.start()

    def _checkpoint_loop(self, interval: float) -> None:
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=5000")
            while not self._stop.wait(interval):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:  # pragma: no cover - retried next interval
                    log.warning("WAL checkpoint of %s failed: %s", self.path, exc)
        finally:
            db.close()

    # ----------------------------------------------------------------- schema

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path}: schema version {version} is newer than this softswitch "
                f"({SCHEMA_VERSION}); refusing to touch it"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            script = MIGRATIONS[target - 1]
            # executescript commits first; wrap the whole step so a crash leaves the old version.
            self._db.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {target};\nCOMMIT;"
            )

    @property
    def schema_version(self) -> int:
        """The ``PRAGMA user_version`` of the open database."""
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        """Stop the checkpointer, fold the WAL back into the database and close (idempotent)."""
        self._stop.set()
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=10)
            self._checkpointer = None
        with self._lock:
            if self._db is not None:
                if self.path != ":memory:":
                    try:
                        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                    except sqlite3.Error as exc:  # pragma: no cover - another connection busy
                        log.warning("final WAL checkpoint of %s failed: %s", self.path, exc)
                self._db.close()
                self._db = None  # type: ignore[assignment]
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None

    # ----------------------------------------------------------------- calls

    @staticmethod
    def _check_fields(fields: Iterable[str]) -> None:
        unknown = [f for f in fields if f not in CALL_COLUMNS]
        if unknown:
            raise ValueError(f"unknown call field(s): {', '.join(sorted(unknown))}")

    def insert_call(self, rec: Mapping[str, Any]) -> None:
        """Insert a new call record; ``call_uuid`` and ``account_id`` are required.

        ``initiation_time`` defaults to now.  A duplicate ``call_uuid`` raises
        ``sqlite3.IntegrityError``.
        """
        self._check_fields(rec)
        if not rec.get("call_uuid") or not rec.get("account_id"):
            raise ValueError("call_uuid and account_id are required")
        row = dict(rec)
        row.setdefault("initiation_time", format_time())
        names = list(row)
        sql = f"INSERT INTO calls ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})"
        with self._lock:
            self._db.execute(sql, [_encode(n, row[n]) for n in names])

    def update_call(self, call_uuid: str, /, **fields: Any) -> None:
        """Set columns of one call.

        ``extra`` is *merged* into the stored object as an RFC 7396 JSON merge patch (nested
        objects merge, a ``None`` value deletes the key), so independent parts of the call
        (media stats, digits, AMD) can each record theirs without reading first.  ``params`` and
        every other column are replaced.  Unknown fields raise ValueError; an unknown call_uuid
        is a no-op (a late event for a purged call must not crash its sender).
        """
        if not fields:
            return
        self._check_fields(fields)
        if "call_uuid" in fields:
            raise ValueError("call_uuid cannot be changed")
        sets = []
        values: list[Any] = []
        for name, value in fields.items():
            if name == "extra" and value is not None:
                sets.append("extra = json_patch(coalesce(extra, '{}'), ?)")
            else:
                sets.append(f"{name} = ?")
            values.append(_encode(name, value))
        values.append(call_uuid)
        with self._lock:
            self._db.execute(f"UPDATE calls SET {', '.join(sets)} WHERE call_uuid = ?", values)

    @staticmethod
    def _row(row: sqlite3.Row) -> dict[str, Any]:
        rec = dict(row)
        for name in JSON_FIELDS:
            text = rec.get(name)
            rec[name] = json.loads(text) if text else {}
        return rec

    def get_call(self, account_id: str, call_uuid: str) -> dict[str, Any] | None:
        """The call record, or None if it does not exist or belongs to another account."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM calls WHERE call_uuid = ? AND account_id = ?",
                (call_uuid, account_id),
            ).fetchone()
        return None if row is None else self._row(row)

    def get_call_by_request(self, account_id: str, request_uuid: str) -> dict[str, Any] | None:
        """The (first) call created by an API request (lookups by ``request_uuid``)."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM calls WHERE account_id = ? AND request_uuid = ? "
                "ORDER BY initiation_time, rowid LIMIT 1",
                (account_id, request_uuid),
            ).fetchone()
        return None if row is None else self._row(row)

    def call_account(self, call_uuid: str) -> str | None:
        """The account a call belongs to, or None if there is no such call."""
        with self._lock:
            row = self._db.execute(
                "SELECT account_id FROM calls WHERE call_uuid = ?", (call_uuid,)
            ).fetchone()
        return None if row is None else str(row[0])

    def calls_by_request(self, account_id: str, request_uuid: str) -> list[dict[str, Any]]:
        """Every call of one API request (a bulk request makes one per destination)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM calls WHERE account_id = ? AND request_uuid = ? "
                "ORDER BY initiation_time, rowid",
                (account_id, request_uuid),
            ).fetchall()
        return [self._row(r) for r in rows]

    def list_calls(
        self,
        account_id: str,
        *,
        filters: Iterable[Filter] = (),
        limit: int = 20,
        offset: int = 0,
        order: Sequence[tuple[str, bool]] = (),
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of an account's calls, newest first, and the total matching count.

        Every :class:`Filter` must hold (AND).  An unknown column or operator raises
        ValueError; a dialect turns its query parameters into filters and bounds the paging.
        ``order``: ``(column, descending)`` keys sorted on first (NULLs last); newest first
        breaks the ties (oldest first when ``initiation_time`` is a key, ascending).
        """
        where = ["account_id = ?"]
        args: list[Any] = [account_id]
        for f in filters:
            if f.column not in CALL_COLUMNS or f.column in JSON_FIELDS:
                raise ValueError(f"cannot filter on {f.column!r}")
            if f.op not in FILTER_OPS:
                raise ValueError(f"unknown filter operator {f.op!r}")
            where.append(f"{f.column} {f.op} ?")
            args.append(f.value)
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must be >= 0")
        keys = []
        newest_first = True
        for column, descending in order:
            if column not in CALL_COLUMNS or column in JSON_FIELDS:
                raise ValueError(f"cannot sort on {column!r}")
            keys.append(f"{column} IS NULL, {column} {'DESC' if descending else 'ASC'}")
            if column == "initiation_time":
                newest_first = descending  # times are stored to the second: insertion order
        keys.append("initiation_time DESC, rowid DESC" if newest_first else "rowid ASC")
        clause = " AND ".join(where)
        with self._lock:
            total = self._db.execute(f"SELECT count(*) FROM calls WHERE {clause}", args).fetchone()[
                0
            ]
            rows = self._db.execute(
                f"SELECT * FROM calls WHERE {clause} ORDER BY {', '.join(keys)} LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
        return [self._row(r) for r in rows], int(total)

    def live_calls(self, account_id: str) -> list[dict[str, Any]]:
        """Calls not yet ended (queued, ringing, early-media, in-progress), oldest first."""
        marks = ", ".join("?" for _ in LIVE_STATUSES)
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM calls WHERE account_id = ? AND call_status IN ({marks}) "
                "ORDER BY initiation_time, rowid",
                (account_id, *LIVE_STATUSES),
            ).fetchall()
        return [self._row(r) for r in rows]

    # ----------------------------------------------------------------- SIP dialogs

    def save_dialog(self, call_uuid: str, state: Mapping[str, Any]) -> None:
        """Keep (or replace) the SIP dialog of an answered call: what the next process needs
        to BYE its callee if this one dies (see :meth:`live_dialogs`)."""
        text = json.dumps(state, separators=(",", ":"))
        with self._lock:
            self._db.execute(
                "INSERT INTO call_dialogs (call_uuid, state, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (call_uuid) DO UPDATE SET state = excluded.state, "
                "updated_at = excluded.updated_at",
                (call_uuid, text, format_time()),
            )

    def delete_dialog(self, call_uuid: str) -> None:
        """The call ended here: its dialog is nobody's business any more."""
        with self._lock:
            self._db.execute("DELETE FROM call_dialogs WHERE call_uuid = ?", (call_uuid,))

    def live_dialogs(self) -> list[tuple[str, dict[str, Any]]]:
        """At startup, before :meth:`mark_interrupted`: the (call uuid, dialog state) of each
        call a crash left live with a dialog to end. A row whose JSON is unreadable is
        logged and left out."""
        marks = ", ".join("?" for _ in LIVE_STATUSES)
        with self._lock:
            rows = self._db.execute(
                "SELECT d.call_uuid, d.state FROM call_dialogs d JOIN calls c USING (call_uuid) "
                f"WHERE c.call_status IN ({marks}) ORDER BY d.rowid",
                LIVE_STATUSES,
            ).fetchall()
        out = []
        for row in rows:
            try:
                state = json.loads(row["state"])
            except ValueError:
                log.warning("call %s: unreadable stored dialog", row["call_uuid"])
                continue
            if isinstance(state, dict):
                out.append((row["call_uuid"], state))
        return out

    def clear_dialogs(self) -> int:
        """Forget every stored dialog (the recovery that used them is over); returns how many."""
        with self._lock:
            cur = self._db.execute("DELETE FROM call_dialogs")
        return cur.rowcount

    def mark_interrupted(self, now: datetime | None = None) -> list[tuple[str, str]]:
        """At startup, end the calls a crash left live; returns their (account id, call uuid)
        pairs (the caller still owes each one its hangup callback).

        Their SIP dialogs and media died with the old process, so each becomes terminal with
        ``hangup_cause_name='SYSTEM_SHUTDOWN'``, ``hangup_source='Error'`` and ``end_time=now``.
        A call that had been answered becomes ``completed`` with its durations computed from
        ``answer_time``; one that never was becomes ``failed`` (duration 0), since calling it
        completed would claim a conversation that did not happen.
        """
        end = format_time(now)
        marks = ", ".join("?" for _ in LIVE_STATUSES)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    f"SELECT account_id, call_uuid, answer_time FROM calls WHERE call_status IN ({marks})",
                    LIVE_STATUSES,
                ).fetchall()
                for row in rows:
                    answered = row["answer_time"] is not None
                    duration = 0
                    if answered:
                        duration = max(
                            0,
                            int(
                                (
                                    parse_stored(end) - parse_stored(row["answer_time"])
                                ).total_seconds()
                            ),
                        )
                    self._db.execute(
                        "UPDATE calls SET call_status = ?, end_time = ?, call_duration = ?, "
                        "bill_duration = ?, hangup_cause_name = 'SYSTEM_SHUTDOWN', "
                        "hangup_source = 'Error', "
                        "error = coalesce(error, 'interrupted by a softswitch restart') "
                        "WHERE call_uuid = ?",
                        (
                            "completed" if answered else "failed",
                            end,
                            duration,
                            duration,
                            row["call_uuid"],
                        ),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return [(row["account_id"], row["call_uuid"]) for row in rows]

    def delete_calls_before(self, end_time: str) -> int:
        """Purge ended calls older than ``end_time`` (retention); returns how many."""
        with self._lock:
            cur = self._db.execute(
                "DELETE FROM calls WHERE end_time IS NOT NULL AND end_time < ?", (end_time,)
            )
        return cur.rowcount

    # ----------------------------------------------------------------- SIP traces

    def save_trace(
        self,
        call_uuid: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        dropped: int = 0,
        media: Mapping[str, Any] | None = None,
    ) -> None:
        """Keep (or replace) an ended call's SIP messages and media figures (``softswitch.trace``)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO call_traces (call_uuid, messages, dropped, media, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (call_uuid) DO UPDATE SET "
                "messages = excluded.messages, dropped = excluded.dropped, media = excluded.media",
                (
                    call_uuid,
                    json.dumps(list(messages), separators=(",", ":")),
                    dropped,
                    json.dumps(dict(media or {}), separators=(",", ":")),
                    format_time(),
                ),
            )

    def get_trace(self, call_uuid: str) -> dict[str, Any] | None:
        """``{"messages", "dropped", "media"}`` of an ended call, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT messages, dropped, media FROM call_traces WHERE call_uuid = ?", (call_uuid,)
            ).fetchone()
        if row is None:
            return None
        return {
            "messages": json.loads(row["messages"]),
            "dropped": int(row["dropped"]),
            "media": json.loads(row["media"]),
        }

    # ----------------------------------------------------------------- webhook outbox

    def add_delivery(
        self,
        *,
        call_uuid: str,
        event: str,
        url: str,
        method: str,
        params: Mapping[str, Any],
        headers: Mapping[str, str],
        options: Mapping[str, Any] | None = None,
        kind: str = "post",
        next_attempt_at: float | None = None,
        signature: str = "",
    ) -> int:
        """Persist one webhook to send; returns its id (ids give the per-call order).

        ``signature`` names the signing scheme (:mod:`softswitch.signing`) of ``headers``.
        """
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO webhook_deliveries (call_uuid, event, kind, url, method, params, "
                "headers, options, created_at, next_attempt_at, signature) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    call_uuid,
                    event,
                    kind,
                    url,
                    method,
                    json.dumps(dict(params), separators=(",", ":")),
                    json.dumps(dict(headers), separators=(",", ":")),
                    json.dumps(dict(options or {}), separators=(",", ":")),
                    format_time(),
                    next_attempt_at,
                    signature,
                ),
            )
        return int(cur.lastrowid or 0)

    def record_attempt(
        self,
        delivery_id: int,
        attempt: int,
        *,
        status: int | None,
        error: str | None,
        duration_ms: float,
        at: str | None = None,
    ) -> None:
        """Log one HTTP attempt and bump the delivery's attempt counter and last result."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO webhook_attempts "
                    "(delivery_id, attempt, at, status, error, duration_ms) VALUES (?,?,?,?,?,?)",
                    (delivery_id, attempt, at or format_time(), status, error, duration_ms),
                )
                self._db.execute(
                    "UPDATE webhook_deliveries SET attempts = ?, last_status = ?, last_error = ? "
                    "WHERE id = ?",
                    (attempt, status, error, delivery_id),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def finish_delivery(self, delivery_id: int, status: str) -> None:
        """Mark a delivery ``delivered`` or ``failed`` (terminal)."""
        if status not in ("delivered", "failed"):
            raise ValueError(f"bad terminal delivery status {status!r}")
        with self._lock:
            self._db.execute(
                "UPDATE webhook_deliveries SET status = ?, delivered_at = ?, next_attempt_at = NULL "
                "WHERE id = ?",
                (status, format_time(), delivery_id),
            )

    def reschedule_delivery(self, delivery_id: int, next_attempt_at: float) -> None:
        """Remember when the next retry is due (wall-clock epoch seconds) across restarts."""
        with self._lock:
            self._db.execute(
                "UPDATE webhook_deliveries SET next_attempt_at = ? WHERE id = ?",
                (next_attempt_at, delivery_id),
            )

    def pending_deliveries(self, kind: str | None = "post") -> list[dict[str, Any]]:
        """Deliveries not yet delivered or failed, in id order (resume after a restart)."""
        sql = "SELECT * FROM webhook_deliveries WHERE status = 'pending'"
        args: tuple[Any, ...] = ()
        if kind is not None:
            sql += " AND kind = ?"
            args = (kind,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id", args).fetchall()
        return [_delivery_row(r) for r in rows]

    def get_delivery(self, delivery_id: int) -> dict[str, Any] | None:
        """One delivery row, decoded."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM webhook_deliveries WHERE id = ?", (delivery_id,)
            ).fetchone()
        return None if row is None else _delivery_row(row)

    def list_deliveries(self, call_uuid: str) -> list[dict[str, Any]]:
        """Every delivery (posts and fetches) of one call, in id order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM webhook_deliveries WHERE call_uuid = ? ORDER BY id", (call_uuid,)
            ).fetchall()
        return [_delivery_row(r) for r in rows]

    def list_attempts(self, delivery_id: int) -> list[dict[str, Any]]:
        """The recorded HTTP attempts of one delivery, in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM webhook_attempts WHERE delivery_id = ? ORDER BY attempt",
                (delivery_id,),
            ).fetchall()
        return [dict(r) for r in rows]


def _delivery_row(row: sqlite3.Row) -> dict[str, Any]:
    rec = dict(row)
    for name in ("params", "headers", "options"):
        rec[name] = json.loads(rec[name]) if rec.get(name) else {}
    return rec
