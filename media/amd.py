"""Answering-machine detection (AMD) and voicemail-beep detection, numpy-vectorised over frames.

Why this shape
--------------
The make-a-call API's machine detection exposes the parameters of the classic energy-based
detector that telephony engines share (Asterisk ``app_amd`` and the FreeSWITCH modules modelled
on it): an initial-silence limit, a maximum greeting length, a maximum number of words, a maximum
length of one utterance and the silence after a greeting that means "a person said hello and is
waiting". We implement that family of rules on our own media engine:

* frame energy (20 ms frames) in dBFS with an **adaptive noise floor** (minimum statistics over a
  sliding window), so a noisy line is not mistaken for speech;
* **word / silence segmentation** with hysteresis: voice runs of at least ``min_word_length_ms``
  are words, silences of at least ``between_words_silence_ms`` separate them;
* the **decision rules** (first one to fire wins):

  ========================  ==========  ===========================================================
  reason                    status      fires when
  ========================  ==========  ===========================================================
  ``HUMAN``                 HUMAN       a greeting was heard, then ``after_greeting_silence_ms``
  ``LONGGREETING``          MACHINE     total voice in the greeting reaches ``greeting_ms``
  ``MAXWORDS``              MACHINE     more than ``max_words`` words (the API: "greater than")
  ``MAXWORDLENGTH``         MACHINE     one utterance lasts ``max_word_length_ms``
  ``BEEP``                  MACHINE     a voicemail beep ended before any other rule fired
  ``INITIALSILENCE``        NOTSURE     no word within ``initial_silence_ms`` of the answer
  ``TOOLONG``               NOTSURE     ``total_ms`` (the detection window) elapsed
  ========================  ==========  ===========================================================

  Initial silence is NOTSURE, not MACHINE as in app_amd, because the make-a-call API
  documents that "'Unknown' will be returned" after its initial-silence limit. How a decision
  is reported (callback names, how NOTSURE reads in a boolean) is the API dialect's business.

* **beep detection** (:class:`BeepDetector`): a sustained single tone between 400 and 2000 Hz,
  found with a 64 ms Hann-windowed FFT whose resolution separates the two ringback tones
  (440 + 480 Hz, 40 Hz apart) and the DTMF pairs, so only a *single* spectral line counts. Onset
  and end are refined to a few milliseconds with a complex-demodulated envelope at the tone's
  frequency, so a voicemail drop can start right after the beep ends.

How the caller uses it
----------------------
The media clock calls :meth:`AnsweringMachineDetector.feed` every 20 ms with the frame received
after the answer (several frames at once are accepted and processed as one numpy batch)::

    amd = AnsweringMachineDetector(AmdParams(total_ms=4000, max_words=4))
    ...
    result = amd.feed(pcm)            # on every tick
    if result is not None:
        if result.beep_at_ms is None:  # the decision (machine or not) -> callbacks, hangup mode
            on_decision(result)
        else:                          # a machine's beep just ended -> start the voicemail drop
            on_beep(result)
    if amd.done:                       # decided, and (for non-human) beep found or beep_wait over
        stop_feeding()

Feed every tick, in order: for a lost or late packet feed the decoder's concealment (or
silence) so that the detector's clock stays the call's clock. Audio is 16-bit PCM (numpy int16
or little-endian bytes) at ``rate`` (8000 for G.711; 16000 works for G.722).

``feed`` returns a result at most twice: once when the decision is made and, if the decision
was not HUMAN and ``listen_for_beep`` is on, once more when a beep has ended (a copy of the
decision with ``beep_hz``/``beep_ms``/``beep_at_ms`` filled). If the beep itself is what decided
(reason ``BEEP``), the one result carries both. With ``message_end_silence_ms`` set, a
MACHINE decision is followed by exactly one more result, the end of the greeting
(``message_end`` BEEP, SILENCE after that much quiet, or TIMEOUT at ``beep_wait_ms``). ``<Wait beep="true">`` without AMD uses
:class:`BeepDetector` directly. Times are milliseconds since the first sample fed (the answer).

Cost: per stream and frame, one energy (vectorised over the frames of a call), one 1024-point
real FFT only for frames louder than -45 dBFS, one 160-point dot product while a tone is
running, and a handful of scalar comparisons (about 10 µs per silent frame and 35 µs per
speech frame on one core of the development machine).

The beep detector lives here with the AMD rules (the module is a little over 600 lines): the
AMD decision embeds it, both share the frame clock and the parameter errors, and they are
tuned together on the one ``benchmarks/amd`` corpus.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

if TYPE_CHECKING:
    from .tones import ToneVerdict

__all__ = [
    "AmdParamError",
    "AmdParams",
    "AmdResult",
    "AnsweringMachineDetector",
    "Beep",
    "BeepDetector",
]

FRAME_MS = 20
"""The media clock's tick; AMD timings are multiples of it."""

