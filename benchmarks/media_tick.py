"""``python -m benchmarks.media_tick``: what one plain stream costs the media clock per tick.

No peers, no clock: ``MediaEngine.service()`` is driven directly, as fast as it can, over
``--streams`` answered G.711 streams connected in pairs over loopback (each sends 20 ms of
silence and receives its partner's, nothing plays, records or detects: a held call's usual
state), next to ``--idle`` streams that made an offer and have no answer yet (calls being set
up). It prints CPU µs (this thread's CPU time, so the figures hold on a loaded machine
better than wall time) per busy stream per tick (median and p90 over the ticks) and the floor of
the same system calls without the engine: one ``sendto`` and one ``recvfrom`` per stream, in
a bare loop on the same sockets, so "Python" = tick - floor. Idle streams should cost
nothing: ``--idle-only`` times a tick over the idle streams alone.

Compare two checkouts side by side in the same minute (the machine's load moves every
figure): ``PYTHONPATH=/path/to/other python benchmarks/media_tick.py`` (from outside both
trees, so the other tree's package is the one imported).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import select
import socket
import statistics
import sys
import time
from typing import Any

from media.engine import MediaConfig, MediaEngine


def _free_base(count: int) -> int:
    for base in range(40000, 60000, 1000):
        try:
            for port in (base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("127.0.0.1", port))
                s.close()
            return base
        except OSError:
            continue
    raise RuntimeError("no free port block")


def _floor(streams: list[Any], ticks: int) -> tuple[float, float]:
    """µs per stream of the system calls alone, in a bare loop on the engine's sockets: one
    sendto + one recvfrom; and one epoll poll (timeout 0) over all RTP and RTCP sockets
    while every RTP socket holds a packet (the readiness the engine asks for each tick)."""
    pairs = [(s._rtp_sock, ("127.0.0.1", s.remote_address[1])) for s in streams]
    poller = select.epoll()
    for s in streams:
        poller.register(s._rtp_sock.fileno(), select.POLLIN)
        poller.register(s._rtcp_sock.fileno(), select.POLLIN)
    samples, polls = [], []
    payload = bytes(172)
    for _ in range(ticks):
        t0 = time.thread_time()
        for sock, addr in pairs:
            sock.sendto(payload, addr)
        t1 = time.thread_time()
        poller.poll(0, 2 * len(pairs) + 1)
        t2 = time.thread_time()
        for sock, _addr in pairs:
            try:
                sock.recvfrom(2048)
            except BlockingIOError:
                pass
        samples.append(t1 - t0 + time.thread_time() - t2)
        polls.append(t2 - t1)
    poller.close()
    n = len(pairs)
    return statistics.median(samples) / n * 1e6, statistics.median(polls) / n * 1e6


async def measure(streams: int, idle: int, ticks: int, base: int | None = None) -> dict[str, Any]:
    """The figures of one run (``base``: the first RTP port; default: a free block)."""
    if base is None:
        base = _free_base(2 * (streams + idle) + 8)
    engine = MediaEngine(
        MediaConfig(port_min=base, port_max=base + 2 * (streams + idle) + 8, codecs=["PCMU"])
    )
    loop = asyncio.get_running_loop()
    engine._loop = loop  # futures; the clock itself is not started
    busy = []
    for _ in range(streams // 2):
        a, b = engine.create_stream(), engine.create_stream()
        a.apply_answer(b.handle_offer(a.create_offer()))
        a.set_media_timeout(60.0, 600.0)
        b.set_media_timeout(60.0, 600.0)
        busy += [a, b]
    for _ in range(idle):
        engine.create_stream().create_offer()
    now = loop.time()

    def run(n: int) -> list[float]:
        nonlocal now
        out = []
        for _ in range(n):
            now += 0.020
            t0 = time.thread_time()
            engine.service(now, time.time())
            out.append(time.thread_time() - t0)
        return out

    run(20)  # latch, first packets
    samples = sorted(run(ticks))
    sent = sum(s.stats()["packets_sent"] for s in busy)
    received = sum(s.stats()["packets_received"] for s in busy)
    floor, poll = _floor(busy, max(20, ticks // 4)) if busy else (0.0, 0.0)
    await engine.stop()
    n = max(1, len(busy))
    median = statistics.median(samples) / n * 1e6
    return {
        "streams": len(busy),
        "idle": idle,
        "ticks": ticks,
        "tick_ms_median": statistics.median(samples) * 1e3,
        "us_per_stream_median": median,
        "us_per_stream_p90": samples[int(len(samples) * 0.9)] / n * 1e6,
        "syscall_floor_us": floor,
        "poll_us": poll,
        "python_us": median - floor,
        "python_us_without_poll": median - floor - poll,
        "packets_sent": sent,
        "packets_received": received,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000, help="answered streams (even)")
    parser.add_argument("--idle", type=int, default=0, help="streams with an offer, no answer")
    parser.add_argument("--ticks", type=int, default=300)
    parser.add_argument("--idle-only", action="store_true", help="time the idle streams alone")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    streams = 0 if args.idle_only else max(2, min(args.streams, 8000)) // 2 * 2
    idle = max(0, min(args.idle, 8000))
    ticks = max(20, min(args.ticks, 5000))
    out = asyncio.run(measure(streams, idle, ticks))
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"Python {sys.version.split()[0]}; {out['streams']} busy + {out['idle']} idle streams")
    print(f"tick median {out['tick_ms_median']:.3f} ms")
    if streams:
        print(
            f"µs per busy stream per tick: median {out['us_per_stream_median']:.2f}, "
            f"p90 {out['us_per_stream_p90']:.2f}; sendto+recvfrom floor "
            f"{out['syscall_floor_us']:.2f}; Python {out['python_us']:.2f} (less one epoll "
            f"poll, {out['poll_us']:.2f}: {out['python_us_without_poll']:.2f})"
        )
        print(f"packets sent {out['packets_sent']}, received {out['packets_received']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
