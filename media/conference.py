"""Conference mixing on the media clock.

:class:`Mixer` is one room's mix over plain arrays (no sockets, no clock): each tick every
member's received 20 ms frame (8 kHz int16, whatever codec it arrived in: the streams decode to
linear PCM before their taps) is put in a row of one matrix, then :meth:`Mixer.mix` does

1. **talker detection**: per member the frame's energy against a floor tracked per member
   (falls fast to quiet frames, rises slowly, capped so loud background noise still counts as
   sound); a member talks while its energy is ``TALK_RATIO`` over its floor (and over an
   absolute minimum), with a ``HANGOVER_TICKS`` hang-over so word gaps do not cut it;
2. **one sum** in int32 of the rows of the talking, unmuted members (silent members are
   skipped: their line noise does not add up in a large room);
3. **mix-minus**: a member that contributed hears ``sum - own``; every other member hears the
   shared ``sum`` itself (so a 50-member room with 3 talkers computes 4 distinct mixes, not 50);
4. room sources (enter/exit sounds, prompts played to the whole room) are added to every mix;
5. **gain and limiter**: the distinct mixes are scaled by one automatic gain (instant attack to
   the frame's peak, slow release back to unity), then a soft knee above ``KNEE`` of full scale,
   so many talkers at once never wrap or hard-clip int16.

Muted members are not summed but still hear; deaf members are summed (when they talk) and hear
nothing (:meth:`Mixer.output` is None for them).

:class:`Conference` puts a :class:`Mixer` on a :class:`~media.engine.MediaEngine`: a receive tap
per member stream fills its row, the engine's tick hook (after every stream received, before any
sends) mixes, and an overlay source on each member stream (``play(mix=True)``) sends its mix on
the same tick, on top of whatever else the stream plays (hold music while alone, a prompt to
that member).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .engine import FRAME_SAMPLES, MediaEngine, MediaStream

__all__ = [
    "HANGOVER_TICKS",
    "KNEE",
    "TALK_RATIO",
    "Conference",
    "Mixer",
    "MixResult",
]

log = logging.getLogger("media.conference")

#: Energy over the member's floor (×, on mean squares: 4 = 6 dB) that counts as talking.
TALK_RATIO = 4.0
#: Below this mean-square energy nothing talks (-50 dBFS).
MIN_TALK_ENERGY = (32768.0 * 10 ** (-50 / 20)) ** 2
#: The floor never rises above this (-40 dBFS), so a constant tone or loud line keeps talking.
MAX_FLOOR = (32768.0 * 10 ** (-40 / 20)) ** 2
#: Per tick the floor rises by this factor when the frame is louder than it (~+0.4 dB/s).
FLOOR_RISE = 1.005
#: Per tick the floor moves this fraction of the way down to a quieter frame.
FLOOR_FALL = 0.2
#: Ticks a member keeps talking after its last loud frame (300 ms).
HANGOVER_TICKS = 15
#: Ticks the loudest talker must lead before the floor moves to it (100 ms).
FLOOR_HOLD_TICKS = 5
#: Peak the automatic gain aims for (fraction of full scale), and the soft knee above it.
TARGET_PEAK = 0.89
KNEE = 0.75
#: Per tick the gain recovers this fraction of the way back up (~0.4 s to unity).
GAIN_RELEASE = 0.05
FULL = 32767.0
SILENCE = np.zeros(FRAME_SAMPLES, dtype=np.int16)


@dataclass(slots=True)
class MixResult:
    """What changed on one :meth:`Mixer.mix`: members that started or stopped talking, and the
    floor holder when it moved (``floor_changed``; ``floor`` may then be None: nobody talks)."""

    started: list[int]
    stopped: list[int]
    floor_changed: bool = False
    floor: int | None = None


class Mixer:
    """One room's mix over a matrix of member frames (see the module docstring).

    Members are slots (small ints) handed out by :meth:`add`; the matrix grows as needed."""

    def __init__(self, capacity: int = 8) -> None:
        capacity = max(1, capacity)
        self._frames = np.zeros((capacity, FRAME_SAMPLES), dtype=np.int16)
        self._has = np.zeros(capacity, dtype=bool)  # a frame arrived this tick
        self._used = np.zeros(capacity, dtype=bool)
        self._muted = np.zeros(capacity, dtype=bool)
        self._deaf = np.zeros(capacity, dtype=bool)
        self._floor = np.full(capacity, MIN_TALK_ENERGY / TALK_RATIO, dtype=np.float64)
        self._hang = np.zeros(capacity, dtype=np.int32)
        self._talking = np.zeros(capacity, dtype=bool)
        self._energy = np.zeros(capacity, dtype=np.float64)
        self._free: list[int] = list(range(capacity - 1, -1, -1))
        self._outputs: dict[int, np.ndarray] = {}
        self._total: np.ndarray = SILENCE
        self._sources: list[tuple[Any, Callable[[], None] | None]] = []
        self.gain = 1.0
        self.floor: int | None = None
        self._candidate: int | None = None
        self._candidate_ticks = 0

    # --- members ---------------------------------------------------------------------------

    def add(self, *, muted: bool = False, deaf: bool = False) -> int:
        if not self._free:
            self._grow()
        slot = self._free.pop()
        self._used[slot] = True
        self._muted[slot] = muted
        self._deaf[slot] = deaf
        self._has[slot] = False
        self._talking[slot] = False
        self._hang[slot] = 0
        self._floor[slot] = MIN_TALK_ENERGY / TALK_RATIO
        return slot

    def remove(self, slot: int) -> None:
        if not self._used[slot]:
            return
        self._used[slot] = self._has[slot] = self._talking[slot] = False
        self._outputs.pop(slot, None)
        self._free.append(slot)
        if self.floor == slot:
            self.floor = None
        if self._candidate == slot:
            self._candidate = None

    def _grow(self) -> None:
        old = len(self._used)
        new = old * 2

        def grown(a: np.ndarray, fill: Any) -> np.ndarray:
            out = np.full((new,) + a.shape[1:], fill, dtype=a.dtype)
            out[:old] = a
            return out

        self._frames = grown(self._frames, 0)
        self._has = grown(self._has, False)
        self._used = grown(self._used, False)
        self._muted = grown(self._muted, False)
        self._deaf = grown(self._deaf, False)
        self._floor = grown(self._floor, MIN_TALK_ENERGY / TALK_RATIO)
        self._hang = grown(self._hang, 0)
        self._talking = grown(self._talking, False)
        self._energy = grown(self._energy, 0.0)
        self._free.extend(range(new - 1, old - 1, -1))

    @property
    def members(self) -> int:
        return int(self._used.sum())

    def set_muted(self, slot: int, muted: bool) -> None:
        self._muted[slot] = muted

    def set_deaf(self, slot: int, deaf: bool) -> None:
        self._deaf[slot] = deaf

    def muted(self, slot: int) -> bool:
        return bool(self._muted[slot])

    def deaf(self, slot: int) -> bool:
        return bool(self._deaf[slot])

    def talking(self, slot: int) -> bool:
        return bool(self._talking[slot])

    def energy_dbfs(self, slot: int) -> float:
        e = float(self._energy[slot])
        return 10 * np.log10(e / (32768.0**2)) if e > 0 else -120.0

    # --- per tick -------------------------------------------------------------------------

    def put(self, slot: int, frame: np.ndarray) -> None:
        """The member's received frame of this tick (int16, ``FRAME_SAMPLES``)."""
        if frame.shape[0] == FRAME_SAMPLES:
            self._frames[slot] = frame
        else:
            self._frames[slot] = 0
            n = min(FRAME_SAMPLES, frame.shape[0])
            self._frames[slot, :n] = frame[:n]
        self._has[slot] = True

    def play(self, source: Any, on_done: Callable[[], None] | None = None) -> None:
        """Add a source (``read(n) -> int16 array | None``) to the whole room's mix from the
        next tick; ``on_done`` is called when it ends or is stopped."""
        self._sources.append((source, on_done))

    def stop_sources(self) -> None:
        sources, self._sources = self._sources, []
        for source, on_done in sources:
            _close(source)
            if on_done is not None:
                on_done()

    def output(self, slot: int) -> np.ndarray | None:
        """What the member hears this tick (after :meth:`mix`): None when deaf or silent."""
        return self._outputs.get(slot)

    @property
    def total(self) -> np.ndarray:
        """The room's whole mix of this tick (every contributor and the room sources, after the
        gain): what a room recording keeps."""
        return self._total

    def mix(self) -> MixResult:
        """Mix this tick's frames (see the module docstring) and clear them for the next."""
        has = self._has & self._used
        frames = self._frames
        result = MixResult([], [])
        # 1. talker detection over every member with a frame, in one pass
        rows = (has).nonzero()[0]
        loud = np.zeros(0, dtype=np.intp)
        if rows.size:
            x = frames[rows].astype(np.float64)
            energy = np.einsum("ij,ij->i", x, x) / FRAME_SAMPLES
            self._energy[rows] = energy
            floor = self._floor[rows]
            above = energy > np.maximum(floor * TALK_RATIO, MIN_TALK_ENERGY)
            down = energy < floor
            floor = np.where(down, floor + (energy - floor) * FLOOR_FALL, floor * FLOOR_RISE)
            self._floor[rows] = np.minimum(np.maximum(floor, 1.0), MAX_FLOOR)
            loud = rows[above]
            self._hang[loud] = HANGOVER_TICKS
        self._energy[~has] = 0.0
        self._hang[self._used] -= 1
        np.maximum(self._hang, 0, out=self._hang)
        talking = (self._hang > 0) & self._used
        if talking.any() or self._talking.any():
            changed = (talking != self._talking).nonzero()[0]
            for slot in changed.tolist():
                (result.started if talking[slot] else result.stopped).append(slot)
            self._talking = talking
        # 2. one sum of the talking, unmuted members that sent a frame this tick
        contributors = (talking & ~self._muted & has).nonzero()[0]
        room = self._room_frame()
        outputs: dict[int, np.ndarray] = {}
        if contributors.size == 0 and room is None:
            self._total = SILENCE
        else:
            own = frames[contributors].astype(np.int32)
            total = own.sum(axis=0, dtype=np.int32)
            if room is not None:
                total += room
            # 3. mix-minus: row 0 the shared mix, then one row per contributor
            distinct = np.empty((1 + contributors.size, FRAME_SAMPLES), dtype=np.int32)
            distinct[0] = total
            np.subtract(total, own, out=distinct[1:])
            # 5. one gain for the room, then the soft knee
            scaled = self._limit(distinct)
            self._total = scaled[0]
            listeners = self._used & ~self._deaf
            shared = scaled[0]
            for slot in (listeners).nonzero()[0].tolist():
                outputs[slot] = shared
            for i, slot in enumerate(contributors.tolist(), 1):
                if listeners[slot]:
                    outputs[slot] = scaled[i]
        self._outputs = outputs
        self._has[:] = False
        # floor: the loudest talker, once it has led for FLOOR_HOLD_TICKS
        self._move_floor(talking, result)
        return result

    def _room_frame(self) -> np.ndarray | None:
        if not self._sources:
            return None
        total: np.ndarray | None = None
        running = []
        for source, on_done in self._sources:
            try:
                frame = source.read(FRAME_SAMPLES)
            except Exception:
                log.exception("conference source failed")
                frame = None
            if frame is None or len(frame) == 0:
                _close(source)
                if on_done is not None:
                    on_done()
                continue
            running.append((source, on_done))
            chunk = np.zeros(FRAME_SAMPLES, dtype=np.int32)
            n = min(FRAME_SAMPLES, len(frame))
            chunk[:n] = np.asarray(frame[:n], dtype=np.int32)
            total = chunk if total is None else total + chunk
        self._sources = running
        return total

    def _limit(self, distinct: np.ndarray) -> np.ndarray:
        peak = float(np.abs(distinct).max()) if distinct.size else 0.0
        want = min(1.0, TARGET_PEAK * FULL / peak) if peak > 0 else 1.0
        if want < self.gain:
            self.gain = want  # attack at once: this very frame must not clip
        else:
            self.gain += (want - self.gain) * GAIN_RELEASE
        y = distinct.astype(np.float32)
        if self.gain < 0.999:
            y *= self.gain
        knee = KNEE * FULL
        over = np.abs(y) > knee
        if over.any():
            # above the knee, tanh compresses smoothly into the remaining headroom
            a = np.abs(y[over])
            y[over] = np.sign(y[over]) * (
                knee + (FULL - knee) * np.tanh((a - knee) / (FULL - knee))
            )
        return y.astype(np.int16)

    def _move_floor(self, talking: np.ndarray, result: MixResult) -> None:
        speaking = (talking & ~self._muted).nonzero()[0]
        if speaking.size == 0:
            loudest = None
        else:
            loudest = int(speaking[np.argmax(self._energy[speaking])])
        if loudest == self.floor:
            self._candidate, self._candidate_ticks = None, 0
            return
        if loudest != self._candidate:
            self._candidate, self._candidate_ticks = loudest, 0
        self._candidate_ticks += 1
        if loudest is None or self._candidate_ticks >= FLOOR_HOLD_TICKS:
            self.floor = loudest
            self._candidate, self._candidate_ticks = None, 0
            result.floor_changed = True
            result.floor = loudest


