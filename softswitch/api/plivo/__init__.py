"""Plivo v1 dialect: request validation and the mapping between Plivo's names and the Call model.

Everything Plivo-specific about ``/v1/Account/{auth_id}/...`` lives in this package, as
tables and pure functions (no I/O) plus the routes:

* :mod:`.request`: the "Make a call" parameters (Plivo "Make a call") parsed once into a
  :class:`CallRequest`, and from it the core's :class:`~softswitch.model.CallSpec`;
* :mod:`.live`: the live call control requests (transfer, Play, Speak, DTMF, Record);
* :mod:`.codes`: ``CallStatus`` and the hangup code table of Plivo's "Hangup causes" page;
* :mod:`.shapes`: the CDR and live-call JSON the official ``plivo`` SDK reads;
* :mod:`.filters`: the ``calls.list`` query filters as the store's neutral conditions;
* :mod:`.signing`: ``X-Plivo-Signature-V3``/``-V2``, registered with the core's signer registry;
* :mod:`.dialect`: :class:`PlivoDialect`, what the core calls (statuses, causes, callback
  parameter names);
* :mod:`.routes` and :mod:`.openapi`: the HTTP handlers and their description.

This module re-exports the names of all of them, so ``softswitch.api.plivo.X`` keeps working.
"""

from __future__ import annotations

from .codes import (
    TERMINAL_STATUSES,
    CallStatus,
    HangupCause,
    call_status_for,
    hangup_cause,
    hangup_code,
)
from .dialect import PlivoDialect  # noqa: I001 - after the tables it uses
from .filters import LIST_FILTERS, list_filters
from .live import (
    LEGS,
    LIVE_MESSAGES,
    PLAY_URLS_MAX,
    RECORD_FORMATS,
    RECORD_TIME_LIMIT_DEFAULT,
    SPEAK_TEXT_MAX,
    DigitsRequest,
    PlayRequest,
    RecordRequest,
    SpeakRequest,
    TransferRequest,
    parse_digits_request,
    parse_play_request,
    parse_record_request,
    parse_speak_request,
    parse_transfer_request,
)
from .request import (
    AMD_PARAMETERS,
    BULK_MAX_DEFAULT,
    CALLER_NAME_MAX,
    HTTP_METHODS,
    MACHINE_DETECTION_TIME_DEFAULT,
    MACHINE_DETECTION_TIME_RANGE,
    RING_TIMEOUT_DEFAULT,
    RING_TIMEOUT_MAX,
    SIP_HEADERS_MAX,
    SIP_HEADERS_MAX_CHARS,
    TIME_LIMIT_CAP,
    TIME_LIMIT_DEFAULT,
    ApiError,
    CallRequest,
    is_destination,
    is_http_url,
    parse_bool,
    parse_call_request,
    parse_sip_headers,
)
from .shapes import cdr_json, live_call_json, plivo_time, queued_call_json
from .signing import SIGNATURE, SIGNERS

__all__ = [
    "AMD_PARAMETERS",
    "BULK_MAX_DEFAULT",
    "CALLER_NAME_MAX",
    "HTTP_METHODS",
    "LEGS",
    "LIST_FILTERS",
    "LIVE_MESSAGES",
    "MACHINE_DETECTION_TIME_DEFAULT",
    "MACHINE_DETECTION_TIME_RANGE",
    "PLAY_URLS_MAX",
    "RECORD_FORMATS",
    "RECORD_TIME_LIMIT_DEFAULT",
    "RING_TIMEOUT_DEFAULT",
    "RING_TIMEOUT_MAX",
    "SIGNATURE",
    "SIGNERS",
    "SIP_HEADERS_MAX",
    "SIP_HEADERS_MAX_CHARS",
    "SPEAK_TEXT_MAX",
    "TERMINAL_STATUSES",
    "TIME_LIMIT_CAP",
    "TIME_LIMIT_DEFAULT",
    "ApiError",
    "CallRequest",
    "CallStatus",
    "HangupCause",
    "DigitsRequest",
    "PlayRequest",
    "PlivoDialect",
    "RecordRequest",
    "SpeakRequest",
    "TransferRequest",
    "call_status_for",
    "cdr_json",
    "hangup_cause",
    "hangup_code",
    "is_destination",
    "is_http_url",
    "list_filters",
    "live_call_json",
    "parse_bool",
    "parse_call_request",
    "parse_digits_request",
    "parse_play_request",
    "parse_record_request",
    "parse_sip_headers",
    "parse_speak_request",
    "parse_transfer_request",
    "plivo_time",
    "queued_call_json",
]
