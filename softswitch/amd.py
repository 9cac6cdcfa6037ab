"""Answering-machine detection on a live call: the detector of :mod:`media.amd` fed from the
call's received audio, with the decision (and a later voicemail beep) delivered as futures.

The media clock calls the stream's taps once per 20 ms tick with exactly one frame (silence
when nothing arrived), so the detector's clock is the call's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from media.amd import AmdParams, AmdResult, AnsweringMachineDetector

log = logging.getLogger(__name__)


class MachineDetection:
    """Runs one detector on one call's received audio.

    ``decision`` resolves with the first :class:`AmdResult` (Machine true/false/NOTSURE), or
    ``None`` if the call ends first. ``beep`` resolves with the second result, the one carrying
    the voicemail beep, or ``None`` when no beep comes (human, ended call, beep wait over).
    """

    def __init__(self, call: Any, params: AmdParams, *, on_decision: Callable[[AmdResult], object] | None = None,
                 on_beep: Callable[[AmdResult], object] | None = None):
        self.call = call
        self.params = params
        self.detector = AnsweringMachineDetector(params)
        loop = asyncio.get_running_loop()
        self.decision: asyncio.Future[AmdResult | None] = loop.create_future()
        self.beep: asyncio.Future[AmdResult | None] = loop.create_future()
        self._on_decision = on_decision
        self._on_beep = on_beep
        self._stream = getattr(call, "media", None)
        self._attached = False
        # The decision window is bounded by machine_detection_time; a safety margin covers
        # a clock that was late.
        self._guard = loop.call_later(params.total_ms / 1000 + 1.0, self._window_over)

    def start(self) -> MachineDetection:
        if self._stream is None:
            self._resolve(None, None)
            return self
        self._stream.add_tap(self._tap)
        self._attached = True
        if hasattr(self.call, "add_listener"):
            self.call.add_listener(self._on_call_event)
        return self

    def _tap(self, frame: np.ndarray) -> None:
        try:
            result = self.detector.feed(frame)
        except Exception:
            log.exception("machine detection failed")
            self._resolve(None, None)
            return
        if result is not None:
            if not self.decision.done():
                self.decision.set_result(result)
                self._guard.cancel()
                if self._on_decision is not None:
                    self._on_decision(result)
                if result.beep_at_ms is not None and not self.beep.done():
                    self.beep.set_result(result)
                    if self._on_beep is not None:
                        self._on_beep(result)
            elif not self.beep.done():
                self.beep.set_result(result)
                if self._on_beep is not None:
                    self._on_beep(result)
        if self.detector.done:
            self._resolve(None, None)

    def _window_over(self) -> None:
        if not self.decision.done():
            result = self.detector.finish()
            self.decision.set_result(result)
            if self._on_decision is not None:
                self._on_decision(result)

    def _on_call_event(self, event: object) -> None:
        if type(event).__name__ == "Terminated":
            self._resolve(None, None)

    def _resolve(self, decision: AmdResult | None, beep: AmdResult | None) -> None:
        if not self.decision.done():
            self.decision.set_result(decision)
        if not self.beep.done():
            self.beep.set_result(beep)
        self._guard.cancel()
        if self._attached and self._stream is not None:
            self._attached = False
            with contextlib.suppress(Exception):
                self._stream.remove_tap(self._tap)

    def stop(self) -> None:
        self._resolve(None, None)


async def run_detection(call: Any, params: AmdParams) -> AmdResult | None:
    """Detect on an answered call and return the decision (``None`` if the call ended first)."""
    detection = MachineDetection(call, params).start()
    return await detection.decision
