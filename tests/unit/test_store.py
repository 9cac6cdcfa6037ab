"""The call store: call records in a real SQLite file and in a real PostgreSQL database
(every test taking ``store`` or ``new_store`` runs on both engines)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from softswitch.api.plivo.filters import list_filters
from softswitch.store import (
    SCHEMA_VERSION,
    CallStore,
    DatabaseInUse,
    Filter,
    SqlStore,
    format_time,
    open_store,
    parse_time,
)
from softswitch.store_schema import MIGRATIONS, PG_SCHEMA_VERSION

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def ts(minutes: float) -> str:
    return format_time(T0 + timedelta(minutes=minutes))


def rec(uuid: str, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "call_uuid": uuid,
        "request_uuid": f"req-{uuid}",
        "account_id": "MAAAAAAAAAAAAAAAAAAA",
        "direction": "outbound",
        "from_number": "14155550100",
        "to_number": "14155550199",
        "call_status": "queued",
        "answer_url": "http://127.0.0.1/answer",
        "dialect": "plivo",
        "params": {"from": "14155550100", "to": "14155550199"},
    }
    base.update(kw)
    return base


@pytest.fixture(params=["sqlite", "postgresql"])
def new_store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Callable[..., SqlStore]]:
    """Opens stores on one database of the engine (SQLite file, or a new PostgreSQL database)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'calls.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    opened: list[SqlStore] = []

    def make(**kw: Any) -> SqlStore:
        s = open_store(url, **kw)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def store(new_store: Callable[..., SqlStore]) -> SqlStore:
    return new_store()


def integrity_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [sqlite3.IntegrityError]
    try:
        import psycopg
    except ImportError:  # pragma: no cover - PostgreSQL tests are skipped then
        return tuple(errors)
    return (*errors, psycopg.errors.UniqueViolation)


ACC = "MAAAAAAAAAAAAAAAAAAA"


def test_schema_wal_and_version(tmp_path: Any) -> None:
    path = str(tmp_path / "s.db")
    s = CallStore(path)
    assert s.schema_version == SCHEMA_VERSION
    s.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(RuntimeError, match="newer"):
        CallStore(path)


def test_v1_outbox_rows_upgrade_without_a_scheme(tmp_path: Any) -> None:
    # A database of schema v1 (before deliveries named their signing scheme).
    path = str(tmp_path / "v1.db")
    db = sqlite3.connect(path)
    db.executescript(f"{MIGRATIONS[0]}\nPRAGMA user_version = 1;")
    db.execute(
        "INSERT INTO webhook_deliveries (call_uuid, event, url, method, params, headers, "
        "created_at) VALUES ('c', 'hangup', 'http://x/', 'POST', '{}', '{}', 'now')"
    )
    db.commit()
    db.close()
    s = CallStore(path)
    try:
        assert s.schema_version == SCHEMA_VERSION
        [row] = s.pending_deliveries()
        assert row["signature"] == ""  # resumed with the headers it was stored with
        did = s.add_delivery(
            call_uuid="c",
            event="ring",
            url="http://x/",
            method="GET",
            params={},
            headers={},
            signature="scheme-a",
        )
        assert s.get_delivery(did)["signature"] == "scheme-a"
    finally:
        s.close()


def test_insert_get_update(store: SqlStore) -> None:
    store.insert_call(rec("a", initiation_time=ts(0), extra={"media": {"rx": 1}}))
    got = store.get_call(ACC, "a")
    assert got is not None
    assert got["call_status"] == "queued"
    assert got["params"] == {"from": "14155550100", "to": "14155550199"}
    assert got["extra"] == {"media": {"rx": 1}}
    assert got["initiation_time"] == "2024-05-01 12:00:00+00:00"
    assert store.get_call("MAOTHERACCOUNT000000", "a") is None
    assert store.get_call(ACC, "nope") is None

    store.update_call("a", call_status="in-progress", answer_time=ts(1), sip_status=200)
    store.update_call("a", extra={"media": {"tx": 2}, "digits": "12"})
    store.update_call("a", extra={"digits": None, "amd": {"machine": False}})
    got = store.get_call(ACC, "a")
    assert got is not None
    assert got["call_status"] == "in-progress" and got["sip_status"] == 200
    # extra merges (nested too); None deletes a key.
    assert got["extra"] == {"media": {"rx": 1, "tx": 2}, "amd": {"machine": False}}
    store.update_call("a", params={"replaced": True})
    assert store.get_call(ACC, "a")["params"] == {"replaced": True}  # type: ignore[index]
    store.update_call("missing", call_status="completed")  # no-op, no error


