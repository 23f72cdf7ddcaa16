"""Failure cascade (SPEC section 3): a cancelled or discarded step cancels its dependents
recursively, with the reason recorded in their errors, meta.repair and workflow_status — unless
ignore_cancelled / ignore_discarded make that dependency count as satisfied. Deleted
dependencies follow ignore_deleted (the Lifeline releases) or leave the step stuck until the
Lifeline or WorkflowHealth cancels it. Workers may react with `after_cancelled(reason, job)`."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg
import pytest

import baton
from baton.store import workflows as wfstore
from conftest import wait_for
from wf_nodes import is_postgres, query, waits_for_a_lock

HOOK_CALLS: list[tuple[str, str, int | None]] = []
HOOK_JOBS: list[baton.Job] = []


class Hooked(baton.Worker):
    """A class worker with an after_cancelled hook."""

    name = "cascade.hooked"

    def perform(self, job: baton.Job) -> Any:
        return {"ran": job.step}

    def after_cancelled(self, reason: str, job: baton.Job) -> None:
        HOOK_CALLS.append(("class", reason, job.id))
        HOOK_JOBS.append(job)


class HookedBroken(baton.Worker):
    """An after_cancelled hook that raises."""

    name = "cascade.hooked_broken"

    def perform(self, job: baton.Job) -> Any:
        return 1

    def after_cancelled(self, reason: str, job: baton.Job) -> None:
        HOOK_CALLS.append(("broken", reason, None))
        raise RuntimeError("hook exploded")


@pytest.fixture(autouse=True)
def _reset_hooks() -> None:
    HOOK_CALLS.clear()
    HOOK_JOBS.clear()


@pytest.fixture
def workers(app: baton.Baton) -> Any:
    class W:
        ok = app.worker(name="cascade.ok")(lambda job: {"ok": job.step})
        discard = app.worker(name="cascade.discard")(lambda job: baton.Discard("bad input"))
        cancel = app.worker(name="cascade.cancel")(lambda job: baton.Cancel("not needed"))
        held = app.worker(name="cascade.held", queue="held")(lambda job: {"held": job.step})

        @staticmethod
        @app.worker(name="cascade.crash", max_attempts=1)
        def crash(job: baton.Job) -> None:
            raise RuntimeError("boom")

    return W


def _last_error(job: baton.Job) -> dict[str, Any]:
    assert job.errors, f"job {job.id} has no errors"
    return job.errors[-1]


async def _job(app: baton.Baton, wid: str, name: str) -> baton.Job:
    status = await app.workflow_status(wid)
    job = await app.get_job(status.details[name].job_id)
    assert job is not None
    return job


# --------------------------------------------------------------------------- cascade


async def test_discarded_step_cancels_its_dependents_recursively(app, workers):
    wf = baton.Workflow(label="cascade")
    wf.add("fetch", workers.discard.new({}))
    wf.add("other", workers.ok.new({}))
    wf.add("clean", workers.ok.new({}), deps=["fetch"])
    wf.add("stats", workers.ok.new({}), deps=["clean"])
    wf.add("render", workers.ok.new({}), deps=["stats", "other"])
    wf.add("unrelated", workers.ok.new({}), deps=["other"])
    wid = await app.insert_workflow(wf)
    assert await app.drain() == {"discarded": 1, "completed": 2}

    status = await app.workflow_status(wid)
    assert status.steps == {
        "fetch": "discarded",
        "other": "completed",
        "clean": "cancelled",
        "stats": "cancelled",
        "render": "cancelled",
        "unrelated": "completed",
    }
    assert status.finished and status.status == "failed"
    assert status.failed_steps == ["clean", "fetch", "render", "stats"]
    # The direct dependent names the discarded dep; the next ones the cancelled one.
    expected = {
        "clean": ("dep_discarded", "fetch"),
        "stats": ("dep_cancelled", "clean"),
        "render": ("dep_cancelled", "stats"),
    }
    for name, (reason, dep) in expected.items():
        job = await _job(app, wid, name)
        assert job.state == "cancelled"
        assert job.attempt == 0, "a cascaded step never runs"
        assert job.cancelled_at is not None
        err = _last_error(job)
        assert err["reason"] == reason
        assert f"'{dep}'" in err["error"]
        assert job.meta["repair"] == reason
        assert status.details[name].reason == reason
    assert status.details["fetch"].last_error is not None and "bad input" in status.details["fetch"].last_error


async def test_cancelled_step_cancels_its_dependents_with_dep_cancelled(app, workers):
    wf = baton.Workflow()
    wf.add("a", workers.cancel.new({}))
    wf.add("b", workers.ok.new({}), deps=["a"])
    wf.add("c", workers.ok.new({}), deps=["b"])
    wid = await app.insert_workflow(wf)
    assert await app.drain() == {"cancelled": 1}
    status = await app.workflow_status(wid)
    assert status.steps == {"a": "cancelled", "b": "cancelled", "c": "cancelled"}
    for name in ("b", "c"):
        job = await _job(app, wid, name)
        assert _last_error(job)["reason"] == "dep_cancelled"
        assert job.meta["repair"] == "dep_cancelled"
        assert status.details[name].reason == "dep_cancelled"
    assert status.status == "failed"


async def test_step_exhausting_its_attempts_cascades_as_discarded(app, workers):
    wf = baton.Workflow()
    wf.add("a", workers.crash.new({}))
    wf.add("b", workers.ok.new({}), deps=["a"])
    wid = await app.insert_workflow(wf)
    await app.drain()
    status = await app.workflow_status(wid)
    assert status.steps == {"a": "discarded", "b": "cancelled"}
    assert status.details["b"].reason == "dep_discarded"
    assert "boom" in (status.details["a"].last_error or "")


async def test_cancelling_a_waiting_step_by_hand_cascades(app, workers):
    wf = baton.Workflow()
    wf.add("a", workers.ok.new({}))
    wf.add("b", workers.ok.new({}), deps=["a"])
    wf.add("c", workers.ok.new({}), deps=["b"])
    wid = await app.insert_workflow(wf)
    b = await _job(app, wid, "b")
    cancelled = await app.cancel_job(b.id)
    assert cancelled is not None and cancelled.state == "cancelled"
    status = await app.workflow_status(wid)
    assert status.steps == {"a": "available", "b": "cancelled", "c": "cancelled"}
    assert status.details["c"].reason == "dep_cancelled"
    assert await app.drain() == {"completed": 1}
    status = await app.workflow_status(wid)
    assert status.finished and status.status == "failed"


# --------------------------------------------------------------------------- ignore_*


async def test_ignore_cancelled_and_ignore_discarded_per_step(app, workers):
    seen: dict[str, Any] = {}

    @app.worker(name="cascade.reader")
    def reader(job: baton.Job) -> Any:
        seen[job.step or ""] = job.upstream_all()
        return {"ran": job.step}

    wf = baton.Workflow(label="ignores")
    wf.add("cancels", workers.cancel.new({}))
    wf.add("discards", workers.discard.new({}))
    wf.add("slow_ok", workers.ok.new({}))
    wf.add("after_cancel", reader.new({}), deps=["cancels"], ignore_cancelled=True)
    wf.add("after_discard", reader.new({}), deps=["discards", "slow_ok"], ignore_discarded=True)
    # ignore_cancelled does not cover a discarded dep, nor the reverse.
    wf.add("wrong_ignore_1", reader.new({}), deps=["discards"], ignore_cancelled=True)
    wf.add("wrong_ignore_2", reader.new({}), deps=["cancels"], ignore_discarded=True)
    # Not ignoring: cancelled.
    wf.add("strict", reader.new({}), deps=["cancels"])
    # After a satisfied-by-ignore step, its dependents run normally.
    wf.add("downstream", reader.new({}), deps=["after_cancel", "after_discard"])
    wid = await app.insert_workflow(wf)
    await app.drain()
    status = await app.workflow_status(wid)
    assert status.steps == {
        "cancels": "cancelled",
        "discards": "discarded",
        "slow_ok": "completed",
        "after_cancel": "completed",
        "after_discard": "completed",
        "wrong_ignore_1": "cancelled",
        "wrong_ignore_2": "cancelled",
        "strict": "cancelled",
        "downstream": "completed",
    }
    assert status.details["wrong_ignore_1"].reason == "dep_discarded"
    assert status.details["wrong_ignore_2"].reason == "dep_cancelled"
    assert status.details["strict"].reason == "dep_cancelled"
    # The ignored failed dep reads as None; the others as their results.
    assert seen["after_cancel"] == {"cancels": None}
    assert seen["after_discard"] == {"discards": None, "slow_ok": {"ok": "slow_ok"}}
    assert seen["downstream"] == {"after_cancel": {"ran": "after_cancel"}, "after_discard": {"ran": "after_discard"}}
    assert status.finished and status.status == "failed"  # failed steps remain failures


async def test_ignore_flags_at_workflow_level_with_step_override(app, workers):
    wf = baton.Workflow(label="lenient", ignore_cancelled=True, ignore_discarded=True)
    wf.add("cancels", workers.cancel.new({}))
    wf.add("discards", workers.discard.new({}))
    wf.add("a", workers.ok.new({}), deps=["cancels"])
    wf.add("b", workers.ok.new({}), deps=["discards"])
    wf.add("c", workers.ok.new({}), deps=["cancels", "discards", "a", "b"])
    wf.add("strict", workers.ok.new({}), deps=["discards"], ignore_discarded=False)
    wid = await app.insert_workflow(wf)
    await app.drain()
    status = await app.workflow_status(wid)
    assert status.steps == {
        "cancels": "cancelled",
        "discards": "discarded",
        "a": "completed",
        "b": "completed",
        "c": "completed",
        "strict": "cancelled",
    }
    assert status.details["strict"].reason == "dep_discarded"
    rows = query(
        app.url,
        "SELECT name, ignore_cancelled, ignore_discarded, ignore_deleted FROM workflow_nodes WHERE workflow_id = ?",
        [wid],
    )
    flags = {r[0]: tuple(bool(x) for x in r[1:]) for r in rows}
    assert flags["a"] == (True, True, False)
    assert flags["strict"] == (True, False, False)


async def test_cancel_all_jobs_by_workflow_cancels_the_remaining_steps(app, workers, events):
    events.attach(("baton", "workflow", "finished"))
    finished: list[dict[str, Any]] = []
    app.on_workflow_finished(finished.append)
    first = app.worker(name="cascade.first", queue="first")(lambda job: 1)
    wf = baton.Workflow(label="to-cancel")
    wf.add("a", first.new({}))
    wf.add("b", workers.ok.new({}), deps=["a"])
    wf.add("c", workers.ok.new({}), deps=["b"])
    wf.add("d", workers.ok.new({}))
    wid = await app.insert_workflow(wf)
    assert await app.drain(queue="first") == {"completed": 1}

    other = baton.Workflow(label="bystander")
    other.add("x", workers.ok.new({}))
    other_wid = await app.insert_workflow(other)

    n = await app.cancel_all_jobs(workflow_id=wid)
    assert n == 3
    status = await app.workflow_status(wid)
    assert status.steps == {"a": "completed", "b": "cancelled", "c": "cancelled", "d": "cancelled"}
    assert status.finished and status.status == "failed"
    assert (await app.workflow_status(other_wid)).steps == {"x": "available"}
    assert await app.drain() == {"completed": 1}  # only the bystander is left to run
    assert [e["workflow_id"] for e in finished] == [wid, other_wid]
    assert finished[0]["status"] == "failed"
    assert finished[0]["failed_steps"] == ["b", "c", "d"]
    assert finished[0]["counts"] == {"completed": 1, "cancelled": 3}
    assert len([md for _, md in events.of(("baton", "workflow", "finished")) if md["workflow_id"] == wid]) == 1


async def test_cancel_all_jobs_by_workflow_waits_for_steps_being_appended(app, workers, db_url):
    """PostgreSQL: a cancel of a workflow while append_workflow's transaction is adding steps
    waits for it and cancels the appended steps too (SQLite runs one writer at a time)."""
    if not is_postgres(db_url):
        pytest.skip("SQLite serialises the append and the cancel")
    wf = baton.Workflow(label="append-race")
    wf.add("a", workers.ok.new({}))
    wid = await app.insert_workflow(wf)
    late = baton.Workflow()
    late.add("after_a", workers.ok.new({}), deps=["a"])
    late.add("free", workers.ok.new({}))
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        async with conn.transaction():  # append_workflow's transaction, held open
            names, _ = await app.engine.run_on(
                conn, wfstore.append_workflow, wid, lambda existing: app._plan(late, existing), app.node, ""
            )
            assert names == ["after_a", "free"]
            cancel = asyncio.create_task(app.cancel_all_jobs(workflow_id=wid))
            await wait_for(lambda: waits_for_a_lock(db_url))
            assert not cancel.done()
        assert await asyncio.wait_for(cancel, 10) == 3
    status = await app.workflow_status(wid)
    assert status.steps == {"a": "cancelled", "after_a": "cancelled", "free": "cancelled"}
    assert status.finished and status.status == "failed"
    # An append that comes after the cancel finds the workflow finished.
    with pytest.raises(baton.WorkflowError, match="already finished"):
        await app.append_workflow(wid, late)


# --------------------------------------------------------------------------- deleted deps


async def _delete_job(app: baton.Baton, job_id: int) -> None:
    query(app.url, "DELETE FROM baton_jobs WHERE id = ?", [job_id])


async def test_ignore_deleted_dep_is_released_by_the_lifeline(app, workers):
    wf = baton.Workflow(label="deleted-ok")
    wf.add("a", workers.ok.new({}))
    wf.add("b", workers.ok.new({}), deps=["a"], ignore_deleted=True)
    wf.add("c", workers.ok.new({}), deps=["b"])
    wid = await app.insert_workflow(wf)
    a = await _job(app, wid, "a")
    await _delete_job(app, a.id)
    assert await app.drain() == {}
    status = await app.workflow_status(wid)
    assert status.steps == {"a": "deleted", "b": "suspended", "c": "suspended"}

    result = await baton.plugins.Lifeline().sweep(app)
    b = await _job(app, wid, "b")
    assert b.state == "available"
    assert b.id in result["released_steps"]
    assert await app.drain() == {"completed": 2}
    status = await app.workflow_status(wid)
    assert status.steps == {"a": "deleted", "b": "completed", "c": "completed"}
    assert status.finished and status.status == "completed"


async def test_ignore_deleted_at_workflow_level(app, workers):
    wf = baton.Workflow(ignore_deleted=True)
    wf.add("a", workers.ok.new({}))
    wf.add("b", workers.ok.new({}), deps=["a"])
    wid = await app.insert_workflow(wf)
    await _delete_job(app, (await _job(app, wid, "a")).id)
    await baton.plugins.Lifeline().sweep(app)
    assert await app.drain() == {"completed": 1}
    assert (await app.workflow_status(wid)).steps == {"a": "deleted", "b": "completed"}


async def test_deleted_dep_leaves_the_step_stuck_until_the_lifeline_cancels_it(app, workers):
    wf = baton.Workflow(label="deleted")
    wf.add("a", workers.ok.new({}))
    wf.add("b", Hooked.new({}), deps=["a"])
    wf.add("c", workers.ok.new({}), deps=["b"])
    wid = await app.insert_workflow(wf)
    await _delete_job(app, (await _job(app, wid, "a")).id)

    # Nothing happens on its own: the step waits, and status says why.
    assert await app.drain() == {}
    status = await app.workflow_status(wid)
    assert status.steps == {"a": "deleted", "b": "suspended", "c": "suspended"}
    assert "dep_deleted" in status.waiting["b"]
    assert not status.finished

    result = await baton.plugins.Lifeline().sweep(app)
    status = await app.workflow_status(wid)
    assert status.steps == {"a": "deleted", "b": "cancelled", "c": "cancelled"}
    b = await _job(app, wid, "b")
    assert b.id in result["cancelled_steps"]
    assert _last_error(b)["reason"] == "dep_deleted"
    assert b.meta["repair"] == "dep_deleted"
    assert status.details["b"].reason == "dep_deleted"
    assert status.details["c"].reason == "dep_cancelled"
    assert status.finished and status.status == "failed"
    assert [("class", "deleted", b.id)] == HOOK_CALLS


async def test_deleted_dep_leaves_the_step_stuck_until_workflow_health_cancels_it(app, workers, events):
    events.attach(("baton", "plugin", "rescued"))
    wf = baton.Workflow(label="deleted-health")
    wf.add("a", workers.ok.new({}))
    wf.add("b", workers.ok.new({}), deps=["a"])
    wf.add("c", workers.ok.new({}), deps=["b"])
    wid = await app.insert_workflow(wf)
    await _delete_job(app, (await _job(app, wid, "a")).id)
    assert await app.drain() == {}
    assert (await app.workflow_status(wid)).steps["b"] == "suspended"

    await baton.plugins.WorkflowHealth().sweep(app)
    status = await app.workflow_status(wid)
    assert status.steps == {"a": "deleted", "b": "cancelled", "c": "cancelled"}
    b = await _job(app, wid, "b")
    assert b.meta["repair"] == "orphaned_step"
    assert "'a'" in _last_error(b)["error"]
    assert status.details["c"].reason == "dep_cancelled"
    rescued = events.of(("baton", "plugin", "rescued"))
    assert len(rescued) == 1 and rescued[0][0]["count"] == 1 and rescued[0][1]["job_ids"] == [b.id]
    assert status.finished and status.status == "failed"


async def test_deleted_dep_with_ignore_deleted_is_left_alone_by_workflow_health(app, workers):
    wf = baton.Workflow()
    wf.add("a", workers.ok.new({}))
    wf.add("b", workers.ok.new({}), deps=["a"], ignore_deleted=True)
    wid = await app.insert_workflow(wf)
    await _delete_job(app, (await _job(app, wid, "a")).id)
    await baton.plugins.WorkflowHealth().sweep(app)
    assert await app.drain() == {"completed": 1}
    assert (await app.workflow_status(wid)).steps == {"a": "deleted", "b": "completed"}


# --------------------------------------------------------------------------- after_cancelled


async def test_after_cancelled_runs_for_cascade_cancelled_steps(app, workers):
    fn_calls: list[tuple[str, str | None, int]] = []

    def on_cancel(reason: str, job: baton.Job) -> None:
        fn_calls.append((reason, job.step, job.id))

    hooked_fn = app.worker(name="cascade.hooked_fn", after_cancelled=on_cancel)(lambda job: 1)

    wf = baton.Workflow(label="hooks")
    wf.add("discards", workers.discard.new({}))
    wf.add("cancels", workers.cancel.new({}))
    wf.add("k1", Hooked.new({}), deps=["discards"])
    wf.add("k2", Hooked.new({}), deps=["k1"])  # cascaded from a cancelled step
    wf.add("f1", hooked_fn.new({}), deps=["cancels"])
    wf.add("survivor", Hooked.new({}))
    wid = await app.insert_workflow(wf)
    await app.drain()
    status = await app.workflow_status(wid)
    assert status.steps["survivor"] == "completed"
    ids = {name: d.job_id for name, d in status.details.items()}
    assert sorted(HOOK_CALLS) == sorted([("class", "discarded", ids["k1"]), ("class", "cancelled", ids["k2"])])
    assert [(r, i) for r, _, i in fn_calls] == [("cancelled", ids["f1"])]
    # The hook gets the cancelled job as stored.
    for job in HOOK_JOBS:
        assert job.state == "cancelled"
        assert job.workflow_id == wid
        assert job.worker == "cascade.hooked"
    # The failed steps themselves are not "cancelled by the cascade".
    assert ids["survivor"] not in {c[2] for c in HOOK_CALLS}


async def test_after_cancelled_async_hook_runs(app, workers):
    done = asyncio.Event()
    calls: list[str] = []

    async def on_cancel(reason: str, job: baton.Job) -> None:
        await asyncio.sleep(0)
        calls.append(reason)
        done.set()

    hooked = app.worker(name="cascade.hooked_async", after_cancelled=on_cancel)(lambda job: 1)
    wf = baton.Workflow()
    wf.add("a", workers.discard.new({}))
    wf.add("b", hooked.new({}), deps=["a"])
    await app.insert_workflow(wf)
    await app.drain()
    await asyncio.wait_for(done.wait(), 5)
    assert calls == ["discarded"]


async def test_after_cancelled_errors_are_logged_not_raised(app, workers, caplog):
    def broken_fn(reason: str, job: baton.Job) -> None:
        raise ValueError("fn hook exploded")

    hooked_fn = app.worker(name="cascade.broken_fn", after_cancelled=broken_fn)(lambda job: 1)
    wf = baton.Workflow()
    wf.add("a", workers.discard.new({}))
    wf.add("b", HookedBroken.new({}), deps=["a"])
    wf.add("c", hooked_fn.new({}), deps=["a"])
    wf.add("d", workers.ok.new({}))
    wid = await app.insert_workflow(wf)
    with caplog.at_level(logging.ERROR, logger="baton"):
        counts = await app.drain()  # does not raise
    assert counts == {"discarded": 1, "completed": 1}
    assert ("broken", "discarded", None) in HOOK_CALLS
    status = await app.workflow_status(wid)
    assert status.steps == {"a": "discarded", "b": "cancelled", "c": "cancelled", "d": "completed"}
    text = "\n".join(r.getMessage() + "\n" + (r.exc_text or "") for r in caplog.records)
    assert "after_cancelled" in text
    messages = [r for r in caplog.records if "after_cancelled" in r.getMessage()]
    assert len(messages) == 2
    assert {str(r.exc_info[1]) for r in messages if r.exc_info} == {"hook exploded", "fn hook exploded"}


async def test_after_cancelled_job_knows_its_step_name(app, workers):
    wf = baton.Workflow()
    wf.add("a", workers.discard.new({}))
    wf.add("b", Hooked.new({}), deps=["a"])
    await app.insert_workflow(wf)
    await app.drain()
    assert [j.step for j in HOOK_JOBS] == ["b"]


async def test_after_cancelled_runs_when_workflow_health_cancels_an_orphaned_step(app, workers):
    wf = baton.Workflow()
    wf.add("a", workers.ok.new({}))
    wf.add("b", Hooked.new({}), deps=["a"])
    wid = await app.insert_workflow(wf)
    await _delete_job(app, (await _job(app, wid, "a")).id)
    await baton.plugins.WorkflowHealth().sweep(app)
    b = await _job(app, wid, "b")
    assert b.state == "cancelled"
    assert [("class", "deleted", b.id)] == HOOK_CALLS


async def test_release_over_a_deleted_dep_names_its_reason(app, workers):
    wf = baton.Workflow()
    wf.add("a", workers.ok.new({}))
    wf.add("b", workers.ok.new({}), deps=["a"], ignore_deleted=True)
    wid = await app.insert_workflow(wf)
    await _delete_job(app, (await _job(app, wid, "a")).id)
    await baton.plugins.Lifeline().sweep(app)
    b = await _job(app, wid, "b")
    assert b.state == "available"
    assert b.meta.get("repair") == "dep_deleted"
    assert (await app.workflow_status(wid)).details["b"].reason == "dep_deleted"


# --------------------------------------------------------------------------- retrying steps


@pytest.fixture
def flaky(app: baton.Baton) -> Any:
    """A step that fails for good (one attempt) until `flaky.fixed` is set, and a step that
    records what it read upstream."""

    class F:
        fixed = False
        seen: dict[str, Any] = {}

    @app.worker(name="cascade.flaky", max_attempts=1)
    def flaky_step(job: baton.Job) -> Any:
        if not F.fixed:
            raise RuntimeError("transient outage")
        return {"rows": 3}

    @app.worker(name="cascade.reader")
    def reader(job: baton.Job) -> Any:
        F.seen[job.step or ""] = job.upstream_all()
        return {"read": job.step}

    F.step, F.reader = flaky_step, reader  # type: ignore[attr-defined]
    return F


async def test_retrying_a_step_whose_dependency_failed_is_refused_until_that_dependency_is_retried(app, flaky):
    """A cascaded step used to become available and run with its dependency unmet
    (upstream None). Now it is refused, naming the dependency; the recovery path is to retry
    the failed step first, then its dependents, which wait (suspended) until it completes."""
    wf = baton.Workflow(label="recover")
    wf.add("a", flaky.step.new({}))
    wf.add("b", flaky.reader.new({}), deps=["a"])
    wf.add("c", flaky.reader.new({}), deps=["b"])
    wid = await app.insert_workflow(wf)
    await app.drain()
    status = await app.workflow_status(wid)
    assert status.steps == {"a": "discarded", "b": "cancelled", "c": "cancelled"}
    ids = {name: d.job_id for name, d in status.details.items()}

    with pytest.raises(baton.ValidationError) as info:
        await app.retry_job(ids["b"])
    assert info.value.field == "job_id"
    message = str(info.value)
    assert "'a'" in message and "discarded" in message and "retry step 'a' first" in message
    with pytest.raises(baton.ValidationError, match=r"'b' is cancelled.*retry step 'b' first"):
        await app.retry_job(ids["c"])
    assert await app.retry_all_jobs([ids["b"], ids["c"]]) == 0, "refused steps are left as they are"
    assert (await app.workflow_status(wid)).steps == status.steps, "nothing changed"
    assert await app.drain() == {}
    assert flaky.seen == {}

    flaky.fixed = True
    retried = await app.retry_job(ids["a"])
    assert retried is not None and retried.state == "available"
    b = await app.retry_job(ids["b"])
    assert b is not None and b.state == "suspended", "b waits for a, which has not run again yet"
    c = await app.retry_job(ids["c"])
    assert c is not None and c.state == "suspended"
    status = await app.workflow_status(wid)
    assert status.steps == {"a": "available", "b": "suspended", "c": "suspended"}
    assert status.waiting == {"a": "available", "b": "waiting on a", "c": "waiting on b"}
    assert not status.finished and status.status == "running"

    assert await app.drain() == {"completed": 3}
    assert flaky.seen == {"b": {"a": {"rows": 3}}, "c": {"b": {"read": "b"}}}
    status = await app.workflow_status(wid)
    assert status.steps == {"a": "completed", "b": "completed", "c": "completed"}
    assert status.finished and status.status == "completed"


async def test_retrying_steps_with_their_failed_dependency_in_one_call(app, flaky):
    wf = baton.Workflow()
    wf.add("a", flaky.step.new({}))
    wf.add("b", flaky.reader.new({}), deps=["a"])
    wid = await app.insert_workflow(wf)
    await app.drain()
    status = await app.workflow_status(wid)
    flaky.fixed = True
    assert await app.retry_all_jobs([d.job_id for d in status.details.values()]) == 2
    assert (await app.workflow_status(wid)).steps == {"a": "available", "b": "suspended"}
    assert await app.drain() == {"completed": 2}
    assert flaky.seen == {"b": {"a": {"rows": 3}}}


async def test_retrying_a_step_whose_dependencies_are_satisfied_makes_it_available(app, workers, flaky):
    wf = baton.Workflow()
    wf.add("a", workers.ok.new({}))
    wf.add("gone", workers.discard.new({}))
    wf.add("b", flaky.step.new({}), deps=["a", "gone"], ignore_discarded=True)
    wid = await app.insert_workflow(wf)
    await app.drain()
    status = await app.workflow_status(wid)
    assert status.steps == {"a": "completed", "gone": "discarded", "b": "discarded"}
    flaky.fixed = True
    retried = await app.retry_job(status.details["b"].job_id)
    assert retried is not None and retried.state == "available", "a completed, gone's discard is ignored"
    assert await app.drain() == {"completed": 1}
    assert (await app.workflow_status(wid)).steps["b"] == "completed"


async def test_a_retried_step_waits_for_a_dependency_still_running(app, workers):
    """A step cancelled by hand while its dependency is still waiting: retried, it goes back
    to suspended and the dependency's completion releases it, as for any step."""
    wf = baton.Workflow()
    wf.add("slow", workers.held.new({}))
    wf.add("next", workers.ok.new({}), deps=["slow"])
    wid = await app.insert_workflow(wf)
    ids = {n: d.job_id for n, d in (await app.workflow_status(wid)).details.items()}
    await app.cancel_all_jobs(ids=[ids["next"]])
    assert (await app.workflow_status(wid)).steps == {"slow": "available", "next": "cancelled"}
    retried = await app.retry_job(ids["next"])
    assert retried is not None and retried.state == "suspended"
    assert await app.drain("default") == {}
    assert await app.drain("held") == {"completed": 1}
    assert (await app.workflow_status(wid)).steps == {"slow": "completed", "next": "available"}
    assert await app.drain() == {"completed": 1}
    assert (await app.workflow_status(wid)).status == "completed"


