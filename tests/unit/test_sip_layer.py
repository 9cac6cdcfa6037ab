"""``sip`` is a SIP library and nothing else: it makes no process-wide decisions (its imports
are checked by the import-linter contracts, tests/unit/test_layers.py)."""

from __future__ import annotations

from pathlib import Path

SIP = Path(__file__).resolve().parents[2] / "sip"


def test_sip_leaves_the_process_alone():
    """BLAS threads and the GC policy are the program's decisions (softswitch.process)."""
    for path in SIP.rglob("*.py"):
        text = path.read_text()
        assert "OPENBLAS_NUM_THREADS" not in text and "gc.freeze" not in text, path
