"""Fax and special-information tones at the start of an answered call.

What is listened for
--------------------
* **Fax, called side** (ITU-T T.30): CED, a continuous 2100 Hz answer tone of 2.6–4 s, or
  its V.8 form ANSam (ITU-T V.8 / V.25: 2100 Hz amplitude-modulated at 15 Hz, with a phase
  reversal every 450 ms). Reported ``FAX`` with reason ``CED`` or ``ANSAM`` once 2100 Hz has
  sounded for :attr:`ToneParams.ced_ms` (phase reversals break the line for a window or two;
  pieces of the tone closer than ``join_gap_ms`` count as one).
* **Fax, calling side**: CNG, 1100 Hz for 0.5 s every 3.5 s (a fax machine answering a
  call it expected to place, or a fax server). Reported ``FAX``/``CNG`` when a burst of
  0.5 s ± 25 % ends.
* **Special information tones** (ITU-T E.180 Annex 2 / Telcordia SR-2275): three tone
  segments in rising order, 950 ± 50 Hz, 1400 ± 50 Hz, 1800 ± 50 Hz, of 330 ± 70 ms each
  (North America codes the condition in the first two: 913.8 or 985.2 Hz, 1370.6 or
  1428.5 Hz, 274 or 380 ms; the third is always 1776.7 Hz). Reported ``SIT`` as soon as the
  third segment has lasted ``sit_third_ms``, with the North American code when the first two
  segments match one (``SIT_IC`` intercept, ``SIT_VC`` vacant code, ``SIT_RO`` reorder,
  ``SIT_NC`` no circuit, ``SIT_IO`` ineffective other), else ``SIT``.

How
---
The segmentation is :class:`media.amd.BeepDetector`'s (a 64 ms Hann-windowed FFT per 20 ms
frame for loud frames, one spectral line dominating the band, onsets and ends refined to a
few ms with a demodulated envelope) run over 850–2200 Hz with no upper length limit: a tone
that changes frequency ends one segment and starts the next in the same frame, so the SIT's
back-to-back segments come out as three tones with their exact lengths. This module only
reads the sequence of segments (and the one still sounding) against the patterns above.

Who uses it
-----------
:class:`media.amd.AnsweringMachineDetector` feeds it the same frames and takes its verdict
before any greeting rule, and only while the tone is the first thing heard after the answer
(a tone after speech is a voicemail beep, not a fax or an intercept). It is usable alone::

    tones = ToneClassifier()
    verdict = tones.feed(pcm)       # every 20 ms frame from the answer on
    if verdict is not None:
        print(verdict.kind, verdict.code, verdict.decided_at_ms)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .amd import FRAME_MS, Beep, BeepDetector, _as_float_pcm

__all__ = ["FAX", "SIT", "ToneParams", "ToneVerdict", "ToneClassifier"]

FAX = "FAX"
SIT = "SIT"

# North American SIT codes (Telcordia): (first high?, second high?, first long?, second long?).
_SIT_CODES: dict[tuple[bool, bool, bool, bool], str] = {
    (False, False, False, False): "SIT_IC",  # intercept: 913.8 S, 1370.6 S
    (False, False, True, True): "SIT_NC",  # no circuit (inter-LATA): 913.8 L, 1370.6 L
    (True, True, True, True): "SIT_NC",  # no circuit (intra-LATA): 985.2 L, 1428.5 L
    (True, False, True, False): "SIT_VC",  # vacant code: 985.2 L, 1370.6 S
    (True, False, False, True): "SIT_RO",  # reorder (inter-LATA): 985.2 S, 1370.6 L
    (False, True, False, True): "SIT_RO",  # reorder (intra-LATA): 913.8 S, 1428.5 L
    (False, True, True, False): "SIT_IO",  # ineffective other: 913.8 L, 1428.5 S
}


@dataclass(frozen=True)
class ToneParams:
    """Tolerances of the patterns (defaults: the standards' tolerances widened by what a G.711
    line and the 64 ms analysis window smear)."""

    ced_hz: float = 2100.0
    ced_tolerance_hz: float = 30.0
    ced_ms: int = 700
    """2100 Hz this long (pieces joined) is a fax answer tone; CED itself lasts 2.6–4 s."""
    cng_hz: float = 1100.0
    cng_tolerance_hz: float = 38.0
    cng_min_ms: int = 375
    cng_max_ms: int = 650
    sit_bands: tuple[tuple[float, float], ...] = (
        (880.0, 1020.0),
        (1330.0, 1470.0),
        (1730.0, 1870.0),
    )
    sit_min_ms: int = 150
    sit_max_ms: int = 480
    sit_gap_ms: int = 150
    """Most silence between two SIT segments (4 ms in North America, 30 ms ITU; plus a lost
    packet or two at a boundary, which the segmenter cannot tell from silence)."""
    sit_third_ms: int = 150
    """Report a SIT once its third segment has sounded this long..."""
    sit_third_ended_ms: int = 100
    """...or once it ended after this long (a lost packet cut it short)."""
    loss_gap_ms: int = 90
    """Pieces of one tone closer than this are one segment (a lost packet or two)."""
    min_dbfs: float = -45.0


@dataclass(frozen=True)
class ToneVerdict:
    """A fax or special-information tone: ``kind`` FAX or SIT, ``code`` (CED, ANSAM, CNG;
    SIT_IC, SIT_VC, SIT_RO, SIT_NC, SIT_IO or SIT), when the tone started and when it was
    recognised (ms since the first sample fed), and its frequencies."""

    kind: str
    code: str
    onset_ms: int
    decided_at_ms: int
    freqs_hz: tuple[float, ...]


def _sit_code(f1: float, f2: float, d1: int, d2: int) -> str:
    """The North American code of a SIT whose first two segments are on its frequencies (within
    20 Hz: the standard's 0.2 % plus the analysis), else plain ``SIT`` (ITU's 950/1400 Hz)."""

    def side(f: float, low: float, high: float) -> bool | None:
        if abs(f - low) <= 20.0:
            return False
        if abs(f - high) <= 20.0:
            return True
        return None

    h1, h2 = side(f1, 913.8, 985.2), side(f2, 1370.6, 1428.5)
    if h1 is None or h2 is None:
        return "SIT"
    return _SIT_CODES.get((h1, h2, d1 > 327, d2 > 327), "SIT")


def _period(hz: float, rate: int, most: int) -> int:
    """A length in samples (at most ``most``) closest to a whole number of cycles of ``hz``."""
    best, err = most, 1.0
    for p in range(max(8, most // 4), most + 1):
        cycles = p * hz / rate
        e = abs(cycles - round(cycles)) * most / p  # phase drift over one frame, in cycles
        if e < err:
            best, err = p, e
    return best


class ToneClassifier:
    """Feed 20 ms frames of 16-bit PCM from the answer on; :meth:`feed` returns a
    :class:`ToneVerdict` once, when a fax or SIT pattern is recognised."""

    def __init__(self, params: ToneParams | None = None, rate: int = 8000):
        self.params = p = params if params is not None else ToneParams()
        self.rate = rate
        self._seg = BeepDetector(
            rate,
            min_ms=40,
            fmin=850.0,
            fmax=min(2200.0, rate / 2 - 200.0),
            max_ms=3_600_000,
            min_dbfs=p.min_dbfs,
        )
        self._tones: list[Beep] = []  # ended segments, oldest first (bounded: see _remember)
        self._pieces = 0  # how many pieces the last ended segment was joined from
        self._tail: np.ndarray | None = None  # the last frame (for _conceal)
        self._period = rate // 50  # samples repeated by _conceal
        self._zeros = 0  # frames concealed in a row
        self.verdict: ToneVerdict | None = None

    @property
    def elapsed_ms(self) -> int:
        return self._seg.elapsed_ms

    def in_tone_since(self) -> int | None:
        """Onset (ms) of the tone sounding now, or None: lets the AMD tell a tone from a word."""
        cur = self._seg.current_tone()
        return None if cur is None else cur[1]

    def candidate(self) -> bool:
        """Could what is sounding (or just ended) still become a fax or SIT verdict? The AMD
        holds its beep rule while it could."""
        if self.verdict is not None:
            return False
        now = self.elapsed_ms
        cur = self._seg.current_tone()
        if cur is not None and (self._could_start(cur[0]) or self._in_band(cur[0], 2)):
            return True
        if self._tones:
            last = self._tones[-1]
            gap = max(self.params.sit_gap_ms, self.params.loss_gap_ms) + FRAME_MS
            if now - last.end_ms <= gap and (
                self._could_start(last.freq_hz) or self._in_band(last.freq_hz, 2)
            ):
                return True
        return False

    def feed(self, pcm: np.ndarray | bytes) -> ToneVerdict | None:
        if self.verdict is not None:
            return None
        x = self._conceal(self._seg._framer.push(_as_float_pcm(pcm)))
        self._seg._process(x)
        while self._seg._pending:
            self._remember(self._seg._pending.popleft())
            v = self._judge(None)
            if v is not None:
                return self._decide(v)
        cur = self._seg.current_tone()
        if cur is not None:
            v = self._judge(cur)
            if v is not None:
                return self._decide(v)
        return None

    # -- internals ----------------------------------------------------------------------------

    def _conceal(self, x: np.ndarray) -> np.ndarray:
        """A lost packet reaches the taps as a frame of exact digital silence in the middle of a
        tone. For the tone analysis only, continue the tone through it (at most two frames in a
        row), as a receiver's packet-loss concealment would: the last samples repeated with a
        period of whole cycles of the tone's frequency, so the line keeps its phase and the
        segment is not cut."""
        frame = self._seg.frame
        n = x.size // frame
        if n == 0:
            return x
        frames = x.reshape(n, frame)
        zero = [not bool(v) for v in np.asarray(frames.any(axis=1)).tolist()]
        if not any(zero):
            self._zeros = 0
            self._tail = frames[-1].copy()
            return x
        frames = frames.copy()
        cur = self._seg.current_tone()
        for i in range(n):
            if (
                zero[i]
                and self._tail is not None
                and self._zeros < 2
                and (cur is not None or self._zeros)
            ):
                if cur is not None:
                    self._period = _period(cur[0], self.rate, frame)
                reps = -(-frame // self._period)
                frames[i] = np.tile(self._tail[-self._period :], reps)[:frame]
                self._tail = frames[i].copy()
                self._zeros += 1
            else:
                if zero[i]:
                    self._tail = None
                else:
                    self._tail = frames[i].copy()
                self._zeros = 0
        return frames.reshape(-1)

    def _decide(self, v: ToneVerdict) -> ToneVerdict:
        self.verdict = v
        return v

    def _remember(self, tone: Beep) -> None:
        # A lost packet (concealed as silence) or a phase reversal breaks a tone for a frame or
        # two: pieces of one frequency that close together are one segment.
        if self._tones:
            last = self._tones[-1]
            if (
                abs(last.freq_hz - tone.freq_hz) <= max(12.0, 0.01 * tone.freq_hz)
                and tone.onset_ms - last.end_ms <= self.params.loss_gap_ms
            ):
                tone = Beep(last.freq_hz, last.onset_ms, tone.end_ms - last.onset_ms)
                self._tones.pop()
                self._pieces += 1
            else:
                self._pieces = 1
        else:
            self._pieces = 1
        self._tones.append(tone)
        del self._tones[:-4]

    def _in_band(self, f: float, segment: int) -> bool:
        lo, hi = self.params.sit_bands[segment]
        return lo <= f <= hi

    def _could_start(self, f: float) -> bool:
        p = self.params
        return (
            abs(f - p.ced_hz) <= p.ced_tolerance_hz
            or abs(f - p.cng_hz) <= p.cng_tolerance_hz
            or any(lo <= f <= hi for lo, hi in p.sit_bands[:2])
        )

    def _judge(self, current: tuple[float, int, int] | None) -> ToneVerdict | None:
        """The patterns over the ended segments plus ``current`` (freq, onset, ms so far)."""
        p = self.params
        now = self.elapsed_ms
        segs: list[tuple[float, int, int]] = [
            (t.freq_hz, t.onset_ms, t.duration_ms) for t in self._tones
        ]
        if current is not None:
            segs.append(current)
        if not segs:
            return None
        f, onset, dur = segs[-1]
        pieces = self._pieces if current is None else 1
        if current is not None and len(segs) >= 2:
            # The tone sounding now continues the last one across a lost packet or a phase
            # reversal: judge them as one segment.
            pf, po, pd = segs[-2]
            if abs(pf - f) <= max(12.0, 0.01 * f) and onset - (po + pd) <= p.loss_gap_ms:
                segs[-2:] = [(pf, po, onset + dur - po)]
                f, onset, dur = segs[-1]
                pieces = self._pieces + 1
        # Fax answer tone: 2100 Hz; ANSam's phase reversals break it into pieces.
        if abs(f - p.ced_hz) <= p.ced_tolerance_hz:
            if dur >= p.ced_ms:
                return ToneVerdict(
                    FAX, "ANSAM" if pieces >= 2 else "CED", onset, now, (round(f, 1),)
                )
            return None
        # Calling fax: one 1100 Hz burst of about 0.5 s, judged when it has ended.
        if current is None and abs(f - p.cng_hz) <= p.cng_tolerance_hz:
            if p.cng_min_ms <= dur <= p.cng_max_ms:
                return ToneVerdict(FAX, "CNG", onset, now, (round(f, 1),))
            return None
        # SIT: three rising segments back to back, the third long enough.
        third_ms = p.sit_third_ms if current is not None else p.sit_third_ended_ms
        if len(segs) >= 3 and p.sit_bands[2][0] <= f <= p.sit_bands[2][1] and dur >= third_ms:
            (f1, o1, d1), (f2, o2, d2) = segs[-3], segs[-2]
            bands = p.sit_bands
            if (
                bands[0][0] <= f1 <= bands[0][1]
                and bands[1][0] <= f2 <= bands[1][1]
                and p.sit_min_ms <= d1 <= p.sit_max_ms
                and p.sit_min_ms <= d2 <= p.sit_max_ms
                and o2 - (o1 + d1) <= p.sit_gap_ms
                and onset - (o2 + d2) <= p.sit_gap_ms
            ):
                code = _sit_code(f1, f2, d1, d2)
                return ToneVerdict(SIT, code, o1, now, (round(f1, 1), round(f2, 1), round(f, 1)))
        return None
