"""The Plivo XML vocabulary (and the open-source Plivo framework's RESTXML): its parser, the
names of its result parameters, and the executor bound to both.

The document is read by :func:`softswitch.app.document.read_document` (size-bounded, no DTD,
depth-bounded); this module is strict about the rest: the root must be ``<Response>``;
unknown elements, unknown attributes (names are case-sensitive, as in Plivo: ``numDigits``,
``finishOnKey``), bad values and wrong nesting raise :class:`XmlAppError` naming the element
and attribute. Attribute names, defaults and ranges follow Plivo's XML reference
(plivo.com/docs/voice/xml/) and, where that page is silent, the framework's RESTXML
(``elements.py``): the two are the same family.

The result is a :class:`~softswitch.app.verbs.Document`: frozen verb dataclasses
(:mod:`softswitch.app.verbs`) and :data:`RESULT_PARAMS`, Plivo's names for what the executor
posts to an ``action`` (``Digits``, ``RecordUrl``, ``DialStatus``...).
:class:`XmlApplication` is the vocabulary-neutral executor
(:class:`softswitch.app.executor.Application`) running Plivo XML.

``<Conference>`` becomes the neutral :class:`~softswitch.app.verbs.Conference`; its callback
and action parameters are Plivo's (``ConferenceName``, ``ConferenceUUID``,
``ConferenceMemberID``, ``ConferenceAction`` enter/exit/floor/digits/record,
``ConferenceDigitsMatch``, ``RecordUrl``...: :func:`conference_params`).
The Plivo elements this softswitch does not implement (``MultiPartyCall``, ``Stream``,
``Message``, ``GetSpeech``, ``SIPTransfer``) are refused at parse time with a "not supported"
error: the whole document is validated before its first verb runs, as Plivo does, so a call
never half-runs a document it cannot finish.
"""

from __future__ import annotations

import functools
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

from softswitch.api.values import recording_stem
from softswitch.app import attributes as at
from softswitch.app.control import CallControl
from softswitch.app.document import (
    CAUSE_FETCH_FAILED,
    CAUSE_INVALID_XML,
    CAUSE_NOT_IMPLEMENTED,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_DEPTH,
    XmlAppError,
    read_document,
)
from softswitch.app.executor import Application
from softswitch.app.verbs import (
    DTMF,
    Conference,
    ConferenceEvent,
    Dial,
    Document,
    GetDigits,
    GetInput,
    Hangup,
    Number,
    Play,
    PreAnswer,
    Prompt,
    Record,
    Redirect,
    ResultParams,
    Speak,
    User,
    Verb,
    Wait,
)

#: Longest text a ``<Speak>`` may carry (ours: bounds TTS time and memory per verb).
MAX_SPEAK_CHARS = 4000


#: The names under which Plivo posts verb results to an ``action`` URL (GetDigits/GetInput
#: ``Digits`` and ``InputType``; Record's ``RecordUrl``...; Dial's ``DialStatus``...).
#: ``RecordingDurationMs``, ``RecordingStartMs`` and ``RecordingEndMs`` are Plivo's too.
def conference_params(event: ConferenceEvent) -> dict[str, str] | None:
    """A conference event in Plivo's callback names (the action URL gets ``result``)."""
    if event.action not in ("enter", "exit", "floor", "digits", "record", "result"):
        return None
    params = {
        "ConferenceName": event.room,
        "ConferenceUUID": event.room_uuid,
        "ConferenceMemberID": event.member_id,
    }
    if event.action != "result":
        params["ConferenceAction"] = event.action
    if event.action == "digits":
        params["ConferenceDigitsMatch"] = event.digits
    if event.record_url:
        params["RecordUrl"] = event.record_url
        params["RecordingID"] = event.recording_id
        params["RecordingDuration"] = str(event.recording_duration_s)
    return params


