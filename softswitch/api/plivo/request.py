"""Plivo v1 request parsing: the "Make a call" parameters of Plivo's "Make a call" page with their defaults
and ranges, validated once into a :class:`CallRequest` and turned into the core's
:class:`~softswitch.model.CallSpec` (:meth:`CallRequest.to_spec`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from media.amd import AmdParamError, AmdParams
from media.dtmf import DtmfStep, parse_send_digits

from ...model import (
    AmdMode,
    AmdSettings,
    CallbackEvent,
    CallSpec,
    DigitPlan,
    HttpMethod,
    Timers,
    Webhook,
)
from ..http import HttpError
from ..values import CALLER_ID_RE, NUMBER_RE, is_destination, is_http_url, number_key
from .amd import PLIVO_PARAMETERS, amd_params_from_plivo


class ApiError(HttpError):
    """An error that becomes ``{"api_id", "error"}`` with ``status`` (400/401/404/405/429/500/503).

    Carries what to answer, like h11's ``RemoteProtocolError(error_status_hint=...)``.
    """


# --- defaults and ranges (Plivo's "Make a call" page and its Postman collection) -------------------------------------------

TIME_LIMIT_DEFAULT = 14400
#: "If the value set is >=86400 seconds, calls will be disconnected after 24 hours."
TIME_LIMIT_CAP = 86400
RING_TIMEOUT_DEFAULT = 120
RING_TIMEOUT_MAX = 86400
CALLER_NAME_MAX = 50
MACHINE_DETECTION_TIME_DEFAULT = 5000
MACHINE_DETECTION_TIME_RANGE = (2000, 10000)
BULK_MAX_DEFAULT = 1000
SIP_HEADERS_MAX = 20
SIP_HEADERS_MAX_CHARS = 4096
HTTP_METHODS = ("GET", "POST")

# Numbers, SIP URIs and caller ids: the shared rules (softswitch.api.values).
_NUMBER_RE = NUMBER_RE
_FROM_RE = CALLER_ID_RE
# "Make a call" send_digits: digits, w (0.5 s), W (1 s), and @ms for the tone length.
_SEND_DIGITS_RE = re.compile(r"^[0-9A-Da-d*#wW]{1,256}(?:@[0-9]{1,5})?$")
# "Make a call" sip_headers: "Valid values for SIP header keys and values are integers and
# uppercase and lowercase letters." Keys may also carry '-' (header-name token, RFC 3261 §25.1).
_SIP_HEADER_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9\-]{0,63}$")
_SIP_HEADER_VALUE_RE = re.compile(r"^[A-Za-z0-9]{1,256}$")
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


#: Tuning parameters of machine detection other than machine_detection_time.
AMD_PARAMETERS = tuple(n for n in PLIVO_PARAMETERS if n != "machine_detection_time")


@dataclass(frozen=True, slots=True)
class CallRequest:
    """One validated "Make a call" request; ``to`` holds the unique destinations in order."""

    from_: str
    to: tuple[str, ...]
    answer_url: str
    answer_method: str = "POST"
    ring_url: str | None = None
    ring_method: str = "POST"
    hangup_url: str | None = None
    hangup_method: str = "POST"
    fallback_url: str | None = None
    fallback_method: str = "POST"
    caller_name: str | None = None
    send_digits: str | None = None
    #: ``send_digits`` parsed once, with the server's default tone length.
    send_digits_steps: tuple[DtmfStep, ...] = ()
    send_on_preanswer: bool = False
    time_limit: int = TIME_LIMIT_DEFAULT
    hangup_on_ring: int | None = None
    machine_detection: str | None = None
    machine_detection_time: int = MACHINE_DETECTION_TIME_DEFAULT
    machine_detection_url: str | None = None
    machine_detection_method: str = "POST"
    #: The machine_detection_* tuning parameters as given (validated by amd_params_from_plivo).
    machine_detection_params: dict[str, str] = field(default_factory=dict)
    #: ``machine_detection_time`` and the tuning parameters, parsed once into engine settings.
    amd_params: AmdParams | None = None
    sip_headers: dict[str, str] = field(default_factory=dict)
    ring_timeout: int = RING_TIMEOUT_DEFAULT
    parent_call_uuid: str | None = None
    error_if_parent_not_found: bool = False

    @property
    def is_bulk(self) -> bool:
        return len(self.to) > 1

    def to_spec(self) -> CallSpec:
        """The dialect-neutral :class:`~softswitch.model.CallSpec` of this request."""

        def hook(url: str | None, method: str) -> Webhook | None:
            return Webhook(url, HttpMethod(method)) if url else None

        amd = None
        if self.machine_detection:
            assert self.amd_params is not None
            amd = AmdSettings(
                mode=AmdMode.HANGUP if self.machine_detection == "hangup" else AmdMode.DETECT,
                params=self.amd_params,
                webhook=hook(self.machine_detection_url, self.machine_detection_method),
            )
        answer = hook(self.answer_url, self.answer_method)
        assert answer is not None
        return CallSpec(
            destinations=self.to,
            from_=self.from_,
            answer=answer,
            timers=Timers(
                ring_timeout=float(self.ring_timeout),
                time_limit=float(self.time_limit),
                hangup_on_ring=None if self.hangup_on_ring is None else float(self.hangup_on_ring),
            ),
            caller_name=self.caller_name,
            sip_headers=self.sip_headers,
            digits=(
                DigitPlan(self.send_digits, self.send_digits_steps, self.send_on_preanswer)
                if self.send_digits
                else None
            ),
            amd=amd,
            fallback=hook(self.fallback_url, self.fallback_method),
            notify={
                event: webhook
                for event, webhook in (
                    (CallbackEvent.RING, hook(self.ring_url, self.ring_method)),
                    (CallbackEvent.HANGUP, hook(self.hangup_url, self.hangup_method)),
                )
                if webhook is not None
            },
            parent_call_uuid=self.parent_call_uuid,
            error_if_parent_not_found=self.error_if_parent_not_found,
            dialect="plivo",
            record_params=self.params(),
        )

    def params(self) -> dict[str, Any]:
        """The request as stored in the call record (Plivo's own parameter names)."""
        out: dict[str, Any] = {
            "from": self.from_,
            "to": "<".join(self.to),
            "answer_url": self.answer_url,
            "answer_method": self.answer_method,
            "ring_url": self.ring_url,
            "ring_method": self.ring_method,
            "hangup_url": self.hangup_url,
            "hangup_method": self.hangup_method,
            "fallback_url": self.fallback_url,
            "fallback_method": self.fallback_method,
            "caller_name": self.caller_name,
            "send_digits": self.send_digits,
            "send_on_preanswer": self.send_on_preanswer,
            "time_limit": self.time_limit,
            "hangup_on_ring": self.hangup_on_ring,
            "machine_detection": self.machine_detection,
            "machine_detection_time": self.machine_detection_time,
            "machine_detection_url": self.machine_detection_url,
            "machine_detection_method": self.machine_detection_method,
            **self.machine_detection_params,
            "sip_headers": dict(self.sip_headers),
            "ring_timeout": self.ring_timeout,
            "parent_call_uuid": self.parent_call_uuid,
            "error_if_parent_not_found": self.error_if_parent_not_found,
        }
        return out


# --- scalar parsers: JSON gives native types, forms give strings; accept both ----------------


def _text(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool | int | float):
        value = str(value)
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be a string")
    value = value.strip()
    return value or None


def parse_bool(value: Any, name: str, default: bool = False) -> bool:
    """Plivo booleans arrive as JSON true/false or the strings 'true'/'false'."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ApiError(400, f"{name} must be true or false")


def _int(data: Mapping[str, Any], name: str, default: int | None, lo: int, hi: int | None) -> int | None:
    value = data.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise ApiError(400, f"{name} must be an integer")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        v = value.strip()
        if not re.fullmatch(r"[+-]?[0-9]{1,12}", v):
            raise ApiError(400, f"{name} must be an integer")
        value = int(v)
    if not isinstance(value, int):
        raise ApiError(400, f"{name} must be an integer")
    if value < lo or (hi is not None and value > hi):
        rng = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise ApiError(400, f"{name} must be {rng} (got {value})")
    return value


def _method(data: Mapping[str, Any], name: str) -> str:
    value = _text(data, name)
    if value is None:
        return "POST"
    upper = value.upper()  # the seed's own example sends "POSt"
    if upper not in HTTP_METHODS:
        raise ApiError(400, f"{name} must be GET or POST")
    return upper


def _url(data: Mapping[str, Any], name: str, required: bool = False) -> str | None:
    value = _text(data, name)
    if value is None:
        if required:
            raise ApiError(400, f"{name} is required")
        return None
    if not is_http_url(value):
        raise ApiError(400, f"{name} is not a valid URL: {value!r}")
    return value


_number_key = number_key


def parse_sip_headers(value: str | None) -> dict[str, str]:
    """``head1=val1,head2=val2`` → ``{"X-PH-head1": "val1", ...}`` (Plivo "Make a call": sip_headers)."""
    if value is None or value == "":
        return {}
    if len(value) > SIP_HEADERS_MAX_CHARS:
        raise ApiError(400, "sip_headers is too long")
    out: dict[str, str] = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, val = item.partition("=")
        key, val = key.strip(), val.strip()
        if not sep or not _SIP_HEADER_KEY_RE.match(key) or not _SIP_HEADER_VALUE_RE.match(val):
            raise ApiError(
                400,
                f"sip_headers: invalid pair {item!r}; expected key=value with letters and digits",
            )
        if key.upper().startswith("X-PH-"):
            key = key[5:]
        out[f"X-PH-{key}"] = val
    if len(out) > SIP_HEADERS_MAX:
        raise ApiError(400, f"sip_headers: at most {SIP_HEADERS_MAX} headers")
    return out


def _check_send_digits(value: str, tone_ms: int | None = None) -> tuple[DtmfStep, ...]:
    """Parse ``value`` once with the media engine's own grammar (``media.dtmf``), so the API
    and the sender agree; ``tone_ms`` is the server's default tone length (None: the
    engine's)."""
    if not _SEND_DIGITS_RE.match(value):
        raise ApiError(400, "send_digits must be digits 0-9, A-D, *, #, w, W with an optional @ms")
    try:
        return tuple(parse_send_digits(value, default_tone_ms=tone_ms))
    except ValueError as exc:
        msg = str(exc)
        raise ApiError(400, msg if msg.startswith("send_digits") else f"send_digits: {msg}") from None


def parse_call_request(
    data: Mapping[str, Any], *, bulk_max: int = BULK_MAX_DEFAULT, digits_tone_ms: int | None = None
) -> CallRequest:
    """Validate a "Make a call" body against Plivo's "Make a call" page; raise :class:`ApiError` naming the field."""
    from_ = _text(data, "from")
    if from_ is None:
        raise ApiError(400, "from is required")
    if not (_NUMBER_RE.match(from_) or _FROM_RE.match(from_)):
        raise ApiError(400, f"from is not a valid number or caller id: {from_!r}")

    to_raw = data.get("to")
    if isinstance(to_raw, list):  # tolerate a JSON list as well as the '<' form
        if not all(isinstance(x, str) for x in to_raw):
            raise ApiError(400, "to must be a string")
        to_raw = "<".join(to_raw)
    to_text = _text({"to": to_raw}, "to")
    if to_text is None:
        raise ApiError(400, "to is required")
    seen: dict[str, str] = {}
    for part in to_text.split("<"):
        dest = part.strip()
        if not dest:
            continue
        if not is_destination(dest):
            raise ApiError(400, f"to contains an invalid destination: {dest[:100]!r}")
        seen.setdefault(_number_key(dest), dest)
        if len(seen) > bulk_max:
            raise ApiError(400, f"to: at most {bulk_max} unique destinations are allowed")
    if not seen:
        raise ApiError(400, "to is required")
    if _number_key(from_) in seen:
        raise ApiError(400, "from and to cannot be the same: src and destination cannot overlap")

    answer_url = _url(data, "answer_url", required=True)
    assert answer_url is not None

    caller_name = data.get("caller_name")
    if caller_name is not None:
        if not isinstance(caller_name, str):
            raise ApiError(400, "caller_name must be a string")
        if len(caller_name) > CALLER_NAME_MAX:
            raise ApiError(400, f"caller_name must be at most {CALLER_NAME_MAX} characters")
        if any(ord(ch) < 0x20 or ch in '"\\' for ch in caller_name):
            raise ApiError(400, "caller_name contains characters not allowed in a display name")
        caller_name = caller_name or None

    send_digits = _text(data, "send_digits")
    send_digits_steps = () if send_digits is None else _check_send_digits(send_digits, digits_tone_ms)

    time_limit = _int(data, "time_limit", TIME_LIMIT_DEFAULT, 1, None)
    assert time_limit is not None
    time_limit = min(time_limit, TIME_LIMIT_CAP)

    md_raw = data.get("machine_detection")
    machine_detection: str | None
    if md_raw is None or md_raw == "" or md_raw is False:
        machine_detection = None
    elif md_raw is True:
        machine_detection = "true"
    elif isinstance(md_raw, str) and md_raw.strip().lower() in ("true", "hangup", "false"):
        machine_detection = md_raw.strip().lower()
        if machine_detection == "false":
            machine_detection = None
    else:
        raise ApiError(400, "machine_detection must be true or hangup")

    mdt_lo, mdt_hi = MACHINE_DETECTION_TIME_RANGE
    machine_detection_time = _int(data, "machine_detection_time", MACHINE_DETECTION_TIME_DEFAULT, mdt_lo, mdt_hi)
    assert machine_detection_time is not None
    # Plivo's tuning parameters (machine_detection_initial_silence, _initial_greeting,
    # _maximum_speech_length, _maximum_words, _silence), each with its documented range.
    machine_detection_params: dict[str, str] = {}
    for name in AMD_PARAMETERS:
        value = data.get(name)
        if value is not None and str(value).strip() != "":
            machine_detection_params[name] = str(value).strip()
    try:
        amd_params = amd_params_from_plivo(
            {"machine_detection_time": str(machine_detection_time), **machine_detection_params}
        )
    except AmdParamError as exc:
        raise ApiError(400, str(exc)) from None
    ring_timeout = _int(data, "ring_timeout", RING_TIMEOUT_DEFAULT, 1, RING_TIMEOUT_MAX)
    assert ring_timeout is not None

    parent = _text(data, "parent_call_uuid")
    if parent is not None and not _UUID_RE.match(parent):
        raise ApiError(400, "parent_call_uuid is not a valid call uuid")

    return CallRequest(
        from_=from_,
        to=tuple(seen.values()),
        answer_url=answer_url,
        answer_method=_method(data, "answer_method"),
        ring_url=_url(data, "ring_url"),
        ring_method=_method(data, "ring_method"),
        hangup_url=_url(data, "hangup_url"),
        hangup_method=_method(data, "hangup_method"),
        fallback_url=_url(data, "fallback_url"),
        fallback_method=_method(data, "fallback_method"),
        caller_name=caller_name,
        send_digits=send_digits,
        send_digits_steps=send_digits_steps,
        send_on_preanswer=parse_bool(data.get("send_on_preanswer"), "send_on_preanswer"),
        time_limit=time_limit,
        hangup_on_ring=_int(data, "hangup_on_ring", None, 1, None),
        machine_detection=machine_detection,
        machine_detection_time=machine_detection_time,
        machine_detection_params=machine_detection_params,
        amd_params=amd_params,
        machine_detection_url=_url(data, "machine_detection_url"),
        machine_detection_method=_method(data, "machine_detection_method"),
        sip_headers=parse_sip_headers(_text(data, "sip_headers")),
        ring_timeout=ring_timeout,
        parent_call_uuid=parent,
        error_if_parent_not_found=parse_bool(
            data.get("error_if_parent_not_found"), "error_if_parent_not_found"
        ),
    )
