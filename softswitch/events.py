"""The events of a call leg (one SIP call + one media stream), as small frozen dataclasses.

A leg emits them in this order: ``Trying`` → ``Ringing``/``EarlyMedia`` (any number) →
``Answered`` → ``DigitReceived``… → ``Terminated`` (exactly once). The SIP progress events
are :mod:`sip.events`' own; ``DigitReceived`` joins the digits the media stream detects
(RFC 4733, in-band) and those the SIP layer got in INFO requests.
"""

from __future__ import annotations

from dataclasses import dataclass

from sip.events import Answered, EarlyMedia, Ringing, Terminated, Trying

__all__ = [
    "Answered",
    "CallEvent",
    "DigitReceived",
    "EarlyMedia",
    "Ringing",
    "Terminated",
    "Trying",
]


@dataclass(frozen=True, slots=True)
class DigitReceived:
    """A DTMF digit from the callee (RFC 4733 event, in-band tone or SIP INFO)."""

    at: float
    digit: str
    duration_ms: int
    source: str = "rfc4733"  # or "inband", "info"


CallEvent = Trying | Ringing | EarlyMedia | Answered | DigitReceived | Terminated
