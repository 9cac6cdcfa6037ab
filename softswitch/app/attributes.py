"""Reading a call-application element's attributes: one typed value each, leftovers refused.

:class:`Attributes` pops an element's attributes one by one through a converter; a converter
turns the raw string into a typed value or raises ``ValueError`` with a sentence saying what
was expected, which becomes an :class:`~softswitch.app.document.XmlAppError` naming the
element and the attribute. The converters here are the value syntaxes the XML vocabularies
share (integers in a range, ``true``/``false``, GET/POST, URLs, DTMF keys, the
``send_digits`` grammar, language tags); a vocabulary's parser adds its own.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

from softswitch.app.document import XmlAppError
from softswitch.app.verbs import DTMF_KEYS, MAX_LOOPS

__all__ = [
    "MAX_INT",
    "Attributes",
    "body",
    "boolean",
    "digit_patterns",
    "finish_key",
    "http_method",
    "http_url",
    "integer",
    "key_set",
    "language_tag",
    "loop_count",
    "media_url",
    "no_children",
    "no_text",
    "optional_url",
    "send_digits",
    "single_key",
    "text",
    "timeout_or_auto",
    "valid_digits",
]

#: Upper bound on any integer attribute (a sanity bound, far above any documented range).
MAX_INT = 1_000_000

_T = TypeVar("_T")


class Attributes:
    """Pops attributes of one element, converting each; ``done()`` refuses leftovers."""

    def __init__(self, el: ET.Element, name: str, ignored: tuple[str, ...] = ()) -> None:
        self._el = el
        self.name = name
        self._left = {k: v for k, v in el.attrib.items() if k not in ignored}
        self._known: list[str] = list(ignored)

    def _take(self, attr: str) -> str | None:
        self._known.append(attr)
        return self._left.pop(attr, None)

    def error(self, attr: str, reason: str) -> XmlAppError:
        return XmlAppError(reason, element=self.name, attribute=attr)

    def get(self, attr: str, conv: Callable[[str], _T], default: _T) -> _T:
        raw = self._take(attr)
        if raw is None:
            return default
        try:
            return conv(raw)
        except ValueError as exc:
            raise self.error(attr, f"{exc} (got {raw!r})") from None

    def opt(self, attr: str, conv: Callable[[str], _T]) -> _T | None:
        return self.get(attr, conv, None)

    def done(self) -> None:
        for attr in self._left:
            known = {k.lower(): k for k in self._known}
            hint = known.get(attr.lower())
            suffix = (
                f" (attribute names are case-sensitive: did you mean '{hint}'?)" if hint else ""
            )
            raise self.error(attr, "unknown attribute" + suffix)


def integer(lo: int, hi: int = MAX_INT) -> Callable[[str], int]:
    def conv(raw: str) -> int:
        s = raw.strip()
        if not re.fullmatch(r"[+-]?[0-9]+", s):
            raise ValueError("must be an integer")
        v = int(s)
        if not lo <= v <= hi:
            raise ValueError(
                f"must be between {lo} and {hi}" if hi < MAX_INT else f"must be >= {lo}"
            )
        return v

    return conv


def boolean(raw: str) -> bool:
    s = raw.strip().lower()
    if s == "true":
        return True
    if s == "false":
        return False
    raise ValueError("must be 'true' or 'false'")


def http_method(raw: str) -> str:
    s = raw.strip().upper()
    if s not in ("GET", "POST"):
        raise ValueError("must be 'GET' or 'POST'")
    return s


def http_url(raw: str) -> str:
    s = raw.strip()
    parts = urlsplit(s)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an absolute http(s) URL")
    return s


def optional_url(raw: str) -> str | None:
    """An http(s) URL; an empty attribute stands for an absent URL (``None``)."""
    return http_url(raw) if raw.strip() else None


def media_url(raw: str) -> str:
    s = raw.strip()
    if s.startswith("/"):
        return s
    parts = urlsplit(s)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https") and parts.netloc:
        return s
    if scheme == "file" and parts.path.startswith("/"):
        return s
    raise ValueError("must be an http(s) URL, a file:// URL or an absolute path")


def finish_key(raw: str) -> str:
    """One finish key, or ""/"none" for no finish key."""
    s = raw.strip()
    if s == "" or s.lower() == "none":
        return ""
    if len(s) != 1 or s not in DTMF_KEYS:
        raise ValueError("must be one of 0-9, *, #, '' or 'none'")
    return s


def key_set(raw: str) -> str:
    """A set of keys, any of which finishes ("" or "none" = none)."""
    s = raw.strip()
    if s == "" or s.lower() == "none":
        return ""
    if any(c not in DTMF_KEYS for c in s):
        raise ValueError("must be DTMF keys (0-9, *, #), '' or 'none'")
    return "".join(dict.fromkeys(s))


def valid_digits(raw: str) -> str:
    s = raw.strip()
    if not s or any(c not in DTMF_KEYS for c in s):
        raise ValueError("must be a non-empty set of DTMF keys (0-9, *, #)")
    return "".join(dict.fromkeys(s))


def single_key(raw: str) -> str:
    s = raw.strip()
    if len(s) != 1 or s not in DTMF_KEYS:
        raise ValueError("must be one DTMF key (0-9, *, #)")
    return s


_SEND_DIGITS_RE = re.compile(r"[0-9A-Da-d*#wW]+(?:@[0-9]{1,5})?")


def send_digits(raw: str) -> str:
    """The ``send_digits`` grammar: DTMF keys, ``w`` (0.5 s), ``W`` (1 s), trailing ``@ms``.

    Checked by ``media.dtmf.parse_send_digits`` itself, so a ``<DTMF>`` or ``sendDigits``
    accepted here is one the media engine can send.
    """
    s = raw.strip()
    if not s:
        return s
    try:
        from media.dtmf import parse_send_digits  # noqa: PLC0415 - numpy only when needed
    except ImportError:  # pragma: no cover - media engine absent: same grammar, by regex
        if not _SEND_DIGITS_RE.fullmatch(s):
            raise ValueError(
                "must be DTMF keys with optional w/W pauses and a trailing @ms"
            ) from None
        return s
    parse_send_digits(s)  # raises DigitsError (a ValueError) naming the bad character
    return s


def text(max_len: int) -> Callable[[str], str]:
    def conv(raw: str) -> str:
        if len(raw) > max_len:
            raise ValueError(f"must be at most {max_len} characters")
        return raw

    return conv


_LANG_RE = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*")


def caller_id(raw: str) -> str | None:
    """A caller id for a dialled leg's From user: a number or SIP user part (empty: none)."""
    s = raw.strip()
    if not s:
        return None
    if not re.fullmatch(r"[+0-9A-Za-z._-]{1,64}", s):
        raise ValueError("must be a phone number or SIP user part")
    return s


