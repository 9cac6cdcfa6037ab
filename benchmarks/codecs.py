"""``python -m benchmarks.codecs``: what a wideband stream costs the media clock.

Two measurements, both single-threaded in this process, bounded in count:

* **codec**: µs per 20 ms frame to encode and to decode, per codec (G.711's tables; G.722 and
  Opus through PyAV, the resampling included);
* **tick**: ``MediaEngine.service()`` driven directly (no clock) over ``--streams`` streams
  connected in pairs over loopback, every stream playing a tone and tapped (so every received
  packet is decoded), all on one codec: µs per stream per tick, the G.711 line being the
  baseline the wideband ones add to.

Run it against another checkout to compare the G.711 path before and after a change:
``PYTHONPATH=/path/to/other python benchmarks/codecs.py --codecs PCMU``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import time
from typing import Any

import numpy as np

from media.engine import SUPPORTED_CODECS, MediaConfig, MediaEngine

FRAME = 160
RATE = 8000


class _Tone:
    """A endless 1 kHz tone source (``read(n)``)."""

    def __init__(self) -> None:
        self.pos = 0

    def read(self, n: int = FRAME) -> np.ndarray:
        t = (self.pos + np.arange(n)) / RATE
        self.pos += n
        return (8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)


def codec_costs(names: list[str], frames: int) -> dict[str, dict[str, float]]:
    """µs per 20 ms frame: encode and decode, best of three runs of ``frames`` frames."""
    from media import g711

    try:
        from media import wideband
    except ImportError:  # an older checkout without wideband codecs
        wideband = None  # type: ignore[assignment]
    tone = _Tone()
    pcm = [tone.read() for _ in range(frames)]
    out: dict[str, dict[str, float]] = {}
    for name in names:
        if name in g711.ENCODERS:
            encode, decode = g711.ENCODERS[name], g711.DECODERS[name]
        else:
            assert wideband is not None
            codec = wideband.CODECS[name]
            encode, decode = codec.encoder().encode, codec.decoder().decode
        best_enc = best_dec = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            payloads = [encode(frame) for frame in pcm]
            t1 = time.perf_counter()
            for payload in payloads:
                decode(payload)
            t2 = time.perf_counter()
            best_enc = min(best_enc, (t1 - t0) / frames * 1e6)
            best_dec = min(best_dec, (t2 - t1) / frames * 1e6)
        out[name] = {"encode_us": best_enc, "decode_us": best_dec, "total_us": best_enc + best_dec}
    return out


async def tick_cost(name: str, streams: int, ticks: int, port_min: int) -> dict[str, Any]:
    """µs per stream per tick of ``MediaEngine.service()`` with every stream on ``name``."""
    engine = MediaEngine(
        MediaConfig(bind_host="127.0.0.1", port_min=port_min, port_max=port_min + 2 * streams + 8)
    )
    engine._loop = asyncio.get_running_loop()  # futures of play(); the clock is not started
    pairs = []
    for _ in range(streams // 2):
        a = engine.create_stream(codecs=[name])
        b = engine.create_stream(codecs=[name])
        a.apply_answer(b.handle_offer(a.create_offer()))
        pairs.append((a, b))
    heard = [0]

    def tap(frame: np.ndarray) -> None:
        heard[0] += 1

    for a, b in pairs:
        for s in (a, b):
            s.play(_Tone())
            s.add_tap(tap)
    loop = asyncio.get_running_loop()
    samples: list[float] = []
    for k in range(ticks):
        now = loop.time()
        t0 = time.perf_counter()
        engine.service(now, time.time())
        samples.append(time.perf_counter() - t0)
        if k % 50 == 0:
            await asyncio.sleep(0)
    received = sum(s.stats()["packets_received"] for pair in pairs for s in pair)
    await engine.stop()
    steady = sorted(samples[ticks // 5 :])  # past the start-up (first packets, allocations)
    n = 2 * len(pairs)
    return {
        "codec": name,
        "streams": n,
        "ticks": ticks,
        "median_us_per_stream": statistics.median(steady) / n * 1e6,
        "p90_us_per_stream": steady[int(len(steady) * 0.9)] / n * 1e6,
        "packets_received": received,
    }


def _free_base(count: int) -> int:
    for base in range(30000, 60000, 1000):
        try:
            for port in (base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("127.0.0.1", port))
                s.close()
            return base
        except OSError:
            continue
    raise RuntimeError("no free port block")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--codecs", default=",".join(SUPPORTED_CODECS))
    parser.add_argument("--frames", type=int, default=500, help="frames per codec run")
    parser.add_argument("--streams", type=int, default=100, help="streams in the tick run (even)")
    parser.add_argument("--ticks", type=int, default=250, help="ticks in the tick run")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    names = [c.strip().upper() for c in args.codecs.split(",") if c.strip()]
    frames = max(10, min(args.frames, 10_000))
    streams = max(2, min(args.streams, 2000)) // 2 * 2
    ticks = max(10, min(args.ticks, 5000))
    costs = codec_costs(names, frames)
    ticks_out = []
    for name in names:
        base = _free_base(2 * streams + 8)
        ticks_out.append(asyncio.run(tick_cost(name, streams, ticks, base)))
    if args.json:
        print(json.dumps({"codec": costs, "tick": ticks_out}, indent=2))
        return 0
    print(f"Python {sys.version.split()[0]}, numpy {np.__version__}")
    print("\n| codec | encode µs/20 ms | decode µs/20 ms | total |")
    print("|---|---|---|---|")
    for name, c in costs.items():
        print(f"| {name} | {c['encode_us']:.1f} | {c['decode_us']:.1f} | {c['total_us']:.1f} |")
    print("\n| codec | streams | µs per stream per tick (median) | p90 |")
    print("|---|---|---|---|")
    for t in ticks_out:
        print(
            f"| {t['codec']} | {t['streams']} | {t['median_us_per_stream']:.1f} |"
            f" {t['p90_us_per_stream']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
