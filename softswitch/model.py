"""The dialect-neutral call model: what a dialect builds once from a request (:class:`CallSpec`),
how a call ended (:class:`CallEnd`), and the errors the core raises.

A dialect (a package under ``softswitch.api``) parses and validates its request into a frozen
:class:`CallSpec` at the HTTP edge; the core never sees a request dict or a dialect's
parameter names. Values are typed (enums, numbers, parsed settings), never strings to be
parsed again. The core raises the domain errors below; each dialect maps them onto its own
HTTP status and error body.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

from media.dtmf import DtmfStep
from sip import causes

__all__ = [
    "AmdMode",
    "AppFailure",
    "AmdSettings",
    "CallEnd",
    "CallError",
    "CallNotAnswered",
    "CallNotFound",
    "CallSpec",
    "CallbackEvent",
    "DialAttempt",
    "DigitPlan",
    "EndReason",
    "ForkGroup",
    "HangupSource",
    "HttpMethod",
    "InvalidSpec",
    "MediaUnavailable",
    "OperationFailed",
    "QueueFull",
    "ShuttingDown",
    "Timers",
    "Webhook",
]


class HttpMethod(enum.StrEnum):
    GET = "GET"
    POST = "POST"


@dataclass(frozen=True, slots=True)
class AppFailure:
    """Why the answer document failed, for the fallback fetch (a dialect may report it).

    ``kind``: ``http_status`` (the server answered non-2xx), ``connection`` (no answer:
    refused, reset, timed out), ``content_type`` (a body that is not a document, by its
    Content-Type), ``document`` (not a valid document of the dialect's vocabulary)."""

    kind: str
    url: str
    detail: str = ""

    HTTP_STATUS: ClassVar[str] = "http_status"
    CONNECTION: ClassVar[str] = "connection"
    CONTENT_TYPE: ClassVar[str] = "content_type"
    DOCUMENT: ClassVar[str] = "document"


@dataclass(frozen=True, slots=True)
class Webhook:
    """A URL the call fetches or notifies, with its HTTP method."""

    url: str
    method: HttpMethod = HttpMethod.POST


class AmdMode(enum.Enum):
    """What answering-machine detection does with its decision."""

    #: Report the decision (in the answer fetch, or to the detection webhook).
    DETECT = "detect"
    #: Report it, and hang up a call answered by a machine.
    HANGUP = "hangup"


@dataclass(frozen=True, slots=True)
class AmdSettings:
    """Answering-machine detection on one call.

    ``params`` is the media engine's settings object (:class:`media.amd.AmdParams`), built
    and validated by the dialect. Without ``webhook`` the answer fetch waits for the decision
    (at most ``params.total_ms``; for a machine, and :attr:`waits_for_message_end`, for the end
    of its greeting); with it the application starts at once and the decision is posted to the
    webhook.
    """

    mode: AmdMode
    params: Any
    webhook: Webhook | None = None

    @property
    def window_s(self) -> float:
        return float(getattr(self.params, "total_ms", 5000)) / 1000.0

    @property
    def waits_for_message_end(self) -> bool:
        """A machine's decision is followed by the end of its greeting
        (``params.message_end_silence_ms``): the sync answer fetch and the webhook wait for
        it (at most ``params.beep_wait_ms`` from the answer)."""
        return bool(getattr(self.params, "message_end_silence_ms", 0))

    @property
    def message_end_s(self) -> float:
        return float(getattr(self.params, "beep_wait_ms", 30000)) / 1000.0


@dataclass(frozen=True, slots=True)
class DigitPlan:
    """DTMF sent on the call: the validated ``send_digits`` text (the media engine's grammar,
    ``1w2W3@300``), on answer or already in early media."""

    digits: str
    #: ``digits`` parsed once by the dialect (``media.dtmf.DtmfStep``), tone lengths resolved.
    steps: tuple[DtmfStep, ...]
    on_preanswer: bool = False


@dataclass(frozen=True, slots=True)
class Timers:
    """Seconds. ``time_limit`` counts from the answer, ``hangup_on_ring`` from the first 18x
    (or the answer, when none came), ``ring_timeout`` bounds the ringing (the leg enforces it)."""

    ring_timeout: float
    time_limit: float | None = None
    hangup_on_ring: float | None = None
    #: The cause a hangup_on_ring hangup carries (its BYE/CANCEL Reason and the end cause):
    #: one dialect reports ALLOTTED_TIMEOUT, another ORIGINATOR_CANCEL (each its own default).
    hangup_on_ring_cause: str = causes.ALLOTTED_TIMEOUT


class CallbackEvent(enum.Enum):
    """The moments the core notifies or fetches a call's URLs; a dialect names them."""

    #: The INVITE went out (status-callback dialects).
    INITIATED = "initiated"
    #: The first 18x.
    RING = "ring"
    #: The answer document fetch (also the fallback fetch).
    ANSWER = "answer"
    #: The 200 OK, as a notification (status-callback dialects; not the document fetch).
    ANSWERED = "answered"
    MACHINE_DETECTION = "machine_detection"
    HANGUP = "hangup"
    #: Requests the running application makes (actions, redirects, transfers).
    APPLICATION = "application"


@dataclass(frozen=True, slots=True)
class DialAttempt:
    """One INVITE of a call: through ``gateway`` (a configured trunk by name; None: the user
    agent's routing), ringing at most ``ring_timeout`` seconds (None: the spec's).

    ``target`` replaces the call's destination for this attempt (a SIP address the dialect
    built). ``fail_cause`` marks an attempt the dialect already knows cannot be placed: it
    fails at once with that cause, without an INVITE. ``codecs`` restricts this attempt's
    SDP offer to those codec names, in preference order (empty: the media engine's
    configured list)."""

    gateway: str | None = None
    ring_timeout: float | None = None
    target: str | None = None
    fail_cause: str | None = None
    codecs: tuple[str, ...] = ()
    #: Digest credentials (RFC 3261 §22) for a 401/407 challenge to this INVITE (None: the
    #: gateway's, if it has any).
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class ForkGroup:
    """A parallel fork: several calls (one :class:`CallSpec` each) ring at once; the first to
    answer wins and the others are cancelled (CANCEL while ringing, BYE for a 2xx that comes
    after the win). The runtime side is :mod:`softswitch.fork`.

    With ``confirm_sounds`` or ``confirm_key`` an answering member must first accept: it
    hears the sounds (audio URLs) and, with a key, must press it (DTMF, digits in order)
    within ``confirm_timeout`` seconds of its answer; the others keep ringing meanwhile.
    A member that hangs up or presses nothing in time is dropped (``NO_ANSWER``).
    ``reject_causes``: a member's attempt failing with one of these causes is final for
    that member (no failover to its next attempt); the rest of the group rings on."""

    confirm_sounds: tuple[str, ...] = ()
    confirm_key: str | None = None
    confirm_timeout: float = 20.0
    reject_causes: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.confirm_timeout <= 0:
            raise InvalidSpec("confirm_timeout", "must be > 0 seconds")
        if self.confirm_key is not None and not self.confirm_key:
            raise InvalidSpec("confirm_key", "must not be empty")


_K = TypeVar("_K")
_V = TypeVar("_V")


def _frozen(mapping: Mapping[_K, _V] | None) -> Mapping[_K, _V]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True, slots=True)
class CallSpec:
    """One originate request, parsed once by a dialect; one call per destination."""

    destinations: tuple[str, ...]
    from_: str
    answer: Webhook
    timers: Timers
    caller_name: str | None = None
    #: Extra SIP headers on the INVITE, already named as they go on the wire.
    sip_headers: Mapping[str, str] = field(default_factory=lambda: _frozen(None))
    #: A configured trunk by name (None: the user agent's prefix routing).
    gateway: str | None = None
    #: Failover: the INVITEs to try in order, each only when the one before failed without
    #: any 18x (no callback for a failed attempt). Empty: one attempt via ``gateway``.
    attempts: tuple[DialAttempt, ...] = ()
    digits: DigitPlan | None = None
    amd: AmdSettings | None = None
    fallback: Webhook | None = None
    #: The notifications the request subscribed to, each to its webhook: a ring URL and a
    #: hangup URL are RING and HANGUP; a status-callback dialect subscribes to INITIATED,
    #: RING, ANSWERED and HANGUP with one URL.
    notify: Mapping[CallbackEvent, Webhook] = field(default_factory=lambda: _frozen(None))
    parent_call_uuid: str | None = None
    error_if_parent_not_found: bool = False
    #: Name of the dialect that built it (stored with the call record).
    dialect: str = ""
    #: The request as the dialect stores it in the record (its own names; opaque to the core).
    record_params: Mapping[str, Any] = field(default_factory=lambda: _frozen(None))

    def __post_init__(self) -> None:
        if not self.destinations:
            raise InvalidSpec("to", "at least one destination is required")
        object.__setattr__(self, "sip_headers", _frozen(self.sip_headers))
        object.__setattr__(self, "record_params", _frozen(self.record_params))
        object.__setattr__(self, "notify", _frozen(self.notify))

    @property
    def is_bulk(self) -> bool:
        return len(self.destinations) > 1

    @property
    def ring(self) -> Webhook | None:
        return self.notify.get(CallbackEvent.RING)

    @property
    def hangup(self) -> Webhook | None:
        return self.notify.get(CallbackEvent.HANGUP)


