"""Sync work handed to pool threads comes back to the event loop with its result or exception,
many outcomes per wake-up of the loop, and a cancelled waiter never receives one."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from baton.runtime.threads import DaemonThreadPool, LoopHandoff, LoopOutbox
from thread_faults import refuse_thread_starts


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


# --------------------------------------------------------------------------- short of memory


def test_work_whose_thread_could_not_start_runs_on_a_thread_that_frees_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool grows thread by thread as work arrives; a start that fails (no memory for the
    stack) neither raises to the caller nor loses the work: it waits for a running thread."""
    pool = DaemonThreadPool(4, "test-starved")
    gate = threading.Event()
    done: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        if i == 0:
            gate.wait(5)
        with lock:
            done.append(i)

    try:
        pool.call(work, 0)  # one thread, busy until the gate opens
        refused = refuse_thread_starts(monkeypatch, "test-starved", 2)
        pool.call_many(work, [(i,) for i in range(1, 11)])  # the next two starts fail
        assert len(refused) == 2
        deadline = time.monotonic() + 5
        while len(done) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(done) == list(range(1, 11)), "the started threads ran every item, the unclaimed ones too"
        gate.set()
        deadline = time.monotonic() + 5
        while len(done) < 11 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(done) == list(range(11))
        assert pool.busy == 0, "every thread is idle again: the accounting of unclaimed items balances"
        assert len(pool._threads) <= 4
    finally:
        gate.set()
        pool.shutdown(wait=True)


def test_work_queued_when_no_thread_could_start_runs_when_one_can(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = DaemonThreadPool(2, "test-none")
    ran = threading.Event()
    try:
        refused = refuse_thread_starts(monkeypatch, "test-none", 1)
        pool.call(ran.set)  # no thread at all: the item waits
        assert refused and not ran.wait(0.1)
        pool.call(lambda: None)  # the next hire starts threads for both
        assert ran.wait(5)
    finally:
        pool.shutdown(wait=True)


def test_work_queued_when_no_thread_could_start_runs_at_the_next_restaff(monkeypatch: pytest.MonkeyPatch) -> None:
    """No later work comes to retry the start (an idle queue): a node's heartbeat calls
    `restaff`, which starts the thread once it can."""
    pool = DaemonThreadPool(2, "test-restaff")
    ran = threading.Event()
    try:
        refused = refuse_thread_starts(monkeypatch, "test-restaff", 2)
        pool.call(ran.set)
        pool.restaff()  # still refused
        assert len(refused) == 2 and not ran.wait(0.1)
        pool.restaff()
        assert ran.wait(5)
        assert len(pool._threads) == 1
    finally:
        pool.shutdown(wait=True)


def test_a_pool_thread_outlives_work_that_raises() -> None:
    """A pool of one thread: work that raises (even BaseException) is logged, and the thread
    goes on to the next item."""
    pool = DaemonThreadPool(1, "test-raise")
    after = threading.Event()

    def boom() -> None:
        raise MemoryError

    try:
        pool.call(boom)
        pool.call(lambda: (_ for _ in ()).throw(KeyboardInterrupt()))
        pool.call(after.set)
        assert after.wait(5)
        assert len(pool._threads) == 1
    finally:
        pool.shutdown(wait=True)


async def test_an_outbox_whose_wake_up_fails_for_want_of_memory_delivers_all_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`call_soon_threadsafe` raising MemoryError must not leave the outbox believing a delivery
    is scheduled: every later item would wait for it for ever."""
    loop = asyncio.get_running_loop()
    got: list[int] = []
    outbox: LoopOutbox[int] = LoopOutbox(loop, got.extend)
    real = loop.call_soon_threadsafe
    failures = {"left": 3}

    def short_of_memory(*args, **kwargs):  # type: ignore[no-untyped-def]
        if failures["left"]:
            failures["left"] -= 1
            raise MemoryError
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "call_soon_threadsafe", short_of_memory)
    thread = threading.Thread(target=outbox.put, args=(1,))
    thread.start()
    thread.join()
    for _ in range(50):
        if got:
            break
        await asyncio.sleep(0.01)
    assert got == [1], "retried until the wake-up could be scheduled"

    failures["left"] = 100  # longer than the outbox waits: it gives up on this wake-up...
    monkeypatch.setattr("baton.runtime.threads.MEMORY_PATIENCE", (0.0, 0.0))
    outbox.put(2)
    failures["left"] = 0
    outbox.put(3)  # ...and the next put schedules one for both
    for _ in range(50):
        if len(got) == 3:
            break
        await asyncio.sleep(0.01)
    assert got == [1, 2, 3]


async def test_a_background_loop_that_dies_is_logged_not_lost(caplog: pytest.LogCaptureFixture) -> None:
    """Node loops (producers, acker, listener, heartbeat) are started through `watch`: one that
    ends with an exception is logged at CRITICAL; a cancelled one is not."""
    from baton._tasks import watch

    async def dies() -> None:
        raise MemoryError("no memory")

    async def waits() -> None:
        await asyncio.sleep(10)

    died = watch(asyncio.create_task(dies(), name="test-dies"))
    cancelled = watch(asyncio.create_task(waits(), name="test-cancelled"))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.gather(died, cancelled, return_exceptions=True)
    await asyncio.sleep(0)
    critical = [r for r in caplog.records if r.levelname == "CRITICAL"]
    assert [r.getMessage() for r in critical] == ["background task test-dies died: MemoryError('no memory')"]
