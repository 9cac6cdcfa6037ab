"""CallManager with stand-ins for the leg, the store and the outbox, and a fake clock for the
per-call timers: no sockets, no sleeps."""

from __future__ import annotations

import asyncio
from typing import Any

from sip import causes
from sip.events import Answered, EarlyMedia, Ringing, Terminated
from softswitch.api.plivo import PlivoDialect, parse_call_request
from softswitch.call import AccountLimits, CallManager
from softswitch.state import CallState
from softswitch.timers import FakeScheduler

ACCOUNT = AccountLimits("MA0", "token", cps=0, max_concurrent=10)


class FakeLeg:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.hangups: list[str | None] = []
        self.call_id = "fake@call"
        self.media = None

    def emit(self, event: Any) -> None:
        self.queue.put_nowait(event)

    async def events(self) -> Any:
        while True:
            event = await self.queue.get()
            yield event
            if isinstance(event, Terminated):
                return

    async def hangup(self, cause: str | None = None, source: str = "caller") -> None:
        self.hangups.append(cause)
        self.emit(Terminated(0.0, cause or causes.NORMAL_CLEARING, None, "BYE", "caller"))

    async def send_digits(self, digits: str, tone_ms: int | None = None) -> None:
        pass


class FakeDialer:
    def __init__(self) -> None:
        self.legs: list[FakeLeg] = []
        self.dialed: list[tuple[str, dict[str, Any]]] = []

    async def dial(self, target: str, **kwargs: Any) -> FakeLeg:
        self.dialed.append((target, kwargs))
        leg = FakeLeg()
        self.legs.append(leg)
        return leg


class FakeStore:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    def insert_call(self, row: dict[str, Any]) -> None:
        self.rows[row["call_uuid"]] = dict(row)

    def update_call(self, call_uuid: str, **fields: Any) -> None:
        self.rows[call_uuid].update(fields)


class FakeOutbox:
    def __init__(self) -> None:
        self.posts: list[tuple[str, str, dict[str, str]]] = []

    def post(self, call_uuid: str, event: str, url: str, method: str, params: dict[str, str], **kw: Any) -> None:
        self.posts.append((event, url, params))

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        return type("R", (), {"ok": True, "body": b"<Response/>", "url": args[0], "status": 200})()


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def _manager(clock: FakeScheduler) -> tuple[CallManager, FakeDialer, FakeStore, FakeOutbox]:
    dialer, store, outbox = FakeDialer(), FakeStore(), FakeOutbox()
    m = CallManager(store, outbox, dialer, dialect=PlivoDialect(), accounts=[ACCOUNT], scheduler=clock)
    return m, dialer, store, outbox


def _spec(**extra: Any) -> Any:
    return parse_call_request({"from": "1000", "to": "sip:bob@h", "answer_url": "http://h/a",
                               "hangup_url": "http://h/h", "ring_url": "http://h/r", **extra}).to_spec()


async def test_time_limit_ends_the_call_on_the_fake_clock() -> None:
    clock = FakeScheduler()
    m, dialer, store, outbox = _manager(clock)
    result = await m.admit(ACCOUNT, _spec(time_limit=30, ring_timeout=15))
    await _settle()
    (leg,) = dialer.legs
    assert dialer.dialed[0][1]["ring_timeout"] == 15.0
    call = m.calls[result.call_uuids[0]]
    assert call.state is CallState.INITIATED and call.status == "ringing"
    leg.emit(Ringing(0.0, 180, "Ringing"))
    leg.emit(Answered(0.0))
    await _settle()
    assert call.state is CallState.ANSWERED
    clock.advance(29)
    await _settle()
    assert leg.hangups == []
    clock.advance(1)
    await _settle()
    assert leg.hangups == [causes.ALLOTTED_TIMEOUT]
    row = store.rows[call.call_uuid]
    assert row["call_status"] == "completed" and row["hangup_cause_code"] == 5010
    assert row["hangup_source"] == "Plivo"
    events = [e for e, _, _ in outbox.posts]
    assert events == ["ring", "hangup"]
    hangup = outbox.posts[-1][2]
    assert hangup["HangupCauseName"] == "Max Call Duration Reached" and hangup["CallStatus"] == "completed"
    await m.shutdown("hangup", 0.1)


async def test_hangup_on_ring_cancels_a_ringing_call() -> None:
    clock = FakeScheduler()
    m, dialer, store, outbox = _manager(clock)
    result = await m.admit(ACCOUNT, _spec(hangup_on_ring=5))
    await _settle()
    (leg,) = dialer.legs
    leg.emit(EarlyMedia(0.0, 183))
    await _settle()
    call = m.calls[result.call_uuids[0]]
    assert call.state is CallState.EARLY and store.rows[call.call_uuid]["call_status"] == "early-media"
    clock.advance(5)
    await _settle()
    assert leg.hangups == [causes.ALLOTTED_TIMEOUT]
    row = store.rows[call.call_uuid]
    assert row["call_status"] == "no-answer" and row["hangup_cause_code"] == 3030
    await m.shutdown("hangup", 0.1)


