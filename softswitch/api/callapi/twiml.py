"""The TwiML vocabulary (RCML, DIALECTS.md §2.7): documents under ``<Response>`` parsed into
the neutral verbs of :mod:`softswitch.app.verbs`, with Twilio's names for the results the
executor posts (``Digits``, ``RecordingUrl``, ``DialCallStatus``).

Reading is the shared hardened one (:func:`softswitch.app.document.read_document`: bounded,
no DTD, depth-checked) and attribute values go through :mod:`softswitch.app.attributes`.

Supported: ``Say`` (voice, language, loop), ``Play`` (loop, or ``digits`` to send DTMF),
``Pause`` (length), ``Gather`` (DTMF: ``action``, ``method``, ``timeout``, ``numDigits``,
``finishOnKey``, nested ``Say``/``Play``/``Pause``), ``Hangup``, ``Redirect`` (method),
``Reject`` (reason), ``Record`` (action, method, timeout, maxLength, finishOnKey, playBeep,
recordingStatusCallback; WAV; ``transcribe`` accepted, never transcribed), ``Dial`` (a
number as text, ``Number`` with sendDigits, ``Sip`` with username/password; action, method,
timeout, timeLimit, callerId, hangupOnStar; the action gets ``DialCallStatus`` in Twilio's
words, ``DialCallSid``, ``DialCallDuration``), ``Dial`` with a ``Conference`` noun (the neutral
:class:`~softswitch.app.verbs.Conference`: muted, beep, startConferenceOnEnter,
endConferenceOnExit, waitUrl (an audio file or TwiML of Play/Say/Pause), maxParticipants, record="record-from-start",
statusCallback with statusCallbackEvent start/end/join/leave/mute/hold/speaker, posted with
``ConferenceSid``, ``FriendlyName``, ``StatusCallbackEvent``, ``Muted``, ``Hold``
(participants are held through the Participants resource, :mod:`.conference`); ``coach``
(the CallSid of the participant that alone hears this one); ``trim`` (trim-silence, the
default, or do-not-trim) for the recording; the Dial's ``timeLimit`` takes the participant
out of the room; the Dial's ``action`` then gets ``DialCallStatus`` (completed; failed for
a full room), ``DialCallDuration`` (seconds in the room), ``ConferenceSid`` and
``FriendlyName``). ``loop="0"`` repeats until the call
ends (bounded by :data:`~softswitch.app.verbs.MAX_LOOPS`). The rest of TwiML's verbs
(``Enqueue``, ``Queue``...) are refused with "not supported" before the first verb runs, which
sends the call to its ``FallbackUrl`` (or ends it with the error on the record).

URLs are references resolved against the document's URL (relative ``action``, ``Redirect``,
``Play``...; a ``Play`` of ``/x.wav`` is a URL on the document's server, not a local file);
a ``Gather`` without ``action`` posts its digits to the document's own URL, as Twilio does
(without digits it goes on with the next verb), and a ``Record`` without ``action`` its
``RecordingUrl`` (Twilio re-requests the document). Speech input is not supported.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from urllib.parse import urlsplit

from ...app import attributes as at
from ...app.document import (
    CAUSE_NOT_IMPLEMENTED,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_DEPTH,
    XmlAppError,
    read_document,
)
from ...app.verbs import (
    DTMF,
    Conference,
    ConferenceEvent,
    Dial,
    Document,
    GetDigits,
    Hangup,
    Number,
    Play,
    Prompt,
    Record,
    Redirect,
    ResultParams,
    Speak,
    User,
    Verb,
    Wait,
)
from .codes import call_sid, call_uuid_of

__all__ = ["MAX_SAY_CHARS", "RESULT_PARAMS", "SUPPORTED_VERBS", "parse_document", "parse_response"]

#: Longest text one ``<Say>`` may carry (bounds TTS time and memory per verb).
MAX_SAY_CHARS = 4000

#: Neutral conference events → Twilio's ``StatusCallbackEvent`` words.
_CONFERENCE_EVENTS = {
    "start": "conference-start",
    "end": "conference-end",
    "enter": "participant-join",
    "exit": "participant-leave",
    "mute": "participant-mute",
    "unmute": "participant-unmute",
    "hold": "participant-hold",
    "unhold": "participant-unhold",
    "speaking": "participant-speech-start",
    "stopped-speaking": "participant-speech-stop",
}
#: ``statusCallbackEvent`` words → the neutral events they subscribe to.
_STATUS_EVENTS = {
    "start": ("start",),
    "end": ("end",),
    "join": ("enter",),
    "leave": ("exit",),
    "mute": ("mute", "unmute"),
    "speaker": ("speaking", "stopped-speaking"),
    "hold": ("hold", "unhold"),
    "modify": (),
    "announcement": (),
}


def conference_sid(room_uuid: str) -> str:
    """A room's ``ConferenceSid``: ``CF`` and its uuid's 32 hex digits."""
    return "CF" + room_uuid.replace("-", "")


def conference_params(event: ConferenceEvent) -> dict[str, str] | None:
    """A conference event in Twilio's status callback names (None: Twilio has no such event)."""
    params = {"ConferenceSid": conference_sid(event.room_uuid), "FriendlyName": event.room}
    if event.action == "result":
        # The Dial's action after the participant left: the Dial's own words (a full room
        # never connected the call).
        params["DialCallStatus"] = "failed" if event.reason == "full" else "completed"
        params["DialCallDuration"] = str(event.duration_s)
        return params
    word = _CONFERENCE_EVENTS.get(event.action)
    if word is None:
        return None
    params["StatusCallbackEvent"] = word
    params["Muted"] = "true" if event.muted else "false"
    params["Hold"] = "true" if event.hold else "false"
    return params


