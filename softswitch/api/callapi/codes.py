"""CallAPI (Twilio-style) call statuses, call SIDs and times, from the dialect-neutral call
model (DIALECTS.md §2.7)."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from email.utils import format_datetime

from sip import causes

from ...model import CallEnd, EndReason
from ...state import CallState

__all__ = [
    "API_VERSION",
    "CallStatus",
    "call_sid",
    "call_uuid_of",
    "direction",
    "final_status",
    "live_status",
    "rfc2822",
    "rfc2822_stored",
]

#: The seed's API version (``api_version`` of the resource, ``ApiVersion`` of callbacks).
API_VERSION = "2012-04-24"


class CallStatus(enum.StrEnum):
    QUEUED = "queued"
    RINGING = "ringing"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    BUSY = "busy"
    FAILED = "failed"
    NO_ANSWER = "no-answer"
    CANCELED = "canceled"


_LIVE: dict[CallState, CallStatus] = {
    CallState.QUEUED: CallStatus.QUEUED,
    CallState.INITIATED: CallStatus.RINGING,
    CallState.RINGING: CallStatus.RINGING,
    CallState.EARLY: CallStatus.RINGING,
    CallState.ANSWERED: CallStatus.IN_PROGRESS,
}


def live_status(state: CallState) -> CallStatus:
    """The resource status of a call not over yet (an INVITE without 18x shows as ringing)."""
    return _LIVE.get(state, CallStatus.COMPLETED)


def final_status(end: CallEnd) -> CallStatus:
    """answered → completed; busy; ring timeout / no answer → no-answer; ended by the API
    (or the caller's CANCEL) before the answer → canceled; anything else unanswered → failed
    (603 Decline included, DIALECTS.md §2.7)."""
    if end.answered:
        return CallStatus.COMPLETED
    if end.reason in (EndReason.API, EndReason.SHUTDOWN) or end.cause == causes.ORIGINATOR_CANCEL:
        return CallStatus.CANCELED
    if end.reason in (EndReason.RING_TIMEOUT, EndReason.HANGUP_ON_RING):
        return CallStatus.NO_ANSWER
    if end.cause == causes.USER_BUSY:
        return CallStatus.BUSY
    if end.cause in (causes.NO_ANSWER, causes.NO_USER_RESPONSE):
        return CallStatus.NO_ANSWER
    return CallStatus.FAILED


def direction(core_direction: str | None) -> str:
    """Twilio's ``direction`` of a call the core calls ``inbound`` or ``outbound``: a
    caller's INVITE is ``inbound``, a call placed over this API ``outbound-api``."""
    return "inbound" if core_direction == "inbound" else "outbound-api"


def call_sid(call_uuid: str) -> str:
    """``CA`` + the call uuid's 32 lowercase hex digits."""
    return "CA" + uuid.UUID(call_uuid).hex


def call_uuid_of(sid: str) -> str | None:
    """The call uuid of a ``CA…`` sid, or None when it is not one."""
    if len(sid) != 34 or not sid.startswith("CA"):
        return None
    try:
        return str(uuid.UUID(hex=sid[2:]))
    except ValueError:
        return None


def rfc2822(t: float | datetime | None) -> str | None:
    """``Wed, 02 Dec 2026 05:20:02 +0000`` (UTC), or None."""
    if t is None:
        return None
    dt = t if isinstance(t, datetime) else datetime.fromtimestamp(t, UTC)
    return format_datetime(dt.astimezone(UTC).replace(microsecond=0))


def rfc2822_stored(text: str | None) -> str | None:
    """A record time (``YYYY-MM-DD HH:MM:SS+00:00``) in RFC 2822."""
    if not text:
        return None
    try:
        return rfc2822(datetime.fromisoformat(text))
    except ValueError:
        return None
