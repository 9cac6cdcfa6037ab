"""The dialect-neutral call model: the state table, the per-call timers on a fake clock,
the CallSpec a dialect builds, and the Plivo dialect's names for states and ends."""

from __future__ import annotations

import pytest

from sip import causes
from softswitch.api.plivo import parse_call_request
from softswitch.api.plivo.dialect import PlivoDialect
from softswitch.model import (
    AmdMode,
    CallEnd,
    CallSpec,
    EndReason,
    HangupSource,
    HttpMethod,
    InvalidSpec,
    Timers,
    Webhook,
)
from softswitch.state import (
    TRANSITIONS,
    CallState,
    CallStateMachine,
    CallTransition,
    IllegalTransition,
)
from softswitch.timers import CallTimers, FakeScheduler


def test_happy_path_through_the_table() -> None:
    sm = CallStateMachine()
    assert sm.state is CallState.QUEUED
    assert sm.fire(CallTransition.DIAL) is CallState.INITIATED
    assert sm.fire(CallTransition.RING) is CallState.RINGING
    assert sm.fire(CallTransition.EARLY_MEDIA) is CallState.EARLY
    assert sm.fire(CallTransition.RING) is CallState.EARLY  # a 180 after early media keeps it
    assert sm.fire(CallTransition.ANSWER) is CallState.ANSWERED
    end = CallEnd(causes.NORMAL_CLEARING, HangupSource.CALLEE, answered=True)
    assert sm.end(end) is CallState.COMPLETED
    assert sm.end_info == end and sm.is_over and sm.answered


def test_illegal_transitions_raise() -> None:
    sm = CallStateMachine()
    with pytest.raises(IllegalTransition):
        sm.fire(CallTransition.ANSWER)  # not dialled yet
    sm.fire(CallTransition.DIAL)
    sm.fire(CallTransition.ANSWER)
    with pytest.raises(IllegalTransition):
        sm.fire(CallTransition.RING)  # no ringing after the answer
    sm.end(CallEnd(causes.NORMAL_CLEARING, HangupSource.API, EndReason.API, answered=True))
    with pytest.raises(IllegalTransition):
        sm.end(CallEnd(causes.NORMAL_CLEARING, HangupSource.API))  # ends exactly once
    with pytest.raises(ValueError):
        CallStateMachine().fire(CallTransition.END)


def test_every_live_state_can_end() -> None:
    for state, row in TRANSITIONS.items():
        assert (CallTransition.END in row) is (state is not CallState.COMPLETED)


def _timers(time_limit: float | None, hangup_on_ring: float | None) -> tuple[FakeScheduler, CallTimers, list]:
    clock = FakeScheduler()
    fired: list[tuple[float, str, EndReason]] = []
    t = CallTimers(Timers(ring_timeout=60, time_limit=time_limit, hangup_on_ring=hangup_on_ring), clock,
                   lambda cause, reason: fired.append((clock.now, cause, reason)))
    return clock, t, fired


def test_time_limit_counts_from_answer() -> None:
    clock, t, fired = _timers(30, None)
    clock.advance(10)  # ringing
    t.on_ring()
    t.on_answer()
    clock.advance(29.9)
    assert fired == []
    clock.advance(0.1)
    assert fired == [(40.0, causes.ALLOTTED_TIMEOUT, EndReason.TIME_LIMIT)]


def test_hangup_on_ring_counts_from_first_ring_and_survives_answer() -> None:
    clock, t, fired = _timers(100, 5)
    clock.advance(1)
    t.on_ring()
    clock.advance(2)
    t.on_ring()  # a second 18x does not re-arm
    t.on_answer()
    clock.advance(10)
    assert fired == [(6.0, causes.ALLOTTED_TIMEOUT, EndReason.HANGUP_ON_RING)]


def test_hangup_on_ring_without_18x_starts_at_answer() -> None:
    clock, t, fired = _timers(None, 3)
    clock.advance(4)
    t.on_answer()
    clock.advance(3)
    assert fired == [(7.0, causes.ALLOTTED_TIMEOUT, EndReason.HANGUP_ON_RING)]


