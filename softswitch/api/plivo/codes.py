"""Plivo call statuses and hangup codes (its "Hangup causes" page), from the core's end
of a call (:class:`~softswitch.model.CallEnd`: a Q.850-derived cause and a reason)."""

from __future__ import annotations

import enum

from sip import causes


class CallStatus(enum.StrEnum):
    """Plivo ``CallStatus`` values (Plivo's call statuses)."""

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


class HangupCause(enum.Enum):
    """Plivo's "Hangup causes" page: a numeric code and a name per reason (its own table,
    distinct from Q.850). ``HangupCause`` in callbacks keeps the engine's Q.850-derived name;
    these are ``HangupCauseCode`` and ``HangupCauseName``."""

    NORMAL = (4000, "Normal Hangup")
    END_OF_XML = (4010, "End Of XML Instructions")
    CANCELED = (1000, "Canceled")
    INVALID_DESTINATION = (2000, "Invalid Destination Address")
    DESTINATION_OUT_OF_SERVICE = (2010, "Destination Out Of Service")
    BUSY = (3000, "Busy Line")
    REJECTED = (3010, "Rejected")
    NO_ANSWER = (3020, "No Answer")
    RING_TIMEOUT = (3030, "Ring Timeout Reached")
    TIME_LIMIT = (5010, "Max Call Duration Reached")
    ANSWER_URL_ERROR = (8011, "Error Reaching Answer URL")
    # The XML application failed (softswitch.xml raises XmlAppError): a document that is not
    # valid Plivo XML, or an action/redirect/transfer URL that could not be fetched.
    INVALID_ANSWER_XML = (8000, "Invalid Answer XML")
    ACTION_URL_ERROR = (8021, "Error Reaching Action URL")
    SHUTDOWN = (5100, "Server Shutdown")
    MACHINE_DETECTED = (4020, "Machine Detected")
    UNKNOWN = (0, "Unknown")

    @property
    def code(self) -> int:
        return self.value[0]

    @property
    def text(self) -> str:
        return self.value[1]


_H = HangupCause

#: Why this side ended the call (``EndReason`` values) → its code, when the reason decides.
_BY_REASON: dict[str, HangupCause] = {
    "end_of_xml": _H.END_OF_XML,
    "invalid_destination": _H.INVALID_DESTINATION,
    "ring_timeout": _H.RING_TIMEOUT,
    "time_limit": _H.TIME_LIMIT,
    "answer_url_error": _H.ANSWER_URL_ERROR,
    "invalid_answer_xml": _H.INVALID_ANSWER_XML,
    "action_url_error": _H.ACTION_URL_ERROR,
    "shutdown": _H.SHUTDOWN,
    "machine_detected": _H.MACHINE_DETECTED,
}

#: The engine's cause (:mod:`sip.causes`) → its code, otherwise.
_BY_CAUSE: dict[str, HangupCause] = {
    causes.NORMAL_CLEARING: _H.NORMAL,
    causes.ORIGINATOR_CANCEL: _H.CANCELED,
    causes.USER_BUSY: _H.BUSY,
    causes.CALL_REJECTED: _H.REJECTED,
    causes.NO_ANSWER: _H.NO_ANSWER,
    causes.NO_USER_RESPONSE: _H.NO_ANSWER,
    causes.ALLOTTED_TIMEOUT: _H.TIME_LIMIT,
    causes.UNALLOCATED_NUMBER: _H.INVALID_DESTINATION,
    causes.INVALID_NUMBER_FORMAT: _H.INVALID_DESTINATION,
    causes.NO_ROUTE_DESTINATION: _H.INVALID_DESTINATION,
    causes.NUMBER_CHANGED: _H.INVALID_DESTINATION,
    causes.DESTINATION_OUT_OF_ORDER: _H.DESTINATION_OUT_OF_SERVICE,
    causes.SYSTEM_SHUTDOWN: _H.SHUTDOWN,
    causes.MACHINE_DETECTED: _H.MACHINE_DETECTED,
    # No RTP from the callee (the media watchdog): Plivo's table has no code of its own for
    # it, so the answered call reads as a normal hangup by "Plivo"; ``HangupCause`` keeps the
    # engine's name, MEDIA_TIMEOUT.
    causes.MEDIA_TIMEOUT: _H.NORMAL,
}


def hangup_cause(cause: str, answered: bool, reason: str | None = None) -> HangupCause:
    """The Plivo hangup cause of a finished call; ``reason`` as in :func:`call_status_for`."""
    if reason == "api":
        return _H.NORMAL if answered else _H.CANCELED
    if reason == "hangup_on_ring":
        return _H.TIME_LIMIT if answered else _H.RING_TIMEOUT
    if reason in _BY_REASON:
        return _BY_REASON[reason]
    if cause in _BY_CAUSE:
        return _BY_CAUSE[cause]
    return _H.NORMAL if answered else _H.DESTINATION_OUT_OF_SERVICE


def hangup_code(cause: str, answered: bool, reason: str | None = None) -> tuple[int, str]:
    """(HangupCauseCode, HangupCauseName) of a finished call; ``reason`` as in :func:`call_status_for`."""
    hc = hangup_cause(cause, answered, reason)
    return hc.code, hc.text
