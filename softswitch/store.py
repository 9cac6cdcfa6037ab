"""Call records, SIP dialogs and the webhook outbox's tables: one interface, two engines.

:class:`Store` is what the call manager, the outbox, the server's recovery and the API routes
use; :func:`open_store` picks the engine from ``store_url``: ``sqlite:///path`` (the embedded
default, :class:`CallStore` here) or ``postgresql://...`` (:class:`~softswitch.store_pg.PostgresStore`,
shared by several servers). Both run the same queries (:class:`SqlStore`); what differs is the
connection, the placeholders, the insertion-order column and row locking.

The API is synchronous and meant to be called straight from the event loop: each method is
one or two short statements on an indexed table (SQLite: an insert + update costs about
0.1 ms; PostgreSQL on loopback: see ``benchmarks/RESULTS.md``). With ``batch_writes`` (the
PostgreSQL default) the writes whose caller needs no answer wait for the end of the loop turn
and are committed together (:meth:`SqlStore.flush`); reads flush first.

SQLite: one file, WAL journal, ``synchronous=NORMAL``: a committed transaction survives a
process crash (not necessarily a power cut, which costs the last few commits: the trade SQLite
documents for WAL + NORMAL). WAL checkpoints, which fsync and would put several ms on an
unlucky commit, run in a background thread instead (``checkpoint_interval_s``).

Ownership: every call record and every webhook delivery carries the ``node_id`` of the server
that owns it; a running server holds a lease on its row of ``nodes``
(:meth:`SqlStore.register_node`, renewed by :meth:`SqlStore.renew_lease`). Start-up recovery
and the deliveries resumed touch only this node's rows (:meth:`SqlStore.live_dialogs`,
:meth:`SqlStore.mark_interrupted`, :meth:`SqlStore.pending_deliveries`), after
:meth:`SqlStore.claim_dead_nodes` has made this node the owner of the live calls and pending
deliveries of nodes whose lease expired, exactly once. An exclusive SQLite store (the server's)
is the only process on its file, so every other node there is dead, and SQLite's recovery
queries see every row (as before owners existed).

A record's fields are the call model's (:data:`CALL_FIELDS`); a dialect maps them onto its own
shapes, and its list filters onto :class:`Filter` (column, operator, stored value). The schemas,
their migrations, the time format and the database lock are in :mod:`softswitch.store_schema`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from .store_schema import (
    CALL_COLUMNS,
    CALL_FIELDS,
    JSON_FIELDS,
    LIVE_STATUSES,
    MIGRATIONS,
    OWNER_COLUMNS,
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
    "Claim",
    "DatabaseInUse",
    "Filter",
    "NodeInUse",
    "SqlStore",
    "Store",
    "StoreUnavailable",
    "QUEUE_NODE",
    "default_node_id",
    "format_time",
    "lock_path",
    "open_store",
    "parse_time",
    "sqlite_path",
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


@dataclass(frozen=True)
class Claim:
    """What :meth:`SqlStore.claim_dead_nodes` took over: the live calls and the pending
    deliveries of dead nodes, now this node's, and the dead nodes whose leases it removed."""

    calls: tuple[str, ...] = ()
    deliveries: tuple[int, ...] = ()
    nodes: tuple[str, ...] = field(default=())

    def __bool__(self) -> bool:
        return bool(self.calls or self.deliveries)


class NodeInUse(DatabaseInUse):
    """A live node (unexpired lease) already runs under this ``node_id`` on the database."""


class StoreUnavailable(RuntimeError):
    """The store named by ``store_url`` cannot be opened (server down, bad URL, no driver)."""


#: The ``node_id`` of a call waiting on the shared request queue (``softswitch.cluster``):
#: owned by no node, so that no node's recovery or takeover ends it.
QUEUE_NODE = "~queue"


