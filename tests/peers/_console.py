"""What the console-driven peers (baresip, linphonec) share: the lines their reader thread
collected, each with its ``time.monotonic()`` arrival stamp, and a wait on one of them."""

from __future__ import annotations

import threading
import time


class StampedLines:
    """A peer's console or log lines with arrival stamps. The peer's reader thread appends
    ``(stamp, text)`` to ``_lines`` under ``_lock``; tests read them here."""

    _lines: list[tuple[float, str]]
    _lock: threading.Lock

    def log(self) -> str:
        """Every line so far, as one text."""
        with self._lock:
            return "\n".join(line for _, line in self._lines)

    def lines(self) -> list[tuple[float, str]]:
        """Lines with their ``time.monotonic()`` arrival stamps."""
        with self._lock:
            return list(self._lines)

    def wait_for(self, text: str, timeout: float = 5.0) -> float | None:
        """Block until a line contains ``text``; its time stamp, or ``None`` on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            for t, line in self.lines():
                if text in line:
                    return t
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)
