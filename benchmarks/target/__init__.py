"""``softswitch bench target TARGET``: benchmark somebody's own PBX, trunk or SBC.

Calls are placed with the embedded user agent (:mod:`softswitch.ua`) at a fixed rate or a
ramp, capped in concurrency, held for a fixed or random time while they play a tone, a file
or speech, optionally send DTMF and check it comes back, optionally run AMD. Each call's SIP
timings (PDD, setup, BYE round trip, retransmissions), RTP/RTCP figures (packets, loss,
jitter, RTT) and an E-model MOS (:mod:`benchmarks.target.emodel`) go to ``calls.json`` and
``calls.csv``; ``report.html`` draws them (:mod:`benchmarks.target.report`).

    plan.py     the run's settings, parsed once, with their hard caps
    runner.py   the load generator (one asyncio task per call, everything bounded)
    watch.py    SIP timings and retransmissions from the user agent's wire tracer
    emodel.py   ITU-T G.107 (simplified): R-factor and MOS
    results.py  per-call record, aggregate, JSON and CSV
    report.py   the HTML report (matplotlib, inline PNG) and the comparison of two runs
    cli.py      the command line, the first-run prompt, the live status line
"""
