"""``softswitch serve`` with cProfile switched on and off by signals, so a profile covers the
load window only (not imports, start-up and shutdown): ``PROFILE_START`` (SIGRTMIN) starts
profiling, ``PROFILE_STOP`` (SIGRTMIN+1) stops it and writes the dump to the file named first on
the command line. (SIGUSR1 is the server's own: it drains.)

    python -m benchmarks._profiled_serve OUT.prof serve --http ... (the CLI's arguments)
"""

from __future__ import annotations

import cProfile
import signal
import sys

PROFILE_START = signal.SIGRTMIN
PROFILE_STOP = signal.SIGRTMIN + 1


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    profiler = cProfile.Profile()

    def start(*_: object) -> None:
        profiler.enable()

    def stop(*_: object) -> None:
        profiler.disable()
        profiler.dump_stats(out)

    signal.signal(PROFILE_START, start)
    signal.signal(PROFILE_STOP, stop)
    from softswitch.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