def test_insert_defaults_and_errors(store: SqlStore) -> None:
    store.insert_call({"call_uuid": "x", "account_id": ACC})
    got = store.get_call(ACC, "x")
    assert got is not None and got["initiation_time"] and got["params"] == {} and got["extra"] == {}
    with pytest.raises(integrity_errors()):
        store.insert_call({"call_uuid": "x", "account_id": ACC})
    with pytest.raises(ValueError):
        store.insert_call({"call_uuid": "y", "account_id": ACC, "bogus": 1})
    with pytest.raises(ValueError):
        store.insert_call({"account_id": ACC})
    with pytest.raises(ValueError):
        store.update_call("x", bogus=1)
    with pytest.raises(ValueError):
        store.update_call("x", call_uuid="z")


def test_get_by_request(store: SqlStore) -> None:
    store.insert_call(rec("b1", request_uuid="bulk", initiation_time=ts(0)))
    store.insert_call(rec("b2", request_uuid="bulk", initiation_time=ts(0)))
    assert store.get_call_by_request(ACC, "bulk")["call_uuid"] == "b1"  # type: ignore[index]
    assert [c["call_uuid"] for c in store.calls_by_request(ACC, "bulk")] == ["b1", "b2"]
    assert store.get_call_by_request("other", "bulk") is None


def populate(store: SqlStore) -> None:
    # 30 completed calls, one per minute, alternating numbers and sources; 2 live; 1 elsewhere.
    for i in range(30):
        store.insert_call(
            rec(
                f"c{i:02d}",
                initiation_time=ts(i),
                answer_time=ts(i + 0.25) if i % 3 else None,
                end_time=ts(i + 0.5),
                call_status="completed" if i % 3 else "no-answer",
                bill_duration=(i % 3) * 10,
                call_duration=(i % 3) * 10,
                to_number="1111" if i % 2 else "2222",
                hangup_cause_code=4000 if i % 3 else 3010,
                hangup_source="Callee" if i % 2 else "Caller",
                parent_call_uuid="p1" if i == 7 else None,
            )
        )
    store.insert_call(rec("live1", initiation_time=ts(40), call_status="ringing"))
    store.insert_call(
        rec("live2", initiation_time=ts(41), call_status="in-progress", answer_time=ts(41))
    )
    store.insert_call(rec("other", account_id="MAOTHERACCOUNT000000", initiation_time=ts(5)))


def test_list_paging_newest_first(store: SqlStore) -> None:
    populate(store)
    rows, total = store.list_calls(ACC, limit=20, offset=0)
    assert total == 32
    assert [r["call_uuid"] for r in rows[:3]] == ["live2", "live1", "c29"]
    rows2, total2 = store.list_calls(ACC, limit=20, offset=20)
    assert total2 == 32 and len(rows2) == 12
    assert {r["call_uuid"] for r in rows} & {r["call_uuid"] for r in rows2} == set()
    rows3, total3 = store.list_calls(ACC, limit=20, offset=100)
    assert rows3 == [] and total3 == 32


