"""Plivo v1 live call control requests (``POST /Call/{uuid}/`` transfer, ``/Play/``,
``/Speak/``, ``/DTMF/``, ``/Record/``): their parameters, defaults and response messages."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from media.dtmf import DtmfStep

from .request import (
    TIME_LIMIT_CAP,
    ApiError,
    _check_send_digits,
    _int,
    _method,
    _text,
    _url,
    is_http_url,
    parse_bool,
)

# --- live call control (Plivo "Call" resource sub-paths) --------------------------------------
#
# ``POST /Call/{uuid}/`` (transfer), ``/Play/``, ``/Speak/``, ``/DTMF/``, ``/Record/`` and the
# DELETEs that stop them. Parameter names, defaults and response messages are the ones the
# official ``plivo`` SDK sends and reads (``plivo.resources.calls``); the messages are Plivo's
# own, including its spelling of "transfered".

#: Response ``message`` of each live-control request (HTTP 202 Accepted).
LIVE_MESSAGES = {
    "transfer": "call transfered",
    "play": "play started",
    "speak": "speak started",
    "digits": "digits sent",
    "record": "call recording started",
}

LEGS = ("aleg", "bleg", "both")
RECORD_FORMATS = ("mp3", "wav")
RECORD_TIME_LIMIT_DEFAULT = 60
SPEAK_TEXT_MAX = 4000  # the XML parser's bound on <Speak> text (softswitch.xml.parser)
PLAY_URLS_MAX = 10
_LANGUAGE_RE = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8}){0,2}$")
_VOICE_RE = re.compile(r"^(?:WOMAN|MAN|Polly\.[A-Za-z0-9_-]{1,40})$")


@dataclass(frozen=True, slots=True)
class PlayRequest:
    """``POST /Call/{uuid}/Play/``: ``urls`` in order, ``length`` seconds at most (None: no
    limit), ``loop`` the list until stopped, ``mix`` with what the call hears (see
    :meth:`softswitch.call.CallManager.play`)."""

    urls: tuple[str, ...]
    length: int | None = None
    legs: str = "aleg"
    loop: bool = False
    mix: bool = True
    callback_url: str | None = None
    callback_method: str = "POST"


@dataclass(frozen=True, slots=True)
class SpeakRequest:
    """``POST /Call/{uuid}/Speak/``: text to speech (espeak-ng) played like :class:`PlayRequest`."""

    text: str
    voice: str = "WOMAN"
    language: str = "en-US"
    legs: str = "aleg"
    loop: bool = False
    mix: bool = True
    callback_url: str | None = None
    callback_method: str = "POST"


@dataclass(frozen=True, slots=True)
class DigitsRequest:
    """``POST /Call/{uuid}/DTMF/``: ``digits`` in the ``send_digits`` grammar on ``leg``."""

    digits: str
    #: ``digits`` parsed once (``media.dtmf.DtmfStep``).
    steps: tuple[DtmfStep, ...] = ()
    leg: str = "aleg"
    callback_url: str | None = None
    callback_method: str = "POST"


@dataclass(frozen=True, slots=True)
class RecordRequest:
    """``POST /Call/{uuid}/Record/``: record both directions of the call, mixed, mono.

    Transcription parameters are accepted for compatibility and ignored (there is no
    transcription service); ``record_channel_type=stereo`` is refused (mono recorder)."""

    time_limit: int = RECORD_TIME_LIMIT_DEFAULT
    file_format: str = "mp3"
    callback_url: str | None = None
    callback_method: str = "POST"
    transcription_requested: bool = False


@dataclass(frozen=True, slots=True)
class TransferRequest:
    """``POST /Call/{uuid}/``: run the XML at ``aleg_url`` on the call (its current XML stops)."""

    legs: str
    aleg_url: str | None
    aleg_method: str = "POST"
    bleg_url: str | None = None
    bleg_method: str = "POST"


def _choice(data: Mapping[str, Any], name: str, choices: tuple[str, ...], default: str) -> str:
    value = _text(data, name)
    if value is None:
        return default
    low = value.lower()
    if low not in choices:
        raise ApiError(400, f"{name} must be one of {', '.join(choices)} (got {value[:40]!r})")
    return low


def _callback(data: Mapping[str, Any]) -> tuple[str | None, str]:
    return _url(data, "callback_url"), _method(data, "callback_method")


def parse_play_request(data: Mapping[str, Any]) -> PlayRequest:
    """Validate a Play request: ``urls`` is a comma-separated string (or a JSON list)."""
    raw = data.get("urls")
    if isinstance(raw, list):
        if not all(isinstance(x, str) for x in raw):
            raise ApiError(400, "urls must be a comma-separated string of URLs")
        parts = [x.strip() for x in raw]
    else:
        text = _text(data, "urls")
        parts = [x.strip() for x in text.split(",")] if text else []
    urls = tuple(u for u in parts if u)
    if not urls:
        raise ApiError(400, "urls is required")
    if len(urls) > PLAY_URLS_MAX:
        raise ApiError(400, f"urls: at most {PLAY_URLS_MAX} URLs")
    for u in urls:
        if not is_http_url(u):
            raise ApiError(400, f"urls contains an invalid URL: {u[:200]!r}")
    cb_url, cb_method = _callback(data)
    return PlayRequest(
        urls=urls,
        length=_int(data, "length", None, 1, TIME_LIMIT_CAP),
        legs=_choice(data, "legs", LEGS, "aleg"),
        loop=parse_bool(data.get("loop"), "loop"),
        mix=parse_bool(data.get("mix"), "mix", default=True),
        callback_url=cb_url,
        callback_method=cb_method,
    )


def parse_speak_request(data: Mapping[str, Any]) -> SpeakRequest:
    """Validate a Speak request (``voice`` WOMAN/MAN/Polly.*, ``language`` a BCP 47 tag)."""
    text = data.get("text")
    if text is None or (isinstance(text, str) and not text.strip()):
        raise ApiError(400, "text is required")
    if not isinstance(text, str):
        raise ApiError(400, "text must be a string")
    if len(text) > SPEAK_TEXT_MAX:
        raise ApiError(400, f"text must be at most {SPEAK_TEXT_MAX} characters")
    voice = _text(data, "voice") or "WOMAN"
    if voice.upper() in ("WOMAN", "MAN"):
        voice = voice.upper()
    if not _VOICE_RE.match(voice):
        raise ApiError(400, f"voice must be WOMAN, MAN or Polly.<name> (got {voice[:40]!r})")
    language = _text(data, "language") or "en-US"
    if not _LANGUAGE_RE.match(language):
        raise ApiError(400, f"language is not a language tag like en-US (got {language[:40]!r})")
    cb_url, cb_method = _callback(data)
    return SpeakRequest(
        text=text.strip(),
        voice=voice,
        language=language,
        legs=_choice(data, "legs", LEGS, "aleg"),
        loop=parse_bool(data.get("loop"), "loop"),
        mix=parse_bool(data.get("mix"), "mix", default=True),
        callback_url=cb_url,
        callback_method=cb_method,
    )


def parse_digits_request(data: Mapping[str, Any], *, tone_ms: int | None = None) -> DigitsRequest:
    """Validate a DTMF request: the media engine's ``send_digits`` grammar decides."""
    digits = _text(data, "digits")
    if digits is None:
        raise ApiError(400, "digits is required")
    try:
        steps = _check_send_digits(digits, tone_ms)
    except ApiError as exc:
        raise ApiError(400, exc.error.replace("send_digits", "digits", 1)) from None
    cb_url, cb_method = _callback(data)
    return DigitsRequest(
        digits=digits,
        steps=steps,
        leg=_choice(data, "leg", ("aleg", "bleg"), "aleg"),
        callback_url=cb_url,
        callback_method=cb_method,
    )


