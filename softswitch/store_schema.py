"""The call store's schema, its migrations, its time format and its database lock.

Records are the call model's fields (``call_uuid``, ``bill_duration``,
``hangup_cause_name``...); each dialect maps them onto its own API shapes. Times are strings
``YYYY-MM-DD HH:MM:SS+00:00`` (UTC), which also sort correctly as text, in both engines.

SQLite's schema is versioned with ``PRAGMA user_version`` and upgraded in place by
:data:`MIGRATIONS`; PostgreSQL's by :data:`PG_MIGRATIONS`, its version in the one-row
``schema_version`` table. :mod:`softswitch.store` (SQLite) and :mod:`softswitch.store_pg`
apply them and run the queries.
"""

from __future__ import annotations

import fcntl
import os
import re
from datetime import UTC, datetime, timedelta

__all__ = [
    "CALL_COLUMNS",
    "CALL_FIELDS",
    "JSON_FIELDS",
    "LIVE_STATUSES",
    "MIGRATIONS",
    "OWNER_COLUMNS",
    "PG_MIGRATIONS",
    "PG_SCHEMA_VERSION",
    "SCHEMA_VERSION",
    "TERMINAL_STATUSES",
    "DatabaseInUse",
    "acquire_lock",
    "format_time",
    "lock_path",
    "parse_stored",
    "parse_time",
    "time_interval",
    "utc_now",
]

#: Stored ``call_status`` values of calls not over yet, and of ended calls.
LIVE_STATUSES = ("queued", "ringing", "early-media", "in-progress")
TERMINAL_STATUSES = ("completed", "busy", "failed", "timeout", "no-answer", "cancel")

