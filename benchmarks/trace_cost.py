"""``python -m benchmarks.trace_cost``: what the SIP trace costs per message.

The six messages of one call (``benchmarks.parse.MESSAGES``: INVITE with SDP, 180, 200 with
SDP, ACK, BYE, 200 to BYE) through what the user agent's tracer does for each: build the
``TracedMessage`` (the Call-ID found in the head) and file it in a claimed
``softswitch.trace.TraceBook`` entry (decoded to text, a dict). Each call has its own
Call-ID; the book is emptied (``take``) after each call, as the manager does at its end.

Timing is ``time.process_time`` around a loop, best of ``--repeat``: µs per message and per
call, to set against the parse cost (``python -m benchmarks parse``). Needs no peers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from benchmarks.parse import MESSAGES
from sip.aio.trace import TracedMessage
from softswitch.trace import TraceBook

_LOCAL = ("127.0.0.1", 5080)
_REMOTE = ("127.0.0.1", 5070)


def _calls(n: int) -> list[list[bytes]]:
    """``n`` calls' messages, each call with its own Call-ID."""
    out = []
    for i in range(n):
        call_id = f"{i:08x}-5f2c9e1a7b3d4c8e0a6f1b2d@127.0.0.1".encode()
        out.append(
            [m.replace(b"5f2c9e1a7b3d4c8e0a6f1b2d@127.0.0.1", call_id) for m in MESSAGES.values()]
        )
    return out


def measure(calls: int, repeat: int) -> dict[str, float]:
    data = _calls(calls)
    best = float("inf")
    for _ in range(repeat):
        book = TraceBook()
        start = time.process_time()
        for messages in data:
            call_id = None
            for k, raw in enumerate(messages):
                traced = TracedMessage.now(
                    "out" if k % 2 == 0 else "in", "udp", _LOCAL, _REMOTE, raw
                )
                if call_id is None:
                    call_id = traced.call_id
                    assert call_id is not None
                    book.claim(call_id)
                book.record(traced)
            book.take([call_id])  # type: ignore[list-item]
        best = min(best, time.process_time() - start)
    per_message = best / (calls * len(MESSAGES)) * 1e6
    return {
        "us_per_message": round(per_message, 2),
        "us_per_call": round(per_message * len(MESSAGES), 2),
        "messages_per_call": len(MESSAGES),
        "calls": calls,
        "repeat": repeat,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.trace_cost", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = measure(args.calls, args.repeat)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"SIP trace: {result['us_per_message']} µs per message, {result['us_per_call']} µs per call "
            f"({result['messages_per_call']} messages), best of {args.repeat} x {args.calls} calls"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