def default_node_id() -> str:
    """``<hostname>-<pid>``: unique among the processes of a cluster without configuration."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _encode(name: str, value: Any) -> Any:
    if name in JSON_FIELDS:
        return None if value is None else json.dumps(value, separators=(",", ":"), default=str)
    return value


class Store(Protocol):
    """What the core asks of a call store (both engines implement it, see :class:`SqlStore`)."""

    node_id: str
    SHARED: bool

    def close(self) -> None: ...
    def insert_call(self, rec: Mapping[str, Any]) -> None: ...
    def update_call(self, call_uuid: str, /, **fields: Any) -> None: ...
    def get_call(self, account_id: str, call_uuid: str) -> dict[str, Any] | None: ...
    def get_call_by_request(self, account_id: str, request_uuid: str) -> dict[str, Any] | None: ...
    def call_account(self, call_uuid: str) -> str | None: ...
    def calls_by_request(self, account_id: str, request_uuid: str) -> list[dict[str, Any]]: ...
    def list_calls(
        self,
        account_id: str,
        *,
        filters: Iterable[Filter] = (),
        limit: int = 20,
        offset: int = 0,
        order: Sequence[tuple[str, bool]] = (),
    ) -> tuple[list[dict[str, Any]], int]: ...
    def live_calls(self, account_id: str) -> list[dict[str, Any]]: ...
    def hand_to_queue(self, call_uuid: str) -> None: ...
    def take_queued(self, call_uuid: str) -> bool: ...
    def save_dialog(self, call_uuid: str, state: Mapping[str, Any]) -> None: ...
    def delete_dialog(self, call_uuid: str) -> None: ...
    def live_dialogs(
        self, calls: Collection[str] | None = None
    ) -> list[tuple[str, dict[str, Any]]]: ...
    def clear_dialogs(self, calls: Collection[str] | None = None) -> int: ...
    def mark_interrupted(
        self, now: datetime | None = None, calls: Collection[str] | None = None
    ) -> list[tuple[str, str]]: ...
    def delete_calls_before(self, end_time: str) -> int: ...
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
    ) -> int: ...
    def record_attempt(
        self,
        delivery_id: int,
        attempt: int,
        *,
        status: int | None,
        error: str | None,
        duration_ms: float,
        at: str | None = None,
    ) -> None: ...
    def finish_delivery(self, delivery_id: int, status: str) -> None: ...
    def reschedule_delivery(self, delivery_id: int, next_attempt_at: float) -> None: ...
    def pending_deliveries(
        self, kind: str | None = "post", ids: Collection[int] | None = None
    ) -> list[dict[str, Any]]: ...
    def get_delivery(self, delivery_id: int) -> dict[str, Any] | None: ...
    def list_deliveries(self, call_uuid: str) -> list[dict[str, Any]]: ...
    def list_attempts(self, delivery_id: int) -> list[dict[str, Any]]: ...
    def register_node(self, lease_s: float, now: float | None = None) -> None: ...
    def renew_lease(self, now: float | None = None) -> bool: ...
    def release_node(self) -> None: ...
    def claim_dead_nodes(self, now: float | None = None) -> Claim: ...


def _marks(values: Collection[Any]) -> str:
    return ", ".join("?" for _ in values)


class SqlStore:
    """The queries, written once for both engines with ``?`` placeholders.

    A subclass provides the connection: :meth:`_rows`, :meth:`_exec`, :meth:`_insert_id` and
    :meth:`_transaction`, the insertion-order column (:attr:`_SEQ`), the row lock of a claim
    (:attr:`_CLAIM_LOCK`) and the SQL of an ``extra`` merge (:attr:`_MERGE_EXTRA`).
    """

    #: Several servers may use the database at once (a survivor takes a dead one's calls).
    SHARED = False
    _SEQ = "rowid"
    _CLAIM_LOCK = ""
    _MERGE_EXTRA = "json_patch(coalesce(extra, '{}'), ?)"
    #: This process is the only one on the database (every other node is dead).
    _sole_owner = False

    node_id: str
    _lock: threading.RLock
    lease_s: float = 0.0

    # ----------------------------------------------------------------- engine primitives

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _exec(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run a statement; returns the number of rows it changed."""
        raise NotImplementedError

    def _exec_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        for args in rows:
            self._exec(sql, args)

    def _insert_id(self, sql: str, args: Sequence[Any]) -> int:
        """Run an INSERT into a table with an ``id`` key; returns the new id."""
        raise NotImplementedError

    @contextlib.contextmanager
    def _engine_transaction(self) -> Iterator[None]:
        raise NotImplementedError
        yield  # pragma: no cover

    def _run_batch(self, batch: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Run the statements in one transaction."""
        with self._engine_transaction():
            for sql, args in batch:
                self._exec(sql, args)

    def _one(self, sql: str, args: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = self._rows(sql, args)
        return rows[0] if rows else None

    def close(self) -> None:
        raise NotImplementedError

    # ----------------------------------------------------------------- batched writes

    #: Writes made on an event loop wait for the end of its turn, then go in one transaction.
    batch_writes = False
    _pending: list[tuple[str, Sequence[Any]]]
    _flush_handle: asyncio.Handle | None = None

    def _write(self, *statements: tuple[str, Sequence[Any]]) -> None:
        """A write whose caller needs no answer (several statements: one transaction).

        With :attr:`batch_writes` and a running event loop, it joins the writes of this loop
        turn, committed together by :meth:`flush` at the next turn (issue 14: one commit per
        turn, not per statement); any read on this store flushes first, so the store reads
        its own writes. Otherwise (a thread, a tool, a test) it runs at once.
        """
        loop = None
        if self.batch_writes:
            with contextlib.suppress(RuntimeError):
                loop = asyncio.get_running_loop()
        with self._lock:
            if loop is not None:
                self._pending.extend(statements)
                if self._flush_handle is None:
                    self._flush_handle = loop.call_soon(self.flush)
                return
            self._flush_locked()  # earlier writes first
            if len(statements) == 1:
                self._exec(*statements[0])
            else:
                self._run_batch(statements)

    def flush(self) -> None:
        """Commit the writes waiting for the end of the loop turn (see :meth:`_write`)."""
        with self._lock:
            self._flush_handle = None
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            self._run_batch(batch)
        except Exception:
            # One bad statement rolled the batch back: run each alone, so that only the bad
            # one is lost (and logged, as its caller would have).
            log.warning("store: a batch of %d writes failed; writing them one by one", len(batch))
            for sql, args in batch:
                try:
                    self._exec(sql, args)
                except Exception:
                    log.exception("store: write failed: %s", sql[:60])

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """Hold the store for a read: this store's waiting writes are committed first."""
        with self._lock:
            self._flush_locked()
            yield

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._reading(), self._engine_transaction():
            yield

    def _stop_batching(self) -> None:
        """At close: commit what waits, forget the scheduled flush."""
        with self._lock:
            if self._flush_handle is not None:
                self._flush_handle.cancel()
                self._flush_handle = None
            self._flush_locked()

    # ----------------------------------------------------------------- calls

    @staticmethod
    def _check_fields(fields: Iterable[str]) -> None:
        unknown = [f for f in fields if f not in CALL_COLUMNS]
        if unknown:
            raise ValueError(f"unknown call field(s): {', '.join(sorted(unknown))}")

    def insert_call(self, rec: Mapping[str, Any]) -> None:
        """Insert a new call record, owned by this node; ``call_uuid`` and ``account_id`` are
        required.

        ``initiation_time`` defaults to now. A duplicate ``call_uuid`` raises the engine's
        integrity error (``sqlite3.IntegrityError``, ``psycopg.errors.UniqueViolation``).
        """
        self._check_fields(rec)
        if not rec.get("call_uuid") or not rec.get("account_id"):
            raise ValueError("call_uuid and account_id are required")
        row = dict(rec)
        row.setdefault("initiation_time", format_time())
        names = list(row)
        sql = (
            f"INSERT INTO calls ({', '.join(names)}, node_id) "
            f"VALUES ({', '.join('?' for _ in names)}, ?)"
        )
        self._write((sql, [*(_encode(n, row[n]) for n in names), self.node_id]))

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
                sets.append(f"extra = {self._MERGE_EXTRA}")
            else:
                sets.append(f"{name} = ?")
            values.append(_encode(name, value))
        values.append(call_uuid)
        self._write((f"UPDATE calls SET {', '.join(sets)} WHERE call_uuid = ?", values))

    @staticmethod
    def _row(row: Mapping[str, Any]) -> dict[str, Any]:
        rec = {k: v for k, v in row.items() if k not in OWNER_COLUMNS}
        for name in JSON_FIELDS:
            text = rec.get(name)
            rec[name] = json.loads(text) if text else {}
        return rec

    def get_call(self, account_id: str, call_uuid: str) -> dict[str, Any] | None:
        """The call record, or None if it does not exist or belongs to another account."""
        with self._reading():
            row = self._one(
                "SELECT * FROM calls WHERE call_uuid = ? AND account_id = ?",
                (call_uuid, account_id),
            )
        return None if row is None else self._row(row)

    def call_owner(self, call_uuid: str) -> str | None:
        """The node that owns a call (None: no such call, or a row from before owners)."""
        with self._reading():
            row = self._one("SELECT node_id FROM calls WHERE call_uuid = ?", (call_uuid,))
        return None if row is None else row["node_id"]

    def get_call_by_request(self, account_id: str, request_uuid: str) -> dict[str, Any] | None:
        """The (first) call created by an API request (lookups by ``request_uuid``)."""
        with self._reading():
            row = self._one(
                "SELECT * FROM calls WHERE account_id = ? AND request_uuid = ? "
                f"ORDER BY initiation_time, {self._SEQ} LIMIT 1",
                (account_id, request_uuid),
            )
        return None if row is None else self._row(row)

    def call_account(self, call_uuid: str) -> str | None:
        """The account a call belongs to, or None if there is no such call."""
        with self._reading():
            row = self._one("SELECT account_id FROM calls WHERE call_uuid = ?", (call_uuid,))
        return None if row is None else str(row["account_id"])

    def calls_by_request(self, account_id: str, request_uuid: str) -> list[dict[str, Any]]:
        """Every call of one API request (a bulk request makes one per destination)."""
        with self._reading():
            rows = self._rows(
                "SELECT * FROM calls WHERE account_id = ? AND request_uuid = ? "
                f"ORDER BY initiation_time, {self._SEQ}",
                (account_id, request_uuid),
            )
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
        seq = self._SEQ
        keys.append(f"initiation_time DESC, {seq} DESC" if newest_first else f"{seq} ASC")
        clause = " AND ".join(where)
        with self._reading():
            count = self._one(f"SELECT count(*) AS n FROM calls WHERE {clause}", args)
            rows = self._rows(
                f"SELECT * FROM calls WHERE {clause} ORDER BY {', '.join(keys)} LIMIT ? OFFSET ?",
                [*args, limit, offset],
            )
        return [self._row(r) for r in rows], int(count["n"] if count else 0)

    def live_calls(self, account_id: str) -> list[dict[str, Any]]:
        """Calls not yet ended (queued, ringing, early-media, in-progress), oldest first."""
        with self._reading():
            rows = self._rows(
                f"SELECT * FROM calls WHERE account_id = ? AND call_status IN "
                f"({_marks(LIVE_STATUSES)}) ORDER BY initiation_time, {self._SEQ}",
                (account_id, *LIVE_STATUSES),
            )
        return [self._row(r) for r in rows]

    # ----------------------------------------------------------------- ownership

    def _mine(self, column: str = "node_id") -> tuple[str, list[Any]]:
        """SQL and its arguments: the row is this node's."""
        return f"{column} = ?", [self.node_id]

    def register_node(self, lease_s: float, now: float | None = None) -> None:
        """Take this node's lease for ``lease_s`` seconds (:meth:`renew_lease` extends it).

        Raises :class:`NodeInUse` when a node of this name holds an unexpired lease (two
        servers configured with one ``node_id``), unless this store is the database's sole
        owner (an exclusive SQLite file: the previous holder is dead).
        """
        now = time.time() if now is None else now
        self.lease_s = lease_s
        with self._lock, self._transaction():
            row = self._one(
                f"SELECT lease_until FROM nodes WHERE node_id = ?{self._CLAIM_LOCK.replace(' SKIP LOCKED', '')}",
                (self.node_id,),
            )
            if row is not None and row["lease_until"] >= now and not self._sole_owner:
                raise NodeInUse(self._describe(), f"node {self.node_id}, lease held")
            if row is None:
                self._exec(
                    "INSERT INTO nodes (node_id, lease_until, started_at) VALUES (?, ?, ?)",
                    (self.node_id, now + lease_s, format_time()),
                )
            else:
                self._exec(
                    "UPDATE nodes SET lease_until = ?, started_at = ? WHERE node_id = ?",
                    (now + lease_s, format_time(), self.node_id),
                )

    def renew_lease(self, now: float | None = None) -> bool:
        """Extend this node's lease by ``lease_s`` from now. False: the lease was gone (it had
        expired and a survivor took this node's calls over): this node must not go on as if it
        still owned them."""
        now = time.time() if now is None else now
        with self._lock:
            changed = self._exec(
                "UPDATE nodes SET lease_until = ? WHERE node_id = ?",
                (now + self.lease_s, self.node_id),
            )
        return changed > 0

    def release_node(self) -> None:
        """A clean stop: drop the lease, so that what is left pending here is claimable at once
        (after this store's waiting writes: the survivors must see the calls ended)."""
        with self._reading():
            self._exec("DELETE FROM nodes WHERE node_id = ?", (self.node_id,))

    def live_nodes(self, now: float | None = None) -> list[str]:
        """The nodes holding an unexpired lease."""
        now = time.time() if now is None else now
        with self._reading():
            rows = self._rows(
                "SELECT node_id FROM nodes WHERE lease_until >= ? ORDER BY node_id", (now,)
            )
        return [r["node_id"] for r in rows]

    def _orphan(self, table: str) -> str:
        """SQL: the row's owner is dead (no unexpired lease) and is not this node (nor the
        shared request queue, :data:`QUEUE_NODE`)."""
        queue = f"'{QUEUE_NODE}'"
        if self._sole_owner:
            return f"({table}.node_id IS NULL OR ({table}.node_id <> ? AND {table}.node_id <> {queue}))"
        return (
            f"({table}.node_id IS NULL OR ({table}.node_id <> ? AND {table}.node_id <> {queue} "
            f"AND NOT EXISTS ("
            f"SELECT 1 FROM nodes n WHERE n.node_id = {table}.node_id AND n.lease_until >= ?)))"
        )

    def hand_to_queue(self, call_uuid: str) -> None:
        """This node's queued call now waits on the shared request queue: no node owns it
        (:data:`QUEUE_NODE`) until one takes it (:meth:`take_queued`)."""
        self._write((
            "UPDATE calls SET node_id = ? WHERE call_uuid = ? AND node_id = ?",
            (QUEUE_NODE, call_uuid, self.node_id),
        ))

    def take_queued(self, call_uuid: str) -> bool:
        """Become the owner of a call waiting on the shared request queue; False when it is
        not waiting there any more (another node took it, or it ended): exactly one taker."""
        with self._reading():
            return self._exec(
                "UPDATE calls SET node_id = ? WHERE call_uuid = ? AND node_id = ? "
                "AND call_status = 'queued'",
                (self.node_id, call_uuid, QUEUE_NODE),
            ) == 1

    def claim_dead_nodes(self, now: float | None = None) -> Claim:
        """Become the owner of the live calls and pending deliveries of every dead node (lease
        expired, or no lease), exactly once: with several survivors claiming at the same time,
        each row goes to one of them (PostgreSQL: ``FOR UPDATE SKIP LOCKED``; SQLite: one
        writer at a time). The dead nodes' leases are removed, so a node that was only frozen
        learns from :meth:`renew_lease` that it lost its calls.

        The caller then recovers the claimed calls as at start-up (:meth:`live_dialogs`,
        :meth:`mark_interrupted` and :meth:`clear_dialogs` with ``calls=claim.calls``) and
        resumes the claimed deliveries (:meth:`pending_deliveries` with ``ids=``).
        """
        now = time.time() if now is None else now
        orphan_args: tuple[Any, ...] = (self.node_id,) if self._sole_owner else (self.node_id, now)
        with self._lock, self._transaction():
            calls = self._rows(
                f"SELECT call_uuid FROM calls WHERE call_status IN ({_marks(LIVE_STATUSES)}) "
                f"AND {self._orphan('calls')}{self._CLAIM_LOCK.replace('UPDATE', 'UPDATE OF calls')}",
                (*LIVE_STATUSES, *orphan_args),
            )
            call_ids = tuple(r["call_uuid"] for r in calls)
            self._exec_many(
                "UPDATE calls SET node_id = ? WHERE call_uuid = ?",
                [(self.node_id, c) for c in call_ids],
            )
            deliveries = self._rows(
                "SELECT id FROM webhook_deliveries WHERE status = 'pending' AND "
                f"{self._orphan('webhook_deliveries')}"
                f"{self._CLAIM_LOCK.replace('UPDATE', 'UPDATE OF webhook_deliveries')}",
                orphan_args,
            )
            delivery_ids = tuple(int(r["id"]) for r in deliveries)
            self._exec_many(
                "UPDATE webhook_deliveries SET node_id = ? WHERE id = ?",
                [(self.node_id, d) for d in delivery_ids],
            )
            if self._sole_owner:
                dead = self._rows("SELECT node_id FROM nodes WHERE node_id <> ?", (self.node_id,))
            else:
                dead = self._rows(
                    "SELECT node_id FROM nodes WHERE node_id <> ? AND lease_until < ?"
                    f"{self._CLAIM_LOCK}",
                    (self.node_id, now),
                )
            nodes = tuple(r["node_id"] for r in dead)
            self._exec_many("DELETE FROM nodes WHERE node_id = ?", [(n,) for n in nodes])
        if call_ids or delivery_ids:
            log.warning(
                "node %s took over %d live call(s) and %d pending callback(s) of dead node(s) %s",
                self.node_id,
                len(call_ids),
                len(delivery_ids),
                ", ".join(nodes) or "(unowned rows)",
            )
        return Claim(calls=call_ids, deliveries=delivery_ids, nodes=nodes)

    def _describe(self) -> str:
        return type(self).__name__

    # ----------------------------------------------------------------- SIP dialogs

    def save_dialog(self, call_uuid: str, state: Mapping[str, Any]) -> None:
        """Keep (or replace) the SIP dialog of an answered call: what the next process needs
        to BYE its callee if this one dies (see :meth:`live_dialogs`)."""
        text = json.dumps(state, separators=(",", ":"))
        self._write(
            (
                "INSERT INTO call_dialogs (call_uuid, state, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (call_uuid) DO UPDATE SET state = excluded.state, "
                "updated_at = excluded.updated_at",
                (call_uuid, text, format_time()),
            )
        )

    def delete_dialog(self, call_uuid: str) -> None:
        """The call ended here: its dialog is nobody's business any more."""
        self._write(("DELETE FROM call_dialogs WHERE call_uuid = ?", (call_uuid,)))

    def live_dialogs(
        self, calls: Collection[str] | None = None
    ) -> list[tuple[str, dict[str, Any]]]:
        """At startup, before :meth:`mark_interrupted`: the (call uuid, dialog state) of each
        of this node's calls a crash left live with a dialog to end (``calls``: only these).
        A row whose JSON is unreadable is logged and left out."""
        mine, mine_args = self._mine("c.node_id")
        sql = (
            "SELECT d.call_uuid, d.state FROM call_dialogs d JOIN calls c "
            "ON c.call_uuid = d.call_uuid "
            f"WHERE c.call_status IN ({_marks(LIVE_STATUSES)}) AND {mine}"
        )
        args: list[Any] = [*LIVE_STATUSES, *mine_args]
        if calls is not None:
            if not calls:
                return []
            sql += f" AND c.call_uuid IN ({_marks(calls)})"
            args.extend(calls)
        with self._reading():
            rows = self._rows(f"{sql} ORDER BY d.{self._SEQ}", args)
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

    def clear_dialogs(self, calls: Collection[str] | None = None) -> int:
        """Forget the stored dialogs of this node's calls, and those of no call (the recovery
        that used them is over); ``calls``: only these. Returns how many."""
        with self._reading():
            if calls is not None:
                if not calls:
                    return 0
                return self._exec(
                    f"DELETE FROM call_dialogs WHERE call_uuid IN ({_marks(calls)})", list(calls)
                )
            mine, args = self._mine("c.node_id")
            return self._exec(
                "DELETE FROM call_dialogs WHERE NOT EXISTS (SELECT 1 FROM calls c WHERE "
                f"c.call_uuid = call_dialogs.call_uuid AND NOT ({mine}))",
                args,
            )

    def mark_interrupted(
        self, now: datetime | None = None, calls: Collection[str] | None = None
    ) -> list[tuple[str, str]]:
        """At startup, end this node's calls a crash left live (``calls``: only these); returns
        their (account id, call uuid) pairs (the caller still owes each one its hangup
        callback).

        Their SIP dialogs and media died with the old process, so each becomes terminal with
        ``hangup_cause_name='SYSTEM_SHUTDOWN'``, ``hangup_source='Error'`` and ``end_time=now``.
        A call that had been answered becomes ``completed`` with its durations computed from
        ``answer_time``; one that never was becomes ``failed`` (duration 0), since calling it
        completed would claim a conversation that did not happen.
        """
        end = format_time(now)
        mine, mine_args = self._mine()
        sql = (
            "SELECT account_id, call_uuid, answer_time FROM calls WHERE call_status IN "
            f"({_marks(LIVE_STATUSES)}) AND {mine}"
        )
        args: list[Any] = [*LIVE_STATUSES, *mine_args]
        if calls is not None:
            if not calls:
                return []
            sql += f" AND call_uuid IN ({_marks(calls)})"
            args.extend(calls)
        updates = []
        with self._lock, self._transaction():
            rows = self._rows(sql, args)
            for row in rows:
                answered = row["answer_time"] is not None
                duration = 0
                if answered:
                    seconds = (parse_stored(end) - parse_stored(row["answer_time"])).total_seconds()
                    duration = max(0, int(seconds))
                updates.append(
                    (
                        "completed" if answered else "failed",
                        end,
                        duration,
                        duration,
                        row["call_uuid"],
                    )
                )
            self._exec_many(
                "UPDATE calls SET call_status = ?, end_time = ?, call_duration = ?, "
                "bill_duration = ?, hangup_cause_name = 'SYSTEM_SHUTDOWN', "
                "hangup_source = 'Error', "
                "error = coalesce(error, 'interrupted by a softswitch restart') "
                "WHERE call_uuid = ?",
                updates,
            )
        return [(row["account_id"], row["call_uuid"]) for row in rows]

    def delete_calls_before(self, end_time: str) -> int:
        """Purge ended calls older than ``end_time`` (retention), and their SIP traces;
        returns how many calls."""
        with self._reading():
            self._exec(
                "DELETE FROM call_traces WHERE call_uuid IN (SELECT call_uuid FROM calls"
                " WHERE end_time IS NOT NULL AND end_time < ?)",
                (end_time,),
            )
            return self._exec(
                "DELETE FROM calls WHERE end_time IS NOT NULL AND end_time < ?", (end_time,)
            )

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
        self._write(
            (
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
        )

    def get_trace(self, call_uuid: str) -> dict[str, Any] | None:
        """``{"messages", "dropped", "media"}`` of an ended call, or None."""
        with self._reading():
            row = self._one(
                "SELECT messages, dropped, media FROM call_traces WHERE call_uuid = ?", (call_uuid,)
            )
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
        """Persist one webhook to send, owned by this node; returns its id (ids give the
        per-call order).

        ``signature`` names the signing scheme (:mod:`softswitch.signing`) of ``headers``.
        """
        with self._lock:
            return self._insert_id(
                "INSERT INTO webhook_deliveries (call_uuid, event, kind, url, method, params, "
                "headers, options, created_at, next_attempt_at, signature, node_id) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
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
                    self.node_id,
                ),
            )

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
        self._write(
            (
                "INSERT INTO webhook_attempts "
                "(delivery_id, attempt, at, status, error, duration_ms) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT (delivery_id, attempt) DO UPDATE SET at = excluded.at, "
                "status = excluded.status, error = excluded.error, "
                "duration_ms = excluded.duration_ms",
                (delivery_id, attempt, at or format_time(), status, error, duration_ms),
            ),
            (
                "UPDATE webhook_deliveries SET attempts = ?, last_status = ?, last_error = ? "
                "WHERE id = ?",
                (attempt, status, error, delivery_id),
            ),
        )

    def finish_delivery(self, delivery_id: int, status: str) -> None:
        """Mark a delivery ``delivered`` or ``failed`` (terminal)."""
        if status not in ("delivered", "failed"):
            raise ValueError(f"bad terminal delivery status {status!r}")
        self._write(
            (
                "UPDATE webhook_deliveries SET status = ?, delivered_at = ?, next_attempt_at = NULL "
                "WHERE id = ?",
                (status, format_time(), delivery_id),
            )
        )

    def reschedule_delivery(self, delivery_id: int, next_attempt_at: float) -> None:
        """Remember when the next retry is due (wall-clock epoch seconds) across restarts."""
        self._write(
            (
                "UPDATE webhook_deliveries SET next_attempt_at = ? WHERE id = ?",
                (next_attempt_at, delivery_id),
            )
        )

    def pending_deliveries(
        self, kind: str | None = "post", ids: Collection[int] | None = None
    ) -> list[dict[str, Any]]:
        """This node's deliveries not yet delivered or failed, in id order (resume after a
        restart); ``ids``: only these (deliveries a claim took over)."""
        mine, mine_args = self._mine()
        sql = f"SELECT * FROM webhook_deliveries WHERE status = 'pending' AND {mine}"
        args: list[Any] = list(mine_args)
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        if ids is not None:
            if not ids:
                return []
            sql += f" AND id IN ({_marks(ids)})"
            args.extend(ids)
        with self._reading():
            rows = self._rows(sql + " ORDER BY id", args)
        return [_delivery_row(r) for r in rows]

    def get_delivery(self, delivery_id: int) -> dict[str, Any] | None:
        """One delivery row, decoded."""
        with self._reading():
            row = self._one("SELECT * FROM webhook_deliveries WHERE id = ?", (delivery_id,))
        return None if row is None else _delivery_row(row)

    def list_deliveries(self, call_uuid: str) -> list[dict[str, Any]]:
        """Every delivery (posts and fetches) of one call, in id order."""
        with self._reading():
            rows = self._rows(
                "SELECT * FROM webhook_deliveries WHERE call_uuid = ? ORDER BY id", (call_uuid,)
            )
        return [_delivery_row(r) for r in rows]

    def list_attempts(self, delivery_id: int) -> list[dict[str, Any]]:
        """The recorded HTTP attempts of one delivery, in order."""
        with self._reading():
            rows = self._rows(
                "SELECT * FROM webhook_attempts WHERE delivery_id = ? ORDER BY attempt",
                (delivery_id,),
            )
        return [dict(r) for r in rows]


def _delivery_row(row: Mapping[str, Any]) -> dict[str, Any]:
    rec = dict(row)
    for name in ("params", "headers", "options"):
        rec[name] = json.loads(rec[name]) if rec.get(name) else {}
    return rec


class CallStore(SqlStore):
    """SQLite-backed CDR store and webhook outbox tables.

    Thread-safe (one connection behind a lock) so that a helper thread may use it too, but built
    for the event loop: every method is one or two short statements.
    """

    def __init__(
        self,
        path: str,
        *,
        checkpoint_interval_s: float = 1.0,
        exclusive: bool = False,
        node_id: str | None = None,
        batch_writes: bool = False,
    ) -> None:
        """``exclusive``: own the database (the server does) or raise :class:`DatabaseInUse`.

        The server closes calls a previous run left live, which is only right if no other
        server is running on the file. The ownership is an ``flock`` on ``<path>.lock``: the
        kernel drops it when the process exits, crashes included, so no stale lock remains.
        Readers (tests, tools) open the store without ``exclusive``. ``node_id``: the owner
        written on new rows (default :func:`default_node_id`).
        """
        self.path = path
        self.node_id = node_id or default_node_id()
        self.batch_writes = batch_writes
        self._pending = []
        self._lock = threading.RLock()
        self._lock_fd: int | None = None
        if exclusive and path != ":memory:" and not path.startswith("file::memory:"):
            self._lock_fd = acquire_lock(lock_path(path), path)
        self._sole_owner = exclusive
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

    def _mine(self, column: str = "node_id") -> tuple[str, list[Any]]:
        # One server per file: after its start-up claim every row is its own, and readers
        # (tools, tests) see every row, as before owners existed.
        return "1 = 1", []

    # ----------------------------------------------------------------- engine primitives

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in self._db.execute(sql, args).fetchall()]

    def _exec(self, sql: str, args: Sequence[Any] = ()) -> int:
        return self._db.execute(sql, args).rowcount

    def _exec_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._db.executemany(sql, rows)

    def _insert_id(self, sql: str, args: Sequence[Any]) -> int:
        return int(self._db.execute(sql, args).lastrowid or 0)

    @contextlib.contextmanager
    def _engine_transaction(self) -> Iterator[None]:
        # One writer at a time: IMMEDIATE takes the write lock at BEGIN, so a claim's read and
        # its updates see the same rows.
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _describe(self) -> str:
        return self.path

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
        if self._db is not None:
            self._stop_batching()
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


