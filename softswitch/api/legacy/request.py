"""``POST /v0.1/Call/`` parsed once into a :class:`~softswitch.model.CallSpec`.

The framework's form parameters (seed 003; DIALECTS.md §1.3), validated in its order with
its exact messages, and its FreeSWITCH dial-string fragments read without FreeSWITCH:

* ``Gateways`` (with ``GatewayRetries``/``GatewayTimeouts``/``GatewayCodecs``) become the
  ordered :class:`~softswitch.model.DialAttempt` list (:func:`gateway_attempt` says what one
  gateway string dials, DIALECTS.md §1.5);
* ``ExtraDialString``: ``sip_h_<Name>=<v>`` is an INVITE header,
  ``origination_caller_id_name/number`` replace the caller id, ``originate_timeout`` the
  default attempt timeout, ``absolute_codec_string`` the codecs of every attempt whose
  gateway has no ``GatewayCodecs`` item; other variables are kept on the record.
* Codec lists (:func:`attempt_codecs`, DIALECTS.md §1.5 and A10): a codec the media engine
  cannot encode (G729, OPUS...) is dropped with a log line; an attempt left with none fails
  at once with ``INCOMPATIBLE_DESTINATION``, without an INVITE.
* Eqivo's extensions (DIALECTS.md §1.3): ``CoreUUID`` (this server is one core) and the
  Twilio-style ``MachineDetection`` family (:func:`parse_amd`) onto the core's
  :class:`~softswitch.model.AmdSettings`, with Eqivo's messages.

No I/O here: whether a configured trunk exists is asked through ``has_gateway``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from media.amd import AmdParams
from media.dtmf import parse_send_digits
from media.engine import SUPPORTED_CODECS
from sip import causes

from ...model import (
    AmdMode,
    AmdSettings,
    CallbackEvent,
    CallSpec,
    DialAttempt,
    DigitPlan,
    ForkGroup,
    HttpMethod,
    Timers,
    Webhook,
)
from ..values import int64, is_http_url
from .codes import CHAN_NOT_IMPLEMENTED, INVALID_GATEWAY

__all__ = [
    "AMD_PARAMETERS",
    "GATEWAY_RETRIES_DEFAULT",
    "GATEWAY_TIMEOUT_DEFAULT",
    "LegacyError",
    "attempt_codecs",
    "gateway_attempt",
    "GROUP_CONFIRM_TIMEOUT_S",
    "GROUP_REJECT_CAUSES_DEFAULT",
    "parse_amd",
    "parse_bulk_call",
    "parse_call",
    "parse_group_call",
    "parse_extra_dial_string",
    "split_outside_quotes",
]

#: Attempts per gateway without a ``GatewayRetries`` item (the framework's default).
GATEWAY_RETRIES_DEFAULT = 1
#: Tries of one gateway at most: the framework has no cap, but a request must not be able to
#: make the server build (and dial) billions of attempts.
GATEWAY_RETRIES_MAX = 10
#: Seconds an attempt may ring without a ``GatewayTimeouts`` item (``timeout = 60``).
GATEWAY_TIMEOUT_DEFAULT = 60.0

_SIP_GATEWAY_RE = re.compile(r"^sips?:([^/@]+)/$", re.IGNORECASE)
_SOFIA_TRUNK_RE = re.compile(r"^sofia/gateway/([^/]+)/$")
_SOFIA_PROFILE_RE = re.compile(r"^sofia/[^/]+/$")
_HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9!%*_+`'~.-]+$")

log = logging.getLogger(__name__)


class LegacyError(Exception):
    """A request the framework answers ``{"Success": false, "Message": message}``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def split_outside_quotes(value: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside single or double quotes; quotes around an item are removed
    (``'PCMA,PCMU',PCMU`` → ``["PCMA,PCMU", "PCMU"]``)."""
    items: list[str] = []
    buf: list[str] = []
    quote: str | None = None
    for ch in value:
        if quote is not None:
            if ch == quote:
                quote = None
            else:
                buf.append(ch)
        elif ch in ("'", '"'):
            quote = ch
        elif ch == sep:
            items.append("".join(buf).strip())
            buf = []
        else:
            buf.append(ch)
    items.append("".join(buf).strip())
    return items


def _int_items(value: str | None) -> list[int | None]:
    """A comma list of integers; an item that is not one is None (its default applies)."""
    if not value:
        return []
    out: list[int | None] = []
    for item in value.split(","):
        try:
            out.append(int64(item))
        except ValueError:
            out.append(None)
    return out


def parse_extra_dial_string(value: str | None) -> dict[str, str]:
    """``k=v,k2='a,b'`` → ``{"k": "v", "k2": "a,b"}``; items without ``=`` are dropped."""
    out: dict[str, str] = {}
    for item in split_outside_quotes(value or ""):
        key, sep, val = item.partition("=")
        if sep and key.strip():
            out[key.strip()] = val.strip()
    return out


def attempt_codecs(value: str) -> tuple[tuple[str, ...], list[str]]:
    """A FreeSWITCH codec string (``PCMA,PCMU``, ``PCMU@20i``, ``G722@16000h``) read as
    ``(codecs the media engine can offer, in order; names dropped)``. Options after ``@``
    (ptime, rate) are ignored: the engine's packetisation applies."""
    kept: list[str] = []
    dropped: list[str] = []
    for item in value.split(","):
        name = item.split("@", 1)[0].strip().strip("'\"").upper()
        if not name:
            continue
        if name in SUPPORTED_CODECS:
            if name not in kept:
                kept.append(name)
        else:
            dropped.append(name)
    return tuple(kept), dropped


def _with_codecs(attempt: DialAttempt, codecs: str, gateway: str) -> DialAttempt:
    """``attempt`` restricted to ``codecs`` (an empty string: no restriction)."""
    if not codecs.strip():
        return attempt
    kept, dropped = attempt_codecs(codecs)
    if dropped:
        log.info(
            "gateway %s: codecs %s dropped (the media engine has %s)",
            gateway,
            ", ".join(dropped),
            ", ".join(SUPPORTED_CODECS),
        )
    if attempt.fail_cause is not None:
        return attempt
    if not kept:
        return replace(attempt, fail_cause=causes.INCOMPATIBLE_DESTINATION)
    return replace(attempt, codecs=kept)


def gateway_attempt(
    gateway: str, to: str, timeout: float, has_gateway: Callable[[str], bool]
) -> DialAttempt:
    """What one gateway string dials (DIALECTS.md §1.5), ringing at most ``timeout`` s."""
    m = _SOFIA_TRUNK_RE.match(gateway)
    if m:
        name = m.group(1)
        if not has_gateway(name):
            return DialAttempt(ring_timeout=timeout, fail_cause=INVALID_GATEWAY)
        return DialAttempt(gateway=name, ring_timeout=timeout)
    m = _SIP_GATEWAY_RE.match(gateway)
    if m:  # softswitch's own form: sip:host[:port][;params]/
        host, _, uri_params = m.group(1).partition(";")
        scheme = gateway.split(":", 1)[0].lower()
        target = f"{scheme}:{to}@{host}" + (f";{uri_params}" if uri_params else "")
        return DialAttempt(ring_timeout=timeout, target=target)
    if _SOFIA_PROFILE_RE.match(gateway):  # the SIP address in To, dialled directly
        if "@" not in to:
            return DialAttempt(ring_timeout=timeout, fail_cause=causes.INVALID_NUMBER_FORMAT)
        target = to if to.lower().startswith(("sip:", "sips:")) else f"sip:{to}"
        return DialAttempt(ring_timeout=timeout, target=target)
    if gateway == "user/":  # a phone registered with our registrar (USER_NOT_REGISTERED if none)
        return DialAttempt(ring_timeout=timeout, target=f"user/{to}")
    return DialAttempt(ring_timeout=timeout, fail_cause=CHAN_NOT_IMPLEMENTED)


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    return value.strip() if isinstance(value, str) else ""


def _optional_int(data: Mapping[str, Any], name: str) -> int | None:
    try:
        return int64(_text(data, name))
    except ValueError:
        return None  # the framework ignores a value that is not an integer (or past 64 bits)


#: Eqivo's machine-detection tuning (an FiCore extension, Twilio's names): parameter →
#: (``AmdParams`` field, min, max, Eqivo's default, scale to ms). Eqivo checks each only when
#: ``MachineDetection`` is given, in this order, with the messages of :func:`parse_amd`.
AMD_PARAMETERS: dict[str, tuple[str, int, int, int, int]] = {
    "MachineDetectionTimeout": ("total_ms", 3, 59, 30, 1000),
    "MachineDetectionSpeechThreshold": ("greeting_ms", 1000, 6000, 2400, 1),
    "MachineDetectionSpeechEndThreshold": ("after_greeting_silence_ms", 500, 5000, 1200, 1),
    "MachineDetectionSilenceTimeout": ("initial_silence_ms", 2000, 10000, 5000, 1),
}
AMD_MODES = ("Enable", "DetectMessageEnd")


def parse_amd(data: Mapping[str, Any]) -> AmdSettings | None:
    """Eqivo's ``MachineDetection`` (``Enable`` | ``DetectMessageEnd``), ``AsyncAMD``,
    ``AsyncAmdStatusCallback[Method]`` and the tuning of :data:`AMD_PARAMETERS`, with its
    checks in its order. ``SendDigits`` present: detection is ignored (Eqivo, after Twilio).
    ``AsyncAMD=true`` with a callback: the application starts at once and the decision is
    posted there; otherwise the answer fetch waits for it (``AsyncAMD`` without a callback
    has nowhere to post, so it waits too). ``DetectMessageEnd`` also waits, for a machine, for
    the end of its greeting (the speech-end silence or the beep) within the timeout."""
    mode = _text(data, "MachineDetection")
    if not mode:
        return None
    if mode not in AMD_MODES:
        raise LegacyError("MachineDetection is not Valid")
    if _text(data, "SendDigits"):
        return None
    method = _text(data, "AsyncAmdStatusCallbackMethod") or "POST"
    if method not in ("GET", "POST"):
        raise LegacyError("AsyncAmdStatusCallbackMethod must be 'GET' or 'POST'")
    callback = _text(data, "AsyncAmdStatusCallback")
    if callback and not is_http_url(callback):
        raise LegacyError("AsyncAmdStatusCallback is not Valid")
    fields: dict[str, int] = {}
    for name, (field_name, lo, hi, default, scale) in AMD_PARAMETERS.items():
        raw = _text(data, name)
        if raw:
            try:
                value = int64(raw)
            except ValueError:
                raise LegacyError(f"{name} must be an integer") from None
            if not lo <= value <= hi:
                raise LegacyError(f"{name} Parameter must be between {lo} and {hi}")
        else:
            value = default
        fields[field_name] = value * scale
    if mode == "DetectMessageEnd":
        fields["message_end_silence_ms"] = fields["after_greeting_silence_ms"]
        fields["beep_wait_ms"] = fields["total_ms"]
    webhook = None
    if _text(data, "AsyncAMD") == "true" and callback:
        webhook = Webhook(callback, HttpMethod(method))
    return AmdSettings(mode=AmdMode.DETECT, params=AmdParams(**fields), webhook=webhook)  # type: ignore[arg-type]


def _check_call(data: Mapping[str, Any], *, extra_mandatory: tuple[str, ...] = ()) -> None:
    """The framework's first checks, in its order (the first failure wins)."""
    if not all(
        _text(data, name) for name in ("From", "To", "Gateways", "AnswerUrl", *extra_mandatory)
    ):
        raise LegacyError("Mandatory Parameters Missing")
    if not is_http_url(_text(data, "AnswerUrl")):
        raise LegacyError("AnswerUrl is not Valid")
    for name in ("HangupUrl", "RingUrl"):
        value = _text(data, name)
        if value and not is_http_url(value):
            raise LegacyError(f"{name} is not Valid")


#: ``BulkCall`` parameters split by ``Delimiter``: one item per call, or one for all.
BULK_SPLIT = (
    "To",
    "Gateways",
    "GatewayCodecs",
    "GatewayTimeouts",
    "GatewayRetries",
    "SendDigits",
    "TimeLimit",
    "HangupOnRing",
    "CallerName",
    "ExtraDialString",
)


def parse_bulk_call(
    data: Mapping[str, Any],
    *,
    dialect: str,
    has_gateway: Callable[[str], bool],
    digits_tone_ms: int | None = None,
) -> list[CallSpec]:
    """``BulkCall``: ``To``, ``Gateways`` and the per-call values split by ``Delimiter``
    (neither ``,`` nor ``/``); a split value with one item applies to every call."""
    delimiter = data.get("Delimiter") if isinstance(data.get("Delimiter"), str) else ""
    if delimiter in (",", "/"):
        raise LegacyError("This Delimiter is not allowed")
    _check_call(data, extra_mandatory=("Delimiter",))
    assert isinstance(delimiter, str)
    to_list = _text(data, "To").split(delimiter)
    if len(to_list) < 2:
        raise LegacyError("BulkCalls should be used for at least 2 numbers")
    if len(_text(data, "Gateways").split(delimiter)) != len(to_list):
        raise LegacyError("'To' parameter length does not match 'Gateways' Length")
    specs = []
    for i in range(len(to_list)):
        one = dict(data)
        for name in BULK_SPLIT:
            items = _text(data, name).split(delimiter)
            one[name] = items[i] if len(items) == len(to_list) else items[0]
        specs.append(
            parse_call(one, dialect=dialect, has_gateway=has_gateway, digits_tone_ms=digits_tone_ms)
        )
    return specs


#: ``GroupCall`` parameters split by ``Delimiter``, item *i* for member *i* (a missing item
#: is empty, as the framework's ``pop(0)``); ``ExtraDialString`` is shared by every member.
GROUP_SPLIT = (
    "To",
    "Gateways",
    "GatewayCodecs",
    "GatewayTimeouts",
    "GatewayRetries",
    "SendDigits",
    "SendOnPreanswer",
    "TimeLimit",
    "HangupOnRing",
    "CallerName",
)
#: ``RejectCauses`` when not given (Eqivo's default; the framework defines the same list).
GROUP_REJECT_CAUSES_DEFAULT = frozenset(
    {"NO_ANSWER", "ORIGINATOR_CANCEL", "ALLOTTED_TIMEOUT", "NO_USER_RESPONSE", "CALL_REJECTED"}
)
#: Seconds an answering member has to press ``ConfirmKey`` (FreeSWITCH waits without end
#: once answered; softswitch bounds it).
GROUP_CONFIRM_TIMEOUT_S = 20.0


def parse_group_call(
    data: Mapping[str, Any],
    *,
    dialect: str,
    has_gateway: Callable[[str], bool],
    digits_tone_ms: int | None = None,
    confirm_timeout: float = GROUP_CONFIRM_TIMEOUT_S,
) -> tuple[list[CallSpec], ForkGroup]:
    """``GroupCall``: one member per ``To`` item (values split by ``Delimiter``, each member
    with its own gateway failover), ringing at once; the framework's checks in its order."""
    delimiter = data.get("Delimiter") if isinstance(data.get("Delimiter"), str) else ""
    if delimiter in (",", "/"):
        raise LegacyError("This Delimiter is not allowed")
    _check_call(data, extra_mandatory=("Delimiter",))
    assert isinstance(delimiter, str)
    confirm_sound = _text(data, "ConfirmSound")
    sounds = tuple(u.strip() for u in confirm_sound.split(",") if u.strip())
    if confirm_sound and not all(is_http_url(u) for u in sounds):
        raise LegacyError("ConfirmSound is not Valid")  # Eqivo's check; softswitch plays URLs
    to_list = _text(data, "To").split(delimiter)
    if len(to_list) < 2:
        raise LegacyError("GroupCall should be used for at least 2 numbers")
    if len(_text(data, "Gateways").split(delimiter)) != len(to_list):
        raise LegacyError("'To' parameter length does not match 'Gateways' Length")
    specs = []
    for i in range(len(to_list)):
        one = dict(data)
        for name in GROUP_SPLIT:
            items = _text(data, name).split(delimiter)
            one[name] = items[i] if i < len(items) else ""
        specs.append(
            parse_call(one, dialect=dialect, has_gateway=has_gateway, digits_tone_ms=digits_tone_ms)
        )
    raw_causes = _text(data, "RejectCauses")
    reject = (
        frozenset(c.strip().upper() for c in raw_causes.split(",") if c.strip())
        if raw_causes
        else GROUP_REJECT_CAUSES_DEFAULT
    )
    group = ForkGroup(
        confirm_sounds=sounds,
        confirm_key=_text(data, "ConfirmKey") or None,
        confirm_timeout=confirm_timeout,
        reject_causes=reject,
    )
    return specs, group


def parse_call(
    data: Mapping[str, Any],
    *,
    dialect: str,
    has_gateway: Callable[[str], bool],
    digits_tone_ms: int | None = None,
    core_uuid: str | None = None,
) -> CallSpec:
    """Validate a ``Call`` form in the framework's order (the first failure wins, its exact
    message in :class:`LegacyError`) and build the spec. ``core_uuid``: this server's
    ``CoreUUID``; a request naming another is refused (Eqivo's "Unknown Core UUID")."""
    _check_call(data)
    requested_core = _text(data, "CoreUUID")
    if core_uuid is not None and requested_core and requested_core != core_uuid:
        raise LegacyError("Unknown Core UUID")
    amd = parse_amd(data)
    frm, to_raw, gateways_raw, answer_url = (
        _text(data, "From"),
        _text(data, "To"),
        _text(data, "Gateways"),
        _text(data, "AnswerUrl"),
    )
    ring_url = _text(data, "RingUrl")
    hangup_url = _text(data, "HangupUrl") or answer_url  # the framework's default

    to = re.split(r"[,|]", to_raw)[0].strip()  # "to avoid call injection"
    if not to:
        raise LegacyError("Mandatory Parameters Missing")
    extra = parse_extra_dial_string(_text(data, "ExtraDialString"))
    caller_name = _text(data, "CallerName") or None
    if extra.get("origination_caller_id_name"):
        caller_name = extra["origination_caller_id_name"]
    from_ = extra.get("origination_caller_id_number") or frm
    default_timeout = GATEWAY_TIMEOUT_DEFAULT
    try:
        if extra.get("originate_timeout"):
            default_timeout = float(int(extra["originate_timeout"]))
    except ValueError:
        pass
    headers: dict[str, str] = {}
    for key, value in extra.items():
        if (
            key.startswith("sip_h_")
            and _HEADER_NAME_RE.match(key[6:])
            and "\r" not in value
            and "\n" not in value
        ):
            headers[key[6:]] = value

    gateways = [g.strip() for g in gateways_raw.split(",") if g.strip()]
    retries = _int_items(_text(data, "GatewayRetries"))
    timeouts = _int_items(_text(data, "GatewayTimeouts"))
    codecs = (
        split_outside_quotes(_text(data, "GatewayCodecs")) if _text(data, "GatewayCodecs") else []
    )
    # A gateway's own GatewayCodecs item wins over absolute_codec_string (the framework
    # writes it after ExtraDialString in the same {...} of the originate string).
    all_codecs = extra.get("absolute_codec_string", "")
    attempts: list[DialAttempt] = []
    for i, gw in enumerate(gateways):
        n = retries[i] if i < len(retries) and retries[i] is not None else GATEWAY_RETRIES_DEFAULT
        t = timeouts[i] if i < len(timeouts) and timeouts[i] is not None else None
        timeout = float(t) if t is not None and t > 0 else default_timeout
        gw_codecs = codecs[i] if i < len(codecs) and codecs[i].strip() else all_codecs
        attempt = _with_codecs(gateway_attempt(gw, to, timeout, has_gateway), gw_codecs, gw)
        attempts.extend(attempt for _ in range(min(max(0, n or 0), GATEWAY_RETRIES_MAX)))
    if not attempts:  # every gateway had 0 retries: one attempt that fails at once
        attempts.append(DialAttempt(fail_cause=CHAN_NOT_IMPLEMENTED))

    digits: DigitPlan | None = None
    send_digits = _text(data, "SendDigits")
    if send_digits:
        try:
            steps = parse_send_digits(send_digits, default_tone_ms=digits_tone_ms)
        except ValueError:
            raise LegacyError("SendDigits is not Valid") from None
        digits = DigitPlan(
            send_digits, tuple(steps), on_preanswer=_text(data, "SendOnPreanswer") == "true"
        )

    time_limit = _optional_int(data, "TimeLimit")
    hangup_on_ring = _optional_int(data, "HangupOnRing")
    timers = Timers(
        ring_timeout=attempts[0].ring_timeout or default_timeout,
        time_limit=float(time_limit) if time_limit is not None and time_limit > 0 else None,
        hangup_on_ring=float(hangup_on_ring)
        if hangup_on_ring is not None and hangup_on_ring >= 0
        else None,
        hangup_on_ring_cause=causes.ORIGINATOR_CANCEL,
    )
    notify: dict[CallbackEvent, Webhook] = {CallbackEvent.HANGUP: Webhook(hangup_url)}
    if ring_url:
        notify[CallbackEvent.RING] = Webhook(ring_url)
    account_sid = _text(data, "AccountSID") or None
    record = {
        "from": frm,
        "to": to_raw,
        "gateways": gateways,
        "gateway_codecs": codecs,
        "answer_url": answer_url,
        "hangup_url": hangup_url,
        "ring_url": ring_url or None,
        "account_sid": account_sid,
        "machine_detection": _text(data, "MachineDetection") if amd is not None else None,
        "extra_dial_string": {k: v for k, v in extra.items() if not k.startswith("sip_h_")},
    }
    return CallSpec(
        destinations=(to,),
        from_=from_,
        answer=Webhook(answer_url),
        timers=timers,
        caller_name=caller_name,
        sip_headers=headers,
        attempts=tuple(attempts),
        digits=digits,
        amd=amd,
        notify=notify,
        dialect=dialect,
        record_params=record,
    )