def test_list_order_keys_then_newest_first(store: SqlStore) -> None:
    populate(store)
    rows, _ = store.list_calls(ACC, limit=40, order=[("call_duration", True)])
    durations = [r["call_duration"] for r in rows]
    assert durations[:10] == [20] * 10 and durations[-2:] == [None, None]  # NULLs last
    assert [r["call_uuid"] for r in rows[:2]] == ["c29", "c26"]  # ties: newest first
    rows, _ = store.list_calls(
        ACC, limit=3, order=[("to_number", False), ("initiation_time", False)]
    )
    assert [r["call_uuid"] for r in rows] == ["c01", "c03", "c05"]
    with pytest.raises(ValueError):
        store.list_calls(ACC, order=[("params", True)])
    with pytest.raises(ValueError):
        store.list_calls(ACC, order=[("1; DROP TABLE calls", True)])


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"to_number": "1111"}, 15),
        ({"call_direction": "outbound"}, 32),
        ({"call_direction": "inbound"}, 0),
        ({"hangup_source": "Caller"}, 15),
        ({"hangup_cause_code": "3010"}, 10),
        ({"parent_call_uuid": "p1"}, 1),
        ({"bill_duration": "20"}, 10),
        ({"bill_duration__gt": "0"}, 20),
        ({"bill_duration__gte": "10"}, 20),
        ({"bill_duration__lt": "10"}, 10),
        ({"bill_duration__lte": "10"}, 20),
        ({"bill_duration__gt": "0", "to_number": "2222"}, 10),
        ({"subaccount": "SA123"}, 32),
        # end_time of call i is 12:i:30.  Minute precision matches the whole minute.
        ({"end_time": "2024-05-01 12:05"}, 1),
        ({"end_time": "2024-05-01 12:05:30"}, 1),
        ({"end_time": "2024-05-01 12:05:31"}, 0),
        ({"end_time__gt": "2024-05-01 12:05"}, 24),  # after minute 5: c06..c29
        ({"end_time__gte": "2024-05-01 12:05"}, 25),
        ({"end_time__lt": "2024-05-01 12:05"}, 5),
        ({"end_time__lte": "2024-05-01 12:05"}, 6),
        ({"end_time__gt": "2024-05-01 12:05:30"}, 24),
        ({"end_time__gte": "2024-05-01 12:05:30.5"}, 24),
        ({"end_time__lt": "2024-05-01 12:05:30.5"}, 6),
        ({"initiation_time__gte": "2024-05-01 12:40"}, 2),
        ({"initiation_time__lt": "2024-05-01 14:00+02:00"}, 0),  # offsets are honoured: 12:00 UTC
        ({"initiation_time__lte": "2024-05-01 14:00+02:00"}, 1),
        ({"initiation_time__lte": "2024-05-01 07:00-05:00"}, 1),
        ({"initiation_time": "2024-05-01"}, 32),  # a date alone is the whole day
    ],
)
def test_list_filters(store: SqlStore, filters: dict[str, str], expected: int) -> None:
    populate(store)
    rows, total = store.list_calls(ACC, filters=list_filters(filters), limit=100)
    assert total == expected
    assert len(rows) == expected