#: Twilio's names for verb results posted to an ``action``.
RESULT_PARAMS = ResultParams(
    digits="Digits",
    input_type=None,
    record_url="RecordingUrl",
    recording_id=None,
    recording_duration_s="RecordingDuration",
    recording_duration_ms=None,
    recording_start_ms=None,
    recording_end_ms=None,
    recording_file_format=None,
    dial_status="DialCallStatus",
    dial_hangup_cause=None,
    dial_ring_status=None,
    dial_a_leg_uuid=None,
    dial_b_leg_uuid="DialCallSid",
    dial_duration_s="DialCallDuration",
    # Twilio's DialCallStatus: completed, busy, no-answer, failed, canceled (no "timeout").
    dial_status_words=(("timeout", "no-answer"),),
    call_id=call_sid,
    conference_params=conference_params,
)

#: TwiML voice verbs this softswitch does not run (refused at parse time).
_UNSUPPORTED = {
    "Enqueue",
    "Leave",
    "Connect",
    "Start",
    "Stop",
    "Refer",
    "Pay",
    "Prompt",
    "Sms",
    "Message",
    "Echo",
    "Queue",
    "Client",
    "Application",
    "Sim",
}
_SSML_TAGS = {"break", "emphasis", "lang", "p", "phoneme", "prosody", "s", "say-as", "sub", "w"}


def parse_response(
    document: str | bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH
) -> tuple[Verb, ...]:
    """Parse one TwiML document into verbs, or raise :class:`XmlAppError` naming the place."""
    root = read_document(document, root_tag="Response", max_bytes=max_bytes, max_depth=max_depth)
    if root.attrib:
        raise XmlAppError(
            "takes no attributes", element="Response", attribute=next(iter(root.attrib))
        )
    at.no_text(root, "Response")
    return tuple(_verb(child) for child in root)


def parse_document(
    document: str | bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH
) -> Document:
    """:func:`parse_response` as the executor takes it, with :data:`RESULT_PARAMS`."""
    verbs = parse_response(document, max_bytes=max_bytes, max_depth=max_depth)
    return Document(verbs, RESULT_PARAMS, relative_urls=True)


def _url_ref(raw: str) -> str:
    """An absolute http(s) URL or a relative reference (RFC 3986 §4.2), resolved against the
    document's URL when the verb runs."""
    s = raw.strip()
    parts = urlsplit(s)
    if parts.scheme:
        return at.http_url(s)
    if any(c.isspace() for c in s) or len(s) > 2048:
        raise ValueError("must be an http(s) URL or a URL relative to the document's")
    return s


