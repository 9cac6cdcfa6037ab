"""Plivo call statuses and hangup codes (its "Hangup causes" page), from the core's end
of a call (:class:`~softswitch.model.CallEnd`: a Q.850-derived cause and a reason)."""

from __future__ import annotations

import enum

from sip import causes


class CallStatus(enum.StrEnum):
    """Plivo ``CallStatus`` values (seeds/README)."""

    QUEUED = "queued"
    RINGING = "ringing"
    EARLY_MEDIA = "early-media"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    BUSY = "busy"
    FAILED = "failed"
    TIMEOUT = "timeout"
    NO_ANSWER = "no-answer"
    CANCEL = "cancel"


#: Statuses that mean the call is over.
TERMINAL_STATUSES = frozenset({CallStatus.COMPLETED, CallStatus.BUSY, CallStatus.FAILED,
                               CallStatus.TIMEOUT, CallStatus.NO_ANSWER, CallStatus.CANCEL})


# --- statuses and hangup causes --------------------------------------------------------------


def call_status_for(cause: str, answered: bool, reason: str | None = None) -> CallStatus:
    """Plivo CallStatus of an ended call: completed, busy, failed, timeout, no-answer, cancel.

    ``reason`` says why this side ended the call ('api', 'shutdown', 'time_limit',
    'hangup_on_ring', 'ring_timeout', 'answer_url_error', 'invalid_destination'), or None.
    """
    if answered:
        return CallStatus.COMPLETED
    if reason in ("api", "shutdown"):
        return CallStatus.CANCEL
    if reason in ("ring_timeout", "hangup_on_ring"):
        return CallStatus.NO_ANSWER
    if cause == causes.USER_BUSY:
        return CallStatus.BUSY
    if cause in (causes.NO_ANSWER, causes.NO_USER_RESPONSE):
        return CallStatus.NO_ANSWER
    if cause == causes.ORIGINATOR_CANCEL:
        return CallStatus.CANCEL
    if cause == causes.RECOVERY_ON_TIMER_EXPIRE:
        return CallStatus.TIMEOUT
    return CallStatus.FAILED


# Plivo's "Hangup causes" page: a numeric code and a name per reason (its own table,
# distinct from Q.850). ``HangupCause`` in callbacks keeps the engine's Q.850-derived name.
_PLIVO_CODES: dict[str, tuple[int, str]] = {
    "normal": (4000, "Normal Hangup"),
    "end_of_xml": (4010, "End Of XML Instructions"),
    "canceled": (1000, "Canceled"),
    "invalid_destination": (2000, "Invalid Destination Address"),
    "destination_out_of_service": (2010, "Destination Out Of Service"),
    "busy": (3000, "Busy Line"),
    "rejected": (3010, "Rejected"),
    "no_answer": (3020, "No Answer"),
    "ring_timeout": (3030, "Ring Timeout Reached"),
    "time_limit": (5010, "Max Call Duration Reached"),
    "answer_url_error": (8011, "Error Reaching Answer URL"),
    # The XML application failed (softswitch.xml raises XmlAppError): a document that is not
    # valid Plivo XML, or an action/redirect/transfer URL that could not be fetched.
    "invalid_answer_xml": (8000, "Invalid Answer XML"),
    "action_url_error": (8021, "Error Reaching Action URL"),
    "shutdown": (5100, "Server Shutdown"),
    "machine_detected": (4020, "Machine Detected"),
    "unknown": (0, "Unknown"),
}


def hangup_code(cause: str, answered: bool, reason: str | None = None) -> tuple[int, str]:
    """(HangupCauseCode, HangupCauseName) of a finished call; ``reason`` as in :func:`call_status_for`."""
    if reason == "api":
        return _PLIVO_CODES["normal" if answered else "canceled"]
    if reason == "hangup_on_ring":
        return _PLIVO_CODES["time_limit" if answered else "ring_timeout"]
    if reason in _PLIVO_CODES:
        return _PLIVO_CODES[reason]
    if cause == causes.NORMAL_CLEARING:
        return _PLIVO_CODES["normal"]
    if cause == causes.ORIGINATOR_CANCEL:
        return _PLIVO_CODES["canceled"]
    if cause == causes.USER_BUSY:
        return _PLIVO_CODES["busy"]
    if cause == causes.CALL_REJECTED:
        return _PLIVO_CODES["rejected"]
    if cause in (causes.NO_ANSWER, causes.NO_USER_RESPONSE):
        return _PLIVO_CODES["no_answer"]
    if cause == causes.ALLOTTED_TIMEOUT:
        return _PLIVO_CODES["time_limit"]
    if cause in (
        causes.UNALLOCATED_NUMBER,
        causes.INVALID_NUMBER_FORMAT,
        causes.NO_ROUTE_DESTINATION,
        causes.NUMBER_CHANGED,
    ):
        return _PLIVO_CODES["invalid_destination"]
    if cause == causes.SYSTEM_SHUTDOWN:
        return _PLIVO_CODES["shutdown"]
    if cause == causes.MACHINE_DETECTED:
        return _PLIVO_CODES["machine_detected"]
    if answered:
        return _PLIVO_CODES["normal"]
    return _PLIVO_CODES["destination_out_of_service"]
