"""Process workers (`executor="process"`): jobs run in a pool of child processes; a timeout or a
cancellation kills only that job's child, a child that dies fails only its job (retryably), and
a stopped node leaves no child process behind. Workers live in tests/proc_workers.py because a
child imports them by name."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

import baton
import proc_workers
from conftest import wait_for
from wf_nodes import query


def gone(pid: int) -> bool:
    """True when no process (not even a zombie) has this id any more."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def read_pid(path: Path) -> int:
    await wait_for(path.exists, timeout=30)
    return int(path.read_text())


async def job_in(app: baton.Baton, job_id: int, *states: str, timeout: float = 30) -> baton.Job:
    async def check() -> baton.Job | None:
        job = await app.get_job(job_id)
        return job if job is not None and job.state in states else None

    return await wait_for(check, timeout=timeout)


def baton_children() -> list[multiprocessing.process.BaseProcess]:
    return [p for p in multiprocessing.active_children() if p.name == "baton-process"]


async def test_results_come_back_from_child_processes(make_app: Any) -> None:
    app = make_app(queues={"default": 4}, process_pool_size=2)
    square = app.worker(executor="process", record=True)(proc_workers.square)
    app.register(proc_workers.Cube)
    jobs = await app.insert_all([square.new({"x": x}) for x in range(4)] + [proc_workers.Cube.new({"x": 3})])
    assert await app.drain() == {"completed": 5}
    done = await app.list_jobs(ids=[j.id for j in jobs])
    results = {j.worker: [] for j in done}  # type: dict[str, list[Any]]
    for job in sorted(done, key=lambda j: j.id):
        results[job.worker].append(job.meta["result"])
    assert [r["square"] for r in results["proc_workers.square"]] == [0, 1, 4, 9]
    assert results["proc.cube"][0]["cube"] == 27
    pids = {r["pid"] for rs in results.values() for r in rs}
    assert os.getpid() not in pids
    assert not baton_children()  # drain stops its worker processes when it returns


async def test_an_exception_fails_the_attempt_with_the_child_traceback(make_app: Any) -> None:
    app = make_app(queues={"default": 2})
    fail = app.worker(executor="process", max_attempts=1)(proc_workers.fail)
    fail_unpicklable = app.worker(executor="process", max_attempts=2)(proc_workers.fail_unpicklable)
    exits = app.worker(executor="process", max_attempts=1)(proc_workers.calls_sys_exit)
    first = await app.insert(fail.new({"value": 7}))
    second = await app.insert(fail_unpicklable.new({}))
    third = await app.insert(exits.new({}))
    assert await app.drain() == {"discarded": 2, "retryable": 1}

    job = await app.get_job(first.id)
    assert job is not None and job.state == "discarded"
    assert job.errors[-1]["error"] == "ValueError: bad input 7"
    tb = job.errors[-1]["traceback"]
    assert "proc_workers.py" in tb and "in _check" in tb  # the child's frames

    job = await app.get_job(second.id)
    assert job is not None and job.state == "retryable"
    error = job.errors[-1]
    assert error["error"].startswith("RuntimeError: LockedError: LockedError('holding a lock')")
    assert "could not be pickled" in error["error"]
    assert "in fail_unpicklable" in error["traceback"]

    job = await app.get_job(third.id)  # sys.exit() fails the job, as on a thread, not the child
    assert job is not None and job.errors[-1]["error"] == "SystemExit: 2"


async def test_a_result_that_cannot_come_back_fails_only_when_it_is_recorded(make_app: Any) -> None:
    app = make_app(queues={"default": 2})
    ignored = app.worker(executor="process", name="proc.lock_ignored")(proc_workers.return_lock)
    recorded = app.worker(executor="process", name="proc.lock_recorded", record=True, max_attempts=1)(
        proc_workers.return_lock
    )
    first = await app.insert(ignored.new({}))
    second = await app.insert(recorded.new({}))
    assert await app.drain() == {"completed": 1, "discarded": 1}
    job = await app.get_job(first.id)
    assert job is not None and job.state == "completed"
    job = await app.get_job(second.id)
    assert job is not None and job.state == "discarded"
    assert job.errors[-1]["error"].startswith("TypeError: the worker returned a value that cannot be sent back")


