"""Hardened parser for Plivo XML (and the open-source Plivo framework's RESTXML).

The document comes from the user's web server, so it is untrusted input:

* size-bounded (``max_bytes``, default 100 KiB) before anything is parsed;
* no DTD at all: any ``<!DOCTYPE`` or ``<!ENTITY`` declaration is refused before the text
  reaches expat, so there is no entity expansion (billion laughs, external entities);
* depth-bounded (``max_depth``) while parsing, with an incremental pull parser so a deeply
  nested document is refused early and nothing recurses over it;
* strict: the root must be ``<Response>``; unknown elements, unknown attributes (names are
  case-sensitive, as in Plivo: ``numDigits``, ``finishOnKey``), bad values and wrong nesting
  raise :class:`XmlAppError` naming the element and attribute.

The result is a tuple of frozen verb dataclasses (:mod:`softswitch.xml.verbs`).

``<Conference>`` (and the other Plivo elements this softswitch does not implement:
``MultiPartyCall``, ``Stream``, ``Message``, ``GetSpeech``, ``SIPTransfer``) is refused at
parse time with a "not supported" error: the whole document is validated before its first
verb runs, as Plivo does, so a call never half-runs a document it cannot finish.
"""

from __future__ import annotations

import codecs
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from softswitch.xml.verbs import (
    DTMF,
    DTMF_KEYS,
    MAX_LOOPS,
    Dial,
    GetDigits,
    GetInput,
    Hangup,
    Number,
    Play,
    PreAnswer,
    Prompt,
    Record,
    Redirect,
    Speak,
    User,
    Verb,
    Wait,
)

#: Default bound on the size of one XML document (bytes of the HTTP body).
DEFAULT_MAX_BYTES = 100 * 1024
#: Default bound on element nesting. Plivo's deepest legal nesting is 4
#: (Response > PreAnswer > GetDigits > Speak) plus SSML inside Speak.
DEFAULT_MAX_DEPTH = 16
#: Longest text a ``<Speak>`` may carry (ours: bounds TTS time and memory per verb).
MAX_SPEAK_CHARS = 4000
#: Upper bound on any integer attribute (a sanity bound, far above any documented range).
_MAX_INT = 1_000_000

#: Hangup causes (Q.850-derived names, as in the call record) for XML failures.
#: RFC 3398 / Q.850 cause 95 "invalid message, unspecified": the document is not valid
#: Plivo XML.
CAUSE_INVALID_XML = "INVALID_MSG_UNSPECIFIED"
#: Q.850 cause 41 "temporary failure": the XML could not be fetched.
CAUSE_FETCH_FAILED = "NORMAL_TEMPORARY_FAILURE"
#: Q.850 cause 79 "service or option not implemented": valid Plivo XML we do not run.
CAUSE_NOT_IMPLEMENTED = "SERVICE_NOT_IMPLEMENTED"


class XmlAppError(Exception):
    """The XML application cannot go on: bad document, failed fetch, unsupported verb.

    ``reason`` is a sentence meant for the call record and the user; ``element`` and
    ``attribute`` name the offending place; ``cause`` is the hangup cause the executor uses.
    """

    def __init__(
        self,
        reason: str,
        *,
        element: str | None = None,
        attribute: str | None = None,
        cause: str = CAUSE_INVALID_XML,
    ) -> None:
        where = ""
        if element is not None:
            where = f"<{element}>"
            if attribute is not None:
                where += f" attribute '{attribute}'"
            where += ": "
        super().__init__(where + reason)
        self.reason = reason
        self.element = element
        self.attribute = attribute
        self.cause = cause


# --- the document ---------------------------------------------------------------------

