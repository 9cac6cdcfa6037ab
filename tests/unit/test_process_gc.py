"""The GC policy frees cyclic garbage frozen with the live heap even when calls are always
live (issue #13: a busy server was never idle, so it never ran a full collection)."""

from __future__ import annotations

import gc
import sys
import weakref

from softswitch.process import GcPolicy


class Node:
    """A reference cycle of one object: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


async def test_busy_policy_collects_once_the_frozen_heap_has_grown() -> None:
    policy = GcPolicy(busy=lambda: True)  # never idle
    policy.FULL_COLLECT_GROWTH = 1.1
    policy.start()
    try:
        policy._handle.cancel()  # type: ignore[union-attr]  # ticks driven by hand below
        nodes = [Node() for _ in range(sys.getallocatedblocks() // 4 + 1000)]
        probe = weakref.ref(nodes[0])
        policy._tick()  # frozen while referenced, as a live call's objects are
        policy._handle.cancel()  # type: ignore[union-attr]
        del nodes  # the "call" ends: its cycles are garbage, but frozen
        gc.collect()
        assert probe() is not None  # the collector does not see frozen objects
        ballast = [[i] for i in range(sys.getallocatedblocks() // 5)]  # newer calls' objects
        policy._tick()  # heap > 1.1x its size after the last full collection
        policy._handle.cancel()  # type: ignore[union-attr]
        assert probe() is None
        del ballast
    finally:
        policy.stop()
        gc.set_threshold(700, 10, 10)


async def test_busy_policy_without_growth_only_freezes() -> None:
    policy = GcPolicy(busy=lambda: True)
    policy.start()
    try:
        policy._handle.cancel()  # type: ignore[union-attr]
        nodes = [Node() for _ in range(100)]
        probe = weakref.ref(nodes[0])
        policy._tick()
        policy._handle.cancel()  # type: ignore[union-attr]
        del nodes
        policy._tick()  # grown by far less than 2x: no full collection (no stall)
        policy._handle.cancel()  # type: ignore[union-attr]
        assert probe() is not None
    finally:
        policy.stop()
        gc.set_threshold(700, 10, 10)
