"""The "Making Calls" parameters (seed 004, DIALECTS.md §2.3) validated into the core's
:class:`~softswitch.model.CallSpec`, and the live-call update (§2.5).

Values arrive as form strings or JSON scalars; ``StatusCallbackEvent`` may be one value
separated by commas or spaces, or the key repeated (the ``twilio`` SDK repeats it).
Every error is an :class:`~softswitch.api.http.HttpError` whose message names the parameter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from media.amd import AmdParams
from media.dtmf import parse_send_digits

from ...model import (
    AmdMode,
    AmdSettings,
    CallbackEvent,
    CallSpec,
    DialAttempt,
    DigitPlan,
    HttpMethod,
    Timers,
    Webhook,
)
from ..http import HttpError
from ..values import CALLER_ID_RE, NUMBER_RE, is_destination, is_http_url

__all__ = [
    "CALLER_NAME_MAX",
    "STATUS_EVENTS",
    "TIMEOUT_DEFAULT",
    "TIME_LIMIT_DEFAULT",
    "TIMEOUT_MAX",
    "UpdateRequest",
    "parse_create",
    "parse_update",
]

TIMEOUT_DEFAULT = 60
#: Larger values are capped (Twilio's maximum ring time).
TIMEOUT_MAX = 600
#: ``TimeLimit``: most seconds a call may last once answered (Twilio's default, 4 h).
TIME_LIMIT_DEFAULT = 14400
CALLER_NAME_MAX = 50
#: ``StatusCallbackEvent`` names and the core's notifications.
STATUS_EVENTS: dict[str, CallbackEvent] = {
    "initiated": CallbackEvent.INITIATED,
    "ringing": CallbackEvent.RING,
    "answered": CallbackEvent.ANSWERED,
    "completed": CallbackEvent.HANGUP,
}
DIALECT_NAME = "callapi"


def _text(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if isinstance(value, list):
        value = value[-1] if value else None
    if value is None:
        return None
    if isinstance(value, bool | int | float):
        value = str(value).lower() if isinstance(value, bool) else str(value)
    if not isinstance(value, str):
        raise HttpError(400, f"{name} must be a string")
    return value.strip() or None


def _method(data: Mapping[str, Any], name: str) -> HttpMethod:
    value = _text(data, name)
    if value is None:
        return HttpMethod.POST
    if value.upper() not in ("GET", "POST"):
        raise HttpError(400, f"{name} must be GET or POST, got {value!r}")
    return HttpMethod(value.upper())


def _url(data: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = _text(data, name)
    if value is None:
        if required:
            raise HttpError(400, f"No '{name}' is specified: {name} is required")
        return None
    if not is_http_url(value):
        raise HttpError(400, f"{name} is not a valid http(s) URL: {value[:200]!r}")
    return value


def _events(data: Mapping[str, Any]) -> list[str]:
    raw = data.get("StatusCallbackEvent")
    if raw is None:
        return []
    items = raw if isinstance(raw, list) else [raw]
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise HttpError(400, "StatusCallbackEvent must be a string")
        for name in re.split(r"[,\s]+", item.strip()):
            if not name:
                continue
            if name.lower() not in STATUS_EVENTS:
                raise HttpError(
                    400,
                    f"StatusCallbackEvent: unknown event {name[:40]!r} "
                    "(use initiated, ringing, answered, completed)",
                )
            if name.lower() not in out:
                out.append(name.lower())
    return out


def _seconds(data: Mapping[str, Any], name: str, default: int, cap: int) -> int:
    raw = _text(data, name)
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]{1,9}", raw):
        raise HttpError(400, f"{name} must be a whole number of seconds, got {raw[:40]!r}")
    value = int(raw)
    if value < 1:
        raise HttpError(400, f"{name} must be at least 1 second")
    return min(value, cap)


#: Twilio's machine-detection tuning parameters: name → (AmdParams field, min, max, scale to ms).
AMD_PARAMETERS: dict[str, tuple[str, int, int, int]] = {
    "MachineDetectionTimeout": ("total_ms", 3, 59, 1000),
    "MachineDetectionSpeechThreshold": ("greeting_ms", 1000, 6000, 1),
    "MachineDetectionSpeechEndThreshold": ("after_greeting_silence_ms", 500, 5000, 1),
    "MachineDetectionSilenceTimeout": ("initial_silence_ms", 2000, 10000, 1),
}


#: ``DetectMessageEnd`` without ``MachineDetectionTimeout``: how long after the answer the end
#: of a machine's greeting is waited for (Twilio's default timeout, 30 s).
MESSAGE_END_TIMEOUT_MS = 30_000


def _bool(data: Mapping[str, Any], name: str) -> bool:
    value = data.get(name)
    if isinstance(value, bool):
        return value
    text = _text(data, name)
    if text is None:
        return False
    if text.lower() not in ("true", "false"):
        raise HttpError(400, f"{name} must be true or false, got {text[:40]!r}")
    return text.lower() == "true"


def _amd(data: Mapping[str, Any]) -> tuple[AmdSettings | None, dict[str, Any]]:
    """``DetectVoicemail`` (seed) and Twilio's ``MachineDetection`` family → the detector's
    settings, and what the record keeps of the request."""
    voicemail = _bool(data, "DetectVoicemail")
    mode = _text(data, "MachineDetection")
    if mode is not None and mode not in ("Enable", "DetectMessageEnd"):
        raise HttpError(
            400, f"MachineDetection must be Enable or DetectMessageEnd, got {mode[:40]!r}"
        )
    async_amd = _bool(data, "AsyncAmd")
    callback = _url(data, "AsyncAmdStatusCallback")
    callback_method = _method(data, "AsyncAmdStatusCallbackMethod")
    kept: dict[str, Any] = {
        "DetectVoicemail": voicemail,
        "MachineDetection": mode,
        "AsyncAmd": async_amd,
        "AsyncAmdStatusCallback": callback,
    }
    if not voicemail and mode is None:
        return None, kept
    if async_amd and callback is None:
        raise HttpError(400, "AsyncAmdStatusCallback is required with AsyncAmd=true")
    fields: dict[str, int] = {}
    for name, (field_name, lo, hi, scale) in AMD_PARAMETERS.items():
        raw = _text(data, name)
        if raw is None:
            continue
        if not re.fullmatch(r"[0-9]{1,6}", raw) or not lo <= int(raw) <= hi:
            raise HttpError(
                400, f"{name} must be an integer between {lo} and {hi}, got {raw[:40]!r}"
            )
        fields[field_name] = int(raw) * scale
        kept[name] = int(raw)
    if mode == "DetectMessageEnd":
        # Wait for the end of a machine's greeting: the speech-end silence (Twilio's default
        # 1200 ms) or the beep, within MachineDetectionTimeout (default 30 s) of the answer.
        fields["message_end_silence_ms"] = int(kept.get("MachineDetectionSpeechEndThreshold", 1200))
        fields["beep_wait_ms"] = fields.get("total_ms", MESSAGE_END_TIMEOUT_MS)
    webhook = Webhook(callback, callback_method) if async_amd and callback else None
    return AmdSettings(mode=AmdMode.DETECT, params=AmdParams(**fields), webhook=webhook), kept  # type: ignore[arg-type]


#: Twilio's ``SendDigits``: keys dialled once the call is answered, ``w`` a 0.5 s pause (``W``,
#: 1 s, is accepted too); tones of the media engine's default length.
_SEND_DIGITS_RE = re.compile(r"[0-9*#wW]{1,32}")


def _credential(data: Mapping[str, Any], name: str) -> str | None:
    value = _text(data, name)
    if value is not None and (len(value) > 128 or any(ord(c) < 0x20 or c in '"\\' for c in value)):
        raise HttpError(400, f"{name} must be at most 128 printable characters, no quotes")
    return value


def _sip_auth(data: Mapping[str, Any]) -> tuple[DialAttempt, ...]:
    """Digest credentials for the INVITE: Twilio's ``SipAuthUsername``/``SipAuthPassword``
    or RestComm's ``Username``/``Password`` (one attempt carrying them; none: no attempt)."""
    username = _credential(data, "SipAuthUsername") or _credential(data, "Username")
    password = _credential(data, "SipAuthPassword") or _credential(data, "Password")
    if username is None:
        if password is not None:
            raise HttpError(400, "SipAuthPassword needs a SipAuthUsername")
        return ()
    return (DialAttempt(username=username, password=password),)


