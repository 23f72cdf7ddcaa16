"""Sync work handed to pool threads comes back to the event loop with its result or exception,
many outcomes per wake-up of the loop, and a cancelled waiter never receives one."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from baton.runtime.threads import DaemonThreadPool, LoopHandoff, LoopOutbox


async def test_results_and_exceptions_come_back_to_their_futures() -> None:
    pool = DaemonThreadPool(4, "test-handoff")
    handoff = LoopHandoff(pool, asyncio.get_running_loop())

    def boom() -> None:
        raise ValueError("no")

    try:
        assert await handoff.run(lambda a, b: a + b, 2, 3) == 5
        with pytest.raises(ValueError, match="no"):
            await handoff.run(boom)
        with pytest.raises(SystemExit):
            await handoff.run(lambda: (_ for _ in ()).throw(SystemExit(3)))
        results = await asyncio.gather(*(handoff.run(lambda i=i: i * i) for i in range(500)))
        assert results == [i * i for i in range(500)]
    finally:
        pool.shutdown(wait=True)


async def test_outcomes_that_finish_together_share_one_wake_up() -> None:
    pool = DaemonThreadPool(8, "test-handoff")
    loop = asyncio.get_running_loop()
    handoff = LoopHandoff(pool, loop)
    gate = threading.Event()
    deliveries = 0
    original = handoff._deliver

    def counting_deliver() -> None:
        nonlocal deliveries
        deliveries += 1
        original()

    handoff._deliver = counting_deliver  # type: ignore[method-assign]
    try:
        futures = [handoff.run(gate.wait, 5) for _ in range(8)]
        await asyncio.sleep(0.05)  # every thread is blocked on the gate
        gate.set()
        time.sleep(0.2)  # hold the loop: all eight finish before it can run a delivery
        assert await asyncio.gather(*futures) == [True] * 8
        assert deliveries == 1
    finally:
        pool.shutdown(wait=True)


async def test_a_cancelled_waiter_is_skipped() -> None:
    pool = DaemonThreadPool(2, "test-handoff")
    handoff = LoopHandoff(pool, asyncio.get_running_loop())
    gate = threading.Event()
    try:
        future = handoff.run(gate.wait, 5)
        future.cancel()
        gate.set()
        assert await handoff.run(lambda: "after") == "after"
        assert future.cancelled()
    finally:
        pool.shutdown(wait=True)


async def test_an_outbox_hands_items_from_threads_to_the_loop_in_batches() -> None:
    loop = asyncio.get_running_loop()
    batches: list[tuple[int, list[int]]] = []
    outbox: LoopOutbox[int] = LoopOutbox(loop, lambda items: batches.append((threading.get_ident(), items)))
    pool = DaemonThreadPool(8, "test-outbox")
    gate = threading.Event()

    def work(i: int) -> None:
        gate.wait(5)
        outbox.put(i)

    try:
        pool.call_many(work, [(i,) for i in range(8)])
        await asyncio.sleep(0.05)  # every thread is blocked on the gate
        gate.set()
        time.sleep(0.2)  # hold the loop: all eight are put before it can deliver
        await asyncio.sleep(0.05)
        assert [(thread, sorted(items)) for thread, items in batches] == [(threading.get_ident(), list(range(8)))]
        pool.call_many(outbox.put, [(i,) for i in range(100, 103)])
        while sum(len(items) for _, items in batches) < 11:
            await asyncio.sleep(0.01)
        assert sorted(i for _, items in batches[1:] for i in items) == [100, 101, 102]
    finally:
        pool.shutdown(wait=True)


def test_call_many_after_shutdown_is_refused() -> None:
    pool = DaemonThreadPool(2, "test-outbox")
    pool.shutdown(wait=True)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.call_many(print, [("never",)])
