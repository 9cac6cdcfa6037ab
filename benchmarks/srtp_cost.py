"""What SRTP costs the media engine: CPU per packet of the engine's tick with plain RTP and
with SRTP (AES_CM_128_HMAC_SHA1_80, libsrtp through pylibsrtp), same streams, same traffic.

``pairs`` pairs of streams in one engine on 127.0.0.1 talk to each other (each stream sends
one 20 ms PCMU packet per tick and receives its peer's); the script drives
``MediaEngine.service()`` itself for ``ticks`` ticks, as fast as it can, and divides the
process CPU time by the packets sent. Bounded: ``pairs`` <= 1000, ``ticks`` <= 5000.

    python benchmarks/srtp_cost.py [--pairs 100] [--ticks 250]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from media.engine import MediaConfig, MediaEngine, MediaStream  # noqa: E402


def run(policy: str, pairs: int, ticks: int) -> dict[str, float]:
    engine = MediaEngine(MediaConfig(bind_host="127.0.0.1"))
    streams: list[MediaStream] = []
    try:
        for _ in range(pairs):
            a, b = engine.create_stream(srtp=policy), engine.create_stream(srtp=policy)
            a.apply_answer(b.handle_offer(a.create_offer()))
            streams += [a, b]
        start = time.monotonic()
        for k in range(5):  # warm-up: first packets, latching
            engine.service(start + k * 0.02, time.time())
        sent0 = sum(s.stats()["packets_sent"] for s in streams)
        received0 = sum(s.stats()["packets_received"] for s in streams)
        cpu0 = time.process_time()
        for k in range(5, 5 + ticks):
            engine.service(start + k * 0.02, time.time())
        cpu = time.process_time() - cpu0
        sent = sum(s.stats()["packets_sent"] for s in streams) - sent0
        received = sum(s.stats()["packets_received"] for s in streams) - received0
        failures = sum(s.stats()["srtp_auth_failures"] for s in streams)
    finally:
        for s in streams:
            s.close()
    return {
        "cpu_s": cpu,
        "packets_sent": sent,
        "packets_received": received,
        "us_per_packet": cpu / max(sent, 1) * 1e6,
        "srtp_auth_failures": failures,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--ticks", type=int, default=250)
    args = parser.parse_args(argv)
    if not (1 <= args.pairs <= 1000 and 1 <= args.ticks <= 5000):
        parser.error("pairs must be 1-1000 and ticks 1-5000")
    results = {policy: run(policy, args.pairs, args.ticks) for policy in ("off", "mandatory")}
    print(f"{args.pairs} stream pairs, {args.ticks} ticks (CPU per packet sent and received)")
    for policy, r in results.items():
        print(
            f"  srtp={policy:9s} {r['us_per_packet']:6.1f} us/packet  "
            f"sent={r['packets_sent']:.0f} received={r['packets_received']:.0f} "
            f"auth_failures={r['srtp_auth_failures']:.0f}"
        )
    extra = results["mandatory"]["us_per_packet"] - results["off"]["us_per_packet"]
    print(f"  SRTP adds {extra:.1f} us per packet (protect on send + unprotect on receive)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
