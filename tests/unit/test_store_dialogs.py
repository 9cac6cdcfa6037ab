"""The store's SIP dialogs of answered calls (crash recovery), in a real SQLite file and a
real PostgreSQL database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from softswitch.store import SqlStore, open_store

ACC = "MAAAAAAAAAAAAAAAAAAA"
STATE = {"call_id": "c1@h", "local_tag": "a", "remote_tag": "b", "local_seq": 65, "route_set": []}


@pytest.fixture(params=["sqlite", "postgresql"])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., SqlStore]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'calls.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    opened: list[SqlStore] = []

    def make(**kw: Any) -> SqlStore:
        if url.startswith("sqlite"):
            kw.setdefault("checkpoint_interval_s", 0)
        s = open_store(url, **kw)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


def test_dialogs_of_live_calls_survive_a_reopen_and_ended_calls_are_left_out(
    new_store: Callable[..., SqlStore],
) -> None:
    store = new_store()
    for uuid, status in (("live", "in-progress"), ("ended", "completed"), ("gone", "in-progress")):
        store.insert_call({"call_uuid": uuid, "account_id": ACC, "call_status": status})
    store.save_dialog("live", STATE)
    store.save_dialog("live", {**STATE, "local_seq": 129})  # a renewed lease replaces it
    store.save_dialog("ended", STATE)  # the process died between the record and the delete
    store.save_dialog("gone", STATE)
    store.delete_dialog("gone")
    store.close()  # as a crash leaves it: nothing else is written

    again = new_store(exclusive=True)
    assert again.live_dialogs() == [("live", {**STATE, "local_seq": 129})]
    assert again.clear_dialogs() == 2
    assert again.live_dialogs() == []


def test_an_unreadable_dialog_is_left_out(new_store: Callable[..., SqlStore]) -> None:
    store = new_store()
    store.insert_call({"call_uuid": "x", "account_id": ACC, "call_status": "in-progress"})
    store._exec("INSERT INTO call_dialogs (call_uuid, state, updated_at) VALUES ('x', '{nope', '')")
    assert store.live_dialogs() == []
