"""The call state machine. Everything that changes a call's state lives in this file.

As h11's ``_state.py``: the transitions are a table, not ``if``s spread over the code; an
event the table does not allow in the current state raises :class:`IllegalTransition`.
A :class:`~softswitch.call.Call` gets its state only through :class:`CallStateMachine`;
what users see (``in-progress``, ``no-answer``...) is the dialect's name for a state and
the end (:class:`~softswitch.model.CallEnd`)::

    QUEUED ──dial──▶ INITIATED ──ring──▶ RINGING ──early_media──▶ EARLY
       │                 │   └──early_media──────────────────────▲  │
       │                 └──────────────answer──────────┐          │
       │                                                ▼          │
       │                                   ANSWERED ◀──answer──────┘ (and from RINGING)
       └──────────── end (any state but COMPLETED) ──────────────▶ COMPLETED (with its CallEnd)

A ring after early media keeps EARLY (the callee's audio is already flowing); a repeated
ring or early media keeps the state.
"""

from __future__ import annotations

import enum

from .model import CallEnd

__all__ = ["CallState", "CallTransition", "CallStateMachine", "IllegalTransition", "TRANSITIONS"]


class CallState(enum.Enum):
    #: Admitted, held by the admission gate (calls per second, concurrency).
    QUEUED = "queued"
    #: The INVITE is out; no 18x yet.
    INITIATED = "initiated"
    #: 180 (or 183 without media) received.
    RINGING = "ringing"
    #: 183 with early media.
    EARLY = "early"
    ANSWERED = "answered"
    #: Over; :attr:`CallStateMachine.end` says how.
    COMPLETED = "completed"


class CallTransition(enum.Enum):
    DIAL = "dial"
    RING = "ring"
    EARLY_MEDIA = "early_media"
    ANSWER = "answer"
    END = "end"


_S, _T = CallState, CallTransition

#: state → {event: next state}. What is not here is illegal.
TRANSITIONS: dict[CallState, dict[CallTransition, CallState]] = {
    _S.QUEUED: {_T.DIAL: _S.INITIATED, _T.END: _S.COMPLETED},
    _S.INITIATED: {
        _T.RING: _S.RINGING,
        _T.EARLY_MEDIA: _S.EARLY,
        _T.ANSWER: _S.ANSWERED,
        _T.END: _S.COMPLETED,
    },
    _S.RINGING: {
        _T.RING: _S.RINGING,
        _T.EARLY_MEDIA: _S.EARLY,
        _T.ANSWER: _S.ANSWERED,
        _T.END: _S.COMPLETED,
    },
    _S.EARLY: {
        _T.RING: _S.EARLY,
        _T.EARLY_MEDIA: _S.EARLY,
        _T.ANSWER: _S.ANSWERED,
        _T.END: _S.COMPLETED,
    },
    _S.ANSWERED: {_T.END: _S.COMPLETED},
    _S.COMPLETED: {},
}


class IllegalTransition(RuntimeError):
    def __init__(self, state: CallState, event: CallTransition) -> None:
        super().__init__(f"call in state {state.name} cannot take {event.name}")
        self.state = state
        self.event = event


class CallStateMachine:
    """One call's state; :meth:`fire` moves it by the table, :meth:`end` closes it once."""

    __slots__ = ("state", "end_info")

    def __init__(self) -> None:
        self.state = CallState.QUEUED
        self.end_info: CallEnd | None = None

    def can(self, event: CallTransition) -> bool:
        return event in TRANSITIONS[self.state]

    def fire(self, event: CallTransition) -> CallState:
        """Take ``event`` (not END: use :meth:`end`); return the new state."""
        if event is CallTransition.END:
            raise ValueError("use end(CallEnd) to end a call")
        return self._move(event)

    def end(self, how: CallEnd) -> CallState:
        """End the call with ``how``; ending twice is illegal."""
        state = self._move(CallTransition.END)
        self.end_info = how
        return state

    def _move(self, event: CallTransition) -> CallState:
        try:
            self.state = TRANSITIONS[self.state][event]
        except KeyError:
            raise IllegalTransition(self.state, event) from None
        return self.state

    @property
    def answered(self) -> bool:
        return self.state is CallState.ANSWERED or bool(self.end_info and self.end_info.answered)

    @property
    def is_over(self) -> bool:
        return self.state is CallState.COMPLETED
