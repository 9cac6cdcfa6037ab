"""Call progress events, as small frozen dataclasses (the h11 habit).

A call emits them in this order: ``Trying`` → ``Ringing``/``EarlyMedia`` (any number) →
``Answered`` → ``InfoDigit``… → ``Terminated`` (exactly once).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Trying:
    """The INVITE went out (or 100 Trying came back)."""

    at: float


@dataclass(frozen=True, slots=True)
class Ringing:
    """A 180/183 without session progress media (``has_sdp`` false), from one fork (``to_tag``)."""

    at: float
    status: int
    reason: str
    to_tag: str | None = None


@dataclass(frozen=True, slots=True)
class EarlyMedia:
    """A provisional response carried SDP: the callee's early media now flows."""

    at: float
    status: int
    to_tag: str | None = None


@dataclass(frozen=True, slots=True)
class Answered:
    at: float
    status: int = 200


@dataclass(frozen=True, slots=True)
class InfoDigit:
    """A DTMF digit the callee relayed in a SIP INFO (``application/dtmf-relay`` or
    ``application/dtmf``). Digits carried in the media are the media layer's business."""

    at: float
    digit: str
    duration_ms: int


@dataclass(frozen=True, slots=True)
class Terminated:
    """The call ended. ``cause`` is a Q.850-derived name (see :mod:`sip.causes`)."""

    at: float
    cause: str
    sip_status: int | None
    reason: str = ""
    hangup_source: str = "callee"  # callee | caller | api | error | timeout
    extra: dict[str, object] = field(default_factory=dict)


CallEvent = Trying | Ringing | EarlyMedia | Answered | InfoDigit | Terminated
