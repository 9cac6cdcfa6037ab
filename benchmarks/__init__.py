"""Capacity benchmarks: how many call setups per second and how many concurrent calls with
media one softswitch process sustains on this machine, next to peers measured in the same
run against the same sipp UAS (sipp itself as the C++ ceiling, pyVoIP as the Python peer).

Run ``softswitch bench`` or ``python -m benchmarks`` (``--help``). Each peer runs in its own
process; the orchestrator starts the UAS, ramps the load, reads each peer's JSON report and
writes the tables into ``benchmarks/RESULTS.md``.

pyVoIP (GPL) is only ever imported by :mod:`benchmarks._pyvoip_worker`, run as a separate
process; nothing in ``sip/``, ``media/`` or ``softswitch/`` imports it.
"""
