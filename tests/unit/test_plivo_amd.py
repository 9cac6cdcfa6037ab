"""Plivo's names for machine detection (softswitch.api.plivo.amd.py): the machine_detection_*
request parameters onto the detector's settings, and a decision onto callback parameters."""

from __future__ import annotations

import dataclasses

import pytest

from media.amd import AmdParamError, AmdParams, AmdResult
from softswitch.api.plivo.amd import PLIVO_PARAMETERS, amd_params_from_plivo, callback_params

# -- parameters (Plivo names, documented ranges) ----------------------------------------------


def test_plivo_defaults_are_the_documented_ones() -> None:
    p = amd_params_from_plivo({})
    assert p == AmdParams()
    assert (p.total_ms, p.initial_silence_ms, p.greeting_ms) == (5000, 4500, 1500)
    assert (p.after_greeting_silence_ms, p.max_words, p.max_word_length_ms) == (800, 3, 5000)


def test_plivo_values_as_form_strings_or_json_ints() -> None:
    p = amd_params_from_plivo(
        {
            "machine_detection_time": "2000",
            "machine_detection_initial_silence": 10000,
            "machine_detection_initial_greeting": " 5000 ",
            "machine_detection_silence": "500",
            "machine_detection_maximum_words": "10",
            "machine_detection_maximum_speech_length": 1000,
            "machine_detection": "true",  # not ours: ignored
        }
    )
    assert p.total_ms == 2000 and p.initial_silence_ms == 10000 and p.greeting_ms == 5000
    assert p.after_greeting_silence_ms == 500 and p.max_words == 10
    assert p.max_word_length_ms == 1000
    assert amd_params_from_plivo({"machine_detection_time": ""}).total_ms == 5000


@pytest.mark.parametrize("name", sorted(PLIVO_PARAMETERS))
@pytest.mark.parametrize("which", ["below", "above", "text", "fraction", "bool"])
def test_plivo_out_of_range_names_parameter_and_range(name: str, which: str) -> None:
    _, lo, hi, _ = PLIVO_PARAMETERS[name]
    bad = {"below": lo - 1, "above": str(hi + 1), "text": "soon", "fraction": "2500.5",
           "bool": True}[which]  # fmt: skip
    with pytest.raises(AmdParamError) as exc:
        amd_params_from_plivo({name: bad})
    assert exc.value.param == name
    assert (exc.value.lo, exc.value.hi) == (lo, hi)
    assert name in str(exc.value) and f"{lo} and {hi}" in str(exc.value)
    assert isinstance(exc.value, ValueError)


@pytest.mark.parametrize("name", sorted(PLIVO_PARAMETERS))
def test_plivo_range_bounds_are_inclusive(name: str) -> None:
    field, lo, hi, _ = PLIVO_PARAMETERS[name]
    assert getattr(amd_params_from_plivo({name: str(lo)}), field) == lo
    assert getattr(amd_params_from_plivo({name: hi}), field) == hi


def test_plivo_documented_ranges() -> None:
    assert {k: (lo, hi, d) for k, (_, lo, hi, d) in PLIVO_PARAMETERS.items()} == {
        "machine_detection_time": (2000, 10000, 5000),
        "machine_detection_initial_silence": (2000, 10000, 4500),
        "machine_detection_initial_greeting": (1000, 5000, 1500),
        "machine_detection_silence": (500, 5000, 800),
        "machine_detection_maximum_words": (2, 10, 3),
        "machine_detection_maximum_speech_length": (1000, 6000, 5000),
    }


def test_result_as_callback_params() -> None:
    r = AmdResult(
        machine=True, status="MACHINE", reason="LONGGREETING", decided_at_ms=2140,
        initial_silence_ms=420, greeting_ms=1500, words=2,
    )  # fmt: skip
    assert callback_params(r) == {
        "Machine": "true",
        "AmdStatus": "MACHINE",
        "AmdReason": "LONGGREETING",
        "AmdDecisionMs": "2140",
        "AmdInitialSilenceMs": "420",
        "AmdGreetingMs": "1500",
        "AmdWords": "2",
    }
    b = dataclasses.replace(r, beep_hz=998.6, beep_ms=300, beep_at_ms=7000)
    assert b.beep_end_ms == 7300
    assert callback_params(b)["AmdBeepHz"] == "999" and callback_params(b)["AmdBeepAtMs"] == "7000"
    assert (
        callback_params(AmdResult(False, "NOTSURE", "INITIALSILENCE", 4500, 4500, 0, 0))["Machine"]
        == "false"
    )
