"""A fax and a SIT in each dialect's words: Plivo's Machine/AmdStatus, Twilio's and the legacy
framework's AnsweredBy."""

from __future__ import annotations

import pytest

from media.amd import AmdResult
from softswitch.api.callapi.dialect import answered_by as twilio_answered_by
from softswitch.api.legacy.dialect import answered_by as legacy_answered_by
from softswitch.api.plivo.amd import callback_params

FAX = AmdResult(True, "FAX", "CED", 2500, 1800, 0, 0, tone_hz=(2100.0,), tone_at_ms=1800)
SIT = AmdResult(
    False, "SIT", "SIT_IC", 1000, 300, 0, 0, tone_hz=(913.8, 1370.6, 1776.7), tone_at_ms=300
)


def test_plivo() -> None:
    p = callback_params(FAX)
    assert (p["Machine"], p["AmdStatus"], p["AmdReason"], p["AmdToneHz"]) == (
        "true",
        "FAX",
        "CED",
        "2100",
    )
    p = callback_params(SIT)
    assert p["Machine"] == "false" and p["AmdStatus"] == "SIT" and p["AmdReason"] == "SIT_IC"
    assert p["AmdToneHz"] == "914,1371,1777"


@pytest.mark.parametrize("answered_by", [twilio_answered_by, legacy_answered_by])
@pytest.mark.parametrize("mode", ["Enable", "DetectMessageEnd"])
def test_answered_by(answered_by, mode) -> None:
    assert answered_by(FAX, mode) == "fax"
    assert answered_by(SIT, mode) == "unknown"