#: Most custom headers one ``To`` may carry, and the header names it may set (RestComm:
#: custom ``X-`` headers only, so a request cannot forge Via, Route, Contact...).
MAX_TO_HEADERS = 10
_X_HEADER_RE = re.compile(r"X-[A-Za-z0-9][A-Za-z0-9-]{0,62}")


def _to_headers(to: str) -> tuple[str, dict[str, str]]:
    """RestComm's ``To``: a SIP address may end in ``?X-Name=value&...``, custom headers for
    the INVITE (RFC 3261 §19.1.1 URI headers, here limited to ``X-`` names)."""
    address, sep, query = to.partition("?")
    if not sep or (address[:4].lower() not in ("sip:", "sips") and "@" not in address):
        return to, {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=MAX_TO_HEADERS)
    except ValueError:
        pairs = []
    if not pairs:
        raise HttpError(400, f"To: 1 to {MAX_TO_HEADERS} X- headers may follow '?'")
    headers: dict[str, str] = {}
    for name, value in pairs:
        if not _X_HEADER_RE.fullmatch(name):
            raise HttpError(400, f"To: only X- headers may be set, got {name[:40]!r}")
        if len(value) > 256 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise HttpError(400, f"To: header {name} must be at most 256 printable characters")
        headers[name] = value
    return address, headers


