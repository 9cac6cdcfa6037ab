"""Logging set-up of the command line: the level from ``-v``/``-q``, text or JSON lines.

``setup(verbosity, fmt, base=...)``: ``base`` is the command's default level (``serve`` logs
INFO, so one line per call event; ``call`` and ``campaign`` print their own progress and log
WARNING); each ``-v`` lowers it one step (DEBUG at most), each ``-q`` raises it one step.

``--log-format json`` writes one JSON object per line for log shippers: ``ts`` (ISO 8601,
UTC), ``level``, ``logger``, ``message``, the exception text when there is one, and the
fields a call event logs with ``extra={"call": {...}}`` (``call_uuid``, ``from``, ``to``,
``event``, ``status``, ``cause``...) at the top level of the object.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["JsonFormatter", "TEXT_FORMAT", "level_for", "setup"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)


def level_for(base: int, verbosity: int) -> int:
    """``base`` moved ``verbosity`` steps (positive: more output) along DEBUG..CRITICAL."""
    index = _LEVELS.index(base) if base in _LEVELS else 2
    return _LEVELS[min(max(index - verbosity, 0), len(_LEVELS) - 1)]


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "call", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                out.setdefault(key, value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def setup(verbosity: int, fmt: str = "text", *, base: int = logging.WARNING) -> None:
    """Configure the root logger on stderr (replacing handlers an earlier call installed)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_for(base, verbosity))
