"""The legacy Plivo framework dialect, ``/v0.1/`` (seed 003; ``DIALECTS.md`` §1, §3).

* :mod:`.request`: ``POST /v0.1/Call/`` → :class:`~softswitch.model.CallSpec`, gateway
  strings → :class:`~softswitch.model.DialAttempt` (failover), ``ExtraDialString``;
* :mod:`.codes`: statuses and the FreeSWITCH cause names softswitch reports;
* :mod:`.dialect`: :class:`LegacyDialect` (callback parameters, ``X-Plivo-Signature``, the
  RESTXML vocabulary: the Plivo XML parser's legacy mode);
* :mod:`.routes`, :mod:`.openapi`: the HTTP side.
"""

from __future__ import annotations

from .dialect import NAME, SIGNATURE, SIGNERS, LegacyDialect
from .request import (
    LegacyError,
    gateway_attempt,
    parse_call,
    parse_extra_dial_string,
    split_outside_quotes,
)

__all__ = [
    "NAME",
    "SIGNATURE",
    "SIGNERS",
    "LegacyDialect",
    "LegacyError",
    "gateway_attempt",
    "parse_call",
    "parse_extra_dial_string",
    "split_outside_quotes",
]