def _optional_ref(raw: str) -> str | None:
    return _url_ref(raw) if raw.strip() else None


def _media_ref(raw: str) -> str:
    """``Play``: an http(s) URL, a reference relative to the document, or a ``file://`` URL
    (a local file under the media directories)."""
    s = raw.strip()
    if urlsplit(s).scheme.lower() == "file":
        return at.media_url(s)
    return _url_ref(s)


def _refuse(tag: str, parent: str) -> None:
    if tag in _UNSUPPORTED:
        raise XmlAppError(
            "is a TwiML verb this softswitch does not support",
            element=tag,
            cause=CAUSE_NOT_IMPLEMENTED,
        )
    if tag in ("Number", "Sip"):
        raise XmlAppError("must be nested inside <Dial>", element=tag)
    if tag in _TOP_LEVEL or tag == "Response":
        raise XmlAppError(f"cannot be nested inside <{parent}>", element=tag)
    raise XmlAppError("unknown element (element names are case-sensitive)", element=tag)


def _verb(el: ET.Element) -> Verb:
    builder = _TOP_LEVEL.get(el.tag)
    if builder is None:
        _refuse(el.tag, "Response")
        raise AssertionError  # pragma: no cover - _refuse always raises
    return builder(el)


def _voice(raw: str) -> str:
    s = raw.strip()
    low = s.lower()
    if low == "man":
        return "MAN"
    if low in ("woman", "alice", ""):
        return "WOMAN"
    if re.fullmatch(r"Polly\.[A-Za-z]+(?:-Neural|-Generative)?", s):
        return s.replace("-Generative", "-Neural")
    if re.fullmatch(r"Google\.[A-Za-z]{2,3}-[A-Za-z]{2}-[A-Za-z0-9-]+", s):
        return "WOMAN"
    raise ValueError("must be 'man', 'woman', 'alice', a Polly.<Name> or a Google.<voice> voice")


def _say(el: ET.Element) -> Speak:
    a = at.Attributes(el, "Say")
    voice = a.get("voice", _voice, "WOMAN")
    language = a.get("language", at.language_tag, "en-US")
    loop = a.get("loop", at.loop_count, 1)
    a.done()
    stack = list(el)
    while stack:  # SSML is flattened to its text (espeak-ng speaks plain text)
        child = stack.pop()
        if child.tag not in _SSML_TAGS:
            raise XmlAppError("cannot be nested inside <Say>", element=child.tag)
        stack.extend(child)
    text = " ".join("".join(el.itertext()).split())
    if not text:
        raise XmlAppError("must contain the text to say", element="Say")
    if len(text) > MAX_SAY_CHARS:
        raise XmlAppError(f"text is longer than {MAX_SAY_CHARS} characters", element="Say")
    return Speak(text=text, voice=voice, language=language, loop=loop)


def _play(el: ET.Element) -> Play | DTMF:
    a = at.Attributes(el, "Play")
    loop = a.get("loop", at.loop_count, 1)
    digits = a.get("digits", at.send_digits, "")
    a.done()
    at.no_children(el, "Play")
    raw = (el.text or "").strip()
    if digits:
        if raw:
            raise XmlAppError(
                "takes either a URL or digits, not both", element="Play", attribute="digits"
            )
        return DTMF(digits=digits, async_=False)
    if not raw:
        raise XmlAppError(
            "must contain the URL of a WAV or MP3 file (or have digits)", element="Play"
        )
    try:
        url = _media_ref(raw)
    except ValueError as exc:
        raise XmlAppError(f"{exc} (got {raw!r})", element="Play") from None
    return Play(url=url, loop=loop)


def _pause(el: ET.Element) -> Wait:
    a = at.Attributes(el, "Pause")
    length = a.get("length", at.integer(1, 86_400), 1)
    a.done()
    at.no_children(el, "Pause")
    at.no_text(el, "Pause")
    return Wait(length=length)


