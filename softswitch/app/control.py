"""What the application executor needs from a call: the :class:`CallControl` surface the
orchestration glue implements over a live call, the results it reports and its two errors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from softswitch.app.verbs import Conference, ConferenceEvent, Dial

__all__ = [
    "CallControl",
    "CallHungUp",
    "ConferenceControl",
    "DialResult",
    "FetchError",
    "RecordingResult",
]


class FetchError(Exception):
    """An XML document could not be fetched (network, HTTP status, timeout, body too big)."""


class CallHungUp(Exception):
    """Raised by :class:`CallControl` operations when the call ended while they ran."""


@dataclass(frozen=True, slots=True)
class RecordingResult:
    """What :meth:`CallControl.record` reports. Times are Unix epoch milliseconds."""

    duration_ms: int
    start_ms: int
    end_ms: int
    #: the finish key that ended the recording, "" if silence, maxLength or hangup did.
    digits: str = ""


@dataclass(frozen=True, slots=True)
class DialResult:
    """What :meth:`CallControl.dial` reports; the vocabulary names it for the Dial action
    (:class:`~softswitch.app.verbs.ResultParams`)."""

    #: The B leg's outcome in the call model's words: completed, busy, failed, timeout or
    #: no-answer.
    status: str
    #: Q.850-derived name (NORMAL_CLEARING, USER_BUSY, NO_ANSWER...).
    hangup_cause: str
    #: The answering B leg's call id; "" when no B leg answered.
    b_leg_uuid: str = ""
    #: Whether a B leg rang (180/183 seen).
    rang: bool = False
    #: Whole seconds (rounded up) the answered B leg was connected; 0 when none answered.
    duration_s: int = 0


@runtime_checkable
class CallControl(Protocol):
    """The call as the application executor sees it. The orchestration glue implements it.

    Media operations return when done, when interrupted as asked, or raise
    :class:`CallHungUp` when the call ends under them.
    """

    call_uuid: str

    @property
    def answered(self) -> bool:
        """True once the call is answered (always so for outbound calls running XML)."""
        ...

    @property
    def hung_up(self) -> bool:
        """True once either side has ended the call."""
        ...

    def base_params(self) -> dict[str, str]:
        """Parameters posted with every request: CallUUID, From, To, Direction, CallStatus..."""
        ...

    async def fetch_xml(self, url: str, method: str, params: Mapping[str, str]) -> str:
        """Fetch an XML document through the webhook outbox (signed). Raises FetchError."""
        ...

    def notify(self, url: str, method: str, params: Mapping[str, str]) -> None:
        """Fire-and-forget callback (``callbackUrl``, ``redirect="false"`` actions)."""
        ...

    async def play(self, source: Any, *, interrupt_on_digit: bool = False) -> str | None:
        """Play a ``media.play`` source to the caller; return the DTMF key that interrupted
        it when ``interrupt_on_digit``, else None. The key is consumed (not buffered)."""
        ...

    async def collect_digits(
        self,
        *,
        num_digits: int,
        timeout_s: float,
        digit_timeout_s: float,
        finish_on_key: str,
        valid_digits: str,
        first_digit: str | None = None,
    ) -> tuple[str, str]:
        """Collect DTMF keys. ``first_digit`` was already pressed (it interrupted a prompt).

        Returns ``(digits, how)``: digits exclude the finish key; ``how`` is ``finish_key``,
        ``num_digits``, ``timeout`` (no key within timeout_s/digit_timeout_s) or ``invalid``
        (a key outside ``valid_digits``, which is then the last of ``digits``).
        """
        ...

    async def send_digits(self, digits: str) -> None:
        """Send DTMF with the ``send_digits`` grammar (RFC 4733 events and/or in-band)."""
        ...

    async def wait(
        self,
        seconds: float,
        *,
        until_silence: bool = False,
        min_silence_ms: int = 2000,
        until_beep: bool = False,
    ) -> None:
        """Stay silent ``seconds``; end early after ``min_silence_ms`` of silence from the
        caller, or on a voicemail beep (the AMD beep detector) when asked."""
        ...

    async def record(
        self,
        path: str,
        *,
        max_length_s: int,
        timeout_s: int,
        finish_on_key: str,
        play_beep: bool,
        file_format: str,
    ) -> RecordingResult:
        """Record the caller to ``path`` (wav or mp3) until silence ``timeout_s``, a key of
        ``finish_on_key``, ``max_length_s`` or hangup; the file is complete on return."""
        ...

    async def dial(self, dial: Dial) -> DialResult:
        """Bridge to the first B leg of ``dial.numbers`` that answers (same UA, media relayed)
        until either side hangs up or ``dial.time_limit``. Honours the Dial's timeout,
        callerId, callerName, hangupOnStar, sendDigits, and fires its ``callbackUrl`` events
        (DialAction answer/connected/hangup/digits). Returns when the A leg is free again."""
        ...

    async def hangup(self, cause: str, reason: str | None = None) -> None:
        """End the call with a Q.850-style ``cause``; ``reason`` goes to the call record."""
        ...


@runtime_checkable
class ConferenceControl(Protocol):
    """A :class:`CallControl` that can also put the call in a conference room."""

    async def conference(
        self,
        verb: Conference,
        *,
        on_event: Callable[[ConferenceEvent], None],
        record_path: Callable[[str], tuple[str, str, str]],
        sound: Callable[[str], Awaitable[Any]],
    ) -> ConferenceEvent:
        """Join ``verb.name`` until the member leaves; return the ``result`` event (its
        ``reason``: hangup, star, kicked, ended, full...). ``on_event`` gets the member's
        events as they happen; ``record_path(fmt)`` gives ``(path, url, recording id)`` for
        a room recording; ``sound(url)`` a playable source for a URL (enter/exit/wait)."""
        ...