RESULT_PARAMS = ResultParams(
    digits="Digits",
    input_type="InputType",
    record_url="RecordUrl",
    recording_id="RecordingID",
    recording_duration_s="RecordingDuration",
    recording_duration_ms="RecordingDurationMs",
    recording_start_ms="RecordingStartMs",
    recording_end_ms="RecordingEndMs",
    recording_file_format="RecordingFileFormat",
    dial_status="DialStatus",
    dial_hangup_cause="DialHangupCause",
    dial_ring_status="DialRingStatus",
    dial_a_leg_uuid="DialALegUUID",
    dial_b_leg_uuid="DialBLegUUID",
    conference_params=conference_params,
)


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
    root = read_document(document, root_tag="Response", max_bytes=max_bytes, max_depth=max_depth)
    if root.attrib:
        raise XmlAppError(
            "takes no attributes", element="Response", attribute=next(iter(root.attrib))
        )
    at.no_text(root, "Response")
    return tuple(_verb(child, legacy) for child in root)


def parse_document(
    document: str | bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
    legacy: bool = False,
) -> Document:
    """:func:`parse_response` as the executor takes it: the verbs and Plivo's names for
    their results (:data:`RESULT_PARAMS`)."""
    verbs = parse_response(document, max_bytes=max_bytes, max_depth=max_depth, legacy=legacy)
    return Document(verbs, RESULT_PARAMS)


# --- Plivo-specific values -------------------------------------------------------------------

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


_NO_STRS: tuple[str, ...] = ()
_NO_PAIRS: tuple[tuple[str, str], ...] = ()


# --- elements -----------------------------------------------------------------------------

_UNSUPPORTED = {"MultiPartyCall", "Stream", "Message", "GetSpeech", "SIPTransfer"}
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
    a = at.Attributes(el, "Speak", ("engine", "type", "method") if legacy else ())
    voice = a.get("voice", _voice, "WOMAN")
    language = a.get("language", at.language_tag, "en-US")
    loop = a.get("loop", at.loop_count, 1)
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
    a = at.Attributes(el, "Play")
    loop = a.get("loop", at.loop_count, 1)
    a.done()
    raw = at.body(el, "Play", "the URL of a WAV or MP3 file")
    try:
        url = at.media_url(raw)
    except ValueError as exc:
        raise XmlAppError(f"{exc} (got {raw!r})", element="Play") from None
    return Play(url=url, loop=loop)


def _wait(el: ET.Element, legacy: bool) -> Wait:
    a = at.Attributes(el, "Wait")
    w = Wait(
        length=a.get("length", at.integer(1), 1),
        silence=a.get("silence", at.boolean, False),
        min_silence=a.get("minSilence", at.integer(1), 2000),
        beep=a.get("beep", at.boolean, False),
    )
    a.done()
    at.no_children(el, "Wait")
    at.no_text(el, "Wait")
    return w


def _prompts(el: ET.Element, name: str, legacy: bool) -> tuple[Prompt, ...]:
    at.no_text(el, name)
    out: list[Prompt] = []
    for child in el:
        builder = _PROMPTS.get(child.tag)
        if builder is None:
            _refuse(child.tag, name)
        else:
            out.append(builder(child, legacy))
    return tuple(out)