@pytest.mark.parametrize(
    "filters",
    [
        {"bogus": "1"},
        {"to_number__gt": "1"},
        {"bill_duration__between": "1"},
        {"bill_duration": "ten"},
        {"end_time": "yesterday"},
    ],
)
def test_list_rejects_bad_filters(store: SqlStore, filters: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        store.list_calls(ACC, filters=list_filters(filters))


@pytest.mark.parametrize(
    "bad",
    [Filter("bogus", "=", 1), Filter("params", "=", "{}"), Filter("to_number", "LIKE", "1%")],
)
def test_store_rejects_unknown_columns_and_operators(store: SqlStore, bad: Filter) -> None:
    with pytest.raises(ValueError):
        store.list_calls(ACC, filters=[bad])


def test_live_calls_and_mark_interrupted(new_store: Callable[..., SqlStore]) -> None:
    s = new_store()
    populate(s)
    s.insert_call(rec("q", initiation_time=ts(42), call_status="queued"))
    assert [c["call_uuid"] for c in s.live_calls(ACC)] == ["live1", "live2", "q"]
    # "Crash": drop the connection without any cleanup, then reopen.
    s.close()
    s = new_store()
    now = T0 + timedelta(minutes=41, seconds=90)
    assert len(s.mark_interrupted(now)) == 4  # live1, live2, q and the other account's queued call
    assert s.live_calls(ACC) == []
    answered = s.get_call(ACC, "live2")
    assert answered is not None
    assert answered["call_status"] == "completed"
    assert answered["hangup_cause_name"] == "SYSTEM_SHUTDOWN"
    assert answered["end_time"] == format_time(now)
    assert answered["call_duration"] == 90 and answered["bill_duration"] == 90
    ringing = s.get_call(ACC, "live1")
    assert (
        ringing is not None and ringing["call_status"] == "failed" and ringing["bill_duration"] == 0
    )
    assert s.mark_interrupted(now) == []
    done = s.get_call(ACC, "c01")
    assert done is not None and done["hangup_cause_name"] is None  # ended calls untouched
    s.close()


def test_survives_close_and_reopen(new_store: Callable[..., SqlStore]) -> None:
    s = new_store()
    s.insert_call(rec("p", extra={"k": 1}))
    s.update_call("p", call_status="completed", end_time=ts(3))
    did = s.add_delivery(
        call_uuid="p", event="hangup", url="http://x/", method="POST", params={"a": "1"}, headers={}
    )
    s.close()
    s = new_store()
    got = s.get_call(ACC, "p")
    assert got is not None and got["call_status"] == "completed" and got["extra"] == {"k": 1}
    assert [d["id"] for d in s.pending_deliveries()] == [did]
    s.close()


def test_concurrent_threads(new_store: Callable[..., SqlStore]) -> None:
    s = new_store()
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(50):
                uuid = f"t{n}-{i}"
                s.insert_call(rec(uuid, request_uuid=f"r{n}"))
                s.update_call(uuid, call_status="in-progress", extra={f"w{n}": i})
                s.list_calls(ACC, filters=[Filter("direction", "=", "outbound")], limit=5)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert s.list_calls(ACC, limit=1)[1] == 200
    assert len(s.live_calls(ACC)) == 200
    s.close()


def test_two_connections_see_each_other(new_store: Callable[..., SqlStore]) -> None:
    a, b = new_store(), new_store()
    a.insert_call(rec("shared"))
    assert b.get_call(ACC, "shared") is not None
    b.update_call("shared", call_status="completed")
    assert a.get_call(ACC, "shared")["call_status"] == "completed"  # type: ignore[index]
    a.close()
    b.close()


def test_delivery_bookkeeping(store: SqlStore) -> None:
    d1 = store.add_delivery(
        call_uuid="c",
        event="ring",
        url="http://x/",
        method="POST",
        params={"a": "1"},
        headers={"H": "v"},
        options={"rc": 1},
    )
    d2 = store.add_delivery(
        call_uuid="c",
        event="answer",
        url="http://x/",
        method="GET",
        params={},
        headers={},
        kind="fetch",
    )
    store.record_attempt(d1, 1, status=None, error="refused", duration_ms=1.5)
    store.reschedule_delivery(d1, 123.0)
    store.record_attempt(d1, 2, status=200, error=None, duration_ms=2.5)
    store.finish_delivery(d1, "delivered")
    assert [d["id"] for d in store.pending_deliveries()] == []
    assert [d["id"] for d in store.pending_deliveries(kind="fetch")] == [d2]
    row = store.get_delivery(d1)
    assert row is not None
    assert (row["status"], row["attempts"], row["last_status"], row["last_error"]) == (
        "delivered",
        2,
        200,
        None,
    )
    assert row["headers"] == {"H": "v"} and row["options"] == {"rc": 1}
    assert [a["error"] for a in store.list_attempts(d1)] == ["refused", None]
    assert [d["event"] for d in store.list_deliveries("c")] == ["ring", "answer"]
    with pytest.raises(ValueError):
        store.finish_delivery(d1, "pending")


def test_time_helpers() -> None:
    assert format_time(datetime(2024, 1, 2, 3, 4, 5)) == "2024-01-02 03:04:05+00:00"
    t, precision = parse_time("2024-01-02 03:04")
    assert t == datetime(2024, 1, 2, 3, 4, tzinfo=UTC) and precision == timedelta(minutes=1)
    assert parse_time("2024-01-02 03:04:05")[1] == timedelta(seconds=1)
    assert parse_time("2024-01-02 05:04:05.25+02:00")[0] == datetime(
        2024, 1, 2, 3, 4, 5, 250000, tzinfo=UTC
    )
    with pytest.raises(ValueError):
        parse_time("2024-13-02")


def test_exclusive_store_owns_the_database(tmp_path: Any) -> None:
    """One server per database: a second exclusive open is refused, readers are not, and the
    lock goes with the owner (close here; process exit or crash in ``test_api_plivo.py``)."""
    path = str(tmp_path / "owned.db")
    owner = CallStore(path, exclusive=True)
    try:
        owner.insert_call(rec("live", call_status="in-progress", initiation_time=ts(0)))
        with pytest.raises(DatabaseInUse) as exc_info:
            CallStore(path, exclusive=True)
        assert exc_info.value.path == path and f"pid {os.getpid()}" in str(exc_info.value)
        reader = CallStore(path)  # tools and tests may still read
        assert reader.get_call(ACC, "live")["call_status"] == "in-progress"  # type: ignore[index]
        reader.close()
        # The refused open touched nothing: the owner's live call is still live.
        assert [r["call_uuid"] for r in owner.live_calls(ACC)] == ["live"]
    finally:
        owner.close()
    again = CallStore(path, exclusive=True)
    again.close()


def test_postgresql_schema_version(postgres_url: str) -> None:
    import psycopg

    s = open_store(postgres_url)
    try:
        assert s.schema_version == PG_SCHEMA_VERSION
    finally:
        s.close()
    again = open_store(postgres_url)  # a second start migrates nothing
    again.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_version SET version = %s", (PG_SCHEMA_VERSION + 1,))
    with pytest.raises(RuntimeError, match="newer"):
        open_store(postgres_url)


def test_sqlite_urls(tmp_path: Any) -> None:
    s = open_store(f"sqlite:///{tmp_path}/u.db")
    try:
        assert isinstance(s, CallStore) and s.path == f"{tmp_path}/u.db"
    finally:
        s.close()
    with pytest.raises(ValueError, match="scheme"):
        open_store("mysql://x/y")


async def test_writes_on_the_loop_are_committed_once_per_turn(
    new_store: Callable[..., SqlStore], caplog: pytest.LogCaptureFixture
) -> None:
    s, other = new_store(batch_writes=True), new_store()
    s.insert_call(rec("b1"))
    s.update_call("b1", call_status="ringing")
    s.save_dialog("b1", {"call_id": "x"})
    assert other.get_call(ACC, "b1") is None  # not committed within the turn
    assert s.get_call(ACC, "b1")["call_status"] == "ringing"  # type: ignore[index]  # reads flush
    s.update_call("b1", call_status="in-progress")
    await asyncio.sleep(0)  # the next turn commits
    assert other.get_call(ACC, "b1")["call_status"] == "in-progress"  # type: ignore[index]
    # One failing write (a duplicate call) costs only itself: the rest of its batch lands.
    s.insert_call(rec("b2"))
    s.insert_call(rec("b1"))
    s.update_call("b2", call_status="completed")
    await asyncio.sleep(0)
    assert other.get_call(ACC, "b2")["call_status"] == "completed"  # type: ignore[index]
    assert "write failed" in caplog.text
    # Off the loop (a thread, a tool) writes are immediate.
    threading.Thread(target=lambda: s.update_call("b2", sip_status=200)).start()
    await wait_for(lambda: (other.get_call(ACC, "b2") or {}).get("sip_status") == 200)
    s.update_call("b2", sip_status=486)
    s.close()  # closing commits what waits
    assert other.get_call(ACC, "b2")["sip_status"] == 486  # type: ignore[index]


async def wait_for(predicate: Callable[[], bool], timeout: float = 5) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)


def test_traces(store: SqlStore) -> None:
    assert store.get_trace("t") is None
    store.save_trace("t", [{"dir": "out", "text": "INVITE"}], dropped=2, media={"mos": [4.3]})
    store.save_trace("t", [{"dir": "in", "text": "BYE"}], dropped=1)
    assert store.get_trace("t") == {
        "messages": [{"dir": "in", "text": "BYE"}],
        "dropped": 1,
        "media": {},
    }


def test_retention_purges_the_traces_of_the_purged_calls(store: SqlStore) -> None:
    store.insert_call(rec("old"))
    store.update_call("old", end_time="2020-01-01 00:00:00")
    store.insert_call(rec("new"))
    store.save_trace("old", [{"dir": "out", "text": "INVITE"}])
    store.save_trace("new", [{"dir": "out", "text": "INVITE"}])
    assert store.delete_calls_before("2021-01-01 00:00:00") == 1
    assert store.get_trace("old") is None and store.get_trace("new") is not None
