"""The conference mixer over plain arrays: mix-minus, mute/deaf, silent members skipped,
saturation handled by the gain and the soft knee, talker and floor detection."""

from __future__ import annotations

import numpy as np

from media.conference import FLOOR_HOLD_TICKS, HANGOVER_TICKS, Mixer
from media.engine import FRAME_SAMPLES

RATE = 8000


def tone(freq: float, amplitude: float = 8000.0, tick: int = 0) -> np.ndarray:
    t = (np.arange(FRAME_SAMPLES) + tick * FRAME_SAMPLES) / RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def level(frame: np.ndarray | None, freq: float) -> float:
    """Amplitude of ``freq`` in one frame (one DFT bin)."""
    if frame is None:
        return 0.0
    t = np.arange(FRAME_SAMPLES) / RATE
    x = frame.astype(np.float64)
    return float(abs(np.dot(x, np.exp(-2j * np.pi * freq * t))) * 2 / FRAME_SAMPLES)


FREQS = (400.0, 1000.0, 2000.0)  # whole cycles in 20 ms: one bin each, no leakage


def run(mixer: Mixer, slots: list[int], ticks: int, freqs=FREQS, amplitude=8000.0):
    for k in range(ticks):
        for slot, f in zip(slots, freqs, strict=False):
            if f:
                mixer.put(slot, tone(f, amplitude, k))
            else:
                mixer.put(slot, np.zeros(FRAME_SAMPLES, dtype=np.int16))
        result = mixer.mix()
    return result


def test_each_member_hears_the_others_and_not_itself() -> None:
    mixer = Mixer(capacity=2)  # grows past its capacity
    slots = [mixer.add() for _ in FREQS]
    run(mixer, slots, 3)
    for slot, own in zip(slots, FREQS, strict=True):
        out = mixer.output(slot)
        assert level(out, own) < 50
        for other in FREQS:
            if other != own:
                assert level(out, other) > 6000
    for f in FREQS:
        assert level(mixer.total, f) > 6000


def test_muted_is_not_heard_but_hears_and_deaf_hears_nothing_but_is_heard() -> None:
    mixer = Mixer()
    a, b, c = (mixer.add() for _ in range(3))
    mixer.set_muted(a, True)
    mixer.set_deaf(b, True)
    run(mixer, [a, b, c], 3)
    assert level(mixer.output(c), FREQS[0]) < 50  # a is muted
    assert level(mixer.output(c), FREQS[1]) > 6000  # deaf b still talks
    assert level(mixer.output(a), FREQS[1]) > 6000  # muted a still hears
    assert mixer.output(b) is None  # deaf hears nothing
    mixer.set_muted(a, False)
    run(mixer, [a, b, c], 1)
    assert level(mixer.output(c), FREQS[0]) > 6000


def test_silent_members_are_skipped_and_get_the_shared_mix() -> None:
    mixer = Mixer()
    slots = [mixer.add() for _ in range(10)]
    freqs = [FREQS[0], FREQS[1]] + [0.0] * 8
    result = run(mixer, slots, 2, freqs)
    assert mixer.talking(slots[0]) and mixer.talking(slots[1])
    assert not any(mixer.talking(s) for s in slots[2:])
    assert result is not None
    shared = mixer.output(slots[5])
    assert all(mixer.output(s) is shared for s in slots[2:])  # one array, not eight copies
    # background noise below the talk threshold is not summed
    noise = np.random.default_rng(1).normal(0, 20, FRAME_SAMPLES).astype(np.int16)
    for s in slots[2:]:
        mixer.put(s, noise)
    mixer.put(slots[0], tone(FREQS[0]))
    mixer.put(slots[1], tone(FREQS[1]))
    mixer.mix()
    residual = mixer.output(slots[2]).astype(np.int32) - (
        tone(FREQS[0]).astype(np.int32) + tone(FREQS[1])
    )
    assert np.abs(residual).max() <= 2


def test_many_loud_talkers_never_wrap_or_hard_clip() -> None:
    mixer = Mixer()
    slots = [mixer.add() for _ in range(50)]
    freqs = [300.0 + 50 * i for i in range(50)]
    for k in range(10):
        for s, f in zip(slots, freqs, strict=True):
            mixer.put(s, tone(f, 30000.0, k))
        mixer.mix()
        total = mixer.total
        assert np.abs(total.astype(np.int32)).max() < 32767  # soft knee below full scale
    assert mixer.gain < 0.2
    # every talker still present in the mix after the gain
    spectrum = np.abs(np.fft.rfft(mixer.total.astype(np.float64)))
    bins = [int(f * FRAME_SAMPLES / RATE) for f in freqs]
    assert min(spectrum[bins]) > 0.5 * max(spectrum[bins])
    # the gain recovers once the room is quiet again
    for _ in range(200):
        mixer.put(slots[0], tone(1000.0, 3000.0))
        mixer.mix()
    assert mixer.gain > 0.95