def _get_digits(el: ET.Element, legacy: bool) -> GetDigits:
    a = at.Attributes(el, "GetDigits")
    v = GetDigits(
        action=a.get("action", at.optional_url, None),
        method=a.get("method", at.http_method, "POST"),
        timeout=a.get("timeout", at.integer(1), 5),
        digit_timeout=a.get("digitTimeout", at.integer(1), 2),
        finish_on_key=a.get("finishOnKey", at.finish_key, "#"),
        num_digits=a.get("numDigits", at.integer(1), 99),
        retries=a.get("retries", at.integer(1), 1),
        valid_digits=a.get("validDigits", at.valid_digits, "1234567890*#"),
        invalid_digits_sound=a.get(
            "invalidDigitsSound", lambda r: at.media_url(r) if r.strip() else None, None
        ),
        redirect=a.get("redirect", at.boolean, True),
        play_beep=a.get("playBeep", at.boolean, False),
        log=a.get("log", at.boolean, True),
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
    a = at.Attributes(el, "GetInput")
    action = a.get("action", at.optional_url, None)
    if action is None:
        raise a.error("action", "is required")
    v = GetInput(
        action=action,
        method=a.get("method", at.http_method, "POST"),
        input_type=a.get("inputType", _input_type, "dtmf"),
        execution_timeout=a.get("executionTimeout", at.integer(5, 60), 15),
        digit_end_timeout=a.get("digitEndTimeout", at.timeout_or_auto(2, 10), None),
        speech_end_timeout=a.get("speechEndTimeout", at.timeout_or_auto(2, 10), None),
        finish_on_key=a.get("finishOnKey", at.finish_key, "#"),
        num_digits=a.get("numDigits", at.integer(1, 32), 32),
        language=a.get("language", at.language_tag, "en-US"),
        hints=a.get("hints", at.text(10_000), ""),
        speech_model=a.get("speechModel", at.text(64), "default"),
        interim_speech_results_callback=a.get(
            "interimSpeechResultsCallback", at.optional_url, None
        ),
        interim_speech_results_callback_method=a.get(
            "interimSpeechResultsCallbackMethod", at.http_method, "POST"
        ),
        profanity_filter=a.get("profanityFilter", at.boolean, False),
        redirect=a.get("redirect", at.boolean, True),
        log=a.get("log", at.boolean, True),
        children=_prompts(el, "GetInput", legacy),
    )
    a.done()
    return v


def _dtmf(el: ET.Element, legacy: bool) -> DTMF:
    a = at.Attributes(el, "DTMF")
    async_ = a.get("async", at.boolean, True)
    a.done()
    raw = at.body(el, "DTMF", "the digits to send")
    try:
        digits = at.send_digits(raw)
    except ValueError as exc:
        raise XmlAppError(f"{exc} (got {raw!r})", element="DTMF") from None
    return DTMF(digits=digits, async_=async_)


def _hangup_reason(raw: str) -> str:
    s = raw.strip()
    if s not in ("", "rejected", "busy"):
        raise ValueError("must be 'rejected' or 'busy'")
    return s


def _hangup(el: ET.Element, legacy: bool) -> Hangup:
    a = at.Attributes(el, "Hangup")
    v = Hangup(
        reason=a.get("reason", _hangup_reason, ""), schedule=a.get("schedule", at.integer(0), 0)
    )
    a.done()
    at.no_children(el, "Hangup")
    at.no_text(el, "Hangup")
    return v


def _redirect(el: ET.Element, legacy: bool) -> Redirect:
    a = at.Attributes(el, "Redirect")
    method = a.get("method", at.http_method, "POST")
    a.done()
    raw = at.body(el, "Redirect", "the URL to fetch")
    try:
        url = at.http_url(raw)
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
    a = at.Attributes(el, "Record", ("filePath", "fileName") if legacy else ())
    for attr in ("recordSession", "startOnDialAnswer") + (("bothLegs",) if legacy else ()):
        if a.get(attr, at.boolean, False):
            raise XmlAppError(
                "background recording is not supported",
                element="Record",
                attribute=attr,
                cause=CAUSE_NOT_IMPLEMENTED,
            )
    v = Record(
        action=a.get("action", at.optional_url, None),
        method=a.get("method", at.http_method, "POST"),
        file_format=a.get("fileFormat", _file_format, "mp3"),
        redirect=a.get("redirect", at.boolean, True),
        timeout=a.get("timeout", at.integer(1), 15),
        max_length=a.get("maxLength", at.integer(1), 60),
        play_beep=a.get("playBeep", at.boolean, True),
        finish_on_key=a.get("finishOnKey", at.key_set, "1234567890*#" if legacy else "#"),
        record_channel_type=a.get("recordChannelType", _channel_type, "stereo"),
        transcription_type=a.get("transcriptionType", lambda r: r.strip() or None, None),
        transcription_url=a.get("transcriptionUrl", at.optional_url, None),
        transcription_method=a.get("transcriptionMethod", at.http_method, "POST"),
        callback_url=a.get("callbackUrl", at.optional_url, None),
        callback_method=a.get("callbackMethod", at.http_method, "POST"),
    )
    a.done()
    at.no_children(el, "Record")
    at.no_text(el, "Record")
    return v


_NUMBER_RE = re.compile(r"\+?[0-9*#]{1,32}")
_SIP_URI_RE = re.compile(r"sips?:[^\s<>\"',|]{1,250}", re.IGNORECASE)


def _number(el: ET.Element, legacy: bool) -> Number:
    legacy_attrs = ("gatewayCodecs", "gatewayTimeouts", "gatewayRetries", "extraDialString")
    a = at.Attributes(el, "Number", legacy_attrs if legacy else ())
    send_digits = a.get("sendDigits", at.send_digits, "")
    on_pre = a.get("sendOnPreanswer", at.boolean, False)
    a.get("sendDigitsMode", lambda r: r, "")  # Plivo: "dtmf"/"rfc2833"-like hint; media picks
    gateways: tuple[str, ...] = ()
    if legacy:
        gateways = a.get(
            "gateways",
            lambda r: tuple(g.strip().rstrip("/") for g in r.split(",") if g.strip()),
            (),
        )
    a.done()
    raw = at.body(el, "Number", "the number to dial")
    if not _NUMBER_RE.fullmatch(raw):
        raise XmlAppError(
            f"must be a phone number such as +14155550100 (got {raw!r})", element="Number"
        )
    return Number(number=raw, send_digits=send_digits, send_on_preanswer=on_pre, gateways=gateways)


def _user(el: ET.Element, legacy: bool) -> User:
    a = at.Attributes(el, "User")
    v = dict(
        send_digits=a.get("sendDigits", at.send_digits, ""),
        send_on_preanswer=a.get("sendOnPreanswer", at.boolean, False),
        sip_headers=a.get("sipHeaders", _sip_headers, _NO_PAIRS),
    )
    a.done()
    raw = at.body(el, "User", "a SIP URI")
    if not _SIP_URI_RE.fullmatch(raw):
        raise XmlAppError(
            f"must be a SIP URI such as sip:alice@example.com (got {raw!r})", element="User"
        )
    return User(uri=raw, **v)  # type: ignore[arg-type]


def _dial_music(raw: str) -> str | None:
    s = raw.strip()
    if not s:
        return None
    return "real" if s.lower() == "real" else at.http_url(s)


def _dial(el: ET.Element, legacy: bool) -> Dial:
    a = at.Attributes(el, "Dial")
    kwargs = dict(
        action=a.get("action", at.optional_url, None),
        method=a.get("method", at.http_method, "POST"),
        hangup_on_star=a.get("hangupOnStar", at.boolean, False),
        time_limit=a.get("timeLimit", at.integer(1), 14_400),
        timeout=a.get("timeout", at.integer(1), 30),
        caller_id=a.get("callerId", at.caller_id, None),
        caller_name=a.get("callerName", lambda r: at.text(50)(r.strip()) or None, None),
        confirm_sound=a.get("confirmSound", at.optional_url, None),
        confirm_key=a.get("confirmKey", lambda r: at.single_key(r) if r.strip() else None, None),
        confirm_timeout=a.get("confirmTimeout", at.integer(1), 120),
        dial_music=a.get("dialMusic", _dial_music, None),
        callback_url=a.get("callbackUrl", at.optional_url, None),
        callback_method=a.get("callbackMethod", at.http_method, "POST"),
        redirect=a.get("redirect", at.boolean, True),
        digits_match=a.get("digitsMatch", at.digit_patterns, _NO_STRS),
        digits_match_b_leg=a.get("digitsMatchBLeg", at.digit_patterns, _NO_STRS),
        sip_headers=a.get("sipHeaders", _sip_headers, _NO_PAIRS),
    )
    a.done()
    at.no_text(el, "Dial")
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


def _sound(raw: str) -> str:
    """``enterSound``/``exitSound``: ``beep:1``, ``beep:2``, a sound URL, or empty (none)."""
    s = raw.strip()
    if not s or s in ("beep:1", "beep:2"):
        return s
    return at.media_url(s)


#: ``recordFileFormat`` values: the files this softswitch writes.
_CONFERENCE_FORMATS = ("mp3", "wav")


def _conference(el: ET.Element, legacy: bool) -> Conference:
    """Plivo's ``<Conference>`` (the framework's attributes too; its ``recordFilePath`` and
    ``recordFileName`` start a recording in our recordings directory, named
    ``recordFileName``)."""
    legacy_only = ("recordFilePath", "recordFileName") if legacy else ()
    a = at.Attributes(el, "Conference")
    record_path = a.get("recordFilePath", str, "") if legacy_only else ""
    file_name = a.get("recordFileName", recording_stem, None) if legacy_only else None
    fmt = a.get("recordFileFormat", lambda r: r.strip().lower(), "mp3")
    if fmt not in _CONFERENCE_FORMATS:
        raise a.error("recordFileFormat", f"must be mp3 or wav (got {fmt!r})")
    floor = a.get("floorEvent", at.boolean, False)
    verb = Conference(
        name=at.body(el, "Conference", "a room name"),
        muted=a.get("muted", at.boolean, False),
        enter_sound=a.get("enterSound", _sound, ""),
        exit_sound=a.get("exitSound", _sound, ""),
        start_on_enter=a.get("startConferenceOnEnter", at.boolean, True),
        end_on_exit=a.get("endConferenceOnExit", at.boolean, False),
        stay_alone=a.get("stayAlone", at.boolean, True),
        wait_sound=a.get("waitSound", at.optional_url, None),
        wait_method=a.get("waitMethod", at.http_method, "POST"),
        max_members=a.get("maxMembers", at.integer(1, 200), 200),
        time_limit=a.get("timeLimit", at.integer(0), 0 if legacy else 86_400),
        hangup_on_star=a.get("hangupOnStar", at.boolean, False),
        record=a.get("record", at.boolean, False) or bool(record_path.strip()) or bool(file_name),
        record_file_name=file_name,
        record_file_format=fmt,
        record_when_alone=a.get("recordWhenAlone", at.boolean, False),
        # Plivo: enterSound, exitSound and waitSound URLs answer XML (Play, Speak, Wait).
        sounds_are_documents=True,
        action=a.get("action", at.optional_url, None),
        method=a.get("method", at.http_method, "POST"),
        redirect=a.get("redirect", at.boolean, True),
        callback_url=a.get("callbackUrl", at.optional_url, None),
        callback_method=a.get("callbackMethod", at.http_method, "POST"),
        digits_match=a.get("digitsMatch", at.digit_patterns, _NO_STRS),
        floor_event=floor,
        relay_dtmf=a.get("relayDTMF", at.boolean, True),
        status_events=frozenset(
            {"enter", "exit", "digits", "record"} | ({"floor"} if floor else set())
        ),
    )
    a.done()
    return verb


def _pre_answer(el: ET.Element, legacy: bool) -> PreAnswer:
    a = at.Attributes(el, "PreAnswer")
    a.done()
    at.no_text(el, "PreAnswer")
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
    "Conference": _conference,
    "PreAnswer": _pre_answer,
}
_ALL_KNOWN = set(_TOP_LEVEL) | {"Number", "User", "Response"} | _UNSUPPORTED

# --- the executor on Plivo XML --------------------------------------------------------------


class XmlApplication(Application):
    """Runs a call's Plivo XML (``legacy=True``: the framework's RESTXML, see
    :func:`parse_response`). Every other option is :class:`~softswitch.app.executor.Application`'s.
    One instance per call; ``start()`` or ``run()`` once."""

    def __init__(self, call: CallControl, *, legacy: bool = False, **options: Any) -> None:
        super().__init__(
            call, parse_document=functools.partial(parse_document, legacy=legacy), **options
        )
        self.legacy = legacy


__all__ = [
    "CAUSE_FETCH_FAILED",
    "CAUSE_INVALID_XML",
    "CAUSE_NOT_IMPLEMENTED",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "MAX_SPEAK_CHARS",
    "RESULT_PARAMS",
    "XmlAppError",
    "XmlApplication",
    "conference_params",
    "parse_document",
    "parse_response",
]
