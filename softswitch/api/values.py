"""Request values every dialect validates the same way: callback URLs, destinations, caller
ids. Pure functions over strings; each dialect words its own errors around them."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = ["CALLER_ID_RE", "NUMBER_RE", "is_destination", "is_http_url", "number_key"]

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
