"""CallStore's SIP dialogs of answered calls (crash recovery), in a real SQLite file."""

from __future__ import annotations

from pathlib import Path

from softswitch.store import CallStore

ACC = "MAAAAAAAAAAAAAAAAAAA"
STATE = {"call_id": "c1@h", "local_tag": "a", "remote_tag": "b", "local_seq": 65, "route_set": []}


def test_dialogs_of_live_calls_survive_a_reopen_and_ended_calls_are_left_out(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "calls.db")
    store = CallStore(path, checkpoint_interval_s=0)
    for uuid, status in (("live", "in-progress"), ("ended", "completed"), ("gone", "in-progress")):
        store.insert_call({"call_uuid": uuid, "account_id": ACC, "call_status": status})
    store.save_dialog("live", STATE)
    store.save_dialog("live", {**STATE, "local_seq": 129})  # a renewed lease replaces it
    store.save_dialog("ended", STATE)  # the process died between the record and the delete
    store.save_dialog("gone", STATE)
    store.delete_dialog("gone")
    store.close()  # as a crash leaves it: nothing else is written

    again = CallStore(path, checkpoint_interval_s=0, exclusive=True)
    try:
        assert again.live_dialogs() == [("live", {**STATE, "local_seq": 129})]
        assert again.clear_dialogs() == 2
        assert again.live_dialogs() == []
    finally:
        again.close()


def test_an_unreadable_dialog_is_left_out(tmp_path: Path) -> None:
    store = CallStore(str(tmp_path / "calls.db"), checkpoint_interval_s=0)
    try:
        store.insert_call({"call_uuid": "x", "account_id": ACC, "call_status": "in-progress"})
        store._db.execute(
            "INSERT INTO call_dialogs (call_uuid, state, updated_at) VALUES ('x', '{nope', '')"
        )
        assert store.live_dialogs() == []
    finally:
        store.close()
