"""CallManager keeps the SIP dialog of an answered call in the store (crash recovery): saved
at the answer, replaced on each change the leg reports, deleted when the call ends. Stand-ins
for the leg and the store, a fake clock; no sockets."""

from __future__ import annotations

from typing import Any

from sip.events import Answered, Ringing
from softswitch.api.plivo import PlivoDialect
from softswitch.call import CallManager
from softswitch.timers import FakeScheduler
from tests.unit.test_call_manager import (
    ACCOUNT,
    FakeDialer,
    FakeLeg,
    FakeOutbox,
    FakeStore,
    _settle,
    _spec,
)


class DialogLeg(FakeLeg):
    def __init__(self) -> None:
        super().__init__()
        self.state: dict[str, Any] | None = None
        self.on_dialog_change: Any = None

    def dialog_state(self) -> dict[str, Any] | None:
        return self.state


class DialogDialer(FakeDialer):
    async def dial(self, target: str, **kwargs: Any) -> DialogLeg:
        self.dialed.append((target, kwargs))
        leg = DialogLeg()
        self.legs.append(leg)
        return leg


class DialogStore(FakeStore):
    def __init__(self) -> None:
        super().__init__()
        self.dialogs: dict[str, dict[str, Any]] = {}
        self.writes = 0

    def save_dialog(self, call_uuid: str, state: dict[str, Any]) -> None:
        self.writes += 1
        self.dialogs[call_uuid] = state

    def delete_dialog(self, call_uuid: str) -> None:
        del self.dialogs[call_uuid]


async def test_dialog_saved_at_answer_renewed_on_change_and_deleted_at_the_end() -> None:
    dialer, store = DialogDialer(), DialogStore()
    m = CallManager(
        store,
        FakeOutbox(),
        dialer,
        dialect=PlivoDialect(),
        accounts=[ACCOUNT],
        scheduler=FakeScheduler(),
    )
    result = await m.admit(ACCOUNT, _spec())
    await _settle()
    (leg,) = dialer.legs
    call_uuid = result.call_uuids[0]
    leg.emit(Ringing(0.0, 180, "Ringing"))
    await _settle()
    assert store.dialogs == {}  # nothing to BYE before the answer
    leg.state = {"call_id": "c@h", "local_seq": 65}
    leg.emit(Answered(0.0))
    await _settle()
    assert store.dialogs == {call_uuid: {"call_id": "c@h", "local_seq": 65}}
    leg.on_dialog_change({"call_id": "c@h", "local_seq": 97})  # a target refresh or a new lease
    assert store.dialogs[call_uuid]["local_seq"] == 97
    await m.hangup(m.calls[call_uuid])
    await _settle()
    assert store.dialogs == {} and leg.on_dialog_change is None
    assert store.writes == 2
    await m.shutdown("hangup", 0.1)


async def test_a_leg_without_dialog_state_stores_nothing() -> None:
    dialer, store = FakeDialer(), DialogStore()
    m = CallManager(
        store,
        FakeOutbox(),
        dialer,
        dialect=PlivoDialect(),
        accounts=[ACCOUNT],
        scheduler=FakeScheduler(),
    )
    result = await m.admit(ACCOUNT, _spec())
    await _settle()
    dialer.legs[0].emit(Answered(0.0))
    await _settle()
    assert store.dialogs == {} and store.writes == 0
    await m.hangup(m.calls[result.call_uuids[0]])
    await _settle()
    await m.shutdown("hangup", 0.1)
