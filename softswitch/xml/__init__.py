"""Call applications in Plivo XML: a hardened parser and a verb-by-verb executor.

``parse_response()`` turns a ``<Response>`` document into frozen verb dataclasses;
``XmlApplication`` runs them against a :class:`CallControl` (implemented by the call glue).
"""

from softswitch.xml.executor import (
    CallControl,
    CallHungUp,
    DialResult,
    FetchError,
    MediaCache,
    MediaFactory,
    RecordingResult,
    TtsCache,
    XmlApplication,
    espeak_voice,
)
from softswitch.xml.parser import (
    CAUSE_FETCH_FAILED,
    CAUSE_INVALID_XML,
    CAUSE_NOT_IMPLEMENTED,
    XmlAppError,
    parse_response,
)

__all__ = [
    "CAUSE_FETCH_FAILED",
    "CAUSE_INVALID_XML",
    "CAUSE_NOT_IMPLEMENTED",
    "CallControl",
    "CallHungUp",
    "DialResult",
    "FetchError",
    "MediaCache",
    "MediaFactory",
    "RecordingResult",
    "TtsCache",
    "XmlAppError",
    "XmlApplication",
    "espeak_voice",
    "parse_response",
]