def language_tag(raw: str) -> str:
    s = raw.strip()
    if not _LANG_RE.fullmatch(s):
        raise ValueError("must be a language tag such as 'en-US'")
    return s


def digit_patterns(raw: str) -> tuple[str, ...]:
    pats = tuple(p.strip() for p in raw.split(",") if p.strip())
    for p in pats:
        if any(c not in DTMF_KEYS for c in p):
            raise ValueError("must be comma-separated DTMF patterns")
    return pats


def timeout_or_auto(lo: int, hi: int) -> Callable[[str], int | None]:
    as_int = integer(lo, hi)

    def conv(raw: str) -> int | None:
        return None if raw.strip().lower() == "auto" else as_int(raw)

    return conv


def loop_count(raw: str) -> int:
    v = integer(0)(raw)
    return MAX_LOOPS if v == 0 or v > MAX_LOOPS else v


def no_text(el: ET.Element, name: str) -> None:
    if (el.text or "").strip() or any((c.tail or "").strip() for c in el):
        raise XmlAppError("must not contain text", element=name)


def no_children(el: ET.Element, name: str) -> None:
    for child in el:
        raise XmlAppError(f"cannot be nested inside <{name}>", element=child.tag)


def body(el: ET.Element, name: str, what: str) -> str:
    no_children(el, name)
    s = (el.text or "").strip()
    if not s:
        raise XmlAppError(f"must contain {what}", element=name)
    return s
