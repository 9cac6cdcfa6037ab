"""The parallel fork: several calls ring at once, the first to answer wins.

A dialect builds one :class:`~softswitch.model.CallSpec` per member and one
:class:`~softswitch.model.ForkGroup`; :meth:`CallManager.admit_fork
<softswitch.call.CallManager.admit_fork>` admits the members as ordinary calls sharing one
request uuid, each pointing at one :class:`Fork`. Every member keeps its own attempts
(gateway failover), timers, ring and hangup notifications; the fork only decides who wins:

* the first member to answer wins at once, or, with a confirmation
  (``ForkGroup.confirm_sounds``/``confirm_key``), the first to accept it; meanwhile the
  others keep ringing;
* when a member wins, the others are hung up with ``LOSE_RACE``: CANCEL while ringing, BYE
  for one that answered (the SIP layer ACKs a 2xx that arrives after its CANCEL and BYEs
  it, per leg);
* only the winner runs the call application (the answer document).

``ForkGroup.reject_causes`` is read by the manager's failover (:meth:`Fork.stops_failover`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sip import causes

from .events import DigitReceived, Terminated
from .model import EndReason, ForkGroup, HangupSource

if TYPE_CHECKING:
    from .call import CallManager
    from .calltable import Call

log = logging.getLogger("softswitch.fork")

__all__ = ["Fork"]


@dataclass(frozen=True, slots=True)
class _ConfirmPlay:
    """The confirmation sounds as a :class:`softswitch.liveops.PlayOrder`."""

    urls: tuple[str, ...]
    length: int | None = None
    legs: str = "aleg"
    loop: bool = False
    mix: bool = False


class Fork:
    """The runtime side of one :class:`ForkGroup`: its members and the winner."""

    def __init__(self, manager: CallManager, group: ForkGroup, request_uuid: str) -> None:
        self.manager = manager
        self.group = group
        self.request_uuid = request_uuid
        self.members: list[Call] = []
        self.winner: Call | None = None

    @property
    def needs_confirm(self) -> bool:
        return bool(self.group.confirm_sounds) or self.group.confirm_key is not None

    def lost(self, call: Call) -> bool:
        """Another member has won."""
        return self.winner is not None and self.winner is not call

    def stops_failover(self, cause: str) -> bool:
        """A member's attempt that failed with ``cause`` is final for that member."""
        return cause in self.group.reject_causes

    def claim(self, call: Call) -> bool:
        """``call`` answered: without a confirmation the first one wins here (synchronously,
        so two answers in one loop turn cannot both win). False when it already lost."""
        if self.lost(call):
            return False
        if not self.needs_confirm:
            self._win(call)
        return True

    async def run_answered(self, call: Call) -> None:
        """The application task of an answered member: confirm (if asked), win, run the app."""
        if self.lost(call):
            await self._drop(call, causes.LOSE_RACE)
            return
        if self.needs_confirm:
            if not await self._confirm(call):
                if not call.finished.is_set():
                    log.info("call %s: fork member did not confirm; dropped", call.call_uuid)
                    await self._drop(call, causes.NO_ANSWER)
                return
            if self.lost(call):
                await self._drop(call, causes.LOSE_RACE)
                return
            self._win(call)
        await self.manager.runner.run_app(call)

    def _win(self, call: Call) -> None:
        self.winner = call
        log.info("call %s: won fork %s", call.call_uuid, self.request_uuid)
        for other in self.members:
            if other is not call and not other.finished.is_set():
                self.manager.spawn(
                    self._drop(other, causes.LOSE_RACE), f"fork-lost-{other.call_uuid}"
                )

    async def _drop(self, call: Call, cause: str) -> None:
        if call.local_end is not None:  # already being hung up (one CANCEL/BYE per leg)
            return
        await self.manager.hangup(call, cause, HangupSource.SYSTEM, EndReason.FORK_LOST)

    async def _confirm(self, call: Call) -> bool:
        """Play the sounds; with a key, wait for it. True once accepted, False when the
        window (``confirm_timeout`` from now) closed or the leg ended first."""
        group, leg = self.group, call.leg
        playback: Any = None
        if group.confirm_sounds:
            try:
                await self.manager.live_ops.play(call, _ConfirmPlay(group.confirm_sounds))
                playback = (call.playbacks.get("play") or [None])[-1]
            except Exception as exc:  # no media: it cannot hear the prompt
                log.warning("call %s: confirmation sound not played: %s", call.call_uuid, exc)
        try:
            async with asyncio.timeout(group.confirm_timeout):
                if group.confirm_key is None:  # sounds only: accepted once they were heard
                    if playback is not None and playback.task is not None:
                        await asyncio.shield(playback.task)
                    return not call.finished.is_set()
                return await _wait_for_key(leg, group.confirm_key)
        except TimeoutError:
            return False
        finally:
            if playback is not None:
                with contextlib.suppress(Exception):
                    playback.stop()


async def _wait_for_key(leg: Any, key: str) -> bool:
    """True once the leg's digits end with ``key``; False if the leg ends first."""
    typed = ""
    async for ev in leg.events():
        if isinstance(ev, DigitReceived):
            typed = (typed + ev.digit)[-len(key) :]
            if typed == key:
                return True
        elif isinstance(ev, Terminated):
            return False
    return False