def _input(raw: str) -> str:
    kinds = set(raw.split())
    if not kinds or not kinds <= {"dtmf", "speech"}:
        raise ValueError("must be 'dtmf', 'speech' or 'dtmf speech'")
    if "dtmf" not in kinds:
        raise ValueError("speech recognition is not supported; use 'dtmf'")
    return raw


def _gather(el: ET.Element) -> GetDigits:
    # Speech-only attributes are accepted and unused (only DTMF is gathered).
    a = at.Attributes(
        el,
        "Gather",
        (
            "language",
            "hints",
            "speechTimeout",
            "speechModel",
            "profanityFilter",
            "enhanced",
            "partialResultCallback",
            "partialResultCallbackMethod",
        ),
    )
    # No action: the digits go to the document's own URL ("" resolves to it).
    action = a.get("action", _optional_ref, None) or ""
    method = a.get("method", at.http_method, "POST")
    timeout = a.get("timeout", at.integer(1, 600), 5)
    num_digits = a.get("numDigits", at.integer(1, 99), 99)
    finish_on_key = a.get("finishOnKey", at.finish_key, "#")
    a.get("input", _input, "dtmf")
    if a.get("actionOnEmptyResult", at.boolean, False):
        raise a.error("actionOnEmptyResult", "'true' is not supported")
    a.done()
    at.no_text(el, "Gather")
    children: list[Prompt] = []
    for child in el:
        builder = _PROMPTS.get(child.tag)
        if builder is None:
            _refuse(child.tag, "Gather")
        else:
            prompt = builder(child)
            if isinstance(prompt, DTMF):
                raise XmlAppError(
                    "digits cannot be sent inside <Gather>", element="Play", attribute="digits"
                )
            children.append(prompt)
    return GetDigits(
        action=action,
        method=method,
        timeout=timeout,
        digit_timeout=timeout,
        finish_on_key=finish_on_key,
        num_digits=num_digits,
        retries=1,
        valid_digits="0123456789*#",
        invalid_digits_sound=None,
        redirect=True,
        play_beep=False,
        log=True,
        children=tuple(children),
    )


def _hangup(el: ET.Element) -> Hangup:
    at.Attributes(el, "Hangup").done()
    at.no_children(el, "Hangup")
    at.no_text(el, "Hangup")
    return Hangup()


def _reject_reason(raw: str) -> str:
    s = raw.strip()
    if s not in ("rejected", "busy"):
        raise ValueError("must be 'rejected' or 'busy'")
    return s


def _reject(el: ET.Element) -> Hangup:
    a = at.Attributes(el, "Reject")
    reason = a.get("reason", _reject_reason, "rejected")
    a.done()
    at.no_children(el, "Reject")
    at.no_text(el, "Reject")
    return Hangup(reason=reason)


def _redirect(el: ET.Element) -> Redirect:
    a = at.Attributes(el, "Redirect")
    method = a.get("method", at.http_method, "POST")
    a.done()
    raw = at.body(el, "Redirect", "the URL to fetch")
    try:
        url = _url_ref(raw)
    except ValueError as exc:
        raise XmlAppError(f"{exc} (got {raw!r})", element="Redirect") from None
    return Redirect(url=url, method=method)


def _record(el: ET.Element) -> Record:
    # transcribe/transcribeCallback are accepted and ignored: nothing is ever transcribed.
    a = at.Attributes(el, "Record", ("recordingStatusCallbackEvent", "trim", "transcribeCallback"))
    a.get("transcribe", at.boolean, False)
    v = Record(
        # No action: the recording goes to the document's own URL ("" resolves to it).
        action=a.get("action", _optional_ref, None) or "",
        method=a.get("method", at.http_method, "POST"),
        file_format="wav",
        redirect=True,
        timeout=a.get("timeout", at.integer(1, 3600), 5),
        max_length=a.get("maxLength", at.integer(1, 14_400), 3600),
        play_beep=a.get("playBeep", at.boolean, True),
        finish_on_key=a.get("finishOnKey", at.key_set, "1234567890*#"),
        record_channel_type="mono",
        callback_url=a.get("recordingStatusCallback", _optional_ref, None),
        callback_method=a.get("recordingStatusCallbackMethod", at.http_method, "POST"),
    )
    a.done()
    at.no_children(el, "Record")
    at.no_text(el, "Record")
    return v