async def test_a_worker_module_that_fails_to_import_in_the_child_reports_why(make_app: Any) -> None:
    def stand_in(job: baton.Job) -> None:
        pass

    # Sent to the child as tests/proc_broken.py's `work`, whose module imports a missing package.
    stand_in.__module__, stand_in.__qualname__ = "proc_broken", "work"
    app = make_app(queues={"default": 2})
    broken = app.worker(executor="process", name="proc.broken", max_attempts=1)(stand_in)
    job = await app.insert(broken.new({}))
    assert await app.drain() == {"discarded": 1}
    done = await app.get_job(job.id)
    assert done is not None
    assert done.errors[-1]["error"] == "ModuleNotFoundError: No module named 'baton_no_such_dependency'"
    assert "proc_broken.py" in done.errors[-1]["traceback"]


async def test_snooze_and_discard_from_a_child(make_app: Any) -> None:
    app = make_app(queues={"default": 2})
    snooze = app.worker(executor="process")(proc_workers.snooze)
    discard = app.worker(executor="process")(proc_workers.discard)
    snoozed = await app.insert(snooze.new({}))
    discarded = await app.insert(discard.new({}))
    assert await app.drain() == {"scheduled": 1, "discarded": 1}
    job = await app.get_job(snoozed.id)
    assert job is not None and job.state == "scheduled" and job.meta["snoozed"] == 1
    job = await app.get_job(discarded.id)
    assert job is not None and job.state == "discarded"
    assert job.errors[-1]["error"] == "discarded: not worth it"


async def test_a_timeout_kills_the_child_and_the_next_job_runs(make_app: Any, tmp_path: Path) -> None:
    app = make_app(queues={"default": 2}, process_pool_size=1)
    slow = app.worker(executor="process", timeout=0.5, max_attempts=1)(proc_workers.sleep)
    square = app.worker(executor="process", record=True)(proc_workers.square)
    pidfile = tmp_path / "slow.pid"
    async with app:
        stuck = await app.insert(slow.new({"seconds": 60, "pidfile": str(pidfile)}))
        pid = await read_pid(pidfile)
        after = await app.insert(square.new({"x": 5}))
        job = await job_in(app, stuck.id, "discarded")
        assert job.errors[-1]["error"] == "TimeoutError: job exceeded the worker timeout of 0.5s"
        await wait_for(lambda: gone(pid))
        job = await job_in(app, after.id, "completed")
        assert job.meta["result"]["square"] == 25
        assert job.meta["result"]["pid"] != pid  # the pool of one started a new child


async def test_a_child_killed_mid_job_makes_the_job_retryable(make_app: Any, tmp_path: Path) -> None:
    app = make_app(queues={"default": 2}, process_pool_size=2)
    hang = app.worker(executor="process", record=True, max_attempts=3, backoff=lambda job: 0)(
        proc_workers.hang_first_attempt
    )
    pidfile = tmp_path / "hang.pid"
    async with app:
        job = await app.insert(hang.new({"pidfile": str(pidfile)}))
        pid = await read_pid(pidfile)
        os.kill(pid, signal.SIGKILL)
        done = await job_in(app, job.id, "completed")
    assert done.attempt == 2 and done.meta["result"] == {"attempt": 2}
    assert done.errors[0]["error"] == "WorkerProcessDied: the process running the job died (signal 9, SIGKILL)"
    assert gone(pid)


async def test_a_child_that_exits_fails_only_its_job(make_app: Any) -> None:
    app = make_app(queues={"default": 2}, process_pool_size=1)
    exits = app.worker(executor="process", record=True, max_attempts=2, backoff=lambda job: 0)(
        proc_workers.exit_first_attempt
    )
    square = app.worker(executor="process", record=True)(proc_workers.square)
    job = await app.insert(exits.new({}))
    other = await app.insert(square.new({"x": 2}))
    counts = await app.drain()
    assert counts == {"retryable": 1, "completed": 2}
    done = await app.get_job(job.id)
    assert done is not None and done.state == "completed" and done.attempt == 2
    assert done.errors[0]["error"] == "WorkerProcessDied: the process running the job died (exit code 3)"
    result = await app.get_job(other.id)
    assert result is not None and result.meta["result"]["square"] == 4