async def test_api_hangup_of_a_queued_call_is_a_cancel() -> None:
    clock = FakeScheduler()
    m, dialer, store, outbox = _manager(clock)
    slow = AccountLimits("MA1", "t", cps=1, max_concurrent=10)
    m.add_account(slow)
    first = await m.admit(slow, _spec())
    second = await m.admit(slow, _spec())
    assert not first.queued and second.queued
    call = m.calls[second.call_uuids[0]]
    assert call.state is CallState.QUEUED and call.is_queued
    await m.hangup(call)
    row = store.rows[call.call_uuid]
    assert row["call_status"] == "cancel" and row["hangup_source"] == "API Request"
    assert call.call_uuid not in m.calls
    await m.shutdown("hangup", 0.1)


async def test_failover_tries_the_next_attempt_until_one_rings() -> None:
    from dataclasses import replace

    from softswitch.model import DialAttempt

    clock = FakeScheduler()
    m, dialer, store, outbox = _manager(clock)
    spec = replace(_spec(), attempts=(DialAttempt("gw1", 10), DialAttempt("gw2", 20), DialAttempt("gw3")))
    result = await m.admit(ACCOUNT, spec)
    await _settle()
    dialer.legs[0].emit(Terminated(0.0, causes.NORMAL_TEMPORARY_FAILURE, 503, "Service Unavailable", "callee"))
    await _settle()
    assert [kw["gateway"] for _, kw in dialer.dialed] == ["gw1", "gw2"]
    assert [kw["ring_timeout"] for _, kw in dialer.dialed] == [10, 20]
    dialer.legs[1].emit(Ringing(0.0, 180, "Ringing"))
    dialer.legs[1].emit(Terminated(0.0, causes.USER_BUSY, 486, "Busy Here", "callee"))
    await _settle()
    assert len(dialer.dialed) == 2  # rang: no failover after the first 18x
    row = store.rows[result.call_uuids[0]]
    assert row["call_status"] == "busy"
    assert [e for e, _, _ in outbox.posts] == ["ring", "hangup"]  # nothing for the failed attempt
    await m.shutdown("hangup", 0.1)


async def test_attempts_with_their_own_target_and_attempts_that_fail_at_once() -> None:
    from dataclasses import replace

    from softswitch.model import DialAttempt

    clock = FakeScheduler()
    m, dialer, store, outbox = _manager(clock)
    spec = replace(_spec(), attempts=(DialAttempt(fail_cause="CHAN_NOT_IMPLEMENTED"),
                                      DialAttempt(target="sip:bob@127.0.0.1:5099", ring_timeout=7)))
    await m.admit(ACCOUNT, spec)
    await _settle()
    assert [(t, kw["ring_timeout"]) for t, kw in dialer.dialed] == [("sip:bob@127.0.0.1:5099", 7)]
    await m.shutdown("hangup", 0.1)

    m, dialer, store, outbox = _manager(FakeScheduler())
    spec = replace(_spec(), attempts=(DialAttempt(fail_cause="A"), DialAttempt(fail_cause="B")))
    result = await m.admit(ACCOUNT, spec)
    await _settle()
    assert dialer.dialed == []  # no INVITE at all
    row = store.rows[result.call_uuids[0]]
    assert row["extra"]["hangup_cause"] == "B" and row["hangup_source"] == "Error"
    assert [e for e, _, _ in outbox.posts] == ["hangup"]  # exactly one, for the last attempt
    await m.shutdown("hangup", 0.1)


async def test_attempt_codecs_reach_the_dialer_and_a_refused_list_fails_the_attempt() -> None:
    from dataclasses import replace

    from media.engine import UnsupportedCodec
    from softswitch.model import DialAttempt

    m, dialer, store, outbox = _manager(FakeScheduler())
    spec = replace(_spec(), attempts=(DialAttempt("gw1", 10, codecs=("PCMA",)), DialAttempt("gw2", 10)))
    await m.admit(ACCOUNT, spec)
    await _settle()
    dialer.legs[0].emit(Terminated(0.0, causes.NORMAL_TEMPORARY_FAILURE, 503, "Service Unavailable", "callee"))
    await _settle()
    assert dialer.dialed[0][1]["codecs"] == ("PCMA",)
    assert "codecs" not in dialer.dialed[1][1]  # no list: the engine's default offer
    await m.shutdown("hangup", 0.1)

    class RefusingDialer(FakeDialer):
        async def dial(self, target: str, **kwargs: Any) -> FakeLeg:
            raise UnsupportedCodec("cannot encode G729")

    store, outbox = FakeStore(), FakeOutbox()
    m = CallManager(store, outbox, RefusingDialer(), dialect=PlivoDialect(), accounts=[ACCOUNT],
                    scheduler=FakeScheduler())
    result = await m.admit(ACCOUNT, replace(_spec(), attempts=(DialAttempt(codecs=("G729",)),)))
    await _settle()
    row = store.rows[result.call_uuids[0]]
    assert row["extra"]["hangup_cause"] == causes.INCOMPATIBLE_DESTINATION
    await m.shutdown("hangup", 0.1)