_FULL_SCALE_POWER = 32768.0 * 32768.0
_EPS_POWER = 1e-10


class AmdParamError(ValueError):
    """A machine-detection parameter is missing its documented range.

    Carries what the HTTP layer needs for a 400 answer: the parameter name as the request spelled
    it, the offending value and the inclusive range.
    """

    def __init__(self, param: str, value: object, lo: int | None = None, hi: int | None = None):
        self.param = param
        self.value = value
        self.lo = lo
        self.hi = hi
        if lo is not None and hi is not None:
            msg = f"{param} must be an integer between {lo} and {hi} (got {value!r})"
        else:
            msg = f"{param} is invalid (got {value!r})"
        super().__init__(msg)


@dataclass(frozen=True)
class AmdParams:
    """Tuning of one detection, in plain units. The first six fields are the ones the make-a-call
    API exposes and default to its documented defaults (a dialect maps its request names onto
    them and checks its own ranges); the others (app_amd's word segmentation, our voice
    thresholds, the beep) were tuned on the ``benchmarks/amd`` corpus (``corpus.py`` builds it,
    ``evaluate.py --offline`` scores it)."""

    total_ms: int = 5000
    """The decision window; NOTSURE/TOOLONG when it runs out."""
    initial_silence_ms: int = 4500
    """Initial silence limit: no word by then -> NOTSURE/INITIALSILENCE."""
    greeting_ms: int = 1500
    """Maximum greeting: this much voice in the greeting -> MACHINE."""
    after_greeting_silence_ms: int = 800
    """Silence after a greeting -> HUMAN."""
    max_words: int = 3
    """More words than this -> MACHINE."""
    max_word_length_ms: int = 5000
    """Maximum speech length: one utterance this long -> MACHINE."""
    min_word_length_ms: int = 100
    """app_amd ``minimumWordLength``: shorter voice runs are clicks, not words."""
    between_words_silence_ms: int = 100
    """app_amd ``betweenWordsSilence`` (50 there). 100 ms keeps stop-consonant closures inside
    a word so "who's calling" is two words, not four."""
    voice_margin_db: float = 6.0
    """A frame is voice when its energy is this far above the noise floor (the floor is the
    2 s minimum, about 1.5 dB under the mean of stationary line noise)..."""
    voice_min_dbfs: float = -48.0
    """...and above this absolute level (app_amd's ``silenceThreshold`` 256 is about -41 dBFS)."""
    voice_hangover_db: float = 3.0
    """Hysteresis: inside a word the threshold drops by this much. Keep margin - hangover >= 3 dB
    or line noise keeps a word open and the HUMAN decision comes late."""
    noise_window_ms: int = 2000
    """Minimum-statistics window of the noise floor."""
    background_quantile: float = 0.5
    """The background level is this quantile of the levels of the frames that were not voice
    over the last ``background_window_ms`` (lost packets left out): in a room (babble, music,
    traffic) the minimum lies far under the background's typical level, a low quantile does
    not, and frames of voice never raise it."""
    background_window_ms: int = 3000
    background_span_db: float = 20.0
    """The background level is at most this far above the quietest of those frames."""
    background_margin_db: float = 6.5
    """A frame is voice only this far above the background level too (the room's loud moments
    stay under it; the foreground talker, 10 dB and more above the room, does not)."""
    preemphasis: float = 0.6
    """Levels are measured after ``y[n] = x[n] - a x[n-1]`` (a first-order high-pass: rumble,
    traffic and brown noise sit under 300 Hz, where speech carries little of its energy)."""
    beep_over_background_db: float = 10.0
    """A beep heard before any word decides MACHINE only this far above the background (a
    note of the music playing in the room is not a voicemail beep)."""
    listen_for_beep: bool = True
    """Detect the voicemail beep, before the decision (reason BEEP) and after it."""
    beep_wait_ms: int = 30000
    """After a non-HUMAN decision, listen for the beep until this long after the answer."""
    beep_min_ms: int = 120
    """Shortest tone taken for a beep."""
    beep_max_ms: int = 5000
    """Longer single tones (test tones, fax CED runs) are not beeps."""
    detect_tones: bool = True
    """Listen for fax tones (CED/ANSam 2100 Hz, CNG 1100 Hz) and special information tones
    (:mod:`media.tones`) while a tone is the first thing heard: status FAX (a machine) or SIT (a
    carrier's intercept: not a machine, not a person), decided before any greeting rule."""
    message_end_silence_ms: int = 0
    """Wait for the end of a machine's greeting: after a MACHINE decision, this much silence
    ends the message (``message_end`` SILENCE), as does a beep (BEEP); ``beep_wait_ms`` after
    the answer without either, it is TIMEOUT. 0 (the default): only the beep is listened for."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("listen_for_beep", "detect_tones"):
                continue
            if f.name == "background_quantile":
                if not 0.0 <= float(value) <= 1.0:
                    raise AmdParamError(f.name, value, 0, 1)
                continue
            if f.name in ("voice_min_dbfs",):
                if not -96.0 <= float(value) <= 0.0:
                    raise AmdParamError(f.name, value, -96, 0)
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise AmdParamError(f.name, value)
        if self.max_words < 1:
            raise AmdParamError("max_words", self.max_words)
        if self.total_ms < FRAME_MS:
            raise AmdParamError("total_ms", self.total_ms)


@dataclass(frozen=True)
class Beep:
    """A voicemail beep: one tone, its frequency and when it sounded (ms since the first sample)."""

    freq_hz: float
    onset_ms: int
    duration_ms: int
    level_dbfs: float = 0.0
    """The tone's level (its strongest 20 ms), dB relative to a full-scale sine."""

    @property
    def end_ms(self) -> int:
        """When the tone stopped: the moment a voicemail drop may start speaking."""
        return self.onset_ms + self.duration_ms


