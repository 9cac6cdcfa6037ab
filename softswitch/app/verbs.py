"""Call-application verbs as small frozen dataclasses, whatever vocabulary they were written in.

A vocabulary's parser (each API dialect brings its own) turns a document into a
:class:`Document`: a tuple of these verbs plus the names under which that vocabulary reports
verb results (:class:`ResultParams`). The executor (:mod:`softswitch.app.executor`) runs them
against a call. Every field holds an already validated, typed value, so the executor never
looks at raw attribute strings; the parser sets every field (the defaults here are
conveniences for tests and callers, and match the vocabularies this runner executes today).
Times are in seconds unless the field name says ``_ms``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

#: ``loop="0"`` means "repeat until the call ends"; the runner caps it at this many rounds so
#: a loop is always bounded even if nothing else stops it.
MAX_LOOPS = 10_000

#: DTMF keys a caller can press (RFC 4733 §3.2 events 0-15).
DTMF_KEYS = "0123456789*#ABCD"


@dataclass(frozen=True, slots=True)
class Speak:
    """Text to speech. ``loop == 0`` repeats until the call ends (bounded by ``MAX_LOOPS``).

    ``voice`` is ``WOMAN``/``MAN`` (or a Polly/flite voice name, mapped to a gender);
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

    ``beep`` is only used when ``silence`` is false.
    """

    length: int = 1
    silence: bool = False
    min_silence: int = 2000  # milliseconds
    beep: bool = False


Prompt = Speak | Play | Wait


@dataclass(frozen=True, slots=True)
class GetDigits:
    """Collect DTMF digits while nested prompts play; the first digit interrupts the prompts.

    ``finish_on_key == ""`` means no finish key. ``retries`` is the total number of attempts.
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
    """Input that may be DTMF or speech. Only DTMF is collected (there is no speech recogniser
    in this softswitch): ``input_type`` is ``"dtmf"`` or ``"dtmf speech"`` (digits only are
    listened for). Speech-only fields are kept for the record and otherwise ignored.
    """

    action: str
    method: str = "POST"
    input_type: str = "dtmf"
    execution_timeout: int = 15
    digit_end_timeout: int | None = None  # None = "auto"
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

    ``async_`` (default true): go on to the next verb while digits play.
    """

    digits: str
    async_: bool = True


@dataclass(frozen=True, slots=True)
class Hangup:
    """End the call. ``reason`` is ``""``, ``rejected`` or ``busy``; ``schedule > 0`` hangs up
    that many seconds later and goes on with the next verb (the reason is then not used)."""

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
    none). Background recording is not a verb here (parsers refuse it); transcription fields
    are kept and not acted on."""

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

    ``gateways``: trunks to try in order (only some vocabularies name them); empty means the
    softswitch's own routing.
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
    #: Digest credentials (RFC 3261 §22) this B leg answers a 401/407 challenge with.
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True, slots=True)
class Dial:
    """Bridge the call to one or more B legs (dialled at once; the first to answer wins).

    ``timeout`` is the ring time for the B legs; ``time_limit`` caps the bridged call.
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
class Conference:
    """Put the call in a named conference room until it leaves (hangup, ``hangup_on_star``,
    kicked, the room ends); then ``action`` (if any) is told, and the document goes on.

    ``enter_sound``/``exit_sound``: ``""`` (none), ``beep:1``, ``beep:2`` or a sound URL, played
    to the whole room. ``start_on_enter``: the room starts (members are mixed) once a member
    with it is in; members before that hear ``wait_sound``. ``end_on_exit``: the room ends when
    this member leaves. ``stay_alone`` false: the room ends when this member is left alone.
    ``time_limit`` (0: none) caps the room from this member's entry. ``record``: the room's
    whole mix is recorded (``record_file_format``) until it ends. ``status_events``: which
    neutral events go to ``callback_url`` (enter, exit, floor, digits, record, start, end,
    mute); the vocabulary names them (:attr:`ResultParams.conference_params`).
    ``record_when_alone`` false: the recording skips the time the room has fewer than two
    members; ``record_trim``: its leading and trailing silence are left out;
    ``record_file_name``: its file name (without the format; else the recording id).
    ``sounds_are_documents``: the sound URLs (wait, enter, exit) are documents of
    ``Play``/``Speak``/``Wait`` verbs, fetched once (the wait sound with ``wait_method``, the
    others with POST); otherwise a URL ending in ``.wav``/``.mp3`` is audio and any other a
    document. ``coach``: the call uuid of the only member who hears this one (a whisper).
    ``member_time_limit`` (0: none): this member leaves (``time_limit``) after that long."""

    name: str
    muted: bool = False
    deaf: bool = False
    enter_sound: str = ""
    exit_sound: str = ""
    start_on_enter: bool = True
    end_on_exit: bool = False
    stay_alone: bool = True
    wait_sound: str | None = None
    wait_method: str = "POST"
    max_members: int = 200
    time_limit: int = 0
    hangup_on_star: bool = False
    record: bool = False
    record_file_format: str = "mp3"
    record_when_alone: bool = True
    record_trim: bool = False
    record_file_name: str | None = None
    sounds_are_documents: bool = False
    coach: str | None = None
    member_time_limit: int = 0
    action: str | None = None
    method: str = "POST"
    redirect: bool = True
    callback_url: str | None = None
    callback_method: str = "POST"
    digits_match: tuple[str, ...] = ()
    floor_event: bool = False
    relay_dtmf: bool = True
    status_events: frozenset[str] = frozenset({"enter", "exit", "digits", "record"})


@dataclass(frozen=True, slots=True)
class ConferenceEvent:
    """One thing that happened to a conference member, in neutral words, for the vocabulary
    to name (:attr:`ResultParams.conference_params`). ``action``: enter, exit, floor,
    digits, record, start, end, mute, unmute, hold, unhold, speaking, stopped-speaking,
    result."""

    action: str
    room: str
    room_uuid: str
    member_id: str
    call_uuid: str
    members: int = 0
    muted: bool = False
    deaf: bool = False
    hold: bool = False
    digits: str = ""
    record_url: str = ""
    recording_id: str = ""
    recording_duration_s: int = 0
    reason: str = ""
    #: the ``result``: seconds the member was in the room.
    duration_s: int = 0


@dataclass(frozen=True, slots=True)
class PreAnswer:
    """Early-media verbs for an inbound call before it is answered (183 with SDP; the first
    verb after it answers the call).

    Outbound calls are already answered when their XML runs, so the executor accepts
    ``<PreAnswer>`` there and runs nothing.
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
    | Conference
    | PreAnswer
)


