"""Layer rules of docs/ARCHITECTURE.md, checked with the suite (so CI enforces them).

The import contracts live in ``pyproject.toml`` (``[tool.importlinter]``) and are checked by
the real ``lint-imports``; this module runs it, makes sure no new core module escapes the
"core never imports a dialect" contract, and that no dialect's name leaks below the dialects.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: The shell around the core: they choose which dialects to serve, so they may name them.
COMPOSITION_ROOTS = {"server", "cli", "campaign"}

#: Dialect names that must stay inside ``softswitch/api/``.
DIALECT_WORDS = re.compile(r"plivo|twilio|twiml|callapi", re.IGNORECASE)


def _contracts() -> dict[str, dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c for c in config["contracts"]}


def test_import_contracts_hold() -> None:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).exists():
        pytest.fail("lint-imports (import-linter, in the test extra) is not installed")
    run = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "broken" in run.stdout and " 0 broken" in run.stdout


def test_every_core_module_is_under_the_dialect_contract() -> None:
    """A module added to ``softswitch/`` is core unless it is a composition root."""
    core = {
        p.stem if p.is_file() else p.name
        for p in (ROOT / "softswitch").iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())
    } - COMPOSITION_ROOTS - {"api"}
    listed = {m.removeprefix("softswitch.") for m in _contracts()["core-below-dialects"]["source_modules"]}
    assert listed == core


def test_no_dialect_name_below_the_dialects() -> None:
    """``grep -ril plivo`` over sip/, media/ and the dialect-neutral part of softswitch/."""
    places = [ROOT / "sip", ROOT / "media", ROOT / "softswitch"]
    offenders = []
    for base in places:
        for path in base.rglob("*.py"):
            rel = path.relative_to(ROOT)
            if rel.parts[:2] == ("softswitch", "api") or (
                rel.parts[0] == "softswitch" and len(rel.parts) == 2 and path.stem in COMPOSITION_ROOTS
            ):
                continue
            if DIALECT_WORDS.search(path.read_text(encoding="utf-8")):
                offenders.append(str(rel))
    assert offenders == []
