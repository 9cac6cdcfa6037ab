"""Layer rules: the dialect-neutral core never imports a dialect (``softswitch.api``)."""

from __future__ import annotations

import ast
from pathlib import Path

import softswitch

#: Composition roots: they choose the dialects to serve, so they may import them.
_ROOTS = {"server.py", "cli.py", "__init__.py"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the softswitch package
                base = "softswitch." + base if base else "softswitch"
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def test_core_never_imports_a_dialect() -> None:
    root = Path(softswitch.__file__).parent
    offenders = {}
    for path in sorted(root.glob("*.py")):
        if path.name in _ROOTS:
            continue
        bad = {m for m in _imports(path) if m == "softswitch.api" or m.startswith("softswitch.api.")}
        if bad:
            offenders[path.name] = sorted(bad)
    assert offenders == {}
