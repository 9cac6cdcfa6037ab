"""The call store in PostgreSQL (psycopg 3): the store several servers share.

The queries are :class:`~softswitch.store.SqlStore`'s; this module holds the connection (one
synchronous connection behind a lock, autocommit; the writes of one event-loop turn are
committed together in one pipelined round trip, ``batch_writes``), the migrations (:data:`~softswitch.store_schema.PG_MIGRATIONS`, applied under an
advisory lock so that workers starting together migrate once) and row locking for claims
(``FOR UPDATE SKIP LOCKED``).

Synchronous on purpose: the callers are synchronous today and a statement on loopback costs
~0.1-0.3 ms (``python -m benchmarks.store``). A commit waits for PostgreSQL's WAL flush; a
``store_url`` with ``?options=-c%20synchronous_commit%3Doff`` trades the last few hundred ms of
commits on a *database server* crash for shorter waits (a crash of softswitch loses nothing).
A connection broken under a statement is re-opened at the next one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from .store import SqlStore, StoreUnavailable, default_node_id
from .store_schema import PG_MIGRATIONS, PG_SCHEMA_VERSION

__all__ = ["PostgresStore"]

log = logging.getLogger(__name__)

#: ``pg_advisory_xact_lock`` key of schema migrations ("softswch" in ASCII).
_MIGRATION_LOCK = 0x736F66747377_6368


def _pg(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (our SQL has no other ``?`` nor ``%``)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresStore(SqlStore):
    """Call records, dialogs, outbox and node leases in PostgreSQL."""

    SHARED = True
    _SEQ = "seq"
    _CLAIM_LOCK = " FOR UPDATE SKIP LOCKED"
    _MERGE_EXTRA = "jsonb_merge_patch(coalesce(extra, '{}')::jsonb, ?::jsonb)::text"

    def __init__(
        self,
        url: str,
        *,
        node_id: str | None = None,
        connect_timeout_s: float = 10,
        batch_writes: bool = True,
    ) -> None:
        """``batch_writes``: writes made on an event loop are committed once per loop turn
        (:meth:`~softswitch.store.SqlStore.flush`), in one round trip."""
        self.url = url
        self.node_id = node_id or default_node_id()
        self.batch_writes = batch_writes
        self._pending = []
        self.connect_timeout_s = connect_timeout_s
        self._lock = threading.RLock()
        self._sql: dict[str, str] = {}
        self._closed = False
        self._conn: psycopg.Connection[dict[str, Any]] | None = self._connect()
        self._migrate()

    def _connect(self) -> psycopg.Connection[dict[str, Any]]:
        try:
            return psycopg.connect(
                self.url,
                autocommit=True,
                row_factory=dict_row,
                connect_timeout=max(1, int(self.connect_timeout_s)),
                application_name=f"softswitch {self.node_id}"[:63],
            )
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}".strip()) from exc

    def _connection(self) -> psycopg.Connection[dict[str, Any]]:
        conn = self._conn
        if self._closed:
            raise psycopg.InterfaceError("the store is closed")
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                log.warning("store: PostgreSQL connection lost; reconnecting")
                with contextlib.suppress(Exception):
                    conn.close()
            self._conn = conn = self._connect()
        return conn

    def _q(self, sql: str) -> str:
        text = self._sql.get(sql)
        if text is None:
            text = self._sql[sql] = _pg(sql)
        return text

    # ----------------------------------------------------------------- engine primitives

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return self._connection().execute(self._q(sql), args).fetchall()

    def _exec(self, sql: str, args: Sequence[Any] = ()) -> int:
        with self._lock:
            return self._connection().execute(self._q(sql), args).rowcount

    def _exec_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with self._lock, self._connection().cursor() as cur:
                cur.executemany(self._q(sql), rows)

    def _insert_id(self, sql: str, args: Sequence[Any]) -> int:
        row = self._one(f"{sql} RETURNING id", args)
        return int(row["id"]) if row else 0

    @contextlib.contextmanager
    def _engine_transaction(self) -> Iterator[None]:
        with self._lock, self._connection().transaction():
            yield

    def _run_batch(self, batch: Sequence[tuple[str, Sequence[Any]]]) -> None:
        # Pipeline mode: the whole batch and its commit in one round trip.
        with self._lock:
            conn = self._connection()
            with conn.transaction(), conn.pipeline(), conn.cursor() as cur:
                for sql, args in batch:
                    cur.execute(self._q(sql), args)

    def _describe(self) -> str:
        conn = self._conn
        if conn is None:
            return "postgresql"
        info = conn.info
        return f"postgresql://{info.host}:{info.port}/{info.dbname}"

    # ----------------------------------------------------------------- schema

    def _migrate(self) -> None:
        with self._engine_transaction():
            self._exec("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            self._exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = self._one("SELECT version FROM schema_version")
            version = 0 if row is None else int(row["version"])
            if version > PG_SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self._describe()}: schema version {version} is newer than this "
                    f"softswitch ({PG_SCHEMA_VERSION}); refusing to touch it"
                )
            conn = self._connection()
            for target in range(version + 1, PG_SCHEMA_VERSION + 1):
                conn.execute(PG_MIGRATIONS[target - 1].encode())
            if version == 0:
                self._exec("INSERT INTO schema_version (version) VALUES (?)", (PG_SCHEMA_VERSION,))
            elif version < PG_SCHEMA_VERSION:
                self._exec("UPDATE schema_version SET version = ?", (PG_SCHEMA_VERSION,))

    @property
    def schema_version(self) -> int:
        """The version in the database's ``schema_version`` table."""
        row = self._one("SELECT version FROM schema_version")
        return 0 if row is None else int(row["version"])

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if not self._closed:
                with contextlib.suppress(Exception):
                    self._stop_batching()
            self._closed = True
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None