MACHINE = "MACHINE"
HUMAN = "HUMAN"
NOTSURE = "NOTSURE"
FAX = "FAX"
"""A fax machine answered (CED/ANSam or CNG): ``machine`` is true, ``reason`` the tone."""
SIT = "SIT"
"""A special information tone (the network's intercept/reorder/no-circuit announcement):
``machine`` is false (not a person either), ``reason`` its code (SIT_IC, SIT_VC, ...)."""


@dataclass(frozen=True)
class AmdResult:
    """A decision with its timing and the features it was made on (for the call record and the
    callbacks). ``status`` is app_amd's AMDSTATUS (plus FAX and SIT), ``reason`` its AMDCAUSE
    (plus ``BEEP``, and for a tone its code: CED, ANSAM, CNG, SIT_IC...)."""

    machine: bool
    status: str
    reason: str
    decided_at_ms: int
    """Milliseconds from the answer (the first sample fed) to the decision."""
    initial_silence_ms: int
    """Silence before the first word (up to the decision if no word)."""
    greeting_ms: int
    """Voice heard in the greeting up to the decision (the quantity ``greeting_ms`` bounds)."""
    words: int
    beep_hz: float | None = None
    beep_ms: int | None = None
    beep_at_ms: int | None = None
    """Beep onset, ms from the answer; ``beep_at_ms + beep_ms`` is when it ended."""
    message_end: str | None = None
    """With ``message_end_silence_ms``: how a machine's greeting ended (BEEP, SILENCE or
    TIMEOUT); None until then."""
    message_end_ms: int | None = None
    """When that end was found, ms from the answer."""
    tone_hz: tuple[float, ...] | None = None
    """For FAX and SIT: the tone's frequencies (one, or the SIT's three segments)."""
    tone_at_ms: int | None = None
    """For FAX and SIT: when the tone started, ms from the answer."""

    @property
    def beep_end_ms(self) -> int | None:
        if self.beep_at_ms is None or self.beep_ms is None:
            return None
        return self.beep_at_ms + self.beep_ms


def _as_float_pcm(pcm: np.ndarray | bytes) -> np.ndarray:
    if isinstance(pcm, bytes | bytearray | memoryview):
        arr = np.frombuffer(pcm, dtype="<i2")
    else:
        arr = np.asarray(pcm)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    return arr.astype(np.float32, copy=False)


class _Framer:
    """Cuts arbitrary-length input into whole frames, keeping the remainder for the next call."""

    def __init__(self, frame: int):
        self.frame = frame
        self._rest = np.zeros(0, dtype=np.float32)

    def push(self, pcm: np.ndarray) -> np.ndarray:
        x = pcm if self._rest.size == 0 else np.concatenate([self._rest, pcm])
        n = x.size // self.frame
        self._rest = x[n * self.frame :].copy()
        return x[: n * self.frame]


