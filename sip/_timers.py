"""One heap for every deadline of an endpoint (transactions, sessions, calls)."""

from __future__ import annotations

import heapq
import itertools


class TimerHeap:
    """Every deadline of every transaction and call, earliest first. An object has at most
    one live entry; an earlier schedule supersedes a later one."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, object]] = []
        self._scheduled: dict[int, float] = {}
        self._counter = itertools.count()

    def schedule(self, obj: object, deadline: float | None) -> None:
        if deadline is None:
            return
        current = self._scheduled.get(id(obj))
        if current is not None and current <= deadline:
            return  # an earlier entry fires first; it re-schedules then
        self._scheduled[id(obj)] = deadline
        heapq.heappush(self._heap, (deadline, next(self._counter), obj))

    def forget(self, obj: object) -> None:
        self._scheduled.pop(id(obj), None)

    def earliest(self) -> float | None:
        heap = self._heap
        while heap and self._scheduled.get(id(heap[0][2])) != heap[0][0]:
            heapq.heappop(heap)  # superseded or forgotten
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> list[object]:
        due = []
        while (first := self.earliest()) is not None and first <= now:
            _, _, obj = heapq.heappop(self._heap)
            del self._scheduled[id(obj)]
            due.append(obj)
        return due

    def clear(self) -> None:
        self._heap.clear()
        self._scheduled.clear()


