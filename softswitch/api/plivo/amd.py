"""Plivo's names for answering-machine detection: request parameters in, callback parameters out.

The detector (:mod:`media.amd`) takes plain settings (:class:`~media.amd.AmdParams`) and gives
a plain decision (:class:`~media.amd.AmdResult`). This module is the Plivo side of both:

* :data:`PLIVO_PARAMETERS`: the ``machine_detection_*`` request parameters of "Make a call"
  (seed 002), each with the ``AmdParams`` field it sets and Plivo's documented range and
  default; :func:`amd_params_from_plivo` validates a request's values against it;
* :func:`callback_params`: a decision as callback parameters, Plivo's ``Machine`` plus our
  ``Amd*`` extras. Plivo's callback carries only a boolean, so NOTSURE (Plivo: "'Unknown'
  will be returned" after ``machine_detection_initial_silence``) is ``Machine=false`` plus
  ``AmdStatus=NOTSURE``.
"""

from __future__ import annotations

from collections.abc import Mapping

from media.amd import AmdParamError, AmdParams, AmdResult

__all__ = ["PLIVO_PARAMETERS", "amd_params_from_plivo", "callback_params"]

# Plivo request parameter -> (AmdParams field, min, max, default). Ranges and defaults as Plivo
# documents them (Make a call, machine_detection_time: 2000-10000, default 5000; the tuning
# parameters from Plivo's "How do I tune the machine detection logic?" page).
PLIVO_PARAMETERS: dict[str, tuple[str, int, int, int]] = {
    "machine_detection_time": ("total_ms", 2000, 10000, 5000),
    "machine_detection_initial_silence": ("initial_silence_ms", 2000, 10000, 4500),
    "machine_detection_initial_greeting": ("greeting_ms", 1000, 5000, 1500),
    "machine_detection_silence": ("after_greeting_silence_ms", 500, 5000, 800),
    "machine_detection_maximum_words": ("max_words", 2, 10, 3),
    "machine_detection_maximum_speech_length": ("max_word_length_ms", 1000, 6000, 5000),
}


def amd_params_from_plivo(params: Mapping[str, object], **overrides: object) -> AmdParams:
    """Build detector settings from a Plivo Make-a-call request (form or JSON values).

    Missing or empty values take Plivo's default. Values must be integers (``"5000"`` or
    ``5000``) inside the documented inclusive range, else :class:`~media.amd.AmdParamError`
    names the parameter and the range (the API answers 400 with it). ``overrides`` set the
    fields Plivo does not expose (configuration).
    """
    kwargs: dict[str, object] = dict(overrides)
    for name, (field_name, lo, hi, default) in PLIVO_PARAMETERS.items():
        raw = params.get(name)
        if raw is None or (isinstance(raw, str) and raw.strip() == ""):
            kwargs[field_name] = default
            continue
        value = _parse_int(raw)
        if value is None or not lo <= value <= hi:
            raise AmdParamError(name, raw, lo, hi)
        kwargs[field_name] = value
    return AmdParams(**kwargs)  # type: ignore[arg-type]


def _parse_int(raw: object) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        return int(raw) if raw.is_integer() else None
    if isinstance(raw, str):
        text = raw.strip()
        if text[:1] in "+-":
            sign, digits = text[0], text[1:]
        else:
            sign, digits = "", text
        if digits.isascii() and digits.isdigit():
            return int(sign + digits)
    return None


def callback_params(result: AmdResult) -> dict[str, str]:
    """Callback parameters of a decision: Plivo's ``Machine`` plus our ``Amd*`` extras (string
    values, as they go into a form body)."""
    out = {
        "Machine": "true" if result.machine else "false",
        "AmdStatus": result.status,
        "AmdReason": result.reason,
        "AmdDecisionMs": str(result.decided_at_ms),
        "AmdInitialSilenceMs": str(result.initial_silence_ms),
        "AmdGreetingMs": str(result.greeting_ms),
        "AmdWords": str(result.words),
    }
    tone_hz = getattr(result, "tone_hz", None)
    if tone_hz:
        out["AmdToneHz"] = ",".join(f"{hz:.0f}" for hz in tone_hz)
    if result.beep_hz is not None:
        out["AmdBeepHz"] = f"{result.beep_hz:.0f}"
        out["AmdBeepMs"] = str(result.beep_ms)
        out["AmdBeepAtMs"] = str(result.beep_at_ms)
    return out
