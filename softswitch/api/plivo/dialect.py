"""The Plivo v1 :class:`~softswitch.dialect.Dialect`: call statuses, hangup codes, callback
parameter names and times in Plivo's words, over the dialect-neutral call model."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sip import causes

from ...app.document import DEFAULT_MAX_BYTES
from ...app.verbs import Document
from ...model import CallbackEvent, CallEnd, EndReason, HangupSource
from ...state import CallState
from .amd import callback_params as machine_params
from .codes import CallStatus, call_status_for, hangup_code
from .shapes import plivo_time
from .signing import SIGNATURE, SIGNERS
from .xml import parse_document

if TYPE_CHECKING:
    from ...call import Call

__all__ = ["PlivoDialect", "callback_time", "call_snapshot", "machine_params", "session_time", "HANGUP_SOURCES"]

#: Plivo ``HangupSource`` of each :class:`HangupSource`.
HANGUP_SOURCES: dict[HangupSource, str] = {
    HangupSource.API: "API Request",
    HangupSource.SYSTEM: "Plivo",
    HangupSource.CALLEE: "Callee",
    HangupSource.CALLER: "Caller",
    HangupSource.APPLICATION: "Answer XML",
    HangupSource.ERROR: "Error",
    HangupSource.UNKNOWN: "Unknown",
}

#: Plivo ``CallStatus`` of a call not over yet. Plivo's live view has no "initiated": an
#: INVITE without 18x yet shows as ringing.
_LIVE_STATUS: dict[CallState, CallStatus] = {
    CallState.QUEUED: CallStatus.QUEUED,
    CallState.INITIATED: CallStatus.RINGING,
    CallState.RINGING: CallStatus.RINGING,
    CallState.EARLY: CallStatus.EARLY_MEDIA,
    CallState.ANSWERED: CallStatus.IN_PROGRESS,
}

#: Plivo ``Event`` of each callback.
_EVENTS: dict[CallbackEvent, str] = {
    CallbackEvent.RING: "Ring",
    CallbackEvent.ANSWER: "StartApp",
    CallbackEvent.MACHINE_DETECTION: "MachineDetection",
    CallbackEvent.HANGUP: "Hangup",
}


def callback_time(t: float | None) -> str:
    """Callback time format: 'YYYY-MM-DD HH:MM:SS' (Plivo "Make a call": StartTime, AnswerTime, EndTime)."""
    if t is None:
        return ""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def session_time(t: float | None) -> str:
    """SessionStart format: 'YYYY-MM-DD HH:mm:ss.ffffff' UTC (Plivo "Make a call")."""
    if t is None:
        return ""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _reason(end: CallEnd) -> str | None:
    return end.reason.value if end.reason is not None else None


def call_snapshot(call: Call) -> dict[str, Any]:
    """The fields the live/queued call views show (:func:`live_call_json`)."""
    return {
        "direction": call.direction,
        "from": call.spec.from_,
        "to": call.to,
        "caller_name": call.spec.caller_name,
        "call_uuid": call.call_uuid,
        "request_uuid": call.request_uuid,
        "parent_call_uuid": call.parent_call_uuid,
        "call_status": call.status,
        "session_start": session_time(call.session_start),
    }


class PlivoDialect:
    """Plivo v1 names over the call model (registered by the server)."""

    name = "plivo"
    #: X-Plivo-Signature-V3 (and V2), as the official SDK validates them (:mod:`.signing`).
    signature = SIGNATURE
    signers = SIGNERS

    def parse_document(self, document: str | bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Document:
        return parse_document(document, max_bytes=max_bytes)

    def status_name(self, state: CallState, end: CallEnd | None) -> str:
        if state is CallState.COMPLETED and end is not None:
            return call_status_for(end.cause, end.answered, _reason(end)).value
        return _LIVE_STATUS.get(state, CallStatus.COMPLETED).value

    def end_fields(self, end: CallEnd) -> dict[str, Any]:
        code, name = hangup_code(end.cause, end.answered, _reason(end))
        return {
            "hangup_cause_code": code,
            "hangup_cause_name": name,
            "hangup_source": HANGUP_SOURCES[end.source],
        }

    def callback_params(self, call: Call, event: CallbackEvent) -> dict[str, str]:
        """Parameters every callback carries (Plivo "Make a call"), plus the X-PH-* SIP headers;
        the hangup callback adds the cause, durations and times."""
        spec = call.spec
        if event is CallbackEvent.RING:
            status = CallStatus.RINGING.value
        elif event in (CallbackEvent.ANSWER, CallbackEvent.APPLICATION):
            status = CallStatus.IN_PROGRESS.value
        else:
            status = call.status
        params = {
            "From": spec.from_,
            "To": call.to,
            "RequestUUID": call.request_uuid,
            "ALegRequestUUID": call.request_uuid,
            "CallUUID": call.call_uuid,
            "ALegUUID": call.call_uuid,
            "Direction": call.direction,
            "Event": _EVENTS.get(event, ""),
            "CallStatus": status,
            "SessionStart": session_time(call.session_start),
            "STIRAttestation": "Not Applicable",
        }
        if event is CallbackEvent.APPLICATION:
            del params["Event"]
        if call.parent_call_uuid:
            params["ParentCallUUID"] = call.parent_call_uuid
        if spec.caller_name:
            params["CallerName"] = spec.caller_name
        if spec.amd is not None:
            params["MachineDetection"] = "hangup" if spec.amd.mode.value == "hangup" else "true"
        if call.machine is not None:
            params.update(machine_params(call.machine))  # Machine=true|false and the features
        for key, value in spec.sip_headers.items():
            params[key] = value
        end = call.end
        if event is CallbackEvent.HANGUP and end is not None:
            code, name = hangup_code(end.cause, end.answered, _reason(end))
            params.update(
                {
                    "HangupCause": end.cause,
                    "HangupCauseCode": str(code),
                    "HangupCauseName": name,
                    "HangupSource": HANGUP_SOURCES[end.source],
                    "Duration": str(call.duration),
                    "BillDuration": str(call.bill_duration),
                    "StartTime": callback_time(call.created_at),
                    "AnswerTime": callback_time(call.answered_at),
                    "EndTime": callback_time(call.ended_at),
                }
            )
        return params

    def machine_fields(self, call: Call, result: Any) -> dict[str, Any]:
        """Stored in the record's ``extra.machine_detection``: the decision's parameters and
        the mode as the request gave it."""
        return {**machine_params(result), "mode": call.spec.record_params.get("machine_detection")}

    def recording_params(self, call: Call, recording: Mapping[str, Any]) -> dict[str, str]:
        return {
            "api_id": str(recording["api_id"]),
            "record_url": str(recording["url"]),
            "call_uuid": call.call_uuid,
            "recording_id": str(recording["recording_id"]),
            "recording_duration": str(round(recording["duration_ms"] / 1000)),
            "recording_duration_ms": str(recording["duration_ms"]),
            "recording_start_ms": str(recording["start_ms"]),
            "recording_end_ms": str(recording["end_ms"]),
        }

    def recording_url_base(self, public_url: str, account_id: str) -> str:
        return f"{public_url}/v1/Account/{account_id}/Recording/files"

    def interrupted_hangup(
        self, record: Mapping[str, Any]
    ) -> tuple[dict[str, Any], str, str, dict[str, str]] | None:
        """Built from the stored request: ``(record fields, url, method, params)``."""
        params_in = record.get("params") or {}
        url = params_in.get("hangup_url")
        if not url:
            return None
        status = record.get("call_status") or "failed"
        answered = record.get("answer_time") is not None
        code, name = hangup_code(causes.SYSTEM_SHUTDOWN, answered, EndReason.SHUTDOWN.value)
        params = {
            "From": str(params_in.get("from") or record.get("from_number") or ""),
            "To": str(record.get("to_number") or ""),
            "RequestUUID": record["request_uuid"],
            "ALegRequestUUID": record["request_uuid"],
            "CallUUID": record["call_uuid"],
            "ALegUUID": record["call_uuid"],
            "Direction": str(record.get("direction") or "outbound"),
            "Event": "Hangup",
            "CallStatus": status,
            "SessionStart": "",
            "STIRAttestation": "Not Applicable",
            "HangupCause": causes.SYSTEM_SHUTDOWN,
            "HangupCauseCode": str(code),
            "HangupCauseName": name,
            "HangupSource": "Error",
            "Duration": str(record.get("call_duration") or 0),
            "BillDuration": str(record.get("bill_duration") or 0),
            "StartTime": plivo_time(record.get("initiation_time")),
            "AnswerTime": plivo_time(record.get("answer_time")),
            "EndTime": plivo_time(record.get("end_time")),
        }
        for key, value in (params_in.get("sip_headers") or {}).items():
            params[str(key)] = str(value)
        method = params_in.get("hangup_method") or "POST"
        return {"hangup_cause_code": code}, url, method, params