def parse_create(data: Mapping[str, Any], *, twiml_url: str | None = None) -> CallSpec:
    """``POST .../Calls.json`` → the call's :class:`CallSpec` (one destination).

    ``twiml_url``: where the server serves the request's inline ``Twiml`` (the route checks
    the document first); used as the ``Url`` when the request gives ``Twiml`` instead."""
    to = _text(data, "To")
    if to is None:
        raise HttpError(400, "No 'To' number is specified: To is required")
    to, sip_headers = _to_headers(to)
    if not is_destination(to):
        raise HttpError(400, f"To is not a valid phone number or SIP address: {to[:100]!r}")
    from_ = _text(data, "From")
    if from_ is None:
        raise HttpError(400, "No 'From' number is specified: From is required")
    if not (NUMBER_RE.match(from_) or CALLER_ID_RE.match(from_)):
        raise HttpError(400, f"From is not a valid phone number or caller id: {from_[:100]!r}")
    if twiml_url is not None and _text(data, "Url") is not None:
        raise HttpError(400, "Url and Twiml cannot be given together")
    url = twiml_url or _url(data, "Url", required=True)
    assert url is not None
    method = _method(data, "Method")
    fallback = _url(data, "FallbackUrl")
    fallback_method = _method(data, "FallbackMethod")
    status_url = _url(data, "StatusCallback")
    status_method = _method(data, "StatusCallbackMethod")
    events = _events(data)
    if status_url is None and events:
        raise HttpError(400, "StatusCallbackEvent needs a StatusCallback URL")
    if status_url is not None and not events:
        events = ["completed"]
    caller_name = _text(data, "CallerName")
    if caller_name is not None and (
        len(caller_name) > CALLER_NAME_MAX or any(ord(c) < 0x20 or c in '"\\' for c in caller_name)
    ):
        raise HttpError(400, f"CallerName must be at most {CALLER_NAME_MAX} printable characters")
    attempts = _sip_auth(data)
    send_digits = _text(data, "SendDigits")
    if send_digits is not None and not _SEND_DIGITS_RE.fullmatch(send_digits):
        raise HttpError(
            400, f"SendDigits must be up to 32 of 0-9, *, #, w (got {send_digits[:40]!r})"
        )
    timeout = _seconds(data, "Timeout", TIMEOUT_DEFAULT, TIMEOUT_MAX)
    time_limit = _seconds(data, "TimeLimit", TIME_LIMIT_DEFAULT, TIME_LIMIT_DEFAULT * 6)
    hook = Webhook(status_url, status_method) if status_url else None
    amd, amd_params = _amd(data)
    if send_digits is not None:
        amd = None  # Twilio: with SendDigits, MachineDetection is ignored
    record_params: dict[str, Any] = {
        "To": to,
        "From": from_,
        "Url": None if twiml_url else url,
        "Twiml": bool(twiml_url),
        "Method": method.value,
        "FallbackUrl": fallback,
        "FallbackMethod": fallback_method.value,
        "StatusCallback": status_url,
        "StatusCallbackMethod": status_method.value,
        "StatusCallbackEvent": events,
        "Timeout": timeout,
        "TimeLimit": time_limit,
        "CallerName": caller_name,
        "SendDigits": send_digits,
        **amd_params,
    }
    return CallSpec(
        destinations=(to,),
        from_=from_,
        answer=Webhook(url, method),
        timers=Timers(ring_timeout=float(timeout), time_limit=float(time_limit)),
        caller_name=caller_name,
        amd=amd,
        fallback=Webhook(fallback, fallback_method) if fallback else None,
        notify={STATUS_EVENTS[e]: hook for e in events} if hook is not None else {},
        dialect=DIALECT_NAME,
        record_params=record_params,
        sip_headers=sip_headers,
        attempts=attempts,
        digits=(
            DigitPlan(send_digits, tuple(parse_send_digits(send_digits))) if send_digits else None
        ),
    )


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    """``POST .../Calls/{CallSid}.json``: a redirect (``url``, or an inline ``Twiml`` the
    route serves), a status change, and the webhooks the call uses from now on."""

    url: str | None = None
    method: HttpMethod = HttpMethod.POST
    status: str | None = None
    #: ``FallbackUrl`` (+``FallbackMethod``): for the redirected document and later ones.
    fallback: Webhook | None = None
    #: ``StatusCallback`` (+``StatusCallbackMethod``): where the call's status events go now.
    status_callback: Webhook | None = None


