"""Call records (CDRs) and the webhook outbox in SQLite.

One file, WAL journal, ``synchronous=NORMAL``: a committed transaction survives a process crash
(not necessarily a power cut, which costs the last few commits: the trade SQLite documents for
WAL + NORMAL).  Calls are short statements on an indexed table, so the API is synchronous and is
meant to be called straight from the event loop: an insert + update costs about 0.1 ms
(median, measured on the shared CI box).  WAL checkpoints, which fsync and would put several ms
on an unlucky commit, run in a background thread instead (``checkpoint_interval_s``).

Records use the field names of Plivo's CDR objects (``call_uuid``, ``bill_duration``,
``hangup_cause_name``...), so the Plivo dialect returns rows nearly verbatim; the other dialects
map them.  Times are strings ``YYYY-MM-DD HH:MM:SS+00:00`` (UTC), the format Plivo's CDRs use,
which also sort correctly as text.

The schema is versioned with ``PRAGMA user_version`` and upgraded in place by ``_MIGRATIONS``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "CALL_FIELDS",
    "CallStore",
    "DatabaseInUse",
    "LIVE_STATUSES",
    "TERMINAL_STATUSES",
    "format_time",
    "parse_time",
    "utc_now",
]

log = logging.getLogger(__name__)

LIVE_STATUSES = ("queued", "ringing", "early-media", "in-progress")
TERMINAL_STATUSES = ("completed", "busy", "failed", "timeout", "no-answer", "cancel")

# Column name -> SQL type.  Order is the column order of the table.
_CALL_COLUMNS: dict[str, str] = {
    "call_uuid": "TEXT PRIMARY KEY",
    "request_uuid": "TEXT",
    "account_id": "TEXT NOT NULL",
    "parent_call_uuid": "TEXT",
    "direction": "TEXT NOT NULL DEFAULT 'outbound'",
    "from_number": "TEXT",
    "to_number": "TEXT",
    "caller_name": "TEXT",
    "call_status": "TEXT NOT NULL DEFAULT 'queued'",
    "initiation_time": "TEXT",
    "ring_time": "TEXT",
    "answer_time": "TEXT",
    "end_time": "TEXT",
    "call_duration": "INTEGER",
    "bill_duration": "INTEGER",
    "hangup_cause_name": "TEXT",
    "hangup_cause_code": "INTEGER",
    "hangup_source": "TEXT",
    "sip_status": "INTEGER",
    "answer_url": "TEXT",
    "dialect": "TEXT",
    "params": "TEXT",
    "extra": "TEXT",
    "error": "TEXT",
}
CALL_FIELDS = tuple(_CALL_COLUMNS)
_JSON_FIELDS = ("params", "extra")

_CALLS_TABLE_V1 = ", ".join(f"{name} {sqltype}" for name, sqltype in _CALL_COLUMNS.items())

_MIGRATIONS: list[str] = [
    # v1: calls, webhook deliveries and their attempts.
    f"""
    CREATE TABLE calls ({_CALLS_TABLE_V1});
    CREATE INDEX calls_account_time ON calls (account_id, initiation_time);
    CREATE INDEX calls_account_request ON calls (account_id, request_uuid);
    CREATE INDEX calls_live ON calls (call_status)
        WHERE call_status IN ('queued', 'ringing', 'early-media', 'in-progress');
    CREATE TABLE webhook_deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        call_uuid TEXT NOT NULL,
        event TEXT NOT NULL,
        kind TEXT NOT NULL DEFAULT 'post',
        url TEXT NOT NULL,
        method TEXT NOT NULL,
        params TEXT NOT NULL,
        headers TEXT NOT NULL,
        options TEXT NOT NULL DEFAULT '{{}}',
        attempts INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL DEFAULT 'pending',
        last_status INTEGER,
        last_error TEXT,
        created_at TEXT NOT NULL,
        next_attempt_at REAL,
        delivered_at TEXT
    );
    CREATE INDEX webhook_deliveries_call ON webhook_deliveries (call_uuid, id);
    CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (status) WHERE status = 'pending';
    CREATE TABLE webhook_attempts (
        delivery_id INTEGER NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
        attempt INTEGER NOT NULL,
        at TEXT NOT NULL,
        status INTEGER,
        error TEXT,
        duration_ms REAL,
        PRIMARY KEY (delivery_id, attempt)
    );
    """,
]
SCHEMA_VERSION = len(_MIGRATIONS)

# Plivo's list filters (GET /v1/Account/{id}/Call/) -> (column, kind).
_EQ_FILTERS = {
    "call_direction": ("direction", "str"),
    "from_number": ("from_number", "str"),
    "to_number": ("to_number", "str"),
    "parent_call_uuid": ("parent_call_uuid", "str"),
    "hangup_source": ("hangup_source", "str"),
    "hangup_cause_code": ("hangup_cause_code", "int"),
    "bill_duration": ("bill_duration", "int"),
    "call_status": ("call_status", "str"),
    "request_uuid": ("request_uuid", "str"),
}
_RANGE_FILTERS = {
    "bill_duration": ("bill_duration", "int"),
    "end_time": ("end_time", "time"),
    "initiation_time": ("initiation_time", "time"),
    "answer_time": ("answer_time", "time"),
}
_RANGE_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_IGNORED_FILTERS = ("subaccount",)


def utc_now() -> datetime:
    """Current time, timezone-aware UTC."""
    return datetime.now(UTC)


def format_time(t: datetime | None = None) -> str:
    """``YYYY-MM-DD HH:MM:SS+00:00`` in UTC, the timestamp format of Plivo's CDRs."""
    if t is None:
        t = utc_now()
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S+00:00")


