"""Ownership of calls and callbacks by nodes under a lease (issue 15): start-up recovery
touches only its own node's rows, a survivor takes a dead node's work over exactly once.

PostgreSQL (shared by several servers) for most; SQLite for the single-owner rules."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from softswitch.store import CallStore, Claim, NodeInUse, SqlStore, open_store

ACC = "MAAAAAAAAAAAAAAAAAAA"
LEASE = 30.0
DIALOG = {"call_id": "c@h", "local_tag": "a", "remote_tag": "b", "local_seq": 1, "route_set": []}


@pytest.fixture
def node(postgres_url: str) -> Iterator[Callable[[str], SqlStore]]:
    """Stores on one PostgreSQL database, each a node of its own name."""
    opened: list[SqlStore] = []

    def make(name: str) -> SqlStore:
        s = open_store(postgres_url, node_id=name)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


def add_work(store: SqlStore, prefix: str, n: int = 2) -> None:
    """``n`` answered calls with a dialog and a pending hangup callback, one ended call."""
    for i in range(n):
        uuid = f"{prefix}{i}"
        store.insert_call(
            {"call_uuid": uuid, "account_id": ACC, "call_status": "in-progress",
             "answer_time": "2024-05-01 12:00:00+00:00"}
        )  # fmt: skip
        store.save_dialog(uuid, {**DIALOG, "call_id": f"{uuid}@h"})
        store.add_delivery(
            call_uuid=uuid, event="ring", url="http://x/", method="POST", params={}, headers={}
        )
    store.insert_call(
        {"call_uuid": f"{prefix}-ended", "account_id": ACC, "call_status": "completed"}
    )


def statuses(store: SqlStore, prefix: str) -> list[str]:
    return [
        r["call_status"]
        for r in store.list_calls(ACC, limit=100)[0]
        if r["call_uuid"].startswith(prefix)
    ]


def test_recovery_of_a_node_leaves_another_live_nodes_calls_alone(
    node: Callable[[str], SqlStore],
) -> None:
    a, b = node("A"), node("B")
    a.register_node(LEASE)
    b.register_node(LEASE)
    add_work(a, "a")
    add_work(b, "b")
    assert a.call_owner("a0") == "A" and b.call_owner("b1") == "B"
    a.close()  # A crashes: no release, its lease runs on

    # A restarts under a new name (a new pid) while A's lease still runs: nothing to take.
    a2 = node("A2")
    a2.register_node(LEASE)
    assert not a2.claim_dead_nodes()
    assert a2.live_dialogs() == [] and a2.mark_interrupted() == [] and a2.pending_deliveries() == []
    assert a2.clear_dialogs() == 0
    assert statuses(a2, "b") == ["completed", "in-progress", "in-progress"]

    # Past A's lease: A's work is A2's; B's (lease renewed) is still B's.
    later = time.time() + LEASE + 1
    assert b.renew_lease(now=later)
    assert a2.renew_lease(now=later)
    claim = a2.claim_dead_nodes(now=later)
    assert sorted(claim.calls) == ["a0", "a1"] and len(claim.deliveries) == 2
    assert claim.nodes == ("A",)
    assert [u for u, _ in a2.live_dialogs(calls=claim.calls)] == ["a0", "a1"]
    assert sorted(u for _, u in a2.mark_interrupted(calls=claim.calls)) == ["a0", "a1"]
    assert a2.clear_dialogs(calls=claim.calls) == 2
    assert [d["call_uuid"] for d in a2.pending_deliveries(ids=claim.deliveries)] == ["a0", "a1"]
    # B's calls, dialogs and callbacks are untouched.
    assert statuses(b, "b") == ["completed", "in-progress", "in-progress"]
    assert [u for u, _ in b.live_dialogs()] == ["b0", "b1"]
    assert [d["call_uuid"] for d in b.pending_deliveries()] == ["b0", "b1"]
    assert b.call_owner("b0") == "B" and a2.call_owner("a0") == "A2"
    # Nothing is left to take a second time.
    assert not a2.claim_dead_nodes(now=later) and not b.claim_dead_nodes(now=later)
    assert sorted(a2.live_nodes(now=later)) == ["A2", "B"]


def test_two_survivors_racing_take_each_row_exactly_once(
    node: Callable[[str], SqlStore],
) -> None:
    dead = node("dead")
    dead.register_node(1.0, now=time.time() - 10)  # its lease expired long ago
    add_work(dead, "d", n=150)
    survivors = [node("S1"), node("S2"), node("S3")]
    for s in survivors:
        s.register_node(LEASE)
    claims: dict[str, Claim] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(survivors))

    def claim(s: SqlStore) -> None:
        try:
            start.wait(timeout=10)
            claims[s.node_id] = s.claim_dead_nodes()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(s,)) for s in survivors]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    calls = [c for cl in claims.values() for c in cl.calls]
    deliveries = [d for cl in claims.values() for d in cl.deliveries]
    assert len(calls) == len(set(calls)) == 150
    assert len(deliveries) == len(set(deliveries)) == 150
    assert [n for cl in claims.values() for n in cl.nodes] == ["dead"]  # fenced once
    for s in survivors:  # each owns what it claimed, and nothing is left
        mine = set(claims[s.node_id].calls)
        assert {u for _, u in s.mark_interrupted(calls=mine)} == mine
        assert not s.claim_dead_nodes()
    assert not dead.renew_lease()  # the dead node, if it was only frozen, learns it


def test_a_node_name_is_one_live_server(node: Callable[[str], SqlStore]) -> None:
    a = node("same")
    a.register_node(LEASE)
    with pytest.raises(NodeInUse):
        node("same").register_node(LEASE)
    # Once its lease has expired (a crash and restart under a configured name), it is free.
    node("same").register_node(LEASE, now=time.time() + LEASE + 1)


def test_a_clean_stop_makes_its_pending_callbacks_claimable_at_once(
    node: Callable[[str], SqlStore],
) -> None:
    a, b = node("A"), node("B")
    a.register_node(LEASE)
    b.register_node(LEASE)
    add_work(a, "a", n=1)
    a.mark_interrupted()
    a.release_node()
    claim = b.claim_dead_nodes()
    assert claim.calls == () and len(claim.deliveries) == 1


def test_sqlite_exclusive_owner_takes_every_other_nodes_rows(tmp_path: Path) -> None:
    """One server per SQLite file: a previous process's rows are the new one's at once, even
    while that process's lease would still run (it crashed a moment ago)."""
    path = str(tmp_path / "calls.db")
    old = CallStore(path, node_id="old", checkpoint_interval_s=0)
    old.register_node(LEASE)
    add_work(old, "o")
    old.close()
    new = CallStore(path, node_id="new", exclusive=True, checkpoint_interval_s=0)
    try:
        new.register_node(LEASE)
        claim = new.claim_dead_nodes()
        assert sorted(claim.calls) == ["o0", "o1"] and len(claim.deliveries) == 2
        assert claim.nodes == ("old",)
        assert [u for u, _ in new.live_dialogs()] == ["o0", "o1"]
    finally:
        new.close()


def test_server_node_names(tmp_path: Path) -> None:
    """Workers sharing one configuration own their rows under distinct, stable names."""
    import socket

    from softswitch.config import Config
    from softswitch.server import Server

    server = Server(Config(db_path=str(tmp_path / "x.db")))
    assert server._node_id() is None  # the store's default: <hostname>-<pid>
    server.config.node_id = "edge"
    assert server._node_id() == "edge"
    server.worker = (2, 4)  # type: ignore[attr-defined]
    assert server._node_id() == "edge-2"
    server.config.node_id = ""
    assert server._node_id() == f"{socket.gethostname()}-2"