def _close(source: Any) -> None:
    closer = getattr(source, "close", None)
    if callable(closer):
        try:
            closer()
        except Exception:
            log.exception("closing conference source failed")


class _MemberOutput:
    """The overlay source a member stream plays (``mix=True``): its mix of the current tick."""

    __slots__ = ("_mixer", "_slot", "closed")

    def __init__(self, mixer: Mixer, slot: int) -> None:
        self._mixer, self._slot, self.closed = mixer, slot, False

    def read(self, n: int) -> np.ndarray | None:
        if self.closed:
            return None
        frame = self._mixer.output(self._slot)
        return SILENCE if frame is None else frame


class Conference:
    """A :class:`Mixer` on a media engine's clock: members are :class:`MediaStream` s.

    ``on_mix(result)`` is called on the clock tick after each mix (quick work only: the caller
    hands events over to its loop). ``add_recorder(fn)`` receives the room's whole mix each
    tick (the room recording)."""

    def __init__(
        self, engine: MediaEngine, *, on_mix: Callable[[MixResult], None] | None = None
    ) -> None:
        self.engine = engine
        self.mixer = Mixer()
        self.on_mix = on_mix
        self._members: dict[int, tuple[MediaStream, Callable[[np.ndarray], None], Any]] = {}
        self._recorders: list[Callable[[np.ndarray], None]] = []
        self._closed = False
        engine.add_tick_hook(self._tick)

    def join(self, stream: MediaStream, *, muted: bool = False, deaf: bool = False) -> int:
        """Add ``stream`` as a member; returns its slot (the handle for mute/deaf/leave)."""
        if self._closed:
            raise RuntimeError("conference is closed")
        slot = self.mixer.add(muted=muted, deaf=deaf)
        mixer = self.mixer

        def tap(frame: np.ndarray) -> None:
            mixer.put(slot, frame)

        stream.add_tap(tap)
        output = _MemberOutput(mixer, slot)
        self._members[slot] = (stream, tap, output)
        self._play_output(slot)
        return slot

    def _play_output(self, slot: int) -> None:
        entry = self._members.get(slot)
        if entry is None:
            return
        stream, _, output = entry
        if stream.closed or output.closed:
            return
        future = stream.play(output, mix=True)

        def again(fut: asyncio.Future[str]) -> None:
            # stop_play()/stop_overlays() on the member's stream (a prompt API) must not
            # leave it deaf to the room: the output goes back on while it is a member.
            if not fut.cancelled() and fut.result() == "stopped":
                self._play_output(slot)

        future.add_done_callback(again)

    def leave(self, slot: int) -> None:
        entry = self._members.pop(slot, None)
        if entry is None:
            return
        stream, tap, output = entry
        output.closed = True  # its overlay ends on the next read
        stream.remove_tap(tap)
        self.mixer.remove(slot)

    def stream(self, slot: int) -> MediaStream | None:
        entry = self._members.get(slot)
        return entry[0] if entry else None

    def add_recorder(self, fn: Callable[[np.ndarray], None]) -> None:
        self._recorders.append(fn)

    def remove_recorder(self, fn: Callable[[np.ndarray], None]) -> None:
        if fn in self._recorders:
            self._recorders.remove(fn)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for slot in list(self._members):
            self.leave(slot)
        self.mixer.stop_sources()
        self.engine.remove_tick_hook(self._tick)

    def _tick(self, now: float) -> None:
        result = self.mixer.mix()
        for fn in self._recorders:
            try:
                fn(self.mixer.total)
            except Exception:
                log.exception("conference recorder failed; removed")
                self._recorders.remove(fn)
        if self.on_mix is not None and (result.started or result.stopped or result.floor_changed):
            self.on_mix(result)