def parse_time(text: str) -> tuple[datetime, timedelta]:
    """Parse a filter time ``YYYY-MM-DD HH:MM[:ss[.uuuuuu]]`` (Plivo's documented forms).

    Returns the UTC instant and the precision the user wrote (1 min, 1 s or 1 µs), so that an
    equality filter ``end_time=2012-03-21 11:47`` can match the whole minute.  A naive time is
    UTC; an explicit offset is honoured.
    """
    s = text.strip().replace("T", " ")
    try:
        t = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"bad time {text!r}: expected YYYY-MM-DD HH:MM[:ss[.uuuuuu]]") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    t = t.astimezone(UTC)
    date_and_clock = s.split(" ", 1)
    # Drop a trailing UTC offset (+hh:mm, -hh:mm, Z) before judging the precision written.
    clock = re.sub(r"(Z|[+-]\d\d:?\d\d)$", "", date_and_clock[1]) if len(date_and_clock) > 1 else ""
    if "." in clock:
        precision = timedelta(microseconds=1)
    elif clock.count(":") >= 2:
        precision = timedelta(seconds=1)
    elif clock:
        precision = timedelta(minutes=1)
    else:
        precision = timedelta(days=1)
    return t, precision


def _ceil_second(t: datetime) -> str:
    """The stored string of the first whole second at or after ``t``."""
    whole = t.replace(microsecond=0)
    return format_time(whole if whole == t else whole + timedelta(seconds=1))


def _time_bounds(text: str) -> tuple[str, str]:
    """[start, end) of the interval a filter time denotes, as stored strings.

    Stored times have whole seconds, so ``column >= x`` is ``column >= ceil(x)`` and
    ``column < y`` is ``column < ceil(y)``: both bounds are rounded up to a whole second.
    """
    t, precision = parse_time(text)
    return _ceil_second(t), _ceil_second(t + precision)


def _encode(name: str, value: Any) -> Any:
    if name in _JSON_FIELDS:
        return None if value is None else json.dumps(value, separators=(",", ":"), default=str)
    return value


class DatabaseInUse(RuntimeError):
    """Another process (or another store of this one) holds the database exclusively."""

    def __init__(self, path: str, holder: str) -> None:
        super().__init__(
            f"{path} is in use by another softswitch ({holder}); "
            "two servers on one database would close each other's live calls"
        )
        self.path = path
        self.holder = holder