async def test_retrying_a_completed_step_does_not_release_its_dependents_early(app, workers):
    """`join` waits for `a` and `slow`; retrying `a` (completed) makes `join` wait for `a`
    again, and `a`'s second completion must not count as `slow`'s."""
    wf = baton.Workflow()
    wf.add("a", workers.ok.new({}))
    wf.add("slow", workers.held.new({}))
    wf.add("join", workers.ok.new({}), deps=["a", "slow"])
    wid = await app.insert_workflow(wf)
    assert await app.drain("default") == {"completed": 1}
    retried = await app.retry_job((await app.workflow_status(wid)).details["a"].job_id)
    assert retried is not None and retried.state == "available"
    assert await app.drain("default") == {"completed": 1}
    status = await app.workflow_status(wid)
    assert status.steps == {"a": "completed", "slow": "available", "join": "suspended"}
    assert await app.drain("held") == {"completed": 1}
    assert await app.drain() == {"completed": 1}
    assert (await app.workflow_status(wid)).status == "completed"


async def test_a_retried_completed_step_runs_its_body_again_and_records_the_new_result(app):
    """The result a completed step recorded is not replayed by a retry (that is only for an
    attempt whose ack was lost): the body runs again, and a dependent retried with it reads
    the new result."""
    runs: list[int] = []

    @app.worker(name="cascade.count")
    def count(job: baton.Job) -> int:
        runs.append(job.attempt)
        return len(runs)

    @app.worker(name="cascade.read")
    def read(job: baton.Job) -> Any:
        return job.upstream("a")

    wf = baton.Workflow()
    wf.add("a", count.new({}))
    wf.add("b", read.new({}), deps=["a"])
    wid = await app.insert_workflow(wf)
    assert await app.drain() == {"completed": 2}
    status = await app.workflow_status(wid)
    assert status.details["b"].result == 1
    a, b = status.details["a"].job_id, status.details["b"].job_id
    assert await app.retry_all_jobs([a, b]) == 2
    assert [(await app.get_job(i)).state for i in (a, b)] == ["available", "suspended"]
    assert await app.drain() == {"completed": 2}
    assert runs == [1, 2]  # the body ran again, on attempt 2
    status = await app.workflow_status(wid)
    assert status.details["a"].result == 2 and status.details["b"].result == 2
