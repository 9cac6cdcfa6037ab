"""What conference mixing costs on the media clock: CPU per member per 20 ms tick.

Two shapes side by side, each driven through the mixer alone as the media engine drives it
(every room of the engine in one ``MixerBank``: ``Mixer.put`` of every member's frame, one
``MixerBank.mix`` per tick (talker detection, the per-room sums, mix-minus, gain and knee),
then ``Mixer.output`` for every member) for ``ticks`` ticks as fast as the process can: a
50-member room with 3 talkers, and 100 rooms of 3 members each with every member talking.
Bounded: ``ticks`` <= 20000.

    python benchmarks/conference.py [--ticks 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from media.conference import MixerBank  # noqa: E402
from media.engine import FRAME_SAMPLES  # noqa: E402


def frames(count: int, talkers: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    out = []
    for i in range(count):
        if i < talkers:
            t = np.arange(FRAME_SAMPLES) / 8000
            out.append((8000 * np.sin(2 * np.pi * (300 + 97 * i) * t)).astype(np.int16))
        else:
            out.append(rng.normal(0, 10, FRAME_SAMPLES).astype(np.int16))  # line noise
    return out


def run(rooms: int, members: int, talkers: int, ticks: int) -> dict[str, float]:
    bank = MixerBank()
    mixers = []
    for _ in range(rooms):
        mixer = bank.room()
        slots = [mixer.add() for _ in range(members)]
        mixers.append((mixer, list(zip(slots, frames(members, talkers), strict=True))))
    for _ in range(20):  # warm-up: talker detection settles
        for mixer, rows in mixers:
            for slot, frame in rows:
                mixer.put(slot, frame)
        bank.mix()
    cpu0 = time.process_time()
    for _ in range(ticks):
        for mixer, rows in mixers:
            for slot, frame in rows:
                mixer.put(slot, frame)
        bank.mix()
        for mixer, rows in mixers:
            for slot, _ in rows:
                mixer.output(slot)
    cpu = time.process_time() - cpu0
    per_tick = cpu / ticks
    return {
        "per_tick_us": per_tick * 1e6,
        "per_member_us": per_tick * 1e6 / (rooms * members),
        "tick_share": per_tick / 0.020,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=2000)
    args = parser.parse_args(argv)
    ticks = max(1, min(args.ticks, 20000))
    for label, rooms, members, talkers in (
        ("1 room of 50 (3 talking)", 1, 50, 3),
        ("100 rooms of 3 (all talking)", 100, 3, 3),
    ):
        r = run(rooms, members, talkers, ticks)
        print(
            f"{label:30s} {r['per_tick_us']:9.1f} us/tick  {r['per_member_us']:6.2f} us/member/tick"
            f"  {100 * r['tick_share']:5.1f} % of a 20 ms tick"
        )


if __name__ == "__main__":
    main()