async def test_scheduled_hangup_fires_on_the_fake_clock_and_can_be_cancelled() -> None:
    clock = FakeScheduler()
    m, dialer, store, outbox = _manager(clock)
    result = await m.admit(ACCOUNT, _spec(time_limit=3600))
    await _settle()
    (leg,) = dialer.legs
    leg.emit(Answered(0.0))
    await _settle()
    call = m.calls[result.call_uuids[0]]
    kept = m.schedule_hangup(call, 10)
    dropped = m.schedule_hangup(call, 5)
    assert m.cancel_scheduled_hangup(dropped) and not m.cancel_scheduled_hangup(dropped)
    clock.advance(9)
    await _settle()
    assert leg.hangups == []
    clock.advance(1)
    await _settle()
    assert leg.hangups == [causes.ALLOTTED_TIMEOUT]
    assert store.rows[call.call_uuid]["call_status"] == "completed"
    assert not m.cancel_scheduled_hangup(kept)
    await m.shutdown("hangup", 0.1)


async def test_fork_first_answer_wins_a_late_2xx_is_byed_and_reject_causes_end_failover() -> None:
    """A parallel fork (softswitch.fork): one request uuid, the first answer wins at once
    (even when two answers arrive in one loop turn), the ringing member is cancelled and a
    member answering after the win is hung up, both with LOSE_RACE; a reject cause ends a
    member's failover."""
    from dataclasses import replace

    from softswitch.model import DialAttempt, ForkGroup

    m, dialer, store, outbox = _manager(FakeScheduler())
    two = (DialAttempt("gw1"), DialAttempt("gw2"))
    specs = [replace(_spec(), attempts=two) for _ in range(4)]
    result = await m.admit_fork(ACCOUNT, specs, ForkGroup(reject_causes=frozenset({causes.CALL_REJECTED})))
    assert len(result.request_uuids) == 1 and len(result.call_uuids) == 4
    await _settle()
    assert len(dialer.legs) == 4
    busy, ringing, winner, late = dialer.legs
    busy.emit(Terminated(0.0, causes.CALL_REJECTED, 603, "Decline", "callee"))
    ringing.emit(Ringing(0.0, 180, "Ringing"))
    winner.emit(Answered(0.0))
    late.emit(Answered(0.0))
    await _settle()
    assert len(dialer.legs) == 4  # the rejected member did not fail over to gw2
    assert ringing.hangups == [causes.LOSE_RACE] and late.hangups == [causes.LOSE_RACE]
    assert winner.hangups == []
    rows = [store.rows[u] for u in result.call_uuids]
    assert [r["extra"].get("hangup_cause") for r in rows] == [
        causes.CALL_REJECTED, causes.LOSE_RACE, None, causes.LOSE_RACE]
    assert {r["request_uuid"] for r in rows} == set(result.request_uuids)
    assert m.live_by_request(ACCOUNT.auth_id, result.request_uuids[0]).leg is winner  # the one still up
    await m.shutdown("hangup", 0.1)


async def test_a_gateway_at_its_concurrency_limit_fails_over_then_congests() -> None:
    """``Gateway.max_concurrent``: a call over it goes to its next gateway; with none left it
    ends SWITCH_CONGESTION without an INVITE; a call ending frees its slot."""
    from dataclasses import replace

    from softswitch.model import DialAttempt

    dialer, store, outbox = FakeDialer(), FakeStore(), FakeOutbox()
    m = CallManager(store, outbox, dialer, dialect=PlivoDialect(), accounts=[ACCOUNT],
                    scheduler=FakeScheduler(), gateway_limits={"gw1": (0.0, 1)})
    both = replace(_spec(), attempts=(DialAttempt("gw1", 10), DialAttempt("gw2", 10)))
    only = replace(_spec(), attempts=(DialAttempt("gw1", 10),))
    await m.admit(ACCOUNT, both)
    await _settle()
    await m.admit(ACCOUNT, both)
    await _settle()
    assert [kw["gateway"] for _, kw in dialer.dialed] == ["gw1", "gw2"]
    third = await m.admit(ACCOUNT, only)
    await _settle()
    assert len(dialer.dialed) == 2
    row = store.rows[third.call_uuids[0]]
    assert row["hangup_cause_code"] is not None and "SWITCH_CONGESTION" in str(row["extra"])
    dialer.legs[0].emit(Answered(0.0))
    dialer.legs[0].emit(Terminated(0.0, causes.NORMAL_CLEARING, None, "BYE", "callee"))
    await _settle()
    await m.admit(ACCOUNT, only)
    await _settle()
    assert [kw["gateway"] for _, kw in dialer.dialed] == ["gw1", "gw2", "gw1"]
    await m.shutdown("hangup", 0.1)
