"""Plivo XML verbs as small frozen dataclasses.

The parser (:mod:`softswitch.xml.parser`) turns a ``<Response>`` document into a tuple of
these; the executor (:mod:`softswitch.xml.executor`) runs them against a call. Every field
holds an already validated, typed value with Plivo's documented default, so the executor
never looks at raw attribute strings.

Attribute names, defaults and ranges follow Plivo's XML reference (plivo.com/docs/voice/xml/)
and, where that page is silent, the open-source Plivo framework's RESTXML (``elements.py``):
the two are the same family. Times are in the unit Plivo documents (seconds unless the field
name says ``_ms``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Plivo ``loop="0"`` means "repeat until the call ends"; the framework caps it at this many
#: rounds so a loop is always bounded even if nothing else stops it.
MAX_LOOPS = 10_000

#: DTMF keys a caller can press (RFC 4733 §3.2 events 0-15).
DTMF_KEYS = "0123456789*#ABCD"


@dataclass(frozen=True, slots=True)
class Speak:
    """Text to speech. ``loop == 0`` repeats until the call ends (bounded by ``MAX_LOOPS``).

    ``voice`` is Plivo's ``WOMAN``/``MAN`` (or a Polly/legacy flite name, mapped to a gender);
    ``language`` a BCP 47 tag such as ``en-US``. Nested SSML tags are flattened to their text.
    """

    text: str
    voice: str = "WOMAN"
    language: str = "en-US"
    loop: int = 1


@dataclass(frozen=True, slots=True)
class Play:
    """Play a WAV or MP3 file from an http(s) URL, a ``file://`` URL or an absolute path."""

    url: str
    loop: int = 1


@dataclass(frozen=True, slots=True)
class Wait:
    """Pause ``length`` seconds; optionally end early on silence or on a voicemail beep.

    Plivo: ``beep`` is only used when ``silence`` is false.
    """

    length: int = 1
    silence: bool = False
    min_silence: int = 2000  # milliseconds
    beep: bool = False


Prompt = Speak | Play | Wait


@dataclass(frozen=True, slots=True)
class GetDigits:
    """Collect DTMF digits while nested prompts play; the first digit interrupts the prompts.

    ``finish_on_key == ""`` means no finish key (Plivo's ``""``/``none``). ``retries`` is the
    total number of attempts (Plivo and the framework's ``max_tries``).
    """

    action: str | None = None
    method: str = "POST"
    timeout: int = 5
    digit_timeout: int = 2
    finish_on_key: str = "#"
    num_digits: int = 99
    retries: int = 1
    valid_digits: str = "1234567890*#"
    invalid_digits_sound: str | None = None
    redirect: bool = True
    play_beep: bool = False
    log: bool = True
    children: tuple[Prompt, ...] = ()


@dataclass(frozen=True, slots=True)
class GetInput:
    """Plivo's newer input element. Only DTMF is collected: ``inputType="speech"`` alone is
    refused by the parser and ``"dtmf speech"`` is accepted but listens for digits only
    (there is no speech recogniser in this softswitch). Speech-only attributes are kept for
    the record and otherwise ignored.
    """

    action: str
    method: str = "POST"
    input_type: str = "dtmf"
    execution_timeout: int = 15
    digit_end_timeout: int | None = None  # None = Plivo's "auto"
    speech_end_timeout: int | None = None
    finish_on_key: str = "#"
    num_digits: int = 32
    language: str = "en-US"
    hints: str = ""
    speech_model: str = "default"
    interim_speech_results_callback: str | None = None
    interim_speech_results_callback_method: str = "POST"
    profanity_filter: bool = False
    redirect: bool = True
    log: bool = True
    children: tuple[Prompt, ...] = ()


@dataclass(frozen=True, slots=True)
class DTMF:
    """Send digits on the call, grammar of ``send_digits`` (``w`` 0.5 s, ``W`` 1 s, ``@ms``).

    ``async_`` (Plivo ``async``, default true): go on to the next verb while digits play.
    """

    digits: str
    async_: bool = True


@dataclass(frozen=True, slots=True)
class Hangup:
    """End the call. ``reason`` is ``""``, ``rejected`` or ``busy``; ``schedule > 0`` hangs up
    that many seconds later and goes on with the next verb (the reason is then not used,
    as in the framework)."""

    reason: str = ""
    schedule: int = 0


@dataclass(frozen=True, slots=True)
class Redirect:
    """Fetch XML from ``url`` and continue with it; the rest of this document is dropped."""

    url: str
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class Record:
    """Record the caller. ``finish_on_key`` holds every key that stops the recording ("" for
    none). ``record_session``/``start_on_dial_answer`` (background recording) are refused by
    the parser; transcription attributes are kept and not acted on."""

    action: str | None = None
    method: str = "POST"
    file_format: str = "mp3"
    redirect: bool = True
    timeout: int = 15
    max_length: int = 60
    play_beep: bool = True
    finish_on_key: str = "#"
    record_channel_type: str = "stereo"
    transcription_type: str | None = None
    transcription_url: str | None = None
    transcription_method: str = "POST"
    callback_url: str | None = None
    callback_method: str = "POST"


@dataclass(frozen=True, slots=True)
class Number:
    """A phone number to dial inside ``<Dial>``.

    ``gateways`` comes only from the framework's RESTXML (``Number@gateways``): trunks to try
    in order; empty means the softswitch's own routing.
    """

    number: str
    send_digits: str = ""
    send_on_preanswer: bool = False
    gateways: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class User:
    """A SIP URI to dial inside ``<Dial>``."""

    uri: str
    send_digits: str = ""
    send_on_preanswer: bool = False
    sip_headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Dial:
    """Bridge the call to one or more B legs (dialled at once; the first to answer wins).

    ``timeout`` is Plivo's ring time for the B leg (no documented default; the framework
    uses 30 s); ``time_limit`` caps the bridged call (default 14400 s).
    """

    numbers: tuple[Number | User, ...]
    action: str | None = None
    method: str = "POST"
    hangup_on_star: bool = False
    time_limit: int = 14_400
    timeout: int = 30
    caller_id: str | None = None
    caller_name: str | None = None
    confirm_sound: str | None = None
    confirm_key: str | None = None
    confirm_timeout: int = 120
    dial_music: str | None = None
    callback_url: str | None = None
    callback_method: str = "POST"
    redirect: bool = True
    digits_match: tuple[str, ...] = ()
    digits_match_b_leg: tuple[str, ...] = ()
    sip_headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class PreAnswer:
    """Early-media verbs for an inbound call before it is answered.

    Outbound calls (the only kind this softswitch places today) are already answered when
    their XML runs, so the executor accepts ``<PreAnswer>`` there and runs nothing.
    """

    children: tuple[Speak | Play | Wait | GetDigits | GetInput | Redirect | DTMF, ...] = field(
        default=()
    )


Verb = (
    Speak
    | Play
    | Wait
    | GetDigits
    | GetInput
    | DTMF
    | Hangup
    | Redirect
    | Record
    | Dial
    | PreAnswer
)

__all__ = [
    "DTMF",
    "DTMF_KEYS",
    "MAX_LOOPS",
    "Dial",
    "GetDigits",
    "GetInput",
    "Hangup",
    "Number",
    "Play",
    "PreAnswer",
    "Prompt",
    "Record",
    "Redirect",
    "Speak",
    "User",
    "Verb",
    "Wait",
]