def test_talker_events_and_floor() -> None:
    mixer = Mixer()
    a, b = mixer.add(), mixer.add()
    started = []
    floors = []
    for k in range(20):
        mixer.put(a, tone(400.0, 2000.0, k))
        mixer.put(b, tone(1000.0, 9000.0, k) if k >= 5 else np.zeros(FRAME_SAMPLES, np.int16))
        r = mixer.mix()
        started += r.started
        if r.floor_changed:
            floors.append((k, r.floor))
    assert started == [a, b]
    assert floors[0] == (FLOOR_HOLD_TICKS - 1, a)
    assert floors[1][1] == b  # the louder member takes the floor after it held the lead
    stopped = []
    for _ in range(HANGOVER_TICKS + 2):
        mixer.put(a, np.zeros(FRAME_SAMPLES, np.int16))
        mixer.put(b, np.zeros(FRAME_SAMPLES, np.int16))
        stopped += mixer.mix().stopped
    assert sorted(stopped) == sorted([a, b])
    assert mixer.floor is None


def test_a_constant_tone_keeps_talking_and_room_sources_reach_everyone() -> None:
    mixer = Mixer()
    a, b = mixer.add(), mixer.add(deaf=True)
    run(mixer, [a], 3000, (400.0,))  # a minute of one tone
    assert mixer.talking(a)
    done = []
    from media.play import ArraySource

    mixer.play(ArraySource(tone(2000.0, 5000.0)), on_done=lambda: done.append(1))
    mixer.put(a, tone(400.0))
    mixer.mix()
    assert level(mixer.output(a), 2000.0) > 4000 and level(mixer.output(a), 400.0) < 50
    assert mixer.output(b) is None
    assert level(mixer.total, 2000.0) > 4000
    mixer.mix()
    assert done == [1]
    mixer.remove(a)
    mixer.remove(b)
    assert mixer.members == 0


def test_rooms_of_one_bank_are_mixed_apart_in_one_call() -> None:
    from media.conference import MixerBank

    bank = MixerBank(capacity=2)
    rooms = [bank.room() for _ in range(3)]
    slots = [[room.add() for _ in range(2)] for room in rooms]
    freqs = [(400.0, 1000.0), (2000.0, 400.0), (1000.0, 2000.0)]
    for k in range(3):
        for room, pair, fs in zip(rooms, slots, freqs, strict=True):
            for slot, f in zip(pair, fs, strict=True):
                room.put(slot, tone(f, 8000.0, k))
        results = bank.mix()
    assert results == {}  # nothing changed on the last tick
    for room, (a, b), (fa, fb) in zip(rooms, slots, freqs, strict=True):
        assert level(room.output(a), fb) > 6000 and level(room.output(a), fa) < 50
        assert level(room.output(b), fa) > 6000 and level(room.output(b), fb) < 50
        others = {400.0, 1000.0, 2000.0} - {fa, fb}
        for f in others:  # nothing leaks between rooms
            assert level(room.total, f) < 50
    # a loud room's gain does not turn a quiet one down
    for _ in range(5):
        for slot in slots[0]:
            rooms[0].put(slot, tone(400.0, 30000.0))
        for slot in slots[1]:
            rooms[1].put(slot, tone(1000.0, 3000.0))
        bank.mix()
    assert rooms[0].gain < 0.6 and rooms[1].gain == 1.0
    rooms[0].close()
    assert rooms[1].members == 2 and bank.room()._index == rooms[0]._index  # index reused


def test_a_coach_is_heard_by_its_target_only_and_hears_the_room() -> None:
    mixer = Mixer()
    agent, caller, coach = (mixer.add() for _ in range(3))
    mixer.set_whisper(coach, agent)
    run(mixer, [agent, caller, coach], 3)
    agent_hears, caller_hears, coach_hears = (mixer.output(s) for s in (agent, caller, coach))
    assert level(agent_hears, 2000.0) > 6000 and level(agent_hears, 1000.0) > 6000
    assert level(caller_hears, 2000.0) < 50 and level(caller_hears, 400.0) > 6000
    assert level(coach_hears, 400.0) > 6000 and level(coach_hears, 1000.0) > 6000
    assert level(coach_hears, 2000.0) < 50
    assert level(mixer.total, 2000.0) < 50  # the room's mix (recordings) has no whisper
    # alone with the coach: the target still hears it over the room's silence
    run(mixer, [agent, caller, coach], 3, freqs=(0.0, 0.0, 2000.0))
    assert level(mixer.output(agent), 2000.0) > 6000
    assert level(mixer.output(caller), 2000.0) < 50
    # the target leaves: nobody hears the coach; set_whisper(None) puts it back in the room
    mixer.remove(agent)
    run(mixer, [caller, coach], 3, freqs=(0.0, 2000.0))
    assert mixer.whisper(coach) == -1 and level(mixer.output(caller), 2000.0) < 50
    mixer.set_whisper(coach, None)
    run(mixer, [caller, coach], 3, freqs=(0.0, 2000.0))
    assert level(mixer.output(caller), 2000.0) > 6000