def lock_path(path: str) -> str:
    """The lock file that makes one server the owner of the database at ``path``."""
    return f"{path}.lock"


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
            self._lock_fd = _acquire(lock_path(path), path)
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
            script = _MIGRATIONS[target - 1]
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
        unknown = [f for f in fields if f not in _CALL_COLUMNS]
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
        for name in _JSON_FIELDS:
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
        """The (first) call created by an API request: Plivo's ``request_uuid`` lookups."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM calls WHERE account_id = ? AND request_uuid = ? "
                "ORDER BY initiation_time, rowid LIMIT 1",
                (account_id, request_uuid),
            ).fetchone()
        return None if row is None else self._row(row)

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
        filters: Mapping[str, str] | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of an account's calls, newest first, and the total matching count.

        ``filters`` are Plivo's list-call query parameters: ``call_direction``, ``from_number``,
        ``to_number``, ``parent_call_uuid``, ``hangup_source``, ``hangup_cause_code``,
        ``bill_duration`` (and ``__gt/__gte/__lt/__lte``), ``end_time`` / ``initiation_time`` /
        ``answer_time`` (same suffixes; an equality filter matches the precision written, e.g.
        the whole minute).  ``subaccount`` is accepted and ignored (no subaccounts here).  An
        unknown filter or a malformed value raises ValueError.  Paging bounds (Plivo: limit
        1..20) are the API layer's business.
        """
        where = ["account_id = ?"]
        args: list[Any] = [account_id]
        for key, raw in (filters or {}).items():
            if key in _IGNORED_FILTERS:
                continue
            value = str(raw)
            name, _, op = key.partition("__")
            if op:
                if name not in _RANGE_FILTERS or op not in _RANGE_OPS:
                    raise ValueError(f"unknown filter {key!r}")
                column, kind = _RANGE_FILTERS[name]
                if kind == "time":
                    start, end = _time_bounds(value)
                    # gt/lte compare against the end of the written interval, gte/lt its start.
                    bound = end if op in ("gt", "lte") else start
                    sqlop = {"gt": ">=", "gte": ">=", "lt": "<", "lte": "<"}[op]
                    where.append(f"{column} {sqlop} ?")
                    args.append(bound)
                else:
                    where.append(f"{column} {_RANGE_OPS[op]} ?")
                    args.append(_int_filter(key, value))
                continue
            if key in _EQ_FILTERS:
                column, kind = _EQ_FILTERS[key]
                where.append(f"{column} = ?")
                args.append(_int_filter(key, value) if kind == "int" else value)
            elif key in _RANGE_FILTERS and _RANGE_FILTERS[key][1] == "time":
                column = _RANGE_FILTERS[key][0]
                start, end = _time_bounds(value)
                where.append(f"{column} >= ? AND {column} < ?")
                args.extend((start, end))
            else:
                raise ValueError(f"unknown filter {key!r}")
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must be >= 0")
        clause = " AND ".join(where)
        with self._lock:
            total = self._db.execute(f"SELECT count(*) FROM calls WHERE {clause}", args).fetchone()[
                0
            ]
            rows = self._db.execute(
                f"SELECT * FROM calls WHERE {clause} "
                "ORDER BY initiation_time DESC, rowid DESC LIMIT ? OFFSET ?",
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
                                    _parse_stored(end) - _parse_stored(row["answer_time"])
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
    ) -> int:
        """Persist one webhook to send; returns its id (ids give the per-call order)."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO webhook_deliveries (call_uuid, event, kind, url, method, params, "
                "headers, options, created_at, next_attempt_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
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


def _acquire(lock_file: str, db_path: str) -> int:
    """Take the exclusive, non-blocking ``flock`` of ``lock_file``; its text names the holder."""
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
        finally:
            os.close(fd)
        raise DatabaseInUse(db_path, holder) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
    return fd


def _delivery_row(row: sqlite3.Row) -> dict[str, Any]:
    rec = dict(row)
    for name in ("params", "headers", "options"):
        rec[name] = json.loads(rec[name]) if rec.get(name) else {}
    return rec


def _parse_stored(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _int_filter(key: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"filter {key!r} needs an integer, got {value!r}") from None