_DIAL_NUMBER_RE = re.compile(r"\+?[0-9*#]{1,32}")
_SIP_URI_RE = re.compile(r"sips?:[^\s<>\"',|]{1,250}", re.IGNORECASE)


def _dial_number(raw: str, send_digits: str = "") -> Number:
    if not _DIAL_NUMBER_RE.fullmatch(raw):
        raise XmlAppError(
            f"must be a phone number such as +14155550100 (got {raw!r})", element="Number"
        )
    return Number(number=raw, send_digits=send_digits)


def _credential(raw: str) -> str:
    """A digest username or password: printable, no quotes or backslashes (they go into a
    quoted-string of the Authorization header, RFC 3261 §25.1)."""
    if not 0 < len(raw) <= 128 or any(ord(c) < 0x20 or c in '"\\' for c in raw):
        raise ValueError("must be 1-128 printable characters without quotes or backslashes")
    return raw


def _status_events(raw: str) -> frozenset[str]:
    out: set[str] = set()
    for word in raw.replace(",", " ").split():
        if word not in _STATUS_EVENTS:
            raise ValueError(f"unknown event {word!r}: use {' '.join(_STATUS_EVENTS)}")
        out.update(_STATUS_EVENTS[word])
    return frozenset(out)


def _beep(raw: str) -> tuple[str, str]:
    """``beep``: true (enter and exit), false, onEnter or onExit → (enter, exit) sounds."""
    s = raw.strip()
    table = {
        "true": ("beep:1", "beep:1"),
        "false": ("", ""),
        "onEnter": ("beep:1", ""),
        "onExit": ("", "beep:1"),
    }
    if s not in table:
        raise ValueError("must be true, false, onEnter or onExit")
    return table[s]


def _coach(raw: str) -> str:
    """``coach``: the ``CallSid`` of the participant this one coaches (a call uuid here)."""
    uid = call_uuid_of(raw.strip())
    if uid is None:
        raise ValueError("must be the CallSid (CA + 32 hex digits) of a participant")
    return uid


def _conference(
    el: ET.Element,
    dial: at.Attributes,
    action: str | None,
    method: str,
    hangup_on_star: bool,
    time_limit: int,
) -> Conference:
    """``<Dial><Conference>``: the room named by the noun's text; the Dial's ``timeLimit``
    takes the participant out of the room (the document goes on with the Dial's action)."""
    c = at.Attributes(
        el,
        "Conference",
        (
            "region",
            "jitterBufferSize",
            "participantLabel",
            "eventCallbackUrl",
            "recordingStatusCallback",
            "recordingStatusCallbackMethod",
            "recordingStatusCallbackEvent",
        ),
    )
    enter, exit_ = c.get("beep", _beep, ("beep:1", "beep:1"))
    record = c.get("record", lambda r: r.strip(), "do-not-record")
    if record not in ("do-not-record", "record-from-start"):
        raise c.error("record", "must be do-not-record or record-from-start")
    trim = c.get("trim", lambda r: r.strip(), "trim-silence")
    if trim not in ("trim-silence", "do-not-trim"):
        raise c.error("trim", "must be trim-silence or do-not-trim")
    coach = c.get("coach", _coach, None)
    verb = Conference(
        name=at.body(el, "Conference", "a room name"),
        muted=c.get("muted", at.boolean, False),
        enter_sound=enter,
        exit_sound=exit_,
        start_on_enter=c.get("startConferenceOnEnter", at.boolean, True),
        end_on_exit=c.get("endConferenceOnExit", at.boolean, False),
        wait_sound=c.get("waitUrl", _optional_ref, None),
        wait_method=c.get("waitMethod", at.http_method, "POST"),
        max_members=c.get("maxParticipants", at.integer(2, 250), 250),
        time_limit=0,
        member_time_limit=time_limit,
        hangup_on_star=hangup_on_star,
        record=record == "record-from-start",
        record_file_format="wav",
        record_trim=trim == "trim-silence",
        coach=coach,
        action=action,
        method=method,
        callback_url=c.get("statusCallback", _optional_ref, None),
        callback_method=c.get("statusCallbackMethod", at.http_method, "POST"),
        status_events=c.get("statusCallbackEvent", _status_events, frozenset({"start", "end"})),
    )
    c.done()
    return verb