_DECL_RE = re.compile(r"^\s*<\?xml\b[^>]*\?>", re.IGNORECASE)
_ENCODING_RE = re.compile(rb"""^\s*<\?xml\b[^>]*?\bencoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_FORBIDDEN_RE = re.compile(r"<!\s*(DOCTYPE|ENTITY|ELEMENT|ATTLIST|NOTATION)", re.IGNORECASE)
_ALLOWED_ENCODINGS = {
    "utf-8",
    "ascii",
    "latin-1",
    "iso8859-1",
    "cp1252",
    "utf-16",
    "utf-16-le",
    "utf-16-be",
}


def _decode(data: bytes) -> str:
    """Bytes to text: BOM first, then the XML declaration's encoding, else UTF-8."""
    if data.startswith(codecs.BOM_UTF8):
        name = "utf-8"
        data = data[len(codecs.BOM_UTF8) :]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        name = "utf-16"
    else:
        m = _ENCODING_RE.match(data)
        name = m.group(1).decode("ascii") if m else "utf-8"
    try:
        canonical = codecs.lookup(name).name
    except LookupError:
        raise XmlAppError(f"unknown document encoding {name!r}") from None
    if canonical not in _ALLOWED_ENCODINGS:
        raise XmlAppError(f"document encoding {name!r} is not supported (use UTF-8)")
    try:
        return data.decode(canonical)
    except UnicodeDecodeError as exc:
        raise XmlAppError(f"document is not valid {name}: {exc.reason}") from None


def parse_response(
    document: str | bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
    legacy: bool = False,
) -> tuple[Verb, ...]:
    """Parse one Plivo XML document into verbs, or raise :class:`XmlAppError`.

    ``legacy=True`` also admits the open-source Plivo framework's extra attributes
    (``Speak@engine/type/method``, ``Record@filePath/fileName/bothLegs``,
    ``Number@gateways...``), which are accepted and, except ``Number@gateways``, ignored.
    """
    size = len(document) if isinstance(document, bytes) else len(document.encode("utf-8"))
    if size > max_bytes:
        raise XmlAppError(f"document is {size} bytes, more than the {max_bytes} allowed")
    text = _decode(document) if isinstance(document, bytes) else document
    if not text.strip():
        raise XmlAppError("document is empty, expected <Response>")
    if _FORBIDDEN_RE.search(text):
        raise XmlAppError("DTD declarations (<!DOCTYPE>, <!ENTITY>) are not allowed")
    # The declaration is dropped: the text is already decoded, and expat must not be told
    # to re-decode it with another encoding.
    text = _DECL_RE.sub("", text, count=1)

    root = _parse_tree(text, max_depth)
    if root.tag != "Response":
        raise XmlAppError(f"root element must be <Response>, got <{root.tag}>")
    if root.attrib:
        raise XmlAppError(
            "takes no attributes", element="Response", attribute=next(iter(root.attrib))
        )
    _no_text(root, "Response")
    return tuple(_verb(child, legacy) for child in root)


def _parse_tree(text: str, max_depth: int) -> ET.Element:
    parser: Any = ET.XMLPullParser(events=("start", "end"))
    depth = 0
    root: ET.Element | None = None
    try:
        parser.feed(text)
        for event, elem in parser.read_events():
            if event == "start":
                depth += 1
                if depth > max_depth:
                    raise XmlAppError(f"elements nested deeper than {max_depth} levels")
                if root is None:
                    root = elem
            else:
                depth -= 1
        parser.close()
        for _event, _elem in parser.read_events():
            pass
    except ET.ParseError as exc:
        raise XmlAppError(f"not well-formed XML: {exc}") from None
    if root is None:
        raise XmlAppError("document has no root element, expected <Response>")
    return root


# --- attribute conversion ----------------------------------------------------------------

_T = TypeVar("_T")


class _Attrs:
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


def _int(lo: int, hi: int = _MAX_INT) -> Callable[[str], int]:
    def conv(raw: str) -> int:
        s = raw.strip()
        if not re.fullmatch(r"[+-]?[0-9]+", s):
            raise ValueError("must be an integer")
        v = int(s)
        if not lo <= v <= hi:
            raise ValueError(
                f"must be between {lo} and {hi}" if hi < _MAX_INT else f"must be >= {lo}"
            )
        return v

    return conv


def _bool(raw: str) -> bool:
    s = raw.strip().lower()
    if s == "true":
        return True
    if s == "false":
        return False
    raise ValueError("must be 'true' or 'false'")


def _method(raw: str) -> str:
    s = raw.strip().upper()
    if s not in ("GET", "POST"):
        raise ValueError("must be 'GET' or 'POST'")
    return s


def _http_url(raw: str) -> str:
    s = raw.strip()
    parts = urlsplit(s)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an absolute http(s) URL")
    return s


def _optional_url(raw: str) -> str | None:
    """Plivo writes absent URLs as empty attributes; treat "" as absent."""
    return _http_url(raw) if raw.strip() else None


def _media_url(raw: str) -> str:
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


def _finish_key(raw: str) -> str:
    """GetDigits/GetInput: one key, or ""/"none" for no finish key."""
    s = raw.strip()
    if s == "" or s.lower() == "none":
        return ""
    if len(s) != 1 or s not in DTMF_KEYS:
        raise ValueError("must be one of 0-9, *, #, '' or 'none'")
    return s


def _key_set(raw: str) -> str:
    """Record@finishOnKey: any of the keys ("" or "none" = none)."""
    s = raw.strip()
    if s == "" or s.lower() == "none":
        return ""
    if any(c not in DTMF_KEYS for c in s):
        raise ValueError("must be DTMF keys (0-9, *, #), '' or 'none'")
    return "".join(dict.fromkeys(s))


def _valid_digits(raw: str) -> str:
    s = raw.strip()
    if not s or any(c not in DTMF_KEYS for c in s):
        raise ValueError("must be a non-empty set of DTMF keys (0-9, *, #)")
    return "".join(dict.fromkeys(s))


def _single_key(raw: str) -> str:
    s = raw.strip()
    if len(s) != 1 or s not in DTMF_KEYS:
        raise ValueError("must be one DTMF key (0-9, *, #)")
    return s


_SEND_DIGITS_RE = re.compile(r"[0-9A-Da-d*#wW]+(?:@[0-9]{1,5})?")


def _send_digits(raw: str) -> str:
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


def _text(max_len: int) -> Callable[[str], str]:
    def conv(raw: str) -> str:
        if len(raw) > max_len:
            raise ValueError(f"must be at most {max_len} characters")
        return raw

    return conv


_LANG_RE = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*")


def _language(raw: str) -> str:
    s = raw.strip()
    if not _LANG_RE.fullmatch(s):
        raise ValueError("must be a language tag such as 'en-US'")
    return s


_LEGACY_VOICES = {"slt", "rms", "awb", "kal"}  # the framework's flite voices


def _voice(raw: str) -> str:
    s = raw.strip()
    if s.upper() in ("WOMAN", "MAN"):
        return s.upper()
    if re.fullmatch(r"Polly\.[A-Za-z]+(?:-Neural)?", s) or s in _LEGACY_VOICES:
        return s
    raise ValueError("must be 'WOMAN', 'MAN' or a Polly.<Name> voice")


def _sip_headers(raw: str) -> tuple[tuple[str, str], ...]:
    """Plivo ``sipHeaders``: ``name=value,name2=value2``, names and values [A-Za-z0-9]."""
    out: list[tuple[str, str]] = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        if (
            not sep
            or not re.fullmatch(r"[A-Za-z0-9]{1,64}", name)
            or not re.fullmatch(r"[A-Za-z0-9]{0,256}", value)
        ):
            raise ValueError("must be name=value pairs separated by commas, [A-Za-z0-9] only")
        out.append((name, value))
    return tuple(out)


def _digit_patterns(raw: str) -> tuple[str, ...]:
    pats = tuple(p.strip() for p in raw.split(",") if p.strip())
    for p in pats:
        if any(c not in DTMF_KEYS for c in p):
            raise ValueError("must be comma-separated DTMF patterns")
    return pats


def _timeout_or_auto(lo: int, hi: int) -> Callable[[str], int | None]:
    as_int = _int(lo, hi)

    def conv(raw: str) -> int | None:
        return None if raw.strip().lower() == "auto" else as_int(raw)

    return conv


def _loop(raw: str) -> int:
    v = _int(0)(raw)
    return MAX_LOOPS if v == 0 or v > MAX_LOOPS else v


_NO_STRS: tuple[str, ...] = ()
_NO_PAIRS: tuple[tuple[str, str], ...] = ()


# --- elements -----------------------------------------------------------------------------

_UNSUPPORTED = {"Conference", "MultiPartyCall", "Stream", "Message", "GetSpeech", "SIPTransfer"}
_SSML_TAGS = {
    "break",
    "cont",
    "emphasis",
    "lang",
    "p",
    "phoneme",
    "prosody",
    "s",
    "say-as",
    "sub",
    "w",
}


def _no_text(el: ET.Element, name: str) -> None:
    if (el.text or "").strip() or any((c.tail or "").strip() for c in el):
        raise XmlAppError("must not contain text", element=name)


def _no_children(el: ET.Element, name: str) -> None:
    for child in el:
        raise XmlAppError(f"cannot be nested inside <{name}>", element=child.tag)


def _body(el: ET.Element, name: str, what: str) -> str:
    _no_children(el, name)
    s = (el.text or "").strip()
    if not s:
        raise XmlAppError(f"must contain {what}", element=name)
    return s


def _verb(el: ET.Element, legacy: bool) -> Verb:
    builder = _TOP_LEVEL.get(el.tag)
    if builder is None:
        _refuse(el.tag, "Response")
        raise AssertionError  # pragma: no cover - _refuse always raises
    return builder(el, legacy)


def _refuse(tag: str, parent: str) -> None:
    if tag in _UNSUPPORTED:
        raise XmlAppError(
            "is a Plivo element this softswitch does not support",
            element=tag,
            cause=CAUSE_NOT_IMPLEMENTED,
        )
    if tag in ("Number", "User"):
        raise XmlAppError("must be nested inside <Dial>", element=tag)
    if tag in _ALL_KNOWN:
        raise XmlAppError(f"cannot be nested inside <{parent}>", element=tag)
    raise XmlAppError("unknown element (element names are case-sensitive)", element=tag)


def _speak(el: ET.Element, legacy: bool) -> Speak:
    a = _Attrs(el, "Speak", ("engine", "type", "method") if legacy else ())
    voice = a.get("voice", _voice, "WOMAN")
    language = a.get("language", _language, "en-US")
    loop = a.get("loop", _loop, 1)
    a.done()
    # Nested SSML tags are flattened to their text (espeak-ng gets plain text).
    stack = list(el)
    while stack:
        child = stack.pop()
        if child.tag not in _SSML_TAGS:
            raise XmlAppError("cannot be nested inside <Speak>", element=child.tag)
        stack.extend(child)
    text = " ".join("".join(el.itertext()).split())
    if not text:
        raise XmlAppError("must contain the text to speak", element="Speak")
    if len(text) > MAX_SPEAK_CHARS:
        raise XmlAppError(f"text is longer than {MAX_SPEAK_CHARS} characters", element="Speak")
    return Speak(text=text, voice=voice, language=language, loop=loop)


def _play(el: ET.Element, legacy: bool) -> Play:
    a = _Attrs(el, "Play")
    loop = a.get("loop", _loop, 1)
    a.done()
    raw = _body(el, "Play", "the URL of a WAV or MP3 file")
    try:
        url = _media_url(raw)
    except ValueError as exc:
        raise XmlAppError(f"{exc} (got {raw!r})", element="Play") from None
    return Play(url=url, loop=loop)


def _wait(el: ET.Element, legacy: bool) -> Wait:
    a = _Attrs(el, "Wait")
    w = Wait(
        length=a.get("length", _int(1), 1),
        silence=a.get("silence", _bool, False),
        min_silence=a.get("minSilence", _int(1), 2000),
        beep=a.get("beep", _bool, False),
    )
    a.done()
    _no_children(el, "Wait")
    _no_text(el, "Wait")
    return w


def _prompts(el: ET.Element, name: str, legacy: bool) -> tuple[Prompt, ...]:
    _no_text(el, name)
    out: list[Prompt] = []
    for child in el:
        builder = _PROMPTS.get(child.tag)
        if builder is None:
            _refuse(child.tag, name)
        else:
            out.append(builder(child, legacy))
    return tuple(out)


def _get_digits(el: ET.Element, legacy: bool) -> GetDigits:
    a = _Attrs(el, "GetDigits")
    v = GetDigits(
        action=a.get("action", _optional_url, None),
        method=a.get("method", _method, "POST"),
        timeout=a.get("timeout", _int(1), 5),
        digit_timeout=a.get("digitTimeout", _int(1), 2),
        finish_on_key=a.get("finishOnKey", _finish_key, "#"),
        num_digits=a.get("numDigits", _int(1), 99),
        retries=a.get("retries", _int(1), 1),
        valid_digits=a.get("validDigits", _valid_digits, "1234567890*#"),
        invalid_digits_sound=a.get(
            "invalidDigitsSound", lambda r: _media_url(r) if r.strip() else None, None
        ),
        redirect=a.get("redirect", _bool, True),
        play_beep=a.get("playBeep", _bool, False),
        log=a.get("log", _bool, True),
        children=_prompts(el, "GetDigits", legacy),
    )
    a.done()
    return v


def _input_type(raw: str) -> str:
    kinds = set(raw.split())
    if not kinds or not kinds <= {"dtmf", "speech"}:
        raise ValueError("must be 'dtmf', 'speech' or 'dtmf speech'")
    if "dtmf" not in kinds:
        raise ValueError("speech recognition is not supported; use 'dtmf' or 'dtmf speech'")
    return "dtmf speech" if "speech" in kinds else "dtmf"


def _get_input(el: ET.Element, legacy: bool) -> GetInput:
    a = _Attrs(el, "GetInput")
    action = a.get("action", _optional_url, None)
    if action is None:
        raise a.error("action", "is required")
    v = GetInput(
        action=action,
        method=a.get("method", _method, "POST"),
        input_type=a.get("inputType", _input_type, "dtmf"),
        execution_timeout=a.get("executionTimeout", _int(5, 60), 15),
        digit_end_timeout=a.get("digitEndTimeout", _timeout_or_auto(2, 10), None),
        speech_end_timeout=a.get("speechEndTimeout", _timeout_or_auto(2, 10), None),
        finish_on_key=a.get("finishOnKey", _finish_key, "#"),
        num_digits=a.get("numDigits", _int(1, 32), 32),
        language=a.get("language", _language, "en-US"),
        hints=a.get("hints", _text(10_000), ""),
        speech_model=a.get("speechModel", _text(64), "default"),
        interim_speech_results_callback=a.get("interimSpeechResultsCallback", _optional_url, None),
        interim_speech_results_callback_method=a.get(
            "interimSpeechResultsCallbackMethod", _method, "POST"
        ),
        profanity_filter=a.get("profanityFilter", _bool, False),
        redirect=a.get("redirect", _bool, True),
        log=a.get("log", _bool, True),
        children=_prompts(el, "GetInput", legacy),
    )
    a.done()
    return v


def _dtmf(el: ET.Element, legacy: bool) -> DTMF:
    a = _Attrs(el, "DTMF")
    async_ = a.get("async", _bool, True)
    a.done()
    raw = _body(el, "DTMF", "the digits to send")
    try:
        digits = _send_digits(raw)
    except ValueError as exc:
        raise XmlAppError(f"{exc} (got {raw!r})", element="DTMF") from None
    return DTMF(digits=digits, async_=async_)


def _hangup_reason(raw: str) -> str:
    s = raw.strip()
    if s not in ("", "rejected", "busy"):
        raise ValueError("must be 'rejected' or 'busy'")
    return s


def _hangup(el: ET.Element, legacy: bool) -> Hangup:
    a = _Attrs(el, "Hangup")
    v = Hangup(reason=a.get("reason", _hangup_reason, ""), schedule=a.get("schedule", _int(0), 0))
    a.done()
    _no_children(el, "Hangup")
    _no_text(el, "Hangup")
    return v


def _redirect(el: ET.Element, legacy: bool) -> Redirect:
    a = _Attrs(el, "Redirect")
    method = a.get("method", _method, "POST")
    a.done()
    raw = _body(el, "Redirect", "the URL to fetch")
    try:
        url = _http_url(raw)
    except ValueError as exc:
        raise XmlAppError(f"{exc} (got {raw!r})", element="Redirect") from None
    return Redirect(url=url, method=method)


def _file_format(raw: str) -> str:
    s = raw.strip().lower()
    if s not in ("mp3", "wav"):
        raise ValueError("must be 'mp3' or 'wav'")
    return s


def _channel_type(raw: str) -> str:
    s = raw.strip().lower()
    if s not in ("mono", "stereo"):
        raise ValueError("must be 'mono' or 'stereo'")
    return s


def _record(el: ET.Element, legacy: bool) -> Record:
    a = _Attrs(el, "Record", ("filePath", "fileName") if legacy else ())
    for attr in ("recordSession", "startOnDialAnswer") + (("bothLegs",) if legacy else ()):
        if a.get(attr, _bool, False):
            raise XmlAppError(
                "background recording is not supported",
                element="Record",
                attribute=attr,
                cause=CAUSE_NOT_IMPLEMENTED,
            )
    v = Record(
        action=a.get("action", _optional_url, None),
        method=a.get("method", _method, "POST"),
        file_format=a.get("fileFormat", _file_format, "mp3"),
        redirect=a.get("redirect", _bool, True),
        timeout=a.get("timeout", _int(1), 15),
        max_length=a.get("maxLength", _int(1), 60),
        play_beep=a.get("playBeep", _bool, True),
        finish_on_key=a.get("finishOnKey", _key_set, "1234567890*#" if legacy else "#"),
        record_channel_type=a.get("recordChannelType", _channel_type, "stereo"),
        transcription_type=a.get("transcriptionType", lambda r: r.strip() or None, None),
        transcription_url=a.get("transcriptionUrl", _optional_url, None),
        transcription_method=a.get("transcriptionMethod", _method, "POST"),
        callback_url=a.get("callbackUrl", _optional_url, None),
        callback_method=a.get("callbackMethod", _method, "POST"),
    )
    a.done()
    _no_children(el, "Record")
    _no_text(el, "Record")
    return v


_NUMBER_RE = re.compile(r"\+?[0-9*#]{1,32}")
_SIP_URI_RE = re.compile(r"sips?:[^\s<>\"',|]{1,250}", re.IGNORECASE)


def _number(el: ET.Element, legacy: bool) -> Number:
    legacy_attrs = ("gatewayCodecs", "gatewayTimeouts", "gatewayRetries", "extraDialString")
    a = _Attrs(el, "Number", legacy_attrs if legacy else ())
    send_digits = a.get("sendDigits", _send_digits, "")
    on_pre = a.get("sendOnPreanswer", _bool, False)
    a.get("sendDigitsMode", lambda r: r, "")  # Plivo: "dtmf"/"rfc2833"-like hint; media picks
    gateways: tuple[str, ...] = ()
    if legacy:
        gateways = a.get(
            "gateways",
            lambda r: tuple(g.strip().rstrip("/") for g in r.split(",") if g.strip()),
            (),
        )
    a.done()
    raw = _body(el, "Number", "the number to dial")
    if not _NUMBER_RE.fullmatch(raw):
        raise XmlAppError(
            f"must be a phone number such as +14155550100 (got {raw!r})", element="Number"
        )
    return Number(number=raw, send_digits=send_digits, send_on_preanswer=on_pre, gateways=gateways)


def _user(el: ET.Element, legacy: bool) -> User:
    a = _Attrs(el, "User")
    v = dict(
        send_digits=a.get("sendDigits", _send_digits, ""),
        send_on_preanswer=a.get("sendOnPreanswer", _bool, False),
        sip_headers=a.get("sipHeaders", _sip_headers, _NO_PAIRS),
    )
    a.done()
    raw = _body(el, "User", "a SIP URI")
    if not _SIP_URI_RE.fullmatch(raw):
        raise XmlAppError(
            f"must be a SIP URI such as sip:alice@example.com (got {raw!r})", element="User"
        )
    return User(uri=raw, **v)  # type: ignore[arg-type]


def _caller_id(raw: str) -> str | None:
    s = raw.strip()
    if not s:
        return None
    if not re.fullmatch(r"[+0-9A-Za-z._-]{1,64}", s):
        raise ValueError("must be a phone number or SIP user part")
    return s


def _dial_music(raw: str) -> str | None:
    s = raw.strip()
    if not s:
        return None
    return "real" if s.lower() == "real" else _http_url(s)


def _dial(el: ET.Element, legacy: bool) -> Dial:
    a = _Attrs(el, "Dial")
    kwargs = dict(
        action=a.get("action", _optional_url, None),
        method=a.get("method", _method, "POST"),
        hangup_on_star=a.get("hangupOnStar", _bool, False),
        time_limit=a.get("timeLimit", _int(1), 14_400),
        timeout=a.get("timeout", _int(1), 30),
        caller_id=a.get("callerId", _caller_id, None),
        caller_name=a.get("callerName", lambda r: _text(50)(r.strip()) or None, None),
        confirm_sound=a.get("confirmSound", _optional_url, None),
        confirm_key=a.get("confirmKey", lambda r: _single_key(r) if r.strip() else None, None),
        confirm_timeout=a.get("confirmTimeout", _int(1), 120),
        dial_music=a.get("dialMusic", _dial_music, None),
        callback_url=a.get("callbackUrl", _optional_url, None),
        callback_method=a.get("callbackMethod", _method, "POST"),
        redirect=a.get("redirect", _bool, True),
        digits_match=a.get("digitsMatch", _digit_patterns, _NO_STRS),
        digits_match_b_leg=a.get("digitsMatchBLeg", _digit_patterns, _NO_STRS),
        sip_headers=a.get("sipHeaders", _sip_headers, _NO_PAIRS),
    )
    a.done()
    _no_text(el, "Dial")
    numbers: list[Number | User] = []
    for child in el:
        if child.tag == "Number":
            numbers.append(_number(child, legacy))
        elif child.tag == "User":
            numbers.append(_user(child, legacy))
        else:
            _refuse(child.tag, "Dial")
    if not numbers:
        raise XmlAppError("must contain at least one <Number> or <User>", element="Dial")
    return Dial(numbers=tuple(numbers), **kwargs)  # type: ignore[arg-type]


def _pre_answer(el: ET.Element, legacy: bool) -> PreAnswer:
    a = _Attrs(el, "PreAnswer")
    a.done()
    _no_text(el, "PreAnswer")
    children = []
    for child in el:
        builder = _PRE_ANSWER.get(child.tag)
        if builder is None:
            _refuse(child.tag, "PreAnswer")
        else:
            children.append(builder(child, legacy))
    return PreAnswer(children=tuple(children))  # type: ignore[arg-type]


_Builder = Callable[[ET.Element, bool], Verb]

_PROMPTS: dict[str, Callable[[ET.Element, bool], Prompt]] = {
    "Speak": _speak,
    "Play": _play,
    "Wait": _wait,
}
_PRE_ANSWER: dict[str, _Builder] = {
    **_PROMPTS,
    "GetDigits": _get_digits,
    "GetInput": _get_input,
    "Redirect": _redirect,
    "DTMF": _dtmf,
}
_TOP_LEVEL: dict[str, _Builder] = {
    **_PRE_ANSWER,
    "Hangup": _hangup,
    "Record": _record,
    "Dial": _dial,
    "PreAnswer": _pre_answer,
}
_ALL_KNOWN = set(_TOP_LEVEL) | {"Number", "User", "Response"} | _UNSUPPORTED

__all__ = [
    "CAUSE_FETCH_FAILED",
    "CAUSE_INVALID_XML",
    "CAUSE_NOT_IMPLEMENTED",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "MAX_SPEAK_CHARS",
    "XmlAppError",
    "parse_response",
]