class HangupSource(enum.Enum):
    """Who ended the call."""

    API = "api"
    #: This server: a timer, shutdown, machine detection.
    SYSTEM = "system"
    CALLEE = "callee"
    CALLER = "caller"
    #: The call application (a hangup verb).
    APPLICATION = "application"
    ERROR = "error"
    UNKNOWN = "unknown"


class EndReason(enum.Enum):
    """Why this side ended a call (None in :class:`CallEnd` when the far end or network did)."""

    API = "api"
    SHUTDOWN = "shutdown"
    TIME_LIMIT = "time_limit"
    #: A hangup scheduled over an API (legacy ``ScheduleHangup``).
    SCHEDULED_HANGUP = "scheduled_hangup"
    HANGUP_ON_RING = "hangup_on_ring"
    RING_TIMEOUT = "ring_timeout"
    ANSWER_URL_ERROR = "answer_url_error"
    ACTION_URL_ERROR = "action_url_error"
    INVALID_DOCUMENT = "invalid_answer_xml"
    END_OF_APPLICATION = "end_of_xml"
    INVALID_DESTINATION = "invalid_destination"
    MACHINE_DETECTED = "machine_detected"
    #: A parallel fork member: another member won, or it did not confirm in time.
    FORK_LOST = "fork_lost"


@dataclass(frozen=True, slots=True)
class CallEnd:
    """How a call ended: ``cause`` is a Q.850-derived name (:mod:`sip.causes`)."""

    cause: str
    source: HangupSource
    reason: EndReason | None = None
    sip_status: int | None = None
    answered: bool = False


# --- domain errors ---------------------------------------------------------------------------


class CallError(Exception):
    """Base of what the core refuses; a dialect maps each kind to its own answer."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidSpec(CallError):
    """A request value the dialect (or the core) cannot accept; ``param`` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class CallNotFound(CallError):
    """No such call (or not this account's, or already over)."""


class CallNotAnswered(CallError):
    """The operation needs an answered call with media."""


class MediaUnavailable(CallError):
    """The call has no media stream (or no bridged B leg) to act on."""


class QueueFull(CallError):
    """The admission queue is full; retry later."""


class ShuttingDown(CallError):
    """The server is draining and takes no new calls."""


class OperationFailed(CallError):
    """The server could not do what was asked (a recorder that cannot open its file...)."""