async def test_an_idle_child_that_died_is_replaced(make_app: Any) -> None:
    app = make_app(queues={"default": 2}, process_pool_size=1)
    square = app.worker(executor="process", record=True)(proc_workers.square)
    async with app:
        first = await job_in(app, (await app.insert(square.new({"x": 1}))).id, "completed")
        pid = first.meta["result"]["pid"]
        os.kill(pid, signal.SIGKILL)  # idle, between jobs
        second = await job_in(app, (await app.insert(square.new({"x": 2}))).id, "completed")
    assert second.attempt == 1 and second.meta["result"]["square"] == 4
    assert second.meta["result"]["pid"] != pid
    assert gone(pid)


async def test_ctrl_c_in_the_terminal_does_not_interrupt_a_child(make_app: Any, tmp_path: Path) -> None:
    app = make_app(queues={"default": 2}, process_pool_size=1)
    slow = app.worker(executor="process", record=True)(proc_workers.sleep)
    pidfile = tmp_path / "sigint.pid"
    async with app:
        job = await app.insert(slow.new({"seconds": 1, "pidfile": str(pidfile)}))
        pid = await read_pid(pidfile)
        os.kill(pid, signal.SIGINT)  # what Ctrl-C sends to the whole process group
        done = await job_in(app, job.id, "completed", "retryable", "discarded")
    assert done.state == "completed" and done.meta["result"] == pid


async def test_cancelling_a_running_job_kills_its_child(make_app: Any, tmp_path: Path) -> None:
    app = make_app(queues={"default": 2}, process_pool_size=2)
    slow = app.worker(executor="process")(proc_workers.sleep)
    square = app.worker(executor="process", record=True)(proc_workers.square)
    pidfile = tmp_path / "cancel.pid"
    async with app:
        job = await app.insert(slow.new({"seconds": 60, "pidfile": str(pidfile)}))
        pid = await read_pid(pidfile)
        await app.cancel_job(job.id)
        await wait_for(lambda: gone(pid))
        cancelled = await app.get_job(job.id)
        assert cancelled is not None and cancelled.state == "cancelled"
        after = await app.insert(square.new({"x": 3}))
        assert (await job_in(app, after.id, "completed")).meta["result"]["square"] == 9


async def test_a_job_waiting_for_a_child_is_cancelled_without_killing_others(make_app: Any, tmp_path: Path) -> None:
    app = make_app(queues={"default": 2}, process_pool_size=1)
    slow = app.worker(executor="process")(proc_workers.sleep)
    pidfile = tmp_path / "busy.pid"
    async with app:
        busy = await app.insert(slow.new({"seconds": 60, "pidfile": str(pidfile)}))
        pid = await read_pid(pidfile)
        waiting = await app.insert(slow.new({"seconds": 0}))
        await job_in(app, waiting.id, "executing")  # fetched, waiting for the only child
        await app.cancel_job(waiting.id)
        await job_in(app, waiting.id, "cancelled")
        assert not gone(pid)
        job = await app.get_job(busy.id)
        assert job is not None and job.state == "executing"
        await app.cancel_job(busy.id)
        await wait_for(lambda: gone(pid))


async def test_the_timeout_does_not_count_the_wait_for_a_child(make_app: Any) -> None:
    app = make_app(queues={"default": 2}, process_pool_size=1)
    slow = app.worker(executor="process")(proc_workers.sleep)
    quick = app.worker(executor="process", timeout=1.5, max_attempts=1, name="proc.quick")(proc_workers.sleep)
    async with app:
        first = await app.insert(slow.new({"seconds": 3}))
        await job_in(app, first.id, "executing")
        second = await app.insert(quick.new({"seconds": 0}))
        await job_in(app, first.id, "completed")
        done = await job_in(app, second.id, "completed", "discarded")
    assert done.state == "completed", done.errors