def parse_record_request(data: Mapping[str, Any]) -> RecordRequest:
    """Validate a Record request (``time_limit`` seconds, ``file_format`` mp3 or wav)."""
    time_limit = _int(data, "time_limit", RECORD_TIME_LIMIT_DEFAULT, 1, TIME_LIMIT_CAP)
    assert time_limit is not None
    channels = _choice(data, "record_channel_type", ("mono", "stereo"), "mono")
    if channels == "stereo":
        raise ApiError(400, "record_channel_type=stereo is not supported: recordings are mono")
    transcription = any(
        _text(data, k) is not None
        for k in ("transcription_type", "transcription_url", "transcription_report_type")
    )
    if _text(data, "transcription_url") is not None:
        _url(data, "transcription_url")
    _method(data, "transcription_method")
    cb_url, cb_method = _callback(data)
    return RecordRequest(
        time_limit=time_limit,
        file_format=_choice(data, "file_format", RECORD_FORMATS, "mp3"),
        callback_url=cb_url,
        callback_method=cb_method,
        transcription_requested=transcription,
    )


def parse_transfer_request(data: Mapping[str, Any]) -> TransferRequest:
    """Validate a transfer: ``legs`` aleg (default), bleg or both, with the URL(s) they need."""
    legs = _choice(data, "legs", LEGS, "aleg")
    aleg_url = _url(data, "aleg_url")
    bleg_url = _url(data, "bleg_url")
    if legs in ("aleg", "both") and aleg_url is None:
        raise ApiError(400, f"aleg_url is required when legs is {legs}")
    if legs in ("bleg", "both") and bleg_url is None:
        raise ApiError(400, f"bleg_url is required when legs is {legs}")
    return TransferRequest(
        legs=legs,
        aleg_url=aleg_url,
        aleg_method=_method(data, "aleg_method"),
        bleg_url=bleg_url,
        bleg_method=_method(data, "bleg_method"),
    )
