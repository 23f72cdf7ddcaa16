"""baton.testing: inline and manual modes, drain, assert/refute/all_enqueued and perform_job,
on both engines."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

import baton
from baton import testing


def _workers(app: baton.Baton, ran: list[Any]) -> dict[str, Any]:
    @app.worker(queue="default", max_attempts=3)
    def add(job: baton.Job) -> int:
        ran.append(("add", job.args["a"] + job.args["b"]))
        return job.args["a"] + job.args["b"]

    @app.worker(queue="default", max_attempts=3)
    def boom(job: baton.Job) -> None:
        ran.append(("boom", job.attempt))
        raise ValueError(f"boom on attempt {job.attempt}")

    @app.worker(queue="default")
    async def parent(job: baton.Job) -> None:
        ran.append(("parent", job.args["n"]))
        await app.insert(add.new({"a": job.args["n"], "b": 1}))

    @app.worker(queue="default")
    def snooze_once(job: baton.Job) -> Any:
        ran.append(("snooze_once", job.meta.get("snoozed", 0)))
        return baton.Snooze(3600) if not job.meta.get("snoozed") else "done"

    @app.worker(queue="default")
    def snooze_always(job: baton.Job) -> Any:
        return baton.Snooze(3600)

    @app.worker(queue="default", record=True)
    def step(job: baton.Job) -> Any:
        ran.append(("step", job.step))
        return {"step": job.step, "upstream": sorted(job.upstream_all())}

    return {
        "add": add,
        "boom": boom,
        "parent": parent,
        "snooze_once": snooze_once,
        "snooze_always": snooze_always,
        "step": step,
    }


# -- inline mode -----------------------------------------------------------------------


async def test_inline_runs_a_job_at_insert_and_returns_it_as_stored(app: baton.Baton) -> None:
    ran: list[Any] = []
    w = _workers(app, ran)
    with testing.inline(app):
        job = await app.insert(w["add"].new({"a": 1, "b": 2}))
    assert ran == [("add", 3)]
    assert job.state == "completed" and job.attempt == 1
    assert (await app.get_job(job.id)).state == "completed"  # type: ignore[union-attr]


async def test_inline_runs_a_workflow_in_dependency_order(app: baton.Baton) -> None:
    ran: list[Any] = []
    w = _workers(app, ran)
    wf = baton.Workflow(label="inline-wf")
    wf.add("fetch", w["step"].new({}))
    wf.add("clean", w["step"].new({}), deps=["fetch"])
    wf.add("stats", w["step"].new({}), deps=["clean"])
    wf.add("render", w["step"].new({}), deps=["clean", "stats"])
    finished: list[dict[str, Any]] = []
    app.on_workflow_finished(finished.append)
    with testing.inline(app):
        wid = await app.insert_workflow(wf)
    assert [name for _, name in ran] == ["fetch", "clean", "stats", "render"]
    status = await app.workflow_status(wid)
    assert status.finished and status.status == "completed"
    assert [e["workflow_id"] for e in finished] == [wid]


async def test_inline_runs_bulk_inserted_workflows(app: baton.Baton) -> None:
    ran: list[Any] = []
    w = _workers(app, ran)
    wfs = []
    for label in ("one", "two"):
        wf = baton.Workflow(label=label)
        wf.add("fetch", w["step"].new({}))
        wf.add("render", w["step"].new({}), deps=["fetch"])
        wfs.append(wf)
    with testing.inline(app):
        wids = await app.insert_workflows(wfs)
        assert len(ran) == 4
        wids += await asyncio.to_thread(app.insert_workflows_sync, wfs[:1])
    assert len(ran) == 6
    for wid in wids:
        status = await app.workflow_status(wid)
        assert status.finished and status.status == "completed"


async def test_inline_failing_job_runs_every_attempt_at_once_and_raises(app: baton.Baton) -> None:
    ran: list[Any] = []
    w = _workers(app, ran)
    with testing.inline(app), pytest.raises(testing.JobFailed) as failed:
        await app.insert(w["boom"].new({}))
    assert ran == [("boom", 1), ("boom", 2), ("boom", 3)]
    (job,) = failed.value.jobs
    assert job.state == "discarded" and len(job.errors) == 3
    assert "ValueError: boom on attempt 3" in str(failed.value)
    assert "Traceback" in str(failed.value)


async def test_inline_without_raise_errors_returns_the_failed_job(app: baton.Baton) -> None:
    w = _workers(app, [])
    with testing.inline(app, raise_errors=False):
        job = await app.insert(w["boom"].new({}))
    assert job.state == "discarded"
    assert [e["error"] for e in job.errors] == [f"ValueError: boom on attempt {i}" for i in (1, 2, 3)]


async def test_inline_failed_step_cascades_and_the_failure_is_reported(app: baton.Baton) -> None:
    ran: list[Any] = []
    w = _workers(app, ran)
    wf = baton.Workflow(label="fails")
    wf.add("a", w["boom"].new({}))
    wf.add("b", w["step"].new({}), deps=["a"])
    with testing.inline(app), pytest.raises(testing.JobFailed) as failed:
        await app.insert_workflow(wf)
    wid = failed.value.jobs[0].workflow_id
    assert wid is not None
    status = await app.workflow_status(wid)
    assert status.steps == {"a": "discarded", "b": "cancelled"}
    assert status.finished and status.status == "failed"


async def test_inline_reaches_inserts_from_other_threads(app: baton.Baton) -> None:
    ran: list[Any] = []
    w = _workers(app, ran)
    with testing.inline(app):
        job = await asyncio.to_thread(app.insert_sync, w["add"].new({"a": 2, "b": 2}))
        jobs = await asyncio.to_thread(app.insert_all_sync, [w["add"].new({"a": i, "b": 0}) for i in range(3)])
    assert job.state == "completed"
    assert [j.state for j in jobs] == ["completed"] * 3
    assert sorted(ran) == [("add", 0), ("add", 1), ("add", 2), ("add", 4)]


async def test_inline_reaches_other_tasks_created_before_the_block(app: baton.Baton) -> None:
    ran: list[Any] = []
    w = _workers(app, ran)
    go = asyncio.Event()

    async def background() -> baton.Job:
        await go.wait()
        return await app.insert(w["add"].new({"a": 5, "b": 5}))

    task = asyncio.create_task(background())  # its context was copied before the mode began
    with testing.inline(app):
        go.set()
        job = await task
    assert job.state == "completed" and ran == [("add", 10)]


async def test_inline_runs_jobs_inserted_by_jobs_and_scheduled_and_snoozed_ones(app: baton.Baton) -> None:
    ran: list[Any] = []
    w = _workers(app, ran)
    with testing.inline(app):
        parent = await app.insert(w["parent"].new({"n": 41}))
        later = await app.insert(w["add"].new({"a": 1, "b": 1}, schedule_in=3600))
        snoozer = await app.insert(w["snooze_once"].new({}))
    assert parent.state == "completed" and later.state == "completed" and snoozer.state == "completed"
    assert ("add", 42) in ran and ("add", 2) in ran
    assert [r for r in ran if r[0] == "snooze_once"] == [("snooze_once", 0), ("snooze_once", 1)]
    assert await app.count_jobs() == {"completed": 4}


async def test_manual_inside_inline_leaves_jobs_enqueued(app: baton.Baton) -> None:
    w = _workers(app, [])
    with testing.inline(app):
        assert testing.current_mode(app) == "inline"
        with testing.manual(app):
            assert testing.current_mode(app) == "manual"
            job = await app.insert(w["add"].new({"a": 1, "b": 1}))
            assert job.state == "available"
        done = await app.insert(w["add"].new({"a": 2, "b": 2}))
    assert testing.current_mode(app) is None
    assert "insert" not in vars(app)
    assert done.state == "completed"
    # The inline insert's drain also ran the job left enqueued by the manual block.
    assert (await app.get_job(job.id)).state == "completed"  # type: ignore[union-attr]


async def test_inline_sync_insert_on_the_test_loops_thread_is_refused(app: baton.Baton) -> None:
    w = _workers(app, [])
    with testing.inline(app), pytest.raises(baton.BatonError, match=r"asyncio\.to_thread"):
        app.insert_sync(w["add"].new({"a": 1, "b": 1}))


def test_inline_from_a_synchronous_test(db_url: str) -> None:
    app = baton.Baton(db_url, plugins=[], log_events=False)
    ran: list[Any] = []
    w = _workers(app, ran)
    try:
        with testing.inline(app):
            job = app.insert_sync(w["parent"].new({"n": 1}))
            other = app.insert_sync(w["add"].new({"a": 3, "b": 4}))
            wf = baton.Workflow(label="sync")
            wf.add("one", w["step"].new({}))
            wf.add("two", w["step"].new({}), deps=["one"])
            app.insert_workflow_sync(wf)
        assert job.state == "completed" and other.state == "completed"
        assert ("add", 2) in ran and ("add", 7) in ran
        assert [r for r in ran if r[0] == "step"] == [("step", "one"), ("step", "two")]
    finally:
        asyncio.run(app.close())


async def test_inline_job_inserted_on_the_callers_connection_runs_when_the_block_ends(
    app: baton.Baton, db_url: str, tmp_path: Any
) -> None:
    ran: list[Any] = []
    w = _workers(app, ran)
    if db_url.startswith("postgres"):
        import psycopg

        conn: Any = await psycopg.AsyncConnection.connect(db_url)
        async with testing.inline(app):
            async with conn.transaction():
                job = await app.insert(w["add"].new({"a": 20, "b": 1}), conn=conn)
            assert job.state == "available" and ran == []
        await conn.close()
    else:
        import sqlite3

        conn = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
        async with testing.inline(app):
            job = await app.insert(w["add"].new({"a": 20, "b": 1}), conn=conn)
            conn.execute("COMMIT")
            assert ran == []
        conn.close()
    assert ran == [("add", 21)]


def test_inline_block_ending_inside_the_callers_transaction_fails_at_once(db_url: str) -> None:
    # The job is not committed when the block ends: Baton's connections cannot see it (on SQLite
    # they would wait for the write lock the caller's transaction holds). A clear error at once,
    # from a sync and an async block alike; the job stays with the caller's transaction.
    app = baton.Baton(db_url, plugins=[], log_events=False)
    ran: list[Any] = []
    w = _workers(app, ran)
    if db_url.startswith("postgres"):
        import psycopg

        conn: Any = psycopg.connect(db_url)  # not autocommit: the insert opens a transaction
    else:
        import sqlite3

        conn = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)

    async def async_block() -> None:
        async with testing.inline(app):
            app.insert_sync(w["add"].new({"a": 2, "b": 2}), conn=conn)

    try:
        for block in ("sync", "async"):
            with pytest.raises(baton.BatonError, match="still open when the inline block ends"):
                if block == "sync":
                    with testing.inline(app):
                        app.insert_sync(w["add"].new({"a": 1, "b": 1}), conn=conn)
                else:
                    asyncio.run(async_block())
            assert testing.current_mode(app) is None
        conn.commit() if db_url.startswith("postgres") else conn.execute("COMMIT")
        assert ran == []
        assert len(testing.all_enqueued(app)) == 2, "both jobs committed with the caller's transaction"
    finally:
        conn.close()
        app.close_sync()


async def test_plain_with_block_in_an_async_test_warns_about_jobs_left_on_the_callers_connection(
    tmp_path: Any,
) -> None:
    import sqlite3

    app = baton.Baton(f"sqlite:///{tmp_path}/warn.db", plugins=[], log_events=False)
    await app.migrate()
    w = _workers(app, [])
    conn = sqlite3.connect(f"{tmp_path}/warn.db", isolation_level=None)
    try:
        with pytest.warns(UserWarning, match="were not run"), testing.inline(app):
            await app.insert(w["add"].new({"a": 1, "b": 1}), conn=conn)
            conn.execute("COMMIT")
        assert await testing.drain(app) == {"completed": 1}
    finally:
        conn.close()
        await app.close()


# -- manual mode, drain ------------------------------------------------------------------


async def test_manual_jobs_stay_enqueued_until_drained(app: baton.Baton) -> None:
    ran: list[Any] = []
    w = _workers(app, ran)
    with testing.manual(app):
        await app.insert(w["parent"].new({"n": 7}))
        await app.insert(w["add"].new({"a": 1, "b": 1}, schedule_in=3600))
        assert ran == []
        testing.assert_enqueued(app, worker=w["parent"], args={"n": 7})
        testing.assert_enqueued(app, worker=w["add"], args={"a": 1}, states=["scheduled"])
        counts = await testing.drain(app)
    assert counts == {"completed": 2}  # the parent and the job it inserted (recursion)
    assert ran == [("parent", 7), ("add", 8)]
    testing.assert_enqueued(app, worker=w["add"], args={"a": 1, "b": 1})  # still scheduled
    assert await testing.drain(app, with_scheduled=True) == {"completed": 1}
    testing.refute_enqueued(app)


async def test_drain_of_a_failing_job_is_bounded_and_reports_discarded(app: baton.Baton) -> None:
    ran: list[Any] = []
    w = _workers(app, ran)
    await app.insert(w["boom"].new({}))
    assert await testing.drain(app) == {"retryable": 1}  # the retry is not due yet: no hang
    assert await testing.drain(app, with_scheduled=True) == {"retryable": 1, "discarded": 1}
    assert ran == [("boom", 1), ("boom", 2), ("boom", 3)]


async def test_drain_of_a_job_that_snoozes_forever_stops_with_an_error(app: baton.Baton) -> None:
    w = _workers(app, [])
    await app.insert(w["snooze_always"].new({}))
    with pytest.raises(testing.DrainError, match="did not settle after 5 rounds"):
        await testing.drain(app, with_scheduled=True, max_rounds=5)


async def test_drain_of_one_queue_leaves_other_queues(app: baton.Baton) -> None:
    w = _workers(app, [])
    await app.insert(w["add"].new({"a": 1, "b": 1}, queue="other"))
    await app.insert(w["add"].new({"a": 1, "b": 1}))
    assert await testing.drain(app, "other") == {"completed": 1}
    assert [j.queue for j in testing.all_enqueued(app)] == ["default"]


def test_drain_from_a_synchronous_test(db_url: str) -> None:
    app = baton.Baton(db_url, plugins=[], log_events=False)
    ran: list[Any] = []
    w = _workers(app, ran)
    try:
        app.insert_sync(w["parent"].new({"n": 2}))
        assert testing.drain(app) == {"completed": 2}
        assert ran == [("parent", 2), ("add", 3)]
    finally:
        asyncio.run(app.close())


# -- assertions ------------------------------------------------------------------------


async def test_assert_enqueued_matches_args_as_a_subset(app: baton.Baton) -> None:
    w = _workers(app, [])
    await app.insert(w["add"].new({"a": 1, "b": {"x": 1, "y": 2}}, tags=["t1", "t2"], meta={"k": "v"}, priority=2))
    found = testing.assert_enqueued(app, worker=w["add"], args={"b": {"x": 1}})
    assert len(found) == 1
    testing.assert_enqueued(app, worker=w["add"].name, queue="default", tags=["t1"], meta={"k": "v"}, priority=2)
    testing.refute_enqueued(app, worker=w["add"], args={"a": 2})
    testing.refute_enqueued(app, worker=w["boom"])
    testing.refute_enqueued(app, queue="other")
    with pytest.raises(AssertionError) as missing:
        testing.assert_enqueued(app, worker=w["add"], args={"a": 2})
    message = str(missing.value)
    assert "args={'a': 2}" in message and "1 job(s) are" in message and w["add"].name in message
    with pytest.raises(AssertionError, match="expected no job matching"):
        testing.refute_enqueued(app, args={"a": 1})


async def test_all_enqueued_lists_waiting_jobs_oldest_first(app: baton.Baton) -> None:
    w = _workers(app, [])
    jobs = [await app.insert(w["add"].new({"a": i, "b": 0})) for i in range(3)]
    await app.insert(w["add"].new({"a": 9, "b": 0}, schedule_in=60))
    assert [j.id for j in testing.all_enqueued(app, worker=w["add"], states=["available"])] == [j.id for j in jobs]
    assert len(testing.all_enqueued(app)) == 4
    await testing.drain(app)
    assert [j.args["a"] for j in testing.all_enqueued(app)] == [9]


async def test_assert_enqueued_waits_for_a_job_inserted_by_another_thread(app: baton.Baton) -> None:
    w = _workers(app, [])

    def insert_later() -> None:
        time.sleep(0.3)
        app.insert_sync(w["add"].new({"a": 7, "b": 7}))

    thread = threading.Thread(target=insert_later)
    thread.start()
    try:
        with pytest.raises(AssertionError):
            testing.assert_enqueued(app, args={"a": 7})
        testing.assert_enqueued(app, args={"a": 7}, wait=10)
    finally:
        thread.join()


def test_assertions_from_a_synchronous_test(db_url: str) -> None:
    app = baton.Baton(db_url, plugins=[], log_events=False)
    w = _workers(app, [])
    try:
        app.insert_sync(w["add"].new({"a": 1, "b": 2}))
        testing.assert_enqueued(app, worker=w["add"], args={"b": 2})
        testing.refute_enqueued(app, worker=w["add"], args={"b": 3}, wait=0.1)
    finally:
        asyncio.run(app.close())


def test_helpers_validate_their_input(tmp_path: Any) -> None:
    app = baton.Baton(f"sqlite:///{tmp_path}/x.db", plugins=[], log_events=False)
    with pytest.raises(baton.ValidationError, match="states"):
        testing.all_enqueued(app, states=["nope"])
    with pytest.raises(baton.ValidationError, match="wait"):
        testing.assert_enqueued(app, wait=-1)
    with pytest.raises(baton.ValidationError, match="worker"):
        testing.all_enqueued(app, worker=42)
    with pytest.raises(baton.ValidationError, match="app"):
        testing.drain("not an app")  # type: ignore[arg-type]


# -- perform_job -----------------------------------------------------------------------


class Greeter(baton.Worker):
    queue = "mailers"
    max_attempts = 2

    def perform(self, job: baton.Job) -> Any:
        if job.args.get("fail"):
            raise RuntimeError("smtp down")
        return f"hello {job.args['name']} {job.args.get('pair')!r}"


def test_perform_job_runs_a_worker_with_the_json_round_trip() -> None:
    result = testing.perform_job(Greeter, {"name": "ada", "pair": (1, 2)})
    assert result.ok and result.state == "completed"
    assert result.result == "hello ada [1, 2]"  # the tuple arrives as a list, as from the database
    assert result.job.queue == "mailers" and result.job.attempt == 1


def test_perform_job_reports_errors_and_outcomes() -> None:
    failed = testing.perform_job(Greeter, {"name": "x", "fail": True})
    assert failed.state == "retryable" and failed.error == "RuntimeError: smtp down"
    assert "Traceback" in (failed.traceback or "") and failed.delay is not None and failed.delay > 0
    last = testing.perform_job(Greeter, {"name": "x", "fail": True}, attempt=2)
    assert last.state == "discarded"

    app = baton.Baton("sqlite:///:memory:", plugins=[], log_events=False)

    @app.worker
    def outcome(job: baton.Job) -> Any:
        kind = job.args["kind"]
        if kind == "snooze":
            return baton.Snooze(30)
        if kind == "cancel":
            raise baton.Cancel("not needed")
        return baton.Discard("bad input")

    snoozed = testing.perform_job(outcome, {"kind": "snooze"})
    assert snoozed.state == "scheduled" and snoozed.snooze == 30
    cancelled = testing.perform_job(outcome, {"kind": "cancel"})
    assert cancelled.state == "cancelled" and cancelled.error == "cancelled: not needed"
    discarded = testing.perform_job(outcome.name, {"kind": "discard"}, app=app)
    assert discarded.state == "discarded" and discarded.error == "discarded: bad input"


def test_perform_job_reports_a_result_that_cannot_be_recorded() -> None:
    app = baton.Baton("sqlite:///:memory:", plugins=[], log_events=False)

    @app.worker(record=True, max_attempts=1)
    def returns_a_set(job: baton.Job) -> Any:
        return {1, 2}

    result = testing.perform_job(returns_a_set, {})
    assert result.state == "discarded" and "TypeError" in (result.error or "")


def test_perform_job_validates_like_an_insert() -> None:
    with pytest.raises(baton.ValidationError, match="args"):
        testing.perform_job(Greeter, {"when": object()})
    with pytest.raises(baton.ValidationError, match="priority"):
        testing.perform_job(Greeter, {"name": "x"}, priority=12)
    with pytest.raises(baton.ValidationError, match="worker"):
        testing.perform_job("no.such.worker", {})


async def test_perform_job_in_an_async_test_runs_on_its_loop() -> None:
    loop = asyncio.get_running_loop()
    seen: list[Any] = []

    app = baton.Baton("sqlite:///:memory:", plugins=[], log_events=False)

    @app.worker(timeout=0.2)
    async def slow(job: baton.Job) -> str:
        seen.append(asyncio.get_running_loop())
        await asyncio.sleep(job.args["sleep"])
        return "ok"

    done = await testing.perform_job(slow, {"sleep": 0})
    assert done.result == "ok" and seen == [loop]
    timed_out = await testing.perform_job(slow, {"sleep": 5})
    assert timed_out.state == "retryable" and "timeout" in (timed_out.error or "")
