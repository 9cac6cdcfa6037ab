"""``python -m benchmarks parse``: µs per SIP message through the message layer.

The messages of one call as this softswitch sees them on the UAC side (INVITE with SDP, 180,
200 with SDP, ACK, BYE, 200 to BYE), each timed two ways:

* **parse**: :func:`sip.message.parse_message` alone;
* **parse+read**: parse, then the reads the endpoint makes of every message (transaction
  key: top Via + branch, CSeq; Call-ID; From/To tags; Contact of a request or a 2xx).

Timing is ``time.process_time`` around a loop, best of ``--repeat`` (CPU time, so other
processes on a shared machine disturb it less than wall time). ``--against DIR`` runs the
same script with another checkout on ``PYTHONPATH`` (e.g. ``/work/main``), alternating the
two ``--rounds`` times in separate processes, so that a before/after comparison is taken on
the same machine in the same minute. Needs no peers.

``--call`` measures a whole call instead, the SIP layer alone: two endpoints of
:mod:`sip.testing` (in memory, fake clock, no sockets, no media) place and clear calls
(INVITE → 100/180/200 with SDP → ACK, BYE → 200, then the linger timers), so the figure
is the CPU of both sides' message layer, transactions, dialogs and INVITE sessions per call
(µs per call, and instructions per call with ``--instructions``).

``--instructions`` adds a count that a busy machine does not disturb: instructions executed
(valgrind's callgrind, ``Ir``) per message over the six messages of a call, from the
difference between a process that parses each message ``--ir-n`` times and one that parses
none (so start-up and imports cancel out). It needs ``valgrind`` and takes about a minute
per checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

_SDP = (
    "v=0\r\n"
    "o=- 3920394 3920394 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=audio 20000 RTP/AVP 0 8 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\n"
    "a=ptime:20\r\n"
    "a=sendrecv\r\n"
)

_VIA = "Via: SIP/2.0/UDP 127.0.0.1:5070;rport;branch=z9hG4bK6f1a9c2e4b7d8a0c3e5f"
_FROM = 'From: "Alice" <sip:alice@127.0.0.1:5070>;tag=8a7c1f0e9b2d4c6a'
_TO = "To: <sip:1000@127.0.0.1:5080>"
_TO_TAG = _TO + ";tag=4b1e7d9a2c3f"
_CALL_ID = "Call-ID: 5f2c9e1a7b3d4c8e0a6f1b2d@127.0.0.1"


def _msg(start: str, headers: list[str], body: str = "") -> bytes:
    lines = [start, *headers, f"Content-Length: {len(body.encode())}", "", body]
    return "\r\n".join(lines).encode()


MESSAGES: dict[str, bytes] = {
    "INVITE": _msg(
        "INVITE sip:1000@127.0.0.1:5080 SIP/2.0",
        [
            _VIA,
            "Max-Forwards: 70",
            _FROM,
            _TO,
            _CALL_ID,
            "CSeq: 1 INVITE",
            "Contact: <sip:alice@127.0.0.1:5070;transport=udp>",
            "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, PRACK, UPDATE",
            "Supported: timer, 100rel, replaces",
            "User-Agent: softswitch",
            "Content-Type: application/sdp",
        ],
        _SDP,
    ),
    "180": _msg(
        "SIP/2.0 180 Ringing",
        [
            _VIA + ";received=127.0.0.1",
            _FROM,
            _TO_TAG,
            _CALL_ID,
            "CSeq: 1 INVITE",
            "Contact: <sip:1000@127.0.0.1:5080;transport=UDP>",
        ],
    ),
    "200+SDP": _msg(
        "SIP/2.0 200 OK",
        [
            _VIA + ";received=127.0.0.1",
            _FROM,
            _TO_TAG,
            _CALL_ID,
            "CSeq: 1 INVITE",
            "Contact: <sip:1000@127.0.0.1:5080;transport=UDP>",
            "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS",
            "Content-Type: application/sdp",
        ],
        _SDP,
    ),
    "ACK": _msg(
        "ACK sip:1000@127.0.0.1:5080;transport=UDP SIP/2.0",
        [
            _VIA.replace("6f1a9c", "77aa00"),
            "Max-Forwards: 70",
            _FROM,
            _TO_TAG,
            _CALL_ID,
            "CSeq: 1 ACK",
        ],
    ),
    "BYE": _msg(
        "BYE sip:alice@127.0.0.1:5070;transport=udp SIP/2.0",
        [
            "Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-2461-1-7",
            "Max-Forwards: 70",
            "From: <sip:1000@127.0.0.1:5080>;tag=4b1e7d9a2c3f",
            'To: "Alice" <sip:alice@127.0.0.1:5070>;tag=8a7c1f0e9b2d4c6a',
            _CALL_ID,
            "CSeq: 2 BYE",
        ],
    ),
    "200/BYE": _msg(
        "SIP/2.0 200 OK",
        [
            "Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-2461-1-7;received=127.0.0.1",
            "From: <sip:1000@127.0.0.1:5080>;tag=4b1e7d9a2c3f",
            'To: "Alice" <sip:alice@127.0.0.1:5070>;tag=8a7c1f0e9b2d4c6a',
            _CALL_ID,
            "CSeq: 2 BYE",
        ],
    ),
}


def _reads(msg: Any) -> None:
    """What the endpoint reads of each message (transaction and dialog matching)."""
    msg.top_via.params.get("branch")
    msg.cseq  # noqa: B018
    msg.call_id  # noqa: B018
    msg.from_addr.params.get("tag")
    msg.to_addr.params.get("tag")
    if getattr(msg, "method", None) in ("INVITE", "BYE") or getattr(msg, "status", 0) // 100 == 2:
        msg.contacts  # noqa: B018


def _time(fn: Callable[[], object], n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, time.process_time() - t0)
    return best / n * 1e6


def measure(n: int, repeat: int) -> dict[str, dict[str, float]]:
    """µs per message for each of :data:`MESSAGES`, parse only and parse+read."""
    from sip.message import parse_message

    out: dict[str, dict[str, float]] = {}
    for name, data in MESSAGES.items():
        parse_message(data)  # warm up
        _reads(parse_message(data))
        out[name] = {
            "parse": _time(lambda d=data: parse_message(d), n, repeat),  # type: ignore[misc]
            "parse+read": _time(lambda d=data: _reads(parse_message(d)), n, repeat),  # type: ignore[misc]
        }
    return out


def _ir_child(kind: str, n: int) -> None:
    """Parse (and read, for ``parse+read``) each of :data:`MESSAGES` ``n`` times."""
    from sip.message import parse_message

    for data in MESSAGES.values():
        _reads(parse_message(data))  # the same warm-up whatever n is
    for data in MESSAGES.values():
        if kind == "parse":
            for _ in range(n):
                parse_message(data)
        else:
            for _ in range(n):
                _reads(parse_message(data))


_OFFER = _SDP
_ANSWER = _SDP.replace("20000", "30000")


def _calls(n: int) -> None:
    """``n`` calls between two in-memory endpoints, then their linger timers."""
    import gc

    from sip.endpoint import IncomingCall
    from sip.testing import client_and_server, make_client_session

    gc.set_threshold(10_000, 10, 10)  # as softswitch.process.GcPolicy sets it
    global _NET
    if _NET is None:
        _NET = client_and_server()
    net, client, server = _NET
    for _ in range(n):
        session = make_client_session(client, "sip:1000@10.0.0.2:5060", sdp=_OFFER)
        client.invite(session, net.now, on_remote_sdp=lambda sdp, early: None)
        net.roundtrip()
        incoming = net.take(server, IncomingCall)[0]
        server.ring(incoming.call_id, net.now)  # type: ignore[attr-defined]
        net.roundtrip()
        server.answer(incoming.call_id, net.now, _ANSWER)  # type: ignore[attr-defined]
        net.roundtrip()
        client.hangup(session.call_id, net.now)
        net.roundtrip()
        net.take(client)
        net.take(server)
        net.wire.clear()
    net.advance(40.0)
    net.take(client)
    net.take(server)


_NET: Any = None


def measure_call(n: int, repeat: int) -> dict[str, float]:
    """µs of CPU per SIP call (both sides), best of ``repeat`` loops of ``n`` calls."""
    _calls(20)  # warm up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        _calls(n)
        best = min(best, time.process_time() - t0)
    return {"call": best / n * 1e6}


def _callgrind_ir(checkout: Path, kind: str, n: int) -> int:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        str(Path(__file__).resolve()),
        "--child-ir",
        kind,
        "--ir-n",
        str(n),
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=True)
    for line in out.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1])
    raise RuntimeError(f"no instruction count from callgrind: {out.stderr[-300:]}")


def instructions(checkout: Path, n: int) -> dict[str, float]:
    """Instructions per message (mean over the six), parse and parse+read."""
    base = _callgrind_ir(checkout, "parse", 0)
    return {
        kind: (_callgrind_ir(checkout, kind, n) - base) / (n * len(MESSAGES))
        for kind in ("parse", "parse+read")
    }


def _child(checkout: Path, n: int, repeat: int) -> dict[str, dict[str, float]]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "-n",
        str(n),
        "--repeat",
        str(repeat),
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def table(runs: dict[str, list[dict[str, dict[str, float]]]]) -> str:
    """Markdown: µs per message, min–max over rounds, per checkout, and the ratio of medians."""
    labels = list(runs)
    head = "| message | kind | " + " | ".join(f"{lb} µs" for lb in labels)
    if len(labels) == 2:
        head += f" | {labels[0]} / {labels[1]}"
    lines = [head + " |", "|---|---|" + "---:|" * (len(labels) + (len(labels) == 2))]
    for name in MESSAGES:
        for kind in ("parse", "parse+read"):
            cells: list[str] = []
            medians: list[float] = []
            for lb in labels:
                vals = sorted(r[name][kind] for r in runs[lb])
                medians.append(vals[len(vals) // 2])
                cells.append(f"{vals[0]:.1f}–{vals[-1]:.1f}" if len(vals) > 1 else f"{vals[0]:.1f}")
            row = f"| {name} | {kind} | " + " | ".join(cells)
            if len(labels) == 2:
                row += f" | {medians[0] / medians[1]:.1f}×"
            lines.append(row + " |")
    return "\n".join(lines)


def _main_call(args: argparse.Namespace) -> int:
    """``--call``: µs (and instructions) per SIP call, this checkout and ``--against``."""
    checkouts = {"this": REPO}
    if args.against:
        other = Path(args.against).resolve()
        checkouts = {other.name: other, "this": REPO}
    n = max(1, args.n // 10)  # a call is ~7 messages each way
    runs: dict[str, list[float]] = {lb: [] for lb in checkouts}
    for _ in range(max(1, args.rounds)):
        for lb, path in checkouts.items():
            env = {**os.environ, "PYTHONPATH": str(path)}
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child-call", "-n", str(n),
                   "--repeat", str(args.repeat)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=True)
            runs[lb].append(json.loads(out.stdout)["call"])
    print(
        f"SIP layer per call, both sides in memory (µs of process CPU, best of {args.repeat} loops "
        f"of {n} calls, min–max over {args.rounds} rounds):\n"
    )
    print("| checkout | µs per call | instructions per call |")
    print("|---|---:|---:|")
    for lb, path in checkouts.items():
        vals = sorted(runs[lb])
        ir = "–"
        if args.instructions:
            base = _callgrind_ir(path, "call", 0)
            ir = f"{(_callgrind_ir(path, 'call', args.ir_n) - base) / args.ir_n:,.0f}"
        print(f"| {lb} | {vals[0]:.0f}–{vals[-1]:.0f} | {ir} |")
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks parse",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-n", type=int, default=2000, help="messages per timing loop (2000)")
    p.add_argument("--repeat", type=int, default=5, help="loops per message, best kept (5)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds with --against (3)")
    p.add_argument("--against", metavar="DIR", help="another checkout to compare (e.g. /work/main)")
    p.add_argument(
        "--instructions",
        action="store_true",
        help="also count instructions per message under valgrind (deterministic)",
    )
    p.add_argument("--ir-n", type=int, default=300, help="messages of each kind per count (300)")
    p.add_argument(
        "--call",
        action="store_true",
        help="a whole SIP call (both sides, in memory) instead of single messages",
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child-call", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child-ir", choices=("parse", "parse+read", "call"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.n, args.repeat)))
        return 0
    if args.child_call:
        print(json.dumps(measure_call(args.n, args.repeat)))
        return 0
    if args.child_ir:
        if args.child_ir == "call":
            _calls(20)  # the same warm-up whatever n is
            if args.ir_n:
                _calls(args.ir_n)
        else:
            _ir_child(args.child_ir, args.ir_n)
        return 0
    if args.call:
        return _main_call(args)
    runs: dict[str, list[dict[str, dict[str, float]]]] = {}
    if args.against:
        other = Path(args.against).resolve()
        runs = {f"{other.name}": [], "this": []}
        for _ in range(max(1, args.rounds)):
            runs[other.name].append(_child(other, args.n, args.repeat))
            runs["this"].append(_child(REPO, args.n, args.repeat))
    else:
        runs = {"this": [_child(REPO, args.n, args.repeat) for _ in range(max(1, args.rounds))]}
    print(
        f"µs per message, best of {args.repeat} loops of {args.n}, min–max over {args.rounds} rounds "
        f"(process CPU time; {sys.implementation.name} {sys.version.split()[0]})\n"
    )
    print(table(runs))
    if args.instructions:
        print(
            "\nInstructions per message (callgrind Ir, mean over the six messages, "
            f"{args.ir_n} of each):\n"
        )
        checkouts = {lb: (Path(args.against).resolve() if lb != "this" else REPO) for lb in runs}
        counts = {lb: instructions(path, args.ir_n) for lb, path in checkouts.items()}
        labels = list(counts)
        head = "| kind | " + " | ".join(f"{lb} Ir" for lb in labels)
        ratio = len(labels) == 2
        print(head + (f" | {labels[0]} / {labels[1]} |" if ratio else " |"))
        print("|---|" + "---:|" * (len(labels) + ratio))
        for kind in ("parse", "parse+read"):
            row = f"| {kind} | " + " | ".join(f"{counts[lb][kind]:,.0f}" for lb in labels)
            if ratio:
                row += f" | {counts[labels[0]][kind] / counts[labels[1]][kind]:.2f}×"
            print(row + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