def _dial(el: ET.Element) -> Dial | Conference:
    a = at.Attributes(el, "Dial", ("ringTone", "answerOnBridge", "recordingStatusCallbackEvent"))
    if a.get("record", lambda r: r.strip(), "do-not-record") not in ("do-not-record", "false", ""):
        raise a.error("record", "recording a dialled call is not supported")
    kwargs = dict(
        action=a.get("action", _optional_ref, None),
        method=a.get("method", at.http_method, "POST"),
        timeout=a.get("timeout", at.integer(5, 600), 30),
        time_limit=a.get("timeLimit", at.integer(1, 14_400), 14_400),
        caller_id=a.get("callerId", at.caller_id, None),
        hangup_on_star=a.get("hangupOnStar", at.boolean, False),
    )
    a.done()
    rooms = [child for child in el if child.tag == "Conference"]
    if rooms:
        if len(el) > 1 or (el.text or "").strip() or (rooms[0].tail or "").strip():
            raise XmlAppError("a <Conference> must be the only noun of its <Dial>", element="Dial")
        return _conference(
            rooms[0],
            a,
            kwargs["action"],  # type: ignore[arg-type]
            kwargs["method"],  # type: ignore[arg-type]
            bool(kwargs["hangup_on_star"]),
            int(kwargs["time_limit"]),  # type: ignore[arg-type]
        )
    numbers: list[Number | User] = []
    text = (el.text or "").strip()
    if text:
        numbers.append(_dial_number(text))
    for child in el:
        if (child.tail or "").strip():
            raise XmlAppError("must not mix text and nouns", element="Dial")
        if child.tag == "Number":
            n = at.Attributes(
                child,
                "Number",
                ("statusCallback", "statusCallbackMethod", "statusCallbackEvent", "url", "method"),
            )
            digits = n.get("sendDigits", at.send_digits, "")
            n.done()
            numbers.append(_dial_number(at.body(child, "Number", "the number to dial"), digits))
        elif child.tag == "Sip":
            n = at.Attributes(
                child,
                "Sip",
                ("statusCallback", "statusCallbackMethod", "statusCallbackEvent", "url", "method"),
            )
            username = n.opt("username", _credential)
            password = n.opt("password", _credential)
            if password is not None and username is None:
                raise n.error("password", "needs a username")
            n.done()
            raw = at.body(child, "Sip", "a SIP URI")
            if not _SIP_URI_RE.fullmatch(raw):
                raise XmlAppError(
                    f"must be a SIP URI such as sip:alice@example.com (got {raw!r})", element="Sip"
                )
            numbers.append(User(uri=raw, username=username, password=password))
        else:
            _refuse(child.tag, "Dial")
    if not numbers:
        raise XmlAppError("must contain a number, a <Number> or a <Sip>", element="Dial")
    return Dial(numbers=tuple(numbers), **kwargs)  # type: ignore[arg-type]


_PROMPTS: dict[str, Callable[[ET.Element], Prompt | DTMF]] = {
    "Say": _say,
    "Play": _play,
    "Pause": _pause,
}
_TOP_LEVEL: dict[str, Callable[[ET.Element], Verb]] = {
    **_PROMPTS,
    "Gather": _gather,
    "Hangup": _hangup,
    "Reject": _reject,
    "Redirect": _redirect,
    "Record": _record,
    "Dial": _dial,
}
#: The verbs :func:`parse_response` accepts at the top level.
SUPPORTED_VERBS = tuple(_TOP_LEVEL)
