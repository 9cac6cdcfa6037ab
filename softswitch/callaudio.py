"""The caller's audio as the live call control's verbs measure and play it.

Split out of :mod:`softswitch.callcontrol` along the seam between the verbs and the audio they
look at: the level of a received frame (:func:`frame_dbfs`, :data:`SILENCE_DBFS`), how long the
caller has been quiet (``_SilenceWatch``, for ``<Wait silence>`` and ``<Record timeout>``), the
beep detector of ``<Wait beep>``, the ``<Record playBeep>`` tone, and :class:`LiveMedia`, the
play-once media factory the executor builds sources with. No SIP and no call state here: each
piece is fed frames (a receive tap) or asked for a source.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import math
from typing import Any

import numpy as np

from softswitch.app.sources import PlayModuleMedia

# The logger of the call control, whose verbs these helpers serve (as before the split).
log = logging.getLogger("softswitch.callcontrol")

__all__ = [
    "RECORD_BEEP_FREQ_HZ",
    "RECORD_BEEP_LEVEL_DBM0",
    "RECORD_BEEP_MS",
    "SILENCE_DBFS",
    "LiveMedia",
    "frame_dbfs",
]


#: A received 20 ms frame whose RMS level is below this (dBFS) counts as silence, for
#: ``<Wait silence="true">`` and ``<Record timeout=...>``. Speech sits around -30..-10 dBFS;
#: a quiet line's noise and comfort noise (RFC 3389, -70 dBov here) well below.
SILENCE_DBFS = -45.0

#: ``<Record playBeep="true">``: the beep played before recording starts.
RECORD_BEEP_FREQ_HZ = 1000.0
RECORD_BEEP_MS = 500
RECORD_BEEP_LEVEL_DBM0 = -13.0

#: ``<Wait silence>`` counts silence only after this many loud frames (60 ms) were heard,
#: as FreeSWITCH's wait_for_silence ``listen_hits``: the wait is for a greeting to *end*.
_LISTEN_FRAMES = 3
_FULL_SCALE = 32768.0


def frame_dbfs(frame: np.ndarray) -> float:
    """RMS level of an int16 frame in dBFS (a full-scale square wave is 0 dBFS)."""
    x = np.asarray(frame, dtype=np.float64)
    if x.size == 0:
        return -math.inf
    power = float(np.mean(x * x))
    if power <= 0.0:
        return -math.inf
    return 10.0 * math.log10(power / (_FULL_SCALE * _FULL_SCALE))


class LiveMedia(PlayModuleMedia):
    """:class:`~softswitch.app.control.MediaFactory` over :mod:`media.play` whose sources
    play once (``loop=1``; ``loop=0`` means *forever* in :mod:`media.play`).

    :meth:`file` decodes (blocking); the executor calls it through ``asyncio.to_thread``."""

    @staticmethod
    def _play_mod() -> Any:
        return importlib.import_module("media.play")

    def pcm(self, samples: Any) -> Any:
        return self._play_mod().ArraySource(samples, loop=1)

    def file(self, path: str) -> Any:
        return self._play_mod().FileSource(path, loop=1)


class _SilenceWatch:
    """Measures how long the caller has been quiet, from a receive tap.

    The engine only taps once media has started to arrive, so time with no frames at all
    counts as silence too: ``silent_for`` is measured from the last loud frame (or from the
    start) on the loop clock."""

    def __init__(self, loop: asyncio.AbstractEventLoop, threshold_dbfs: float) -> None:
        self._loop = loop
        self._threshold = (_FULL_SCALE * 10 ** (threshold_dbfs / 20)) ** 2  # mean power
        self.last_voice = loop.time()
        self.voiced_frames = 0
        self.voice = asyncio.Event()

    def feed(self, frame: np.ndarray) -> None:
        x = np.asarray(frame, dtype=np.float32)
        if x.size and float(np.mean(x * x)) >= self._threshold:
            self.last_voice = self._loop.time()
            self.voiced_frames += 1
            self.voice.set()

    @property
    def heard_voice(self) -> bool:
        """Sound for at least :data:`_LISTEN_FRAMES` frames so far."""
        return self.voiced_frames >= _LISTEN_FRAMES

    def silent_for(self) -> float:
        return self._loop.time() - self.last_voice


def _beep_detector() -> Any | None:
    try:
        amd = importlib.import_module("media.amd")
        return amd.BeepDetector()
    except Exception:  # the AMD module is optional
        log.warning("media.amd.BeepDetector unavailable: <Wait beep> waits its full length")
        return None
