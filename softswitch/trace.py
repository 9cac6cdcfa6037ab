"""SIP ladders: the messages of each call, bounded, kept while it is up and stored when it ends.

The SIP user agent hands every message it sends or receives to :meth:`TraceBook.record`
(``sip.aio.UserAgent.tracer``); the book files it under its Call-ID. The call manager
claims the Call-IDs of a call's legs (:meth:`TraceBook.claim`) and takes their messages at
the end (:meth:`TraceBook.take`), to be stored with the record (``CallStore.save_trace``).
Messages of Call-IDs nobody claimed (yet: an inbound INVITE arrives before its call exists)
wait in a small LRU table.

Bounds: each Call-ID keeps at most ``max_messages`` messages and ``max_bytes`` of text
(further messages are counted in ``dropped``, never kept); at most ``max_unclaimed`` Call-IDs
wait unclaimed (the oldest is forgotten first). A message's dictionary is plain JSON.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CallTrace", "TraceBook", "message_dict"]

MAX_MESSAGES = 200
MAX_BYTES = 256 * 1024
MAX_UNCLAIMED = 256


def _hostport(address: tuple[str, int]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def message_dict(traced: Any) -> dict[str, Any]:
    """A ``sip.aio.trace.TracedMessage`` as the JSON the API and the store carry."""
    text = traced.data.decode("utf-8", "replace")
    first = text.split("\r\n", 1)[0][:200]
    local, remote = _hostport(traced.local), _hostport(traced.remote)
    out = traced.direction == "out"
    return {
        "time": round(traced.wall, 6),
        "monotonic": round(traced.monotonic, 6),
        "direction": traced.direction,
        "transport": traced.transport,
        "source": local if out else remote,
        "destination": remote if out else local,
        "call_id": traced.call_id,
        "first_line": first,
        "size": len(traced.data),
        "text": text,
    }


@dataclass
class CallTrace:
    """The messages of one Call-ID, oldest first, within the bounds."""

    max_messages: int = MAX_MESSAGES
    max_bytes: int = MAX_BYTES
    messages: list[dict[str, Any]] = field(default_factory=list)
    size: int = 0
    dropped: int = 0

    def add(self, message: dict[str, Any]) -> bool:
        """Keep ``message`` if it fits; False (and counted in ``dropped``) otherwise."""
        size = int(message.get("size", 0))
        if len(self.messages) >= self.max_messages or self.size + size > self.max_bytes:
            self.dropped += 1
            return False
        self.messages.append(message)
        self.size += size
        return True


class TraceBook:
    """Every live Call-ID's :class:`CallTrace`; see the module docstring."""

    def __init__(
        self,
        *,
        max_messages: int = MAX_MESSAGES,
        max_bytes: int = MAX_BYTES,
        max_unclaimed: int = MAX_UNCLAIMED,
    ) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.max_unclaimed = max_unclaimed
        self._claimed: dict[str, CallTrace] = {}
        self._unclaimed: OrderedDict[str, CallTrace] = OrderedDict()

    def __len__(self) -> int:
        return len(self._claimed) + len(self._unclaimed)

    def _new(self) -> CallTrace:
        return CallTrace(self.max_messages, self.max_bytes)

    def record(self, traced: Any) -> None:
        """The user agent's tracer: file one message under its Call-ID."""
        call_id = traced.call_id
        if call_id is None:
            return
        trace = self._claimed.get(call_id)
        if trace is None:
            trace = self._unclaimed.get(call_id)
            if trace is None:
                trace = self._unclaimed[call_id] = self._new()
                while len(self._unclaimed) > self.max_unclaimed:
                    self._unclaimed.popitem(last=False)
            else:
                self._unclaimed.move_to_end(call_id)
        # The bound is checked before the text is decoded: a full trace costs a counter.
        if (
            len(trace.messages) >= trace.max_messages
            or trace.size + len(traced.data) > trace.max_bytes
        ):
            trace.dropped += 1
            return
        trace.add(message_dict(traced))

    def claim(self, call_id: str) -> None:
        """A call owns ``call_id``: its messages stay until :meth:`take`."""
        if call_id in self._claimed:
            return
        waiting = self._unclaimed.pop(call_id, None)
        self._claimed[call_id] = waiting if waiting is not None else self._new()

    def messages(self, call_ids: Iterable[str]) -> tuple[list[dict[str, Any]], int]:
        """The messages of ``call_ids`` in the order they went or came, and how many were
        dropped by the bounds."""
        out: list[dict[str, Any]] = []
        dropped = 0
        for call_id in dict.fromkeys(call_ids):
            trace = self._claimed.get(call_id) or self._unclaimed.get(call_id)
            if trace is not None:
                out.extend(trace.messages)
                dropped += trace.dropped
        out.sort(key=lambda m: m["monotonic"])
        return out, dropped

    def take(self, call_ids: Iterable[str]) -> tuple[list[dict[str, Any]], int]:
        """:meth:`messages`, then forget those Call-IDs."""
        ids = list(dict.fromkeys(call_ids))
        result = self.messages(ids)
        for call_id in ids:
            self._claimed.pop(call_id, None)
            self._unclaimed.pop(call_id, None)
        return result