@dataclass(frozen=True, slots=True)
class ResultParams:
    """The names under which a vocabulary reports verb results to an ``action`` URL.

    The executor computes the values (plain strings, as they go into a form body) and posts
    each under the name given here; a name set to ``None`` is not posted. The parameters
    every request carries (call id, from, to, status...) come from the call
    (:meth:`~softswitch.app.control.CallControl.base_params`), not from here.
    """

    # GetDigits / GetInput
    digits: str | None
    """The digits collected (Record: the finish key that stopped the recording)."""
    input_type: str | None
    """GetInput only: the kind of input collected (always ``dtmf`` here)."""
    # Record
    record_url: str | None
    recording_id: str | None
    recording_duration_s: str | None
    recording_duration_ms: str | None
    recording_start_ms: str | None
    recording_end_ms: str | None
    recording_file_format: str | None
    # Dial
    dial_status: str | None
    """The B leg's outcome: completed, busy, failed, timeout or no-answer."""
    dial_hangup_cause: str | None
    dial_ring_status: str | None
    """``true`` when a B leg rang, else ``false``."""
    dial_a_leg_uuid: str | None
    dial_b_leg_uuid: str | None
    dial_duration_s: str | None = None
    """Seconds the answered B leg was connected (``0`` when none answered)."""
    dial_status_words: tuple[tuple[str, str], ...] = ()
    """The vocabulary's own word for some of ``dial_status``'s (e.g. ``timeout`` → ``no-answer``)."""
    call_id: Callable[[str], str] | None = None
    """How the vocabulary writes a call id (the B leg's uuid); with it, no B leg posts nothing."""
    conference_params: Callable[[ConferenceEvent], dict[str, str] | None] | None = None
    """A conference event in the vocabulary's names (None: not posted); ``result`` is what
    the ``action`` URL gets when the member leaves."""


@dataclass(frozen=True, slots=True)
class Document:
    """One parsed call-application document: its verbs, in order, and how its vocabulary
    names the results the executor reports."""

    verbs: tuple[Verb, ...]
    result_params: ResultParams
    relative_urls: bool = False
    """URLs in the verbs (``action``, ``Redirect``, ``Play``...) are references resolved against
    the document's own URL (RFC 3986 §5; ``""`` is the document itself). Without it an
    absolute path in ``Play`` is a local file."""


__all__ = [
    "DTMF",
    "DTMF_KEYS",
    "Conference",
    "ConferenceEvent",
    "MAX_LOOPS",
    "Dial",
    "Document",
    "GetDigits",
    "GetInput",
    "Hangup",
    "Number",
    "Play",
    "PreAnswer",
    "Prompt",
    "Record",
    "Redirect",
    "ResultParams",
    "Speak",
    "User",
    "Verb",
    "Wait",
]
