"""Request values every dialect validates the same way: callback URLs, destinations, caller
ids. Pure functions over strings; each dialect words its own errors around them."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "answered_by",
    "CALLER_ID_RE",
    "INT64_MAX",
    "INT64_MIN",
    "NUMBER_RE",
    "int64",
    "is_destination",
    "is_http_url",
    "number_key",
]

#: What the store (SQLite INTEGER) holds: every integer the API hands inward fits in it.
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
#: Longest integer text accepted (a sign and 19 digits), checked before ``int()`` so that a
#: megabyte of digits is not converted first (Python limits str→int to 4300 digits anyway).
_INT_TEXT_MAX = 19
_INT_RE = re.compile(r"^[+-]?[0-9]+$", re.ASCII)

# A phone number: country code and number, optional leading '+'.
NUMBER_RE = re.compile(r"^\+?[0-9]{2,20}$")
# RFC 3261 §25.1: user = 1*( unreserved / escaped / user-unreserved ); host = hostname / IPv4 / [IPv6].
_SIP_USER = r"[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+"
_SIP_HOST = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9])?)"
_SIP_URI_RE = re.compile(
    rf"^(?:sips?:)(?:{_SIP_USER}@)?{_SIP_HOST}(?::[0-9]{{1,5}})?(?:;[A-Za-z0-9\-_.!~*'()%=]+)*$",
    re.IGNORECASE,
)
_BARE_ADDR_RE = re.compile(rf"^{_SIP_USER}@{_SIP_HOST}(?::[0-9]{{1,5}})?$")
#: A caller id that is not a number: a SIP user part (softphone user names, "anonymous").
CALLER_ID_RE = re.compile(r"^[A-Za-z0-9+\-_.!~*'()]{1,64}$")


def int64(raw: str, *, lo: int = INT64_MIN, hi: int = INT64_MAX) -> int:
    """``raw`` as an integer in ``[lo, hi]`` (at most the signed 64-bit range).

    Raises ValueError saying what is wrong ("not an integer", "must be between ...");
    each dialect words its own error around it.
    """
    lo, hi = max(lo, INT64_MIN), min(hi, INT64_MAX)
    text = raw.strip()
    if not _INT_RE.match(text):
        raise ValueError("not an integer")
    digits = text.lstrip("+-").lstrip("0")
    if len(digits) > _INT_TEXT_MAX or not lo <= int(text) <= hi:
        raise ValueError(f"must be between {lo} and {hi}")
    return int(text)


def is_http_url(value: str) -> bool:
    """An absolute http(s) URL with a host: what the server can call back."""
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError for a bad port
    except ValueError:
        return False
    del port
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return False
    return not any(ch.isspace() or ord(ch) < 0x20 for ch in value) and len(value) <= 2048


def is_destination(value: str) -> bool:
    """A number (country code + number), a SIP/SIPS URI, or ``user@host``."""
    if NUMBER_RE.match(value):
        return True
    if value[:4].lower() == "sip:" or value[:5].lower() == "sips:":
        return bool(_SIP_URI_RE.match(value))
    return bool(_BARE_ADDR_RE.match(value))


def number_key(value: str) -> str:
    """Numbers compare without the '+': 14155551212 and +14155551212 are one destination."""
    return value.lstrip("+") if NUMBER_RE.match(value) else value.lower()


#: A recording's file name a user may choose (the legacy ``FileName``): letters, digits, ``_``,
#: ``-`` and ``.`` (no ``..``), at most 128, no directory part; the format is appended.
RECORDING_STEM_RE = re.compile(r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def recording_stem(value: str | None) -> str | None:
    """``value`` as a recording file name without extension (None when absent or empty);
    raises ValueError when it is not a plain file name."""
    if value is None or not value.strip():
        return None
    stem = value.strip()
    if not RECORDING_STEM_RE.match(stem):
        raise ValueError(f"not a plain file name: {stem[:60]!r}")
    return stem


def answered_by(result: Any, mode: str | None = None) -> str:
    """Twilio's ``AnsweredBy`` (the CallAPI dialect's, and the legacy framework's after Eqivo)
    of a detector decision (``media.amd.AmdResult``) under ``MachineDetection`` ``mode``: a fax
    is ``fax``; NOTSURE and a special information tone (the network's announcement) are
    ``unknown``; a person is ``human``. For a machine under ``DetectMessageEnd``, how its
    greeting ended: a beep (``machine_end_beep``), silence (``machine_end_silence``) or neither
    within the timeout (``machine_end_other``); under ``Enable``, ``machine_start``, or
    ``machine_end_beep`` when a beep is what decided."""
    if result.status == "FAX":
        return "fax"
    if result.status in ("NOTSURE", "SIT"):
        return "unknown"
    if not result.machine:
        return "human"
    if mode == "DetectMessageEnd":
        end = getattr(result, "message_end", None)
        if end == "BEEP":
            return "machine_end_beep"
        return "machine_end_silence" if end == "SILENCE" else "machine_end_other"
    return "machine_end_beep" if result.beep_hz is not None else "machine_start"
