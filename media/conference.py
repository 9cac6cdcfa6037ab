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
5. **gain and limiter**: the room's distinct mixes are scaled by its automatic gain (instant
   attack to the frame's peak, slow release back to unity), then a soft knee above ``KNEE`` of
   full scale, so many talkers at once never wrap or hard-clip int16.

Muted members are not summed but still hear; deaf members are summed (when they talk) and hear
nothing (:meth:`Mixer.output` is None for them). A member whispering to another
(:meth:`Mixer.set_whisper`, a coach) is not summed either: its talking frame is added to its
target's mix only (one extra row per coached member that tick), and it hears the room as
everyone does.

:class:`MixerBank` holds every room of a media engine in one matrix (a row per member and its
room's index), so one :meth:`MixerBank.mix` serves all rooms with a fixed number of numpy calls
(the per-room sums are one ``np.add.reduceat`` over the talkers sorted by room; the gains and
the floor are per-room arrays); a :class:`Mixer` is one room of it (``Mixer()`` alone makes a
bank of its own, for tests and tools).

:class:`Conference` puts a room on a :class:`~media.engine.MediaEngine`: a receive tap per member
stream fills its row, the engine's tick hook (after every stream received, before any sends)
mixes the engine's bank once, and an overlay source on each member stream (``play(mix=True)``)
sends its mix on the same tick, on top of whatever else the stream plays (hold music while
alone, a prompt to that member).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
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
    "MixerBank",
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


class MixerBank:
    """Every room of one media engine in one matrix: one row per member, ``room_of`` per row,
    so a tick is a fixed number of numpy calls whatever the number of rooms (the per-room sums
    are one ``np.add.reduceat`` over the talkers sorted by room). Rooms are :class:`Mixer`
    handles (:meth:`room`)."""

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
        self._room_of = np.zeros(capacity, dtype=np.intp)
        self._out = np.full(capacity, -1, dtype=np.intp)  # row of _distinct each member hears
        self._whispering: dict[int, int] = {}  # coach slot -> target slot (few: a dict)
        self._free: list[int] = list(range(capacity - 1, -1, -1))
        self._rooms: list[Mixer | None] = []
        self._free_rooms: list[int] = []
        self._gain = np.ones(0, dtype=np.float64)
        self._total_row = np.full(0, -1, dtype=np.intp)
        self._floor_of = np.full(0, -1, dtype=np.intp)  # per room: the floor holder's slot
        self._cand = np.full(0, -1, dtype=np.intp)  # per room: who is taking the floor
        self._cand_ticks = np.zeros(0, dtype=np.intp)
        self._distinct = np.zeros((0, FRAME_SAMPLES), dtype=np.int16)
        self._rows: list[np.ndarray] = []  # this tick's rows of _distinct
        self._out_list: list[int] = []  # _out as a list, read per member by the overlays

    # --- rooms and rows ------------------------------------------------------------------------

    def room(self) -> Mixer:
        """A new room in this bank."""
        return Mixer(_bank=self)

    def _new_room(self, mixer: Mixer) -> int:
        if self._free_rooms:
            index = self._free_rooms.pop()
        else:
            index = len(self._rooms)
            self._rooms.append(None)
            self._gain = np.append(self._gain, 1.0)
            self._total_row = np.append(self._total_row, -1)
            self._floor_of = np.append(self._floor_of, -1)
            self._cand = np.append(self._cand, -1)
            self._cand_ticks = np.append(self._cand_ticks, 0)
        self._rooms[index] = mixer
        self._gain[index] = 1.0
        self._total_row[index] = self._floor_of[index] = self._cand[index] = -1
        self._cand_ticks[index] = 0
        return index

    def _drop_room(self, mixer: Mixer) -> None:
        index = mixer._index
        if self._rooms[index] is mixer:
            self._rooms[index] = None
            self._floor_of[index] = self._cand[index] = -1
            self._free_rooms.append(index)

    def _add(self, room: int, muted: bool, deaf: bool) -> int:
        if not self._free:
            self._grow()
        slot = self._free.pop()
        self._used[slot] = True
        self._room_of[slot] = room
        self._muted[slot] = muted
        self._deaf[slot] = deaf
        self._has[slot] = self._talking[slot] = False
        self._hang[slot] = 0
        self._energy[slot] = 0.0
        self._out[slot] = -1
        self._floor[slot] = MIN_TALK_ENERGY / TALK_RATIO
        return slot

    def _remove(self, slot: int) -> None:
        self._used[slot] = self._has[slot] = self._talking[slot] = False
        self._out[slot] = -1
        self._set_whisper(slot, -2)
        for coach, target in list(self._whispering.items()):
            if target == slot:  # its coach is heard by nobody until told otherwise
                self._whispering[coach] = -1
        self._free.append(slot)

    def _set_whisper(self, slot: int, target: int) -> None:
        """``target`` -2: heard by the room again; -1: by nobody; else by ``target`` only."""
        if target == -2:
            self._whispering.pop(slot, None)
        else:
            self._whispering[slot] = target

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
        self._room_of = grown(self._room_of, 0)
        self._out = grown(self._out, -1)
        self._free.extend(range(new - 1, old - 1, -1))

    def _row(self, index: int) -> np.ndarray | None:
        """Row ``index`` of this tick's mixes (the same array object for every caller)."""
        return self._rows[index] if index >= 0 else None

    # --- per tick -------------------------------------------------------------------------------

    def mix(self) -> dict[int, MixResult]:
        """Mix every room (see the module docstring); the results of the rooms where a member
        started or stopped talking or the floor moved, by room index."""
        used, has = self._used, self._has & self._used
        frames = self._frames
        results: dict[int, MixResult] = {}
        # 1. talker detection over every member with a frame, in one pass
        rows = has.nonzero()[0]
        if rows.size:
            x = frames[rows].astype(np.float64)
            energy = np.einsum("ij,ij->i", x, x) / FRAME_SAMPLES
            self._energy[rows] = energy
            floor = self._floor[rows]
            above = energy > np.maximum(floor * TALK_RATIO, MIN_TALK_ENERGY)
            down = energy < floor
            floor = np.where(down, floor + (energy - floor) * FLOOR_FALL, floor * FLOOR_RISE)
            self._floor[rows] = np.minimum(np.maximum(floor, 1.0), MAX_FLOOR)
            self._hang[rows[above]] = HANGOVER_TICKS
        self._energy[~has] = 0.0
        self._hang[used] -= 1
        np.maximum(self._hang, 0, out=self._hang)
        talking = (self._hang > 0) & used
        for slot in (talking != self._talking).nonzero()[0].tolist():
            r = results.setdefault(int(self._room_of[slot]), MixResult([], []))
            (r.started if talking[slot] else r.stopped).append(slot)
        self._talking = talking
        # 2. one sum per room of its talking, unmuted members that sent a frame this tick
        # (a coach whispers: it is not in the sum)
        summed = talking & ~self._muted & has
        if self._whispering:
            summed[list(self._whispering)] = False
        order = summed.nonzero()[0]
        croom = self._room_of[order]
        if order.size > 1:
            sort = np.argsort(croom, kind="stable")
            order, croom = order[sort], croom[sort]
        sources = {}
        for mixer in self._rooms:
            if mixer is not None and mixer._sources:
                frame = mixer._room_frame()
                if frame is not None:
                    sources[mixer._index] = frame
        self._out[:] = -1
        self._total_row[:] = -1
        if order.size == 0 and not sources:
            self._distinct = self._distinct[:0]
        else:
            own = frames[order].astype(np.int32)
            starts = np.flatnonzero(np.concatenate(([True], croom[1:] != croom[:-1])))
            active = croom[starts] if order.size else np.zeros(0, dtype=np.intp)
            if sources:
                active = np.union1d(active, np.fromiter(sources, dtype=np.intp, count=len(sources)))
            position = np.full(len(self._rooms), -1, dtype=np.intp)
            position[active] = np.arange(active.size)
            distinct = np.zeros((active.size + order.size, FRAME_SAMPLES), dtype=np.int32)
            if order.size:
                distinct[position[croom[starts]]] = np.add.reduceat(own, starts, axis=0)
            for index, frame in sources.items():  # 4. room sources reach everyone
                distinct[position[index]] += frame
            # 3. mix-minus: one row per contributor after the shared rows
            np.subtract(distinct[position[croom]], own, out=distinct[active.size :])
            # 5. one gain per room, then the soft knee
            row_room = np.concatenate((active, croom))
            self._distinct = self._limit(distinct, row_room, active)
            self._total_row[active] = np.arange(active.size)
            listeners = used & ~self._deaf
            shared = position[self._room_of]
            self._out[listeners] = shared[listeners]
            mine = listeners[order]
            self._out[order[mine]] = active.size + np.flatnonzero(mine)
        if self._whispering:
            self._whisper_rows(talking & ~self._muted & has)
        quiet = np.ones(len(self._rooms), dtype=bool)
        if self._distinct.shape[0]:
            quiet[self._total_row >= 0] = False
        self._gain[quiet] += (1.0 - self._gain[quiet]) * GAIN_RELEASE
        self._rows = list(self._distinct)
        self._out_list = self._out.tolist()
        self._has[:] = False
        self._move_floor(talking, results)
        return results

    def _whisper_rows(self, speaking: np.ndarray) -> None:
        """Each talking coach's frame added to its target's mix only: a row of its own per
        coached member (its room's mix, or silence, plus the coaches), under the knee."""
        extra: dict[int, np.ndarray] = {}
        for coach, target in self._whispering.items():
            if target < 0 or not speaking[coach] or not self._used[target] or self._deaf[target]:
                continue
            if target not in extra:
                row = int(self._out[target])
                extra[target] = (
                    self._distinct[row].astype(np.int32)
                    if row >= 0
                    else np.zeros(FRAME_SAMPLES, dtype=np.int32)
                )
            extra[target] += self._frames[coach]
        if not extra:
            return
        first = self._distinct.shape[0]
        added = np.clip(np.stack(list(extra.values())), -FULL, FULL).astype(np.int16)
        self._distinct = np.concatenate((self._distinct.astype(np.int16), added))
        for i, target in enumerate(extra):
            self._out[target] = first + i

    def _move_floor(self, talking: np.ndarray, results: dict[int, MixResult]) -> None:
        """The floor of each room: its loudest unmuted talker, once it has led for
        ``FLOOR_HOLD_TICKS`` (nobody talking frees it at once); vectorised over the rooms."""
        loudest = np.full(len(self._rooms), -1, dtype=np.intp)
        speaking = (talking & ~self._muted).nonzero()[0]
        if speaking.size:
            speaking = speaking[np.lexsort((self._energy[speaking], self._room_of[speaking]))]
            rooms = self._room_of[speaking]
            last = np.concatenate((rooms[1:] != rooms[:-1], [True]))
            loudest[rooms[last]] = speaking[last]
        same = loudest == self._floor_of
        self._cand[same] = -1
        self._cand_ticks[same] = 0
        differ = ~same
        if not differ.any():
            return
        fresh = differ & (loudest != self._cand)
        self._cand[fresh] = loudest[fresh]
        self._cand_ticks[fresh] = 0
        self._cand_ticks[differ] += 1
        move = differ & ((loudest < 0) | (self._cand_ticks >= FLOOR_HOLD_TICKS))
        for index in move.nonzero()[0].tolist():
            if self._rooms[index] is None:
                continue
            self._floor_of[index] = loudest[index]
            self._cand[index] = -1
            self._cand_ticks[index] = 0
            result = results.setdefault(index, MixResult([], []))
            result.floor_changed = True
            result.floor = None if loudest[index] < 0 else int(loudest[index])

    def _limit(self, distinct: np.ndarray, row_room: np.ndarray, active: np.ndarray) -> np.ndarray:
        peaks = np.abs(distinct).max(axis=1).astype(np.float64)
        room_peak = np.zeros(len(self._rooms))
        np.maximum.at(room_peak, row_room, peaks)
        peak = room_peak[active]
        with np.errstate(divide="ignore"):
            want = np.where(peak > 0, np.minimum(1.0, TARGET_PEAK * FULL / peak), 1.0)
        gain = self._gain[active]
        # attack at once (this very frame must not clip), release slowly
        self._gain[active] = np.where(want < gain, want, gain + (want - gain) * GAIN_RELEASE)
        y = distinct.astype(np.float32)
        row_gain = self._gain[row_room]
        if (row_gain < 0.999).any():
            y *= row_gain.astype(np.float32)[:, None]
        knee = KNEE * FULL
        over = np.abs(y) > knee
        if over.any():
            # above the knee, tanh compresses smoothly into the remaining headroom
            a = np.abs(y[over])
            y[over] = np.sign(y[over]) * (
                knee + (FULL - knee) * np.tanh((a - knee) / (FULL - knee))
            )
        return y.astype(np.int16)


class Mixer:
    """One room of a :class:`MixerBank` (see the module docstring). ``Mixer()`` alone makes a
    room in a bank of its own, which its :meth:`mix` mixes.

    Members are slots (small ints) handed out by :meth:`add`; the bank grows as needed."""

    def __init__(self, capacity: int = 8, *, _bank: MixerBank | None = None) -> None:
        self._bank = _bank if _bank is not None else MixerBank(capacity)
        self._slots: set[int] = set()
        self._sources: list[tuple[Any, Callable[[], None] | None]] = []
        self._index = self._bank._new_room(self)

    @property
    def floor(self) -> int | None:
        """The member holding the floor (the loudest talker for ``FLOOR_HOLD_TICKS``)."""
        slot = int(self._bank._floor_of[self._index])
        return None if slot < 0 else slot

    # --- members ---------------------------------------------------------------------------

    def add(self, *, muted: bool = False, deaf: bool = False) -> int:
        slot = self._bank._add(self._index, muted, deaf)
        self._slots.add(slot)
        return slot

    def remove(self, slot: int) -> None:
        if slot not in self._slots:
            return
        self._slots.discard(slot)
        bank = self._bank
        bank._remove(slot)
        if bank._floor_of[self._index] == slot:
            bank._floor_of[self._index] = -1
        if bank._cand[self._index] == slot:
            bank._cand[self._index] = -1

    def close(self) -> None:
        """Leave the bank (every member removed, the sources stopped)."""
        for slot in list(self._slots):
            self.remove(slot)
        self.stop_sources()
        self._bank._drop_room(self)

    @property
    def members(self) -> int:
        return len(self._slots)

    @property
    def gain(self) -> float:
        return float(self._bank._gain[self._index])

    def set_muted(self, slot: int, muted: bool) -> None:
        self._bank._muted[slot] = muted

    def set_deaf(self, slot: int, deaf: bool) -> None:
        self._bank._deaf[slot] = deaf

    def set_whisper(self, slot: int, target: int | None) -> None:
        """``slot`` is heard by ``target`` only (a coach; ``-1``: by nobody, the target is
        away); None: by the room again."""
        self._bank._set_whisper(slot, -2 if target is None else target)

    def whisper(self, slot: int) -> int | None:
        """The slot ``slot`` whispers to (-1: nobody), None when it is heard by the room."""
        return self._bank._whispering.get(slot)

    def muted(self, slot: int) -> bool:
        return bool(self._bank._muted[slot])

    def deaf(self, slot: int) -> bool:
        return bool(self._bank._deaf[slot])

    def talking(self, slot: int) -> bool:
        return bool(self._bank._talking[slot])

    def energy_dbfs(self, slot: int) -> float:
        e = float(self._bank._energy[slot])
        return 10 * np.log10(e / (32768.0**2)) if e > 0 else -120.0

    # --- per tick -------------------------------------------------------------------------

    def put(self, slot: int, frame: np.ndarray) -> None:
        """The member's received frame of this tick (int16, ``FRAME_SAMPLES``)."""
        bank = self._bank
        if frame.shape[0] == FRAME_SAMPLES:
            bank._frames[slot] = frame
        else:
            bank._frames[slot] = 0
            n = min(FRAME_SAMPLES, frame.shape[0])
            bank._frames[slot, :n] = frame[:n]
        bank._has[slot] = True

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
        """What the member hears this tick (after the mix): None when deaf or silent."""
        bank = self._bank
        index = bank._out_list[slot] if slot < len(bank._out_list) else -1
        return bank._rows[index] if index >= 0 else None

    @property
    def total(self) -> np.ndarray:
        """The room's whole mix of this tick (every contributor and the room sources, after the
        gain): what a room recording keeps."""
        frame = self._bank._row(int(self._bank._total_row[self._index]))  # recorders only
        return SILENCE if frame is None else frame

    def mix(self) -> MixResult:
        """Mix this room's bank (every room of it; for a standalone ``Mixer``: this room) and
        return this room's result."""
        return self._bank.mix().get(self._index) or MixResult([], [])

    def _room_frame(self) -> np.ndarray | None:
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


class _EngineBank:
    """The one :class:`MixerBank` of a media engine and its tick hook: every room of the engine
    is mixed by one call per tick."""

    def __init__(self, engine: MediaEngine) -> None:
        self.engine = engine
        self.bank = MixerBank()
        self.rooms: dict[int, Conference] = {}  # by room index
        engine.add_tick_hook(self.tick)

    def tick(self, now: float) -> None:
        results = self.bank.mix()
        for index, room in list(self.rooms.items()):
            if room._recorders:
                total = room.mixer.total
                for fn in list(room._recorders):
                    try:
                        fn(total)
                    except Exception:
                        log.exception("conference recorder failed; removed")
                        room._recorders.remove(fn)
            result = results.get(index)
            if result is not None and room.on_mix is not None:
                room.on_mix(result)

    def remove(self, room: Conference) -> None:
        self.rooms.pop(room.mixer._index, None)
        if not self.rooms:
            self.engine.remove_tick_hook(self.tick)
            _BANKS.pop(self.engine, None)


_BANKS: weakref.WeakKeyDictionary[MediaEngine, _EngineBank] = weakref.WeakKeyDictionary()


class Conference:
    """A :class:`Mixer` on a media engine's clock: members are :class:`MediaStream` s.

    ``on_mix(result)`` is called on the clock tick after each mix (quick work only: the caller
    hands events over to its loop). ``add_recorder(fn)`` receives the room's whole mix each
    tick (the room recording)."""

    def __init__(
        self, engine: MediaEngine, *, on_mix: Callable[[MixResult], None] | None = None
    ) -> None:
        self.engine = engine
        shared = _BANKS.get(engine)
        if shared is None:
            shared = _BANKS[engine] = _EngineBank(engine)
        self._shared = shared
        self.mixer = shared.bank.room()
        shared.rooms[self.mixer._index] = self
        self.on_mix = on_mix
        self._members: dict[int, tuple[MediaStream, Callable[[np.ndarray], None], Any]] = {}
        self._recorders: list[Callable[[np.ndarray], None]] = []
        self._closed = False

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
        self._shared.remove(self)
        self.mixer.close()
