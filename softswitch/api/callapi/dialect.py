"""The CallAPI :class:`~softswitch.dialect.Dialect`: Twilio's call statuses, status-callback
parameters (``SequenceNumber``, ``Timestamp``, ``CallbackSource``...) and TwiML documents,
over the dialect-neutral call model (DIALECTS.md §2.6, §2.7)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ...app.document import DEFAULT_MAX_BYTES
from ...app.verbs import Document
from ...model import AppFailure, CallbackEvent, CallEnd
from ...state import CallState
from ..values import answered_by
from .codes import (
    API_VERSION,
    CallStatus,
    call_sid,
    direction,
    final_status,
    live_status,
    rfc2822,
)
from .request import DIALECT_NAME
from .signing import SIGNATURE, SIGNERS
from .twiml import parse_document

if TYPE_CHECKING:
    from ...call import Call

__all__ = ["ERROR_CODES", "CallApiDialect", "answered_by", "base_params", "machine_params"]

#: ``Call.dialect_data`` key of the next status callback's ``SequenceNumber``.
_SEQUENCE = "sequence_number"

#: ``CallStatus`` of each status-callback event but the last (which reports the final status).
_EVENT_STATUS: dict[CallbackEvent, CallStatus] = {
    CallbackEvent.RING: CallStatus.RINGING,
    CallbackEvent.ANSWERED: CallStatus.IN_PROGRESS,
    CallbackEvent.ANSWER: CallStatus.IN_PROGRESS,
    CallbackEvent.APPLICATION: CallStatus.IN_PROGRESS,
}
_STATUS_EVENTS = (
    CallbackEvent.INITIATED,
    CallbackEvent.RING,
    CallbackEvent.ANSWERED,
    CallbackEvent.HANGUP,
)


#: Twilio's error code of each way the ``Url`` document can fail (``ErrorCode`` of the
#: ``FallbackUrl`` request): HTTP retrieval failure, HTTP connection failure, invalid
#: Content-Type, document parse failure.
ERROR_CODES: dict[str, int] = {
    AppFailure.HTTP_STATUS: 11200,
    AppFailure.CONNECTION: 11205,
    AppFailure.CONTENT_TYPE: 12300,
    AppFailure.DOCUMENT: 12100,
}


def base_params(call: Call, status: str) -> dict[str, str]:
    """What every request about ``call`` carries (the document fetch's parameters)."""
    spec = call.spec
    params = {
        "CallSid": call_sid(call.call_uuid),
        "AccountSid": call.account.auth_id,
        "From": spec.from_,
        "To": call.to,
        "Caller": spec.from_,
        "Called": call.to,
        "CallStatus": status,
        "ApiVersion": API_VERSION,
        "Direction": direction(call.direction),
    }
    if spec.caller_name:
        params["CallerName"] = spec.caller_name
    if call.parent_call_uuid:
        params["ParentCallSid"] = call_sid(call.parent_call_uuid)
    if call.machine is not None:
        params.update(machine_params(call.spec.record_params, call.machine))
    return params


def machine_params(request: Mapping[str, Any], result: Any) -> dict[str, str]:
    """What the callbacks after the decision carry: ``VoicemailDetector`` (``DetectVoicemail``,
    the seed) and ``AnsweredBy`` + ``MachineDetectionDuration`` (``MachineDetection``: ms from
    the answer to the result, the end of the greeting for ``DetectMessageEnd``)."""
    out: dict[str, str] = {}
    if request.get("DetectVoicemail"):
        out["VoicemailDetector"] = "voicemail" if result.machine else "person_found"
    mode = request.get("MachineDetection")
    if mode:
        out["AnsweredBy"] = answered_by(result, mode)
        ended = getattr(result, "message_end_ms", None)
        out["MachineDetectionDuration"] = str(ended if ended is not None else result.decided_at_ms)
    return out


class CallApiDialect:
    """CallAPI names over the call model (registered by the server)."""

    name = DIALECT_NAME
    signature = SIGNATURE
    signers = SIGNERS

    def parse_document(
        self, document: str | bytes, *, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> Document:
        return parse_document(document, max_bytes=max_bytes)

    def status_name(self, state: CallState, end: CallEnd | None) -> str:
        if state is CallState.COMPLETED and end is not None:
            return final_status(end).value
        return live_status(state).value

    def end_fields(self, end: CallEnd) -> dict[str, Any]:
        return {
            "hangup_cause_code": end.sip_status,
            "hangup_cause_name": end.cause,
            "hangup_source": end.source.value,
        }

    def callback_params(self, call: Call, event: CallbackEvent) -> dict[str, str]:
        """The document fetch's parameters; a status callback (INITIATED, RING, ANSWERED,
        HANGUP) adds ``SequenceNumber`` (per call, from 0, over the callbacks actually sent),
        ``Timestamp``, ``CallbackSource`` and, on completed, ``CallDuration``."""
        if event is CallbackEvent.INITIATED:
            status = "initiated"
        elif event is CallbackEvent.HANGUP:
            status = call.status
        else:
            status = _EVENT_STATUS.get(event, CallStatus.IN_PROGRESS).value
        params = base_params(call, status)
        failure = call.app_failure
        if failure is not None and event is CallbackEvent.ANSWER:  # the FallbackUrl request
            params["ErrorCode"] = str(ERROR_CODES.get(failure.kind, 11200))
            params["ErrorUrl"] = failure.url
        if event in _STATUS_EVENTS:
            seq = int(call.dialect_data.get(_SEQUENCE, 0))
            call.dialect_data[_SEQUENCE] = seq + 1
            params["SequenceNumber"] = str(seq)
            params["Timestamp"] = rfc2822(time.time()) or ""
            params["CallbackSource"] = "call-progress-events"
            if event is CallbackEvent.HANGUP:
                params["CallDuration"] = str(call.duration)
                end = call.end
                if end is not None and end.sip_status is not None:
                    params["SipResponseCode"] = str(end.sip_status)
        return params

    def machine_fields(self, call: Call, result: Any) -> dict[str, Any]:
        """Kept in the record's ``extra.machine_detection`` (the resource's ``answered_by``)."""
        return {
            "answered_by": answered_by(result, call.spec.record_params.get("MachineDetection")),
            "message_end": getattr(result, "message_end", None),
            "status": result.status,
            "reason": result.reason,
            "decided_at_ms": result.decided_at_ms,
            "beep_at_ms": result.beep_at_ms,
        }

    def recording_params(self, call: Call, recording: Mapping[str, Any]) -> dict[str, str]:
        return {
            **base_params(call, CallStatus.IN_PROGRESS.value),
            "RecordingSid": "RE" + str(recording["recording_id"]).replace("-", "")[:32],
            "RecordingUrl": str(recording["url"]),
            "RecordingDuration": str(round(recording["duration_ms"] / 1000)),
            "RecordingStatus": "completed",
        }

    def recording_url_base(self, public_url: str, account_id: str) -> str:
        return f"{public_url}/2010-04-01/Accounts/{account_id}/Recordings/files"

    def interrupted_hangup(
        self, record: Mapping[str, Any]
    ) -> tuple[dict[str, Any], str, str, dict[str, str]] | None:
        """The ``completed`` status callback of a call a crash ended (its sequence number is
        not known any more: none is sent)."""
        params_in = record.get("params") or {}
        url = params_in.get("StatusCallback")
        if not url or "completed" not in (params_in.get("StatusCallbackEvent") or []):
            return None
        status = record.get("call_status") or CallStatus.FAILED.value
        if status in ("queued", "ringing", "in-progress"):
            status = (
                CallStatus.COMPLETED.value if record.get("answer_time") else CallStatus.FAILED.value
            )
        params = {
            "CallSid": call_sid(record["call_uuid"]),
            "AccountSid": str(record.get("account_id") or ""),
            "From": str(params_in.get("From") or record.get("from_number") or ""),
            "To": str(record.get("to_number") or ""),
            "CallStatus": status,
            "ApiVersion": API_VERSION,
            "Direction": direction(record.get("direction")),
            "CallbackSource": "call-progress-events",
            "Timestamp": rfc2822(time.time()) or "",
            "CallDuration": str(record.get("call_duration") or 0),
        }
        return (
            {"call_status": status},
            str(url),
            str(params_in.get("StatusCallbackMethod") or "POST"),
            params,
        )
