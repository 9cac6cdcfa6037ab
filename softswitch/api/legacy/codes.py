"""The legacy framework's vocabulary: call statuses and the FreeSWITCH cause names the core's
Q.850 table (:mod:`sip.causes`) lacks (DIALECTS.md §1.7)."""

from __future__ import annotations

from ...state import CallState

__all__ = [
    "CHAN_NOT_IMPLEMENTED",
    "INVALID_GATEWAY",
    "STATUSES",
    "USER_NOT_REGISTERED",
]

#: A gateway string of a kind softswitch does not dial (``really/``, ``bogus/``).
CHAN_NOT_IMPLEMENTED = "CHAN_NOT_IMPLEMENTED"
#: ``sofia/gateway/<name>/`` naming no configured trunk.
INVALID_GATEWAY = "INVALID_GATEWAY"
#: ``user/<To>``: the user has no phone registered with softswitch's registrar (the core's
#: cause, :data:`sip.causes.USER_NOT_REGISTERED`).
USER_NOT_REGISTERED = "USER_NOT_REGISTERED"

#: ``CallStatus`` of each state (a busy or failed call is ``completed`` with a HangupCause).
STATUSES: dict[CallState, str] = {
    CallState.QUEUED: "queued",
    CallState.INITIATED: "ringing",
    CallState.RINGING: "ringing",
    CallState.EARLY: "early-media",
    CallState.ANSWERED: "in-progress",
    CallState.COMPLETED: "completed",
}
