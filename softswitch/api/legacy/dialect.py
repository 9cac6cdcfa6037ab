"""The legacy framework's :class:`~softswitch.dialect.Dialect`: statuses, FreeSWITCH cause
names and the callback parameters of DIALECTS.md §1.6, signed ``X-Plivo-Signature``."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from sip import causes

from ...app.document import DEFAULT_MAX_BYTES
from ...app.verbs import Document
from ...model import CallbackEvent, CallEnd
from ...signing import Signer, url_params_signer
from ...state import CallState
from ..plivo.xml import parse_document
from ..values import answered_by
from .codes import STATUSES

if TYPE_CHECKING:
    from ...call import Call

__all__ = [
    "CORE_UUID",
    "NAME",
    "REST_API_SERVER",
    "SIGNATURE",
    "SIGNERS",
    "LegacyDialect",
    "answered_by",
]

NAME = "legacy"
#: The framework's callback signature: base64 HMAC-SHA1 of the URL and the sorted
#: parameters, keyed by the account's auth token, in ``X-Plivo-Signature``.
SIGNATURE = "x-plivo-signature"
SIGNERS: Mapping[str, Signer] = {SIGNATURE: url_params_signer("X-Plivo-Signature")}
#: Eqivo's ``CoreUUID`` (the FreeSWITCH core a call runs on): this process is the one core,
#: named by an id drawn at start. Sent in every callback; a ``Call`` naming another core is
#: refused ("Unknown Core UUID").
CORE_UUID = str(uuid.uuid4())
#: Eqivo's ``RestApiServer`` (the API server that handled the request): this host's name.
REST_API_SERVER = socket.gethostname() or "localhost"


def _machine_params(call: Call) -> dict[str, str]:
    """``AnsweredBy`` and ``MachineDetectionDuration`` (ms from the answer to the result;
    for ``DetectMessageEnd``, to the end of the greeting) once the detector decided."""
    result = call.machine
    if result is None:
        return {}
    ended = getattr(result, "message_end_ms", None)
    return {
        "AnsweredBy": answered_by(result, call.spec.record_params.get("machine_detection")),
        "MachineDetectionDuration": str(ended if ended is not None else result.decided_at_ms),
    }


def _number(value: str) -> str:
    """Callbacks strip one leading ``+`` (the framework's ``lstrip('+')``)."""
    return value[1:] if value.startswith("+") else value


def _url_query(url: str | None) -> dict[str, str]:
    """The URL's own query items: the framework merges them into the parameters."""
    if not url:
        return {}
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def scheduled_hangup_id(call: Call) -> str | None:
    """The ``ScheduledHangupId`` of a call with a ``TimeLimit`` (one id per call)."""
    if call.spec.timers.time_limit is None:
        return None
    return str(call.dialect_data.setdefault("scheduled_hangup_id", str(uuid.uuid4())))


class LegacyDialect:
    """The ``/v0.1/`` names over the call model (registered by the server)."""

    name = NAME
    signature = SIGNATURE
    signers = SIGNERS

    def parse_document(
        self, document: str | bytes, *, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> Document:
        return parse_document(document, max_bytes=max_bytes, legacy=True)

    def status_name(self, state: CallState, end: CallEnd | None) -> str:
        return STATUSES.get(state, "completed")

    def end_fields(self, end: CallEnd) -> dict[str, Any]:
        return {
            "hangup_cause_code": causes.Q850_CODES.get(end.cause),
            "hangup_cause_name": end.cause,
            "hangup_source": end.source.value,
        }

    def callback_params(self, call: Call, event: CallbackEvent) -> dict[str, str]:
        """DIALECTS.md §1.6: ring, answer (and the application's requests), hangup."""
        spec = call.spec
        # A call whose every attempt failed before a SIP leg existed has no CallUUID.
        call_uuid = call.call_uuid if call.leg is not None else ""
        params: dict[str, str] = {
            "From": _number(spec.from_),
            "To": _number(call.to),
            "Direction": call.direction,
            "CallUUID": call_uuid,
            "RestApiServer": REST_API_SERVER,
            "CoreUUID": CORE_UUID,
        }
        url: str | None
        if event is CallbackEvent.RING:
            params.update(RequestUUID=call.request_uuid, CallStatus="ringing")
            url = spec.ring.url if spec.ring else None
        elif event is CallbackEvent.HANGUP:
            end = call.end
            params.update(
                RequestUUID=call.request_uuid,
                CallStatus="completed",
                HangupCause=end.cause if end is not None else causes.NORMAL_CLEARING,
                ALegUUID=call_uuid,
                ALegRequestUUID=call.request_uuid,
            )
            url = spec.hangup.url if spec.hangup else None
        else:  # the answer fetch and the application's own requests
            params.update(
                CallerName=spec.caller_name or "",
                CallStatus="in-progress",
                ALegUUID=call_uuid,
                ALegRequestUUID=call.request_uuid,
            )
            if event is CallbackEvent.ANSWER:
                url = spec.answer.url
            elif (
                event is CallbackEvent.MACHINE_DETECTION
                and spec.amd is not None
                and spec.amd.webhook
            ):
                url = spec.amd.webhook.url
            else:
                url = None
        params.update(_machine_params(call))
        sched = scheduled_hangup_id(call)
        if sched is not None and event is not CallbackEvent.RING:
            params["ScheduledHangupId"] = sched
        account_sid = spec.record_params.get("account_sid")
        if account_sid:
            params["AccountSID"] = str(account_sid)
        return {**_url_query(url), **params}

    def machine_fields(self, call: Call, result: Any) -> dict[str, Any]:
        """Kept in the record's ``extra.machine_detection``."""
        mode = call.spec.record_params.get("machine_detection")
        return {
            "AnsweredBy": answered_by(result, mode),
            "mode": mode,
            "status": result.status,
            "reason": result.reason,
            "decided_at_ms": result.decided_at_ms,
        }

    def recording_params(self, call: Call, recording: Mapping[str, Any]) -> dict[str, str]:
        return {
            "CallUUID": call.call_uuid,
            "RecordUrl": str(recording["url"]),
            "RecordingDuration": str(round(recording["duration_ms"] / 1000)),
        }

    def recording_url_base(self, public_url: str, account_id: str) -> str:
        return f"{public_url}/v0.1/Recording/{account_id}"

    def interrupted_hangup(
        self, record: Mapping[str, Any]
    ) -> tuple[dict[str, Any], str, str, dict[str, str]] | None:
        """A crash ended the call: its hangup callback, from the stored request."""
        stored = record.get("params") or {}
        url = stored.get("hangup_url")
        if not url:
            return None
        call_uuid = str(record["call_uuid"])
        params = {
            **_url_query(url),
            "From": _number(str(stored.get("from") or record.get("from_number") or "")),
            "To": _number(str(record.get("to_number") or "")),
            "Direction": "outbound",
            "CallUUID": call_uuid,
            "RequestUUID": str(record["request_uuid"]),
            "ALegUUID": call_uuid,
            "ALegRequestUUID": str(record["request_uuid"]),
            "CallStatus": "completed",
            "HangupCause": causes.SYSTEM_SHUTDOWN,
            "RestApiServer": REST_API_SERVER,
            "CoreUUID": CORE_UUID,
        }
        if stored.get("account_sid"):
            params["AccountSID"] = str(stored["account_sid"])
        fields = {
            "hangup_cause_name": causes.SYSTEM_SHUTDOWN,
            "hangup_cause_code": causes.Q850_CODES.get(causes.SYSTEM_SHUTDOWN),
        }
        return fields, str(url), "POST", params