#: The engine each ``store_url`` scheme selects.
STORE_SCHEMES = ("sqlite", "postgresql", "postgres")


def sqlite_path(url: str) -> str:
    """The file of a ``sqlite:///relative/path`` or ``sqlite:////absolute/path`` URL
    (SQLAlchemy's convention); ``sqlite:///:memory:`` is an in-memory database."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc:
        raise ValueError(f"not a sqlite:/// URL: {url!r}")
    path = unquote(parts.path)
    return path[1:] if path.startswith("/") else path


def open_store(
    url: str, *, node_id: str | None = None, exclusive: bool = False, **options: Any
) -> SqlStore:
    """The store ``url`` names: ``sqlite:///path`` (:class:`CallStore`; ``exclusive`` takes the
    file's lock) or ``postgresql://...`` (a libpq URL, :class:`~softswitch.store_pg.PostgresStore`,
    shared: ``exclusive`` is meaningless there, the node lease guards ownership)."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        return CallStore(sqlite_path(url), exclusive=exclusive, node_id=node_id, **options)
    if scheme in ("postgresql", "postgres"):
        try:
            from .store_pg import PostgresStore
        except ImportError as exc:
            raise StoreUnavailable(
                f"store_url {scheme}://: psycopg is not installed (pip install 'softswitch[postgres]')"
            ) from exc
        return PostgresStore(url, node_id=node_id, **options)
    raise ValueError(f"store_url: unknown scheme {scheme!r} (sqlite:/// or postgresql://)")