def test_cancel_stops_every_timer() -> None:
    clock, t, fired = _timers(5, 2)
    t.on_answer()
    assert clock.pending == 2
    t.cancel()
    clock.advance(100)
    assert fired == [] and clock.pending == 0


def test_plivo_request_becomes_a_spec() -> None:
    req = parse_call_request({
        "from": "1000", "to": "sip:a@h<sip:b@h", "answer_url": "http://h/a", "answer_method": "get",
        "send_digits": "1w2@300", "send_on_preanswer": "true", "machine_detection": "hangup",
        "machine_detection_time": "3000", "machine_detection_url": "http://h/m", "hangup_on_ring": "4",
        "sip_headers": "k=v",
    })
    spec = req.to_spec()
    assert spec.destinations == ("sip:a@h", "sip:b@h") and spec.is_bulk
    assert spec.answer == Webhook("http://h/a", HttpMethod.GET)
    assert spec.digits is not None and spec.digits.digits == "1w2@300" and spec.digits.on_preanswer
    assert spec.amd is not None and spec.amd.mode is AmdMode.HANGUP and spec.amd.params.total_ms == 3000
    assert spec.amd.webhook == Webhook("http://h/m")
    assert spec.timers == Timers(ring_timeout=120.0, time_limit=14400.0, hangup_on_ring=4.0)
    assert dict(spec.sip_headers) == {"X-PH-k": "v"}
    with pytest.raises(TypeError):
        spec.sip_headers["X-PH-x"] = "y"  # type: ignore[index]
    with pytest.raises(InvalidSpec):
        CallSpec(destinations=(), from_="1", answer=Webhook("http://h/a"), timers=Timers(60))


def test_plivo_names_of_states_and_ends() -> None:
    d = PlivoDialect()
    assert d.status_name(CallState.QUEUED, None) == "queued"
    assert d.status_name(CallState.INITIATED, None) == "ringing"
    assert d.status_name(CallState.EARLY, None) == "early-media"
    assert d.status_name(CallState.ANSWERED, None) == "in-progress"
    busy = CallEnd(causes.USER_BUSY, HangupSource.CALLEE, sip_status=486)
    assert d.status_name(CallState.COMPLETED, busy) == "busy"
    assert d.end_fields(busy) == {"hangup_cause_code": 3000, "hangup_cause_name": "Busy Line",
                                  "hangup_source": "Callee"}
    ring = CallEnd(causes.NO_ANSWER, HangupSource.SYSTEM, EndReason.RING_TIMEOUT)
    assert d.status_name(CallState.COMPLETED, ring) == "no-answer"
    limit = CallEnd(causes.ALLOTTED_TIMEOUT, HangupSource.SYSTEM, EndReason.TIME_LIMIT, answered=True)
    assert d.status_name(CallState.COMPLETED, limit) == "completed"
    assert d.end_fields(limit)["hangup_cause_code"] == 5010


def test_hangup_on_ring_cause_is_the_dialects() -> None:
    clock = FakeScheduler()
    fired: list[tuple[str, EndReason]] = []
    t = CallTimers(Timers(ring_timeout=60, hangup_on_ring=0, hangup_on_ring_cause=causes.ORIGINATOR_CANCEL),
                   clock, lambda cause, reason: fired.append((cause, reason)))
    t.on_ring()
    clock.advance(0)
    assert fired == [(causes.ORIGINATOR_CANCEL, EndReason.HANGUP_ON_RING)]


def test_plivo_machine_params() -> None:
    from dataclasses import replace

    from media.amd import AmdResult
    from softswitch.api.plivo.dialect import machine_params

    r = AmdResult(machine=True, status="MACHINE", reason="LONGGREETING", decided_at_ms=2140,
                  initial_silence_ms=420, greeting_ms=1500, words=2)
    assert machine_params(r) == {
        "Machine": "true", "AmdStatus": "MACHINE", "AmdReason": "LONGGREETING", "AmdDecisionMs": "2140",
        "AmdInitialSilenceMs": "420", "AmdGreetingMs": "1500", "AmdWords": "2",
    }
    b = machine_params(replace(r, beep_hz=998.6, beep_ms=300, beep_at_ms=7000))
    assert b["AmdBeepHz"] == "999" and b["AmdBeepMs"] == "300" and b["AmdBeepAtMs"] == "7000"