async def test_job_log_lines_and_upstream_results_cross_the_process_boundary(make_app: Any) -> None:
    app = make_app(queues={"default": 2})
    square = app.worker(executor="process")(proc_workers.square)
    plus_one = app.worker(executor="process")(proc_workers.plus_one)
    wf = baton.Workflow(label="proc-logs")
    wf.add("sq", square.new({"x": 6}))
    wf.add("plus", plus_one.new({}), deps=["sq"])
    wid = await app.insert_workflow(wf)
    await app.drain()
    status = await app.workflow_status(wid)
    assert status.steps == {"sq": "completed", "plus": "completed"}
    assert status.details["sq"].result["square"] == 36
    assert status.details["plus"].result == 37
    rows = query(app.url, "SELECT name, level, message FROM workflow_debug_logs ORDER BY id")
    assert len(rows) == 2
    name, level, message = rows[0]
    assert (name, level) == ("sq", "info") and message.startswith("squaring 6 in process ")
    assert int(message.rsplit(" ", 1)[1]) != os.getpid()
    assert rows[1] == ("plus", "debug", "adding one")


async def test_the_workflow_context_reaches_the_child_read_only(make_app: Any) -> None:
    """job.context is a frozen mapping (MappingProxyType, which pickle refuses): it used to be
    left out of the message to the child, which then saw an empty context."""
    app = make_app(queues={"default": 2})
    square = app.worker(executor="process")(proc_workers.square)
    read = app.worker(executor="process")(proc_workers.read_context)
    context = {"tenant": "acme", "limits": {"max": 3}, "regions": ["eu", "us"]}
    wf = baton.Workflow(label="proc-context", context=context)
    wf.add("sq", square.new({"x": 4}))
    wf.add("read", read.new({}), deps=["sq"])
    wf.add("alone", read.new({}))
    wid = await app.insert_workflow(wf)
    await app.drain()
    status = await app.workflow_status(wid)
    assert status.steps == {"sq": "completed", "read": "completed", "alone": "completed"}, status.details
    for name, upstream in (("read", {"sq": {"square": 16, "pid": status.details["sq"].result["pid"]}}), ("alone", {})):
        result = status.details[name].result
        assert result["pid"] != os.getpid()
        assert result["tenant"] == "acme" and result["max"] == 3 and result["regions"] == ["eu", "us"]
        assert result["refused"] == ["mappingproxy", "mappingproxy"]  # read-only there too, nested ones as well
        assert result["upstream"] == upstream


def test_a_job_field_that_cannot_reach_the_child_is_an_error_naming_it() -> None:
    from baton.runtime import processes

    job = baton.Job(
        id=7, state="executing", queue="default", worker="w", args={}, meta={}, tags=[], errors=[],
        attempt=1, max_attempts=3, priority=0,
    )  # fmt: skip
    job._context = MappingProxyType({"nested": MappingProxyType({"k": (1, 2)})})
    job._price = lambda *a: None  # the app's pricing is not sent (usage is priced in the parent)
    target, state = pickle.loads(processes._message("mod.fn", job))
    assert target == "mod.fn" and "_price" not in state
    assert isinstance(state["_context"], MappingProxyType) and state["_context"]["nested"]["k"] == (1, 2)
    job.meta = {"lock": threading.Lock()}
    with pytest.raises(TypeError, match="job 7: its field 'meta' cannot be sent to a worker process"):
        processes._message("mod.fn", job)


async def test_usage_recorded_in_a_child_is_priced_by_the_apps_pricing(make_app: Any) -> None:
    seen: list[str] = []

    def price(model: str, input_tokens: int, output_tokens: int, extra: dict[str, Any]) -> Decimal | None:
        seen.append(model)  # a closure: it cannot be sent to the child
        return None if model == "free" else Decimal(input_tokens + output_tokens) / 10**6

    app = make_app(queues={"default": 1}, pricing=price)
    calls = app.worker(executor="process")(proc_workers.record_calls)
    wid = await app.insert_workflow(baton.Workflow().add("a", calls.new({})))
    await app.drain()
    usage = await app.workflow_usage(wid)
    assert seen == ["claude", "free"]
    assert usage.by_model["claude"].cost == Decimal("0.0011")
    assert usage.by_model["free"].cost is None and usage.calls == 2