class BeepDetector:
    """A sustained single tone between ``fmin`` and ``fmax`` Hz: a voicemail "leave your message"
    beep.

    Robust to ringback (ITU-T E.180 / North American 440 + 480 Hz) and DTMF (two tones), which a
    64 ms analysis window resolves into two lines, and to speech (many harmonics, moving pitch).
    A beep is reported when the tone **ends** (voicemail drop starts then), provided it lasted
    between ``min_ms`` and ``max_ms``. Onset and duration are refined below the frame size.

    ``feed`` takes 16-bit PCM (numpy or bytes), any length; times are ms since the first sample.
    """

    def __init__(
        self,
        rate: int = 8000,
        min_ms: int = 120,
        fmin: float = 400.0,
        fmax: float = 2000.0,
        max_ms: int = 5000,
        min_dbfs: float = -45.0,
        tonality: float = 0.75,
    ):
        if rate <= 0 or rate % 50:
            raise AmdParamError("rate", rate)
        if not 0 < fmin < fmax < rate / 2:
            raise AmdParamError("fmax", fmax)
        self.rate = rate
        self.min_ms = min_ms
        self.max_ms = max_ms
        self.fmin = fmin
        self.fmax = fmax
        self.frame = rate // 50
        self._framer = _Framer(self.frame)
        # 64 ms window: bins of 15.6 Hz, Hann main lobe +-31 Hz, so 440 and 480 Hz are two lines.
        self.window = 1 << int(round(math.log2(0.064 * rate)))
        self.nfft = 2 * self.window
        self._hann = np.hanning(self.window).astype(np.float32)
        self._hann_frame = np.hanning(self.frame).astype(np.float32)
        self._hann_frame_gain = float(self._hann_frame.sum()) ** 2
        bin_hz = rate / self.nfft
        self._lobe = int(math.ceil(2.0 * rate / self.window / bin_hz))
        self._band_lo = max(1, int(100 / bin_hz))
        self._band_hi = int(min(3800.0, rate / 2 - 100) / bin_hz)
        self._peak_lo = max(self._lobe + 1, int(math.floor(fmin / bin_hz)))
        self._peak_hi = min(self.nfft // 2 - self._lobe - 1, int(math.ceil(fmax / bin_hz)))
        self._bin_hz = bin_hz
        self._min_power = _FULL_SCALE_POWER * 10 ** (min_dbfs / 10)
        self._tonality = tonality
        # Sample history: enough for the analysis window plus the onset search.
        self._keep = self.window + 3 * self.frame
        self._hist = np.zeros(self._keep, dtype=np.float32)
        self._frames_done = 0  # frames consumed so far
        self._pending: deque[Beep] = deque()
        self._phasor_hz = -1.0
        self._phasor = np.zeros(self.frame, dtype=np.complex128)
        self._reset_tone()

    # -- public -------------------------------------------------------------------------------

    @property
    def in_tone(self) -> bool:
        """A candidate beep is sounding now."""
        return self._f0 is not None

    @property
    def elapsed_ms(self) -> int:
        return self._frames_done * FRAME_MS

    def current_tone(self) -> tuple[float, int, int] | None:
        """The tone sounding now: (median Hz so far, onset ms, ms sounded so far), or None."""
        if self._f0 is None:
            return None
        onset_ms = int(round(self._onset_sample * 1000 / self.rate))
        return float(np.median(self._freqs)), onset_ms, max(0, self.elapsed_ms - onset_ms)

    def feed(self, pcm: np.ndarray | bytes) -> Beep | None:
        """Consume audio; return a beep that has ended, else None. Beeps found in one batch are
        queued and returned by the following calls (``feed(b"")`` drains)."""
        self._process(self._framer.push(_as_float_pcm(pcm)))
        return self._pending.popleft() if self._pending else None

    # -- internals ----------------------------------------------------------------------------

    def _reset_tone(self) -> None:
        self._f0: float | None = None
        self._onset_sample = 0
        self._level = 0.0
        self._freqs: list[float] = []
        self._tonal_frames = 0
        self._too_long = False

    def _process(self, x: np.ndarray, frame_power: list[float] | None = None) -> None:
        """Analyse whole frames ``x``; spectra only for frames loud enough to be a beep."""
        n = x.size // self.frame
        if n == 0:
            return
        buf = np.concatenate([self._hist, x])
        base_sample = self._frames_done * self.frame - self._keep  # sample index of buf[0]
        frames = x.reshape(n, self.frame)
        if frame_power is None:
            frame_power = (np.einsum("ij,ij->i", frames, frames) / self.frame).tolist()
        loud = [i for i in range(n) if frame_power[i] >= self._min_power]
        spectra: dict[int, np.ndarray] = {}
        if loud:
            # The analysis window ending at the end of each loud frame, one batched FFT.
            if len(loud) == 1:
                end = self._keep + (loud[0] + 1) * self.frame
                wins = buf[end - self.window : end][None, :]
            else:
                starts = self._keep + (np.asarray(loud) + 1) * self.frame - self.window
                wins = sliding_window_view(buf, self.window)[starts]
            spec = np.fft.rfft(wins * self._hann, self.nfft)
            power_spec = spec.real**2 + spec.imag**2
            for row, i in enumerate(loud):
                spectra[i] = power_spec[row]
        for i in range(n):
            tonal, f = self._tonal(spectra[i]) if i in spectra else (False, 0.0)
            self._step(i, frames[i], frame_power[i], tonal, f, buf, base_sample)
        self._frames_done += n
        self._hist = buf[-self._keep :].copy()

    def _tonal(self, p: np.ndarray) -> tuple[bool, float]:
        """Is one spectral line in [fmin, fmax] most of the window's in-band energy? Its Hz."""
        k = int(p[self._peak_lo : self._peak_hi + 1].argmax()) + self._peak_lo
        band = float(p[self._band_lo : self._band_hi].sum()) + _EPS_POWER
        main = float(p[k - self._lobe : k + self._lobe + 1].sum())
        if main < self._tonality * band:
            return False, 0.0
        # Parabolic interpolation on log power (Hann window) for the line's frequency.
        lm = math.log(float(p[k - 1]) + _EPS_POWER)
        l0 = math.log(float(p[k]) + _EPS_POWER)
        lp = math.log(float(p[k + 1]) + _EPS_POWER)
        den = lm - 2.0 * l0 + lp
        delta = 0.5 * (lm - lp) / den if den < -1e-12 else 0.0
        f = (k + max(-0.5, min(0.5, delta))) * self._bin_hz
        return self.fmin <= f <= self.fmax, f

    def _line_power(self, frame: np.ndarray, f0: float) -> float:
        """Mean-square power of the component at ``f0`` in one frame (Hann-weighted DFT)."""
        if f0 != self._phasor_hz:
            n = np.arange(self.frame)
            self._phasor = self._hann_frame * np.exp(-2j * np.pi * f0 / self.rate * n)
            self._phasor_hz = f0
        z = complex(np.dot(frame, self._phasor))
        return 2.0 * (z.real * z.real + z.imag * z.imag) / self._hann_frame_gain

    def _step(
        self,
        i: int,
        frame: np.ndarray,
        power: float,
        tonal: bool,
        f: float,
        buf: np.ndarray,
        base_sample: int,
    ) -> None:
        frame_index = self._frames_done + i
        frame_start = frame_index * self.frame  # absolute sample index
        if self._f0 is None:
            if not tonal:
                return
            lp = self._line_power(frame, f)
            if lp < 0.5 * power or lp < self._min_power * 0.5:
                return
            self._f0 = f
            self._freqs = [f]
            self._tonal_frames = 1
            self._level = lp
            self._onset_sample = self._refine_onset(buf, base_sample, frame_start, f)
            return
        f0 = self._f0
        lp = self._line_power(frame, f0)
        cont = (
            tonal
            and abs(f - f0) <= max(12.0, 0.02 * f0)
            and lp >= 0.5 * power
            and lp >= 0.3 * self._level
        )
        if cont:
            self._tonal_frames += 1
            self._freqs.append(f)
            self._level = max(self._level, lp)
            if (frame_start + self.frame - self._onset_sample) * 1000 > self.max_ms * self.rate:
                self._too_long = True  # not a beep: wait for it to stop, report nothing
            return
        # The tone stopped in this frame or the previous one.
        if not self._too_long:
            end = self._refine_end(buf, base_sample, frame_start, f0)
            dur_ms = (end - self._onset_sample) * 1000 / self.rate
            # Speech can hold one harmonic for a few frames; a beep holds one exact frequency
            # for its whole length. Require clean 64 ms windows over >= min_ms - 40 ms and over
            # 60 % of the tone (the windows straddling the onset may hold the end of the
            # greeting), and a line that does not glide (voiced pitch moves by several Hz
            # within 100 ms).
            spread = max(self._freqs) - min(self._freqs)
            if (
                self.min_ms <= dur_ms <= self.max_ms
                and self._tonal_frames * FRAME_MS >= max(2 * FRAME_MS, self.min_ms - 40)
                and self._tonal_frames * FRAME_MS >= 0.6 * dur_ms
                and spread <= 3.0 + 0.003 * f0
            ):
                self._pending.append(
                    Beep(
                        freq_hz=round(float(np.median(self._freqs)), 1),
                        onset_ms=int(round(self._onset_sample * 1000 / self.rate)),
                        duration_ms=int(round(dur_ms)),
                        level_dbfs=round(10.0 * math.log10(2.0 * self._level / _FULL_SCALE_POWER + _EPS_POWER), 1),
                    )
                )
        self._reset_tone()
        # This frame may itself start a new tone (e.g. two-tone jingles): try once more.
        if tonal:
            self._step(i, frame, power, tonal, f, buf, base_sample)

    def _envelope(self, seg: np.ndarray, f0: float) -> np.ndarray:
        """Amplitude envelope of the ``f0`` component (complex demodulation, 5 ms boxcar)."""
        n = np.arange(seg.size)
        z = seg * np.exp(-2j * np.pi * f0 / self.rate * n)
        box = max(1, self.rate // 200)
        c = np.cumsum(np.concatenate([[0], z]))
        avg = (c[box:] - c[:-box]) / box  # avg[j] covers seg[j : j + box]
        env: np.ndarray = 2.0 * np.abs(avg)
        return env

    def _refine_onset(self, buf: np.ndarray, base: int, frame_start: int, f0: float) -> int:
        lo = max(0, frame_start - base - self.window - self.frame)
        hi = frame_start - base + self.frame
        env = self._envelope(buf[lo:hi], f0)
        box = max(1, self.rate // 200)
        cur = env[-(self.frame - box + 1) :]
        half = 0.5 * float(cur.max())
        below = np.nonzero(env[: env.size - (self.frame - box + 1) + int(np.argmax(cur))] < half)[0]
        j = int(below[-1]) + 1 if below.size else 0
        return max(0, base + lo + j + box // 2)

    def _refine_end(self, buf: np.ndarray, base: int, frame_start: int, f0: float) -> int:
        lo = max(0, frame_start - base - 2 * self.frame)
        hi = frame_start - base + self.frame
        env = self._envelope(buf[lo:hi], f0)
        box = max(1, self.rate // 200)
        half = 0.5 * math.sqrt(2.0 * self._level)
        # First point after the last strong point.
        strong = np.nonzero(env >= half)[0]
        j = int(strong[-1]) + 1 if strong.size else 0
        return base + lo + j + box // 2


class AnsweringMachineDetector:
    """Decide HUMAN / MACHINE / NOTSURE from the audio received after the answer.

    Feed 20 ms frames of 16-bit PCM (8 kHz by default) in order, from the answer on; several
    frames at once are processed as one numpy batch. See the module docstring for the rules and
    for how the caller combines the decision with the beep.
    """

    def __init__(self, params: AmdParams | None = None, rate: int = 8000):
        if rate <= 0 or rate % 50:
            raise AmdParamError("rate", rate)
        self.params = params if params is not None else AmdParams()
        self.rate = rate
        self.frame = rate // 50
        self._framer = _Framer(self.frame)
        p = self.params
        # Noise floor by minimum statistics: the minimum of the last ``noise_window_ms`` kept as
        # minima of 200 ms blocks, so each frame costs a few scalar comparisons.
        self._block_frames = 10
        self._blocks: deque[float] = deque(maxlen=max(1, p.noise_window_ms // 200))
        self._block_min = math.inf
        self._block_count = 0
        self._blocks_min = math.inf
        # The background level: a quantile of the last frames' levels (sorted copy + order).
        self._levels: deque[float] = deque()
        self._sorted_levels: list[float] = []
        self._levels_max = max(1, p.background_window_ms // FRAME_MS)
        self._pre_last = 0.0  # the last sample, for the pre-emphasis of the next batch
        self._beep = (
            BeepDetector(rate, min_ms=p.beep_min_ms, max_ms=p.beep_max_ms)
            if p.listen_for_beep
            else None
        )
        self._t = 0  # ms of audio consumed
        self._in_word = False
        self._consec_voice = 0
        self._consec_silence = 0
        self._quiet_run = 0  # consecutive frames without voice
        self._zero_run = 0  # consecutive frames of digital silence
        self._words = 0
        self._greeting_voice = 0
        self._first_word_at: int | None = None
        self._decided: AmdResult | None = None
        self._beep_found: Beep | None = None
        self._beeps: list[Beep] = []
        self._done = False
        self._end_silence = 0  # silence since the last voice, after a MACHINE decision
        # Fax and SIT (media.tones), listened for while a tone is the first thing heard.
        from .tones import ToneClassifier  # media.tones builds on BeepDetector

        self._tones: ToneClassifier | None = ToneClassifier(rate=rate) if p.detect_tones else None
        self._tone_verdict: ToneVerdict | None = None
        self._first_word_checked = False

    @property
    def decided(self) -> AmdResult | None:
        """The latest result (the decision, later with the beep filled in), or None."""
        return self._decided

    @property
    def done(self) -> bool:
        """Nothing more will come: decided, and beep found or not wanted or waited out."""
        return self._done

    @property
    def elapsed_ms(self) -> int:
        return self._t

    def feed(self, pcm: np.ndarray | bytes) -> AmdResult | None:
        """Consume audio; return the decision when it is made, and the updated result when a
        beep ends after a non-HUMAN decision. Otherwise None."""
        if self._done:
            return None
        x = self._framer.push(_as_float_pcm(pcm))
        n = x.size // self.frame
        if n == 0:
            return None
        frames = x.reshape(n, self.frame)
        power = (np.einsum("ij,ij->i", frames, frames) / self.frame).tolist()
        a = self.params.preemphasis
        hp = x.copy()
        hp[1:] -= a * x[:-1]
        hp[0] -= a * self._pre_last
        self._pre_last = float(x[-1])
        hpf = hp.reshape(n, self.frame)
        hp_power = (np.einsum("ij,ij->i", hpf, hpf) / self.frame).tolist()
        if self._beep is not None:
            self._beep._process(x, power)
            self._beeps.extend(self._beep._pending)
            self._beep._pending.clear()
        if self._tones is not None and self._tone_verdict is None and self._decided is None:
            self._tone_verdict = self._tones.feed(x)

        out: AmdResult | None = None
        for i in range(n):
            self._t += FRAME_MS
            tone = self._tone_verdict
            if self._decided is None and tone is not None and self._t >= tone.decided_at_ms:
                self._decided = out = self._tone_result(tone)
                self._done = True
                break
            # While a tone could still be a SIT's first segment or a fax tone, its end is not a
            # voicemail beep yet.
            holding = self._decided is None and self._tones is not None and self._tones.candidate()
            beep = None if holding else self._take_beep()
            if self._decided is None:
                if beep is not None and self._beep_stands_out(beep):
                    # A beep before any other rule: a machine, and the drop can start now.
                    self._beep_found = beep
                    res: AmdResult | None = self._result(MACHINE, "BEEP")
                else:
                    res = self._step(self._voiced(hp_power[i], power[i]))
                    self._check_first_word()
                if res is not None:
                    self._decided = out = res
                    if res.status == HUMAN or res.beep_at_ms is not None:
                        self._done = True
                    elif self._beep is None and not self._waits_for_end(res):
                        self._done = True
            elif beep is not None:
                with_beep = dataclasses.replace(
                    self._decided,
                    beep_hz=beep.freq_hz,
                    beep_ms=beep.duration_ms,
                    beep_at_ms=beep.onset_ms,
                )
                self._decided = out = self._ended(with_beep, "BEEP")
                self._done = True
            elif self._waits_for_end(self._decided) and self._silent_end(hp_power[i], power[i]):
                self._decided = out = self._ended(self._decided, "SILENCE")
                self._done = True
            elif self._t >= self.params.beep_wait_ms:
                if self._waits_for_end(self._decided):
                    self._decided = out = self._ended(self._decided, "TIMEOUT")
                self._done = True
            if self._done:
                break
        return out

    def finish(self) -> AmdResult:
        """The window is over (or the audio stopped): decide with what we have."""
        if self._decided is None:
            self._decided = self._result(NOTSURE, "TOOLONG")
        self._done = True
        return self._decided

    # -- internals ----------------------------------------------------------------------------

    def _check_first_word(self) -> None:
        """Fax and SIT tones count only as the first thing heard: once a word starts that is not
        a tone sounding since its start, stop listening for them."""
        if self._tones is None or self._first_word_at is None or self._first_word_checked:
            return
        self._first_word_checked = True
        onset = self._tones.in_tone_since()
        if onset is None or abs(onset - self._first_word_at) > 150:
            self._tones = None

    def _tone_result(self, tone: ToneVerdict) -> AmdResult:
        initial = self._first_word_at if self._first_word_at is not None else tone.onset_ms
        return AmdResult(
            machine=tone.kind == FAX,
            status=tone.kind,
            reason=tone.code,
            decided_at_ms=self._t,
            initial_silence_ms=min(initial, tone.onset_ms),
            greeting_ms=0,
            words=0,
            tone_hz=tone.freqs_hz,
            tone_at_ms=tone.onset_ms,
        )

    def _waits_for_end(self, decided: AmdResult) -> bool:
        """Is the end of this machine's greeting still to be found?"""
        return bool(self.params.message_end_silence_ms) and decided.machine

    def _ended(self, decided: AmdResult, how: str) -> AmdResult:
        """``decided`` with the greeting's end filled in, when that end is wanted."""
        if not self._waits_for_end(decided):
            return decided
        return dataclasses.replace(decided, message_end=how, message_end_ms=self._t)

    def _silent_end(self, power: float, raw_power: float) -> bool:
        """After the decision: has the greeting been followed by enough silence?"""
        if self._voiced(power, raw_power):
            self._in_word = True
            self._end_silence = 0
            return False
        self._in_word = False
        self._end_silence += FRAME_MS
        return self._end_silence >= self.params.message_end_silence_ms

    def _voiced(self, power: float, raw_power: float) -> bool:
        """Is this frame voice? Two tests, both with hysteresis inside a word: its level
        against the adaptive floor (minimum statistics) and an absolute minimum, as app_amd
        does; and its level after the pre-emphasis (``power``) against the room's background
        level (a low quantile of the last seconds). A lost packet (digital silence, which the
        media engine puts in its place) says nothing about the room: up to two keep the current
        word going; longer digital silence is silence."""
        p = self.params
        if raw_power <= 0.0:
            self._zero_run += 1
            if self._zero_run <= 2:
                return self._in_word
        else:
            self._zero_run = 0
        e = 10.0 * math.log10(raw_power / _FULL_SCALE_POWER + _EPS_POWER)
        if e < self._block_min:
            self._block_min = e
        floor = min(self._block_min, self._blocks_min)  # current frame included
        self._block_count += 1
        if self._block_count == self._block_frames:
            self._blocks.append(self._block_min)
            self._blocks_min = min(self._blocks)
            self._block_min = math.inf
            self._block_count = 0
        e_hp = 10.0 * math.log10(power / _FULL_SCALE_POWER + _EPS_POWER)
        hangover = p.voice_hangover_db if self._in_word else 0.0
        voiced = e > max(floor + p.voice_margin_db, p.voice_min_dbfs) - hangover
        if voiced and len(self._levels) >= 10:
            background = self.background_dbfs()
            assert background is not None
            voiced = e_hp > background + p.background_margin_db - hangover
        if not voiced:
            # Only what is not voice is the room: a greeting that starts at the answer, or a
            # long loud one, never raises it. (Until 10 such frames are known the floor test
            # decides alone.)
            self._add_level(e_hp)
        return voiced

    def _beep_stands_out(self, beep: Beep) -> bool:
        """Is this tone far enough above the room to be a voicemail beep? (Levels compared
        after the pre-emphasis, whose gain at the tone's frequency is applied to it.)"""
        background = self.background_dbfs()
        if background is None:
            return True
        a = self.params.preemphasis
        w = 2.0 * math.pi * beep.freq_hz / self.rate
        gain_db = 10.0 * math.log10(max(1e-6, 1.0 + a * a - 2.0 * a * math.cos(w)))
        # A sine's power is half its squared amplitude: level_dbfs (re a full-scale sine) is
        # 3 dB over the frame-power scale the background uses.
        return beep.level_dbfs - 3.01 + gain_db >= background + self.params.beep_over_background_db

    def _add_level(self, e: float) -> None:
        """One more frame of the room (the last ``background_window_ms`` of them are kept)."""
        levels, srt = self._levels, self._sorted_levels
        levels.append(e)
        bisect.insort(srt, e)
        if len(levels) > self._levels_max:
            old = levels.popleft()
            del srt[bisect.bisect_left(srt, old)]

    def background_dbfs(self) -> float | None:
        """The background level now (after pre-emphasis), or None before the first frame."""
        srt = self._sorted_levels
        if not srt:
            return None
        # Never more than background_span_db over the quietest of them: a greeting that
        # starts at the answer is not the room, its pauses show where the room is.
        p = self.params
        return min(srt[int(p.background_quantile * (len(srt) - 1))], srt[0] + p.background_span_db)

    def _take_beep(self) -> Beep | None:
        """The first beep that has ended by the end of the current frame (batches are analysed
        ahead of the rules, so a later beep of the same batch waits for its frame)."""
        if self._beeps and self._beeps[0].end_ms <= self._t:
            return self._beeps.pop(0)
        return None

    def _result(self, status: str, reason: str) -> AmdResult:
        b = self._beep_found
        initial = self._first_word_at if self._first_word_at is not None else self._t
        ended = status == MACHINE and b is not None and bool(self.params.message_end_silence_ms)
        return AmdResult(
            machine=status == MACHINE,
            status=status,
            reason=reason,
            decided_at_ms=self._t,
            initial_silence_ms=initial,
            greeting_ms=self._greeting_voice,
            words=self._words,
            beep_hz=None if b is None else b.freq_hz,
            beep_ms=None if b is None else b.duration_ms,
            beep_at_ms=None if b is None else b.onset_ms,
            message_end="BEEP" if ended else None,
            message_end_ms=self._t if ended else None,
        )

    def _step(self, voiced: bool) -> AmdResult | None:
        """app_amd's per-frame rules on one 20 ms frame (self._t is the frame's end). A run of
        voice shorter than ``min_word_length_ms`` is not a word: until it becomes one, the
        silence around it goes on (a click, or a loud moment of the room, does not restart the
        wait for the end of a person's "hello")."""
        p = self.params
        if voiced:
            self._quiet_run = 0
            self._consec_voice += FRAME_MS
            if not self._in_word and self._consec_voice < p.min_word_length_ms:
                self._consec_silence += FRAME_MS
                return self._silence_rules()
            self._consec_silence = 0
            if not self._in_word:
                self._in_word = True
                self._words += 1
                if self._first_word_at is None:
                    self._first_word_at = self._t - self._consec_voice
                    self._greeting_voice = self._consec_voice
                else:
                    self._greeting_voice += self._consec_voice
            elif self._first_word_at is not None:
                self._greeting_voice += FRAME_MS
            if self._consec_voice >= p.max_word_length_ms:
                return self._result(MACHINE, "MAXWORDLENGTH")
            if self._words > p.max_words:
                return self._result(MACHINE, "MAXWORDS")
            if self._first_word_at is not None and self._greeting_voice >= p.greeting_ms:
                return self._result(MACHINE, "LONGGREETING")
            return self._window_rule()
        self._quiet_run += FRAME_MS
        self._consec_silence += FRAME_MS
        if self._quiet_run >= p.between_words_silence_ms:
            self._in_word = False
            self._consec_voice = 0
        return self._silence_rules()

    def _silence_rules(self) -> AmdResult | None:
        p = self.params
        if self._first_word_at is not None:
            if self._consec_silence >= p.after_greeting_silence_ms:
                return self._result(HUMAN, "HUMAN")
        elif self._t >= p.initial_silence_ms:
            return self._result(NOTSURE, "INITIALSILENCE")
        return self._window_rule()

    def _window_rule(self) -> AmdResult | None:
        if self._t >= self.params.total_ms:
            return self._result(NOTSURE, "TOOLONG")
        return None
