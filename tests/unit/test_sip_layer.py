"""``sip`` is a SIP library and nothing else: it never imports ``media`` or ``softswitch``
(until import-linter checks the contracts in CI, this test does for ``sip``)."""

from __future__ import annotations

import ast
from pathlib import Path

SIP = Path(__file__).resolve().parents[2] / "sip"


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_sip_imports_neither_media_nor_softswitch():
    offenders = {
        str(path.relative_to(SIP.parent)): sorted(_imported(path) & {"media", "softswitch"})
        for path in SIP.rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_sip_leaves_the_process_alone():
    """BLAS threads and the GC policy are the program's decisions (softswitch.process)."""
    for path in SIP.rglob("*.py"):
        text = path.read_text()
        assert "OPENBLAS_NUM_THREADS" not in text and "gc.freeze" not in text, path