async def test_at_most_pool_size_children_and_none_after_stop(make_app: Any) -> None:
    app = make_app(queues={"default": 6}, process_pool_size=2, shutdown_grace=0.2)
    slow = app.worker(executor="process", record=True)(proc_workers.sleep)
    async with app:
        jobs = await app.insert_all([slow.new({"seconds": 0.3}) for _ in range(6)])
        ids = [j.id for j in jobs]

        async def all_done() -> bool:
            return all(j.state == "completed" for j in await app.list_jobs(ids=ids))

        while not await all_done():
            assert len(baton_children()) <= 2
            await asyncio.sleep(0.02)
        pids = {j.meta["result"] for j in await app.list_jobs(ids=ids)}
        assert len(pids) == 2  # six jobs started at once: both children were used, no third
        hanging = await app.insert(slow.new({"seconds": 60}))
        await job_in(app, hanging.id, "executing")
    # Stopped after the grace: the running job is handed back and every child is gone.
    assert all(gone(pid) for pid in pids)
    assert not baton_children()
    job = await app.get_job(hanging.id)
    assert job is not None and job.state == "available"


async def test_a_worker_defined_in_a_script_runs_in_a_process(db_url: str, tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio, os, sys
            import baton

            app = baton.Baton({db_url!r}, plugins=[], log_events=False, process_pool_size=1)

            @app.worker(executor="process", record=True)
            def triple(job):
                return {{"triple": job.args["x"] * 3, "pid": os.getpid()}}

            async def main():
                job = await app.insert(triple.new({{"x": 14}}))
                await app.drain()
                done = await app.get_job(job.id)
                print(done.state, done.meta["result"]["triple"], done.meta["result"]["pid"] != os.getpid())
                await app.close()

            if __name__ == "__main__":
                asyncio.run(main())
            """
        )
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["completed", "42", "True"]


def test_bad_executor_options_are_validation_errors(tmp_path: Path) -> None:
    app = baton.Baton(f"sqlite:///{tmp_path}/v.db", plugins=[], log_events=False)
    with pytest.raises(baton.ValidationError) as err:
        app.worker(executor="fork")(proc_workers.square)
    assert err.value.field == "executor" and "'thread'" in str(err.value)

    async def coroutine(job: baton.Job) -> None:
        pass

    with pytest.raises(baton.ValidationError) as err:
        app.worker(executor="process")(coroutine)
    assert err.value.field == "executor" and "async" in str(err.value)

    def local(job: baton.Job) -> None:
        pass

    with pytest.raises(baton.ValidationError) as err:
        app.worker(executor="process")(local)
    assert err.value.field == "executor" and "module level" in str(err.value)

    with pytest.raises(baton.ValidationError) as err:

        class Async(baton.Worker):
            executor = "process"

            async def perform(self, job: baton.Job) -> None:
                pass

    assert err.value.field == "executor"
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(baton.ValidationError) as err:
            baton.Baton(f"sqlite:///{tmp_path}/v.db", plugins=[], log_events=False, process_pool_size=bad)
        assert err.value.field == "process_pool_size"


def test_a_child_reaped_by_two_threads_at_once_closes_its_pipe_once() -> None:
    """A stopping pool reaps a busy child it killed while the job's own thread, which saw the
    child die, reaps it too: both get its exit code, and neither fails closing its pipe (the
    second close of the descriptor raised EBADF in a CI run, and could have closed a file
    opened meanwhile)."""
    import threading

    from baton.runtime.processes import _Child

    def reap(child: _Child, start: threading.Barrier, out: list[Any]) -> None:
        start.wait()
        try:
            out.append(child.reap(timeout=5))
        except BaseException as exc:  # what the test is about
            out.append(exc)

    for _ in range(10):
        child = _Child()
        child.kill()
        start, out = threading.Barrier(2), []
        threads = [threading.Thread(target=reap, args=(child, start, out)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert out == [-signal.SIGKILL, -signal.SIGKILL]
        assert child.conn.closed