# Column name -> SQL type.  Order is the column order of the table.
CALL_COLUMNS: dict[str, str] = {
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
CALL_FIELDS = tuple(CALL_COLUMNS)
JSON_FIELDS = ("params", "extra")

_CALLS_TABLE_V1 = ", ".join(f"{name} {sqltype}" for name, sqltype in CALL_COLUMNS.items())

MIGRATIONS: list[str] = [
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
    # v2: each delivery names its signing scheme (softswitch.signing), so that a delivery
    # resumed by the next process is signed again by the same scheme.
    """
    ALTER TABLE webhook_deliveries ADD COLUMN signature TEXT NOT NULL DEFAULT '';
    """,
    # v3: the SIP dialog of each answered, live call (sip.endpoint.Endpoint.dialog_state as
    # JSON), so that the next process can BYE the callees of calls a crash left up.
    """
    CREATE TABLE call_dialogs (
        call_uuid TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    """,
    # v4: each ended call's SIP messages (softswitch.trace) and media quality over time
    # (softswitch.ops), as JSON, for the API's trace and the web page's call view.
    """
    CREATE TABLE call_traces (
        call_uuid TEXT PRIMARY KEY,
        messages TEXT NOT NULL,
        dropped INTEGER NOT NULL DEFAULT 0,
        media TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL
    );
    """,
    # v5: ownership. Each call and each delivery names the node (server process) that owns
    # it; a node holds a lease in ``nodes`` while it runs. Rows of earlier versions have no
    # owner (NULL): the next server to start takes them.
    """
    ALTER TABLE calls ADD COLUMN node_id TEXT;
    ALTER TABLE webhook_deliveries ADD COLUMN node_id TEXT;
    CREATE TABLE nodes (
        node_id TEXT PRIMARY KEY,
        lease_until REAL NOT NULL,
        started_at TEXT NOT NULL
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

#: Columns of ``calls`` that are the store's bookkeeping, not the record: left out of rows.
OWNER_COLUMNS = ("node_id", "seq")

_PG_TYPES = {"INTEGER": "BIGINT"}
_CALLS_TABLE_PG = ", ".join(
    f"{name} {' '.join(_PG_TYPES.get(word, word) for word in sqltype.split(' '))}"
    for name, sqltype in CALL_COLUMNS.items()
)

#: PostgreSQL: the same tables (times and JSON as TEXT, so records, filters and ordering are
#: the engine's as in SQLite), ``seq`` for insertion order where SQLite has ``rowid``, owners
#: NOT NULL, and ``jsonb_merge_patch`` (RFC 7396) for ``extra`` as SQLite's ``json_patch``.
PG_MIGRATIONS: list[str] = [
    f"""
    CREATE TABLE calls ({_CALLS_TABLE_PG},
        node_id TEXT NOT NULL,
        seq BIGINT GENERATED ALWAYS AS IDENTITY);
    CREATE INDEX calls_account_time ON calls (account_id, initiation_time);
    CREATE INDEX calls_account_request ON calls (account_id, request_uuid);
    CREATE INDEX calls_live ON calls (node_id, call_status)
        WHERE call_status IN ('queued', 'ringing', 'early-media', 'in-progress');
    CREATE TABLE webhook_deliveries (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
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
        next_attempt_at DOUBLE PRECISION,
        delivered_at TEXT,
        signature TEXT NOT NULL DEFAULT '',
        node_id TEXT NOT NULL
    );
    CREATE INDEX webhook_deliveries_call ON webhook_deliveries (call_uuid, id);
    CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (node_id, status)
        WHERE status = 'pending';
    CREATE TABLE webhook_attempts (
        delivery_id BIGINT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
        attempt INTEGER NOT NULL,
        at TEXT NOT NULL,
        status INTEGER,
        error TEXT,
        duration_ms DOUBLE PRECISION,
        PRIMARY KEY (delivery_id, attempt)
    );
    CREATE TABLE call_dialogs (
        call_uuid TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        seq BIGINT GENERATED ALWAYS AS IDENTITY
    );
    CREATE TABLE nodes (
        node_id TEXT PRIMARY KEY,
        lease_until DOUBLE PRECISION NOT NULL,
        started_at TEXT NOT NULL
    );
    CREATE TABLE call_traces (
        call_uuid TEXT PRIMARY KEY,
        messages TEXT NOT NULL,
        dropped INTEGER NOT NULL DEFAULT 0,
        media TEXT NOT NULL DEFAULT '{{}}',
        created_at TEXT NOT NULL
    );
    -- RFC 7396 JSON merge patch: objects merge recursively, a null deletes the key.
    CREATE FUNCTION jsonb_merge_patch(target jsonb, patch jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE AS $$
        SELECT CASE
            WHEN jsonb_typeof(patch) <> 'object' THEN patch
            ELSE (
                SELECT coalesce(jsonb_object_agg(key, value), '{{}}'::jsonb) FROM (
                    SELECT key, CASE
                        WHEN p.value IS NULL THEN t.value
                        ELSE jsonb_merge_patch(
                            CASE WHEN jsonb_typeof(t.value) = 'object' THEN t.value
                                 ELSE '{{}}'::jsonb END,
                            p.value)
                    END AS value
                    FROM jsonb_each(CASE WHEN jsonb_typeof(target) = 'object' THEN target
                                         ELSE '{{}}'::jsonb END) t
                    FULL JOIN jsonb_each(patch) p USING (key)
                ) merged
                WHERE value IS NOT NULL AND value <> 'null'::jsonb
            )
        END
    $$;
    """,
]
PG_SCHEMA_VERSION = len(PG_MIGRATIONS)


def utc_now() -> datetime:
    """Current time, timezone-aware UTC."""
    return datetime.now(UTC)


def format_time(t: datetime | None = None) -> str:
    """``YYYY-MM-DD HH:MM:SS+00:00`` in UTC, the stored time format."""
    if t is None:
        t = utc_now()
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S+00:00")


def parse_time(text: str) -> tuple[datetime, timedelta]:
    """Parse a filter time ``YYYY-MM-DD HH:MM[:ss[.uuuuuu]]`` (ISO 8601, date and time
    separated by a space or ``T``).

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


def time_interval(text: str) -> tuple[str, str]:
    """[start, end) of the interval a filter time denotes, as stored strings (an equality
    filter on ``2012-03-21 11:47`` matches the whole minute).

    Stored times have whole seconds, so ``column >= x`` is ``column >= ceil(x)`` and
    ``column < y`` is ``column < ceil(y)``: both bounds are rounded up to a whole second.
    """
    t, precision = parse_time(text)
    return _ceil_second(t), _ceil_second(t + precision)


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


def acquire_lock(lock_file: str, db_path: str) -> int:
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


def parse_stored(text: str) -> datetime:
    """A stored time string as an aware datetime."""
    return datetime.fromisoformat(text)
