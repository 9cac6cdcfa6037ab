"""DTMF generation: the ``send_digits`` grammar, ITU-T Q.23 tones and RFC 4733 senders.

* :func:`parse_send_digits` turns ``"1w2W3@300"`` into a list of :class:`DtmfStep`.
* :func:`dtmf_tone` / :class:`InbandDtmfGenerator` synthesise ITU-T Q.23 dual tones.
* :class:`Rfc4733Sender` plays a step list as RFC 4733 telephone-events.

All sans-I/O: RTP timestamps are arguments.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from ._tables import DIGIT_TO_EVENT, DTMF_FREQUENCIES, dbm0_to_amplitude, encode_event

# ---------------------------------------------------------------------------------------------
# The send_digits grammar
#
# The make-a-call API's send_digits: "Using character w waits for 0.5 seconds and W waits for
# 1 seconds ... setting 123@1000 will send the digits 123 with a tone duration of 1,000 ms".
# The syntax comes from FreeSWITCH, where "@<n>" is only meaningful as a trailing suffix.
#
#   send-digits = *( digit / pause ) [ "@" 1*DIGIT ]
#   digit       = %x30-39 / "*" / "#" / "A" / "B" / "C" / "D" / "a" / "b" / "c" / "d"
#   pause       = "w" / "W"          ; 500 ms / 1000 ms

#: Default tone length. The legacy make-a-call API's page says "2000"; FreeSWITCH, where the
#: syntax comes from, counts that in samples at 8 kHz, i.e. 250 ms. We default to 250 ms; a
#: deployment wanting the literal 2000 ms reading passes ``default_tone_ms=2000``.
DEFAULT_TONE_MS = 250
#: Silence inserted between two consecutive digits (not next to a w/W pause, which already
#: separates them). 100 ms is Asterisk's SendDTMF default; in-band receivers (Q.24) need a
#: pause of >= 40 ms to see two digits, and RFC 4733 needs room for the end-packet repeats.
DEFAULT_INTER_DIGIT_MS = 100
MIN_TONE_MS = 50  # FreeSWITCH's floor; Q.24 receivers need >= 40 ms
MAX_TONE_MS = 5000  # keeps every event below the 16-bit duration field (RFC 4733 §2.5.1.3)
MAX_SEND_DIGITS_LEN = 256
PAUSE_MS: dict[str, int] = {"w": 500, "W": 1000}
_DIGIT_CHARS = frozenset("0123456789*#ABCDabcd")
_ALLOWED = "allowed: 0-9 * # A-D w W and a trailing @<ms>"


class DigitsError(ValueError):
    """A ``send_digits`` string that cannot be played; the message says what and where.

    ``position`` is 1-based (``None`` when the error is not about one character).
    """

    def __init__(self, message: str, *, char: str | None = None, position: int | None = None):
        super().__init__(message)
        self.char = char
        self.position = position


@dataclass(frozen=True)
class DtmfStep:
    """One step of a digit string: a tone (``digit``) or silence (``digit is None``)."""

    digit: str | None
    duration_ms: int


def parse_send_digits(
    text: str,
    *,
    default_tone_ms: int | None = DEFAULT_TONE_MS,
    inter_digit_ms: int = DEFAULT_INTER_DIGIT_MS,
) -> list[DtmfStep]:
    """Parse a ``send_digits`` string into tone and pause steps.

    ``w`` is a 500 ms pause, ``W`` a 1000 ms pause; ``@<ms>`` at the end sets the tone length
    of every digit (50..5000 ms). Lowercase ``a``-``d`` are accepted and played as ``A``-``D``.
    Between two consecutive digits a silence step of ``inter_digit_ms`` is inserted so that
    in-band receivers (ITU-T Q.24 needs >= 40 ms) and RFC 4733 receivers see distinct digits;
    no such gap is added next to a ``w``/``W``, so pauses keep their exact length. Leading and
    trailing pauses are kept (``wwww2410`` waits two seconds first). At most 256 characters.

    ``default_tone_ms=None`` means :data:`DEFAULT_TONE_MS` (a caller passing an optional
    setting through). Raises :class:`DigitsError` naming the offending character and its
    1-based position.
    """
    if default_tone_ms is None:
        default_tone_ms = DEFAULT_TONE_MS
    if not MIN_TONE_MS <= default_tone_ms <= MAX_TONE_MS:
        raise ValueError(f"default_tone_ms must be {MIN_TONE_MS}..{MAX_TONE_MS}")
    if inter_digit_ms < 0:
        raise ValueError("inter_digit_ms must be >= 0")
    if len(text) > MAX_SEND_DIGITS_LEN:
        raise DigitsError(
            f"send_digits: {len(text)} characters, at most {MAX_SEND_DIGITS_LEN} allowed"
        )
    body, tone_ms = text, default_tone_ms
    at = text.find("@")
    if at >= 0:
        body, suffix = text[:at], text[at + 1 :]
        for j, ch in enumerate(suffix):
            if ch not in "0123456789":
                pos = at + 2 + j
                if ch == "@":
                    why = "the @<ms> suffix may appear only once"
                else:
                    why = "@<ms> is only allowed as a trailing suffix, e.g. '123@1000'"
                raise DigitsError(
                    f"send_digits: invalid character {ch!r} at position {pos}: {why}",
                    char=ch,
                    position=pos,
                )
        if not suffix:
            raise DigitsError(
                f"send_digits: '@' at position {at + 1} must be followed by the tone "
                "duration in milliseconds, e.g. '123@1000'",
                char="@",
                position=at + 1,
            )
        tone_ms = int(suffix)
        if not MIN_TONE_MS <= tone_ms <= MAX_TONE_MS:
            raise DigitsError(
                f"send_digits: tone duration {tone_ms} ms out of range "
                f"{MIN_TONE_MS}..{MAX_TONE_MS} ms"
            )
    steps: list[DtmfStep] = []
    previous_was_digit = False
    for i, ch in enumerate(body):
        if ch in _DIGIT_CHARS:
            if previous_was_digit and inter_digit_ms > 0:
                steps.append(DtmfStep(None, inter_digit_ms))
            steps.append(DtmfStep(ch.upper(), tone_ms))
            previous_was_digit = True
        elif ch in PAUSE_MS:
            steps.append(DtmfStep(None, PAUSE_MS[ch]))
            previous_was_digit = False
        else:
            raise DigitsError(
                f"send_digits: invalid character {ch!r} at position {i + 1}; {_ALLOWED}",
                char=ch,
                position=i + 1,
            )
    return steps


def steps_duration_ms(steps: list[DtmfStep]) -> int:
    """Total playing time of a step list."""
    return sum(s.duration_ms for s in steps)


# ---------------------------------------------------------------------------------------------
# In-band generation (ITU-T Q.23)


def dtmf_tone(
    digit: str,
    duration_ms: int,
    *,
    rate: int = 8000,
    low_dbm0: float = -7.0,
    high_dbm0: float = -5.0,
    phase_offset: int = 0,
) -> np.ndarray:
    """The dual tone of ``digit`` as int16 samples.

    Default levels -7 dBm0 (low group) and -5 dBm0 (high group): +2 dB pre-emphasis of the high
    group as Q.23 recommends, both well inside the Q.24 operate range. ``phase_offset`` is the
    index of the first sample within the tone, so consecutive calls continue the phase.
    """
    low, high = DTMF_FREQUENCIES[digit.upper()]
    n = rate * duration_ms // 1000
    t = np.arange(phase_offset, phase_offset + n, dtype=np.float64) / rate
    x = dbm0_to_amplitude(low_dbm0) * np.sin(2 * np.pi * low * t)
    x += dbm0_to_amplitude(high_dbm0) * np.sin(2 * np.pi * high * t)
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


class InbandDtmfGenerator:
    """Plays a step list as audio, one frame at a time (pauses are silence).

    Step boundaries are kept to the sample, not rounded to frames, so ``w``/``W`` pauses and
    tone lengths are exact; each tone starts at phase zero and stays continuous across frames.
    """

    def __init__(
        self,
        steps: list[DtmfStep],
        rate: int = 8000,
        frame_samples: int = 160,
        *,
        low_dbm0: float = -7.0,
        high_dbm0: float = -5.0,
    ) -> None:
        self._steps = [(s.digit, rate * s.duration_ms // 1000) for s in steps]
        self._rate = rate
        self._frame = frame_samples
        self._low_dbm0 = low_dbm0
        self._high_dbm0 = high_dbm0
        self._index = 0  # current step
        self._offset = 0  # samples of the current step already played

    @property
    def finished(self) -> bool:
        return self._index >= len(self._steps)

    def next_frame(self) -> np.ndarray | None:
        """The next ``frame_samples`` of audio, zero-padded at the end; ``None`` when done."""
        if self.finished:
            return None
        out = np.zeros(self._frame, dtype=np.int16)
        filled = 0
        while filled < self._frame and self._index < len(self._steps):
            digit, length = self._steps[self._index]
            take = min(self._frame - filled, length - self._offset)
            if digit is not None and take > 0:
                out[filled : filled + take] = self._tone(digit, take, self._offset)
            filled += take
            self._offset += take
            if self._offset >= length:
                self._index += 1
                self._offset = 0
        return out

    def _tone(self, digit: str, n: int, offset: int) -> np.ndarray:
        low, high = DTMF_FREQUENCIES[digit]
        t = np.arange(offset, offset + n, dtype=np.float64) / self._rate
        x = dbm0_to_amplitude(self._low_dbm0) * np.sin(2 * np.pi * low * t)
        x += dbm0_to_amplitude(self._high_dbm0) * np.sin(2 * np.pi * high * t)
        return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


# ---------------------------------------------------------------------------------------------
# RFC 4733 telephone-events (payload layout in _tables)


class Rfc4733Sender:
    """Plays a step list as telephone-events. Each call to :meth:`next_tick` gives what to send
    in this tick: a list of ``(payload, marker, timestamp)``.

    * The timestamp is the event's start timestamp, fixed for the whole event (RFC 4733
      §2.5.1.2): the ``current_timestamp`` the stream hands in on the event's first tick.
    * The duration grows cumulatively in timestamp units; the M bit is set on the first packet
      of each event (§2.5.1.1); the end packet is sent three times, in this tick and the next
      two, with the same duration (§2.5.1.4, "at the interval used by the source for updates").
    * Step boundaries are scheduled to the sample and rounded to the nearest tick, so pauses do
      not drift; the final duration is the exact tone length.
    * Pauses and inter-digit gaps give an empty list: the stream sends audio (silence) then.
      Events never need the §2.5.1.3 long-event split: tones are capped at 5000 ms.

    :attr:`active` is true when the latest tick carried event packets (an event or its end
    repeats): the stream sends those instead of audio for that tick.
    """

    def __init__(
        self,
        steps: list[DtmfStep],
        *,
        clock_rate: int = 8000,
        ptime_ms: int = 20,
        volume: int = 10,
    ) -> None:
        if not 0 <= volume <= 63:
            raise ValueError("volume must be 0..63")
        self._tick = clock_rate * ptime_ms // 1000
        self._volume = volume
        # (event code, first tick, end tick (exclusive), duration units)
        self._events: list[tuple[int, int, int, int]] = []
        pos = 0
        half = self._tick // 2
        for step in steps:
            units = clock_rate * step.duration_ms // 1000
            if step.digit is not None:
                if units > 0xFFFF:
                    raise ValueError("event longer than the 16-bit duration field")
                start_tick = (pos + half) // self._tick
                end_tick = max(start_tick + 1, (pos + units + half) // self._tick)
                self._events.append((DIGIT_TO_EVENT[step.digit], start_tick, end_tick, units))
            pos += units
        self._last_tick = max([(pos + half) // self._tick] + [e[2] + 2 for e in self._events])
        self._tick_index = 0
        self._next_event = 0
        self._event_ts = 0
        self._repeats: deque[tuple[int, bytes, int]] = deque()  # (due tick, payload, ts)
        self._active = False

    @property
    def active(self) -> bool:
        return self._active

    @property
    def finished(self) -> bool:
        return self._tick_index >= self._last_tick and not self._repeats

    def next_tick(self, current_timestamp: int) -> list[tuple[bytes, bool, int]] | None:
        """Packets for this tick (possibly none); ``None`` once every step has been played."""
        if self.finished:
            self._active = False
            return None
        k = self._tick_index
        self._tick_index += 1
        out: list[tuple[bytes, bool, int]] = []
        while self._repeats and self._repeats[0][0] <= k:
            _, payload, ts = self._repeats.popleft()
            out.append((payload, False, ts))
        if self._next_event < len(self._events):
            code, start, end, units = self._events[self._next_event]
            if start <= k < end:
                first = k == start
                if first:
                    self._event_ts = current_timestamp & 0xFFFFFFFF
                if k == end - 1:
                    payload = encode_event(code, True, self._volume, units)
                    self._repeats.append((k + 1, payload, self._event_ts))
                    self._repeats.append((k + 2, payload, self._event_ts))
                    self._next_event += 1
                else:
                    duration = min((k - start + 1) * self._tick, units)
                    payload = encode_event(code, False, self._volume, duration)
                out.append((payload, first, self._event_ts))
        self._active = bool(out)
        return out