def parse_update(data: Mapping[str, Any], *, twiml_url: str | None = None) -> UpdateRequest:
    """``twiml_url``: where the server serves the request's inline ``Twiml`` (the route
    checks the document first); it is the redirect's URL."""
    if twiml_url is not None and _text(data, "Url") is not None:
        raise HttpError(400, "Url and Twiml cannot be given together")
    url = twiml_url or _url(data, "Url")
    status = _text(data, "Status")
    if status is not None:
        status = status.lower()
        if status not in ("completed", "canceled"):
            raise HttpError(400, f"Status must be completed or canceled, got {status[:40]!r}")
    fallback = _url(data, "FallbackUrl")
    status_url = _url(data, "StatusCallback")
    if url is None and status is None and fallback is None and status_url is None:
        raise HttpError(
            400,
            "Url, Twiml or Status is required: redirect the call with Url or Twiml, end it "
            "with Status (or change its FallbackUrl or StatusCallback)",
        )
    return UpdateRequest(
        url=url,
        method=HttpMethod.POST if twiml_url else _method(data, "Method"),
        status=status,
        fallback=Webhook(fallback, _method(data, "FallbackMethod")) if fallback else None,
        status_callback=(
            Webhook(status_url, _method(data, "StatusCallbackMethod")) if status_url else None
        ),
    )
