"""WorkflowHealth proves that no workflow hangs or fails silently: orphaned waiting steps are
cancelled through the public API, failed workflows are reported exactly once, workflows that
terminated without an announcement are announced exactly once (whatever the number of sweeps
or nodes), and Baton's own workflow rows are pruned once their jobs are gone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import baton
from baton.plugins import Pruner, WorkflowHealth
from baton.store import maintenance
from baton.store import workflows as wfstore
from conftest import WORKFLOW_TABLES, wait_for
from heal_nodes import ago_sql, now_sql, side_sql

RESCUED = ("baton", "plugin", "rescued")
PRUNED = ("baton", "plugin", "pruned")
FAILED = ("baton", "workflow", "failed")
FINISHED = ("baton", "workflow", "finished")


def rows(url: str, table: str) -> int:
    return int(side_sql(url, f"SELECT count(*) FROM {table}")[0][0])


def register(app: baton.Baton) -> None:
    @app.worker(name="ok")
    def ok(job: baton.Job) -> int:
        job.log("info", f"step {job.step} ran")
        return 1

    @app.worker(name="no")
    def no(job: baton.Job) -> baton.Discard:
        return baton.Discard("not today")


@pytest.fixture
def app(make_app):
    app = make_app()
    register(app)
    return app


async def step_ids(app: baton.Baton, wid: str) -> dict[str, int]:
    return {name: s.job_id for name, s in (await app.workflow_status(wid)).details.items()}


def finish_by_sql(url: str, job_id: int, state: str) -> None:
    """End a job behind Baton's back (no ack runs: like a node killed right after its commit)."""
    column = {"completed": "completed_at", "discarded": "discarded_at", "cancelled": "cancelled_at"}[state]
    side_sql(url, f"UPDATE baton_jobs SET state = ?, {column} = {now_sql(url)} WHERE id = ?", (state, job_id))


# --------------------------------------------------------------------------- 1. orphaned waiting steps


async def test_orphaned_waiting_steps_are_cancelled_through_cancel_all_jobs(db_url, app, events, monkeypatch):
    events.attach(RESCUED, FINISHED)
    wf = baton.Workflow(label="orphans")
    wf.add("a", app.new("ok", {}, queue="parked"))
    wf.add("b", app.new("ok", {}), deps=["a"])
    wf.add("c", app.new("ok", {}), deps=["b"])
    wid = await app.insert_workflow(wf)
    ids = await step_ids(app, wid)
    side_sql(db_url, "DELETE FROM baton_jobs WHERE id = ?", (ids["a"],))  # gone before it completed
    assert (await app.workflow_status(wid)).waiting["b"].endswith("(dep_deleted)")

    calls: list[dict[str, Any]] = []
    cancel_all_jobs = app.cancel_all_jobs

    async def spy(**filters: Any) -> int:
        calls.append(filters)
        return await cancel_all_jobs(**filters)

    monkeypatch.setattr(app, "cancel_all_jobs", spy)
    health = WorkflowHealth()
    meta = await health.sweep(app)
    assert meta["rescued"] == [ids["b"]]
    assert len(calls) == 1
    assert calls[0]["ids"] == [ids["b"]] and calls[0]["repair"] == "orphaned_step"
    assert events.of(RESCUED) == [({"count": 1}, {"job_ids": [ids["b"]], "plugin": "workflow_health"})]

    b = await app.get_job(ids["b"])
    assert b.state == "cancelled"
    assert b.meta["repair"] == "orphaned_step"
    assert b.errors[-1]["reason"] == "orphaned_step"
    assert "'a'" in b.errors[-1]["error"]
    c = await app.get_job(ids["c"])
    assert c.state == "cancelled" and c.meta["repair"] == "dep_cancelled"
    status = await app.workflow_status(wid)
    assert status.finished and status.status == "failed"
    assert status.steps == {"a": "deleted", "b": "cancelled", "c": "cancelled"}
    assert [md["workflow_id"] for _, md in events.of(FINISHED)] == [wid]

    # Nothing is left to rescue, nothing is announced twice.
    meta = await health.sweep(app)
    assert meta["rescued"] == [] and meta["announced"] == []
    assert len(events.of(RESCUED)) == 1 and len(events.of(FINISHED)) == 1


async def test_each_orphaned_step_names_its_own_deleted_dependency(db_url, app):
    wids = []
    for dep in ("fetch", "load"):
        wf = baton.Workflow(label=dep)
        wf.add(dep, app.new("ok", {}, queue="parked"))
        wf.add("after", app.new("ok", {}), deps=[dep])
        wids.append(await app.insert_workflow(wf))
    for wid, dep in zip(wids, ("fetch", "load"), strict=True):
        ids = await step_ids(app, wid)
        side_sql(db_url, "DELETE FROM baton_jobs WHERE id = ?", (ids[dep],))
    await WorkflowHealth().sweep(app)
    for wid, dep in zip(wids, ("fetch", "load"), strict=True):
        after = await app.get_job((await step_ids(app, wid))["after"])
        assert after.state == "cancelled"
        assert repr(dep) in after.errors[-1]["error"]


async def test_a_step_ignoring_deleted_deps_is_released_not_cancelled(db_url, app, events):
    events.attach(RESCUED)
    wf = baton.Workflow(label="tolerant")
    wf.add("a", app.new("ok", {}, queue="parked"))
    wf.add("b", app.new("ok", {}), deps=["a"], ignore_deleted=True)
    wid = await app.insert_workflow(wf)
    ids = await step_ids(app, wid)
    side_sql(db_url, "DELETE FROM baton_jobs WHERE id = ?", (ids["a"],))
    meta = await WorkflowHealth().sweep(app)
    assert meta["rescued"] == [] and events.of(RESCUED) == []
    assert (await app.get_job(ids["b"])).state == "available"
    assert await app.drain() == {"completed": 1}
    status = await app.workflow_status(wid)
    assert status.finished and status.status == "completed"


async def test_a_pruned_dependency_that_completed_orphans_nothing(db_url, app, events):
    """Pruning a resolved (completed) dependency early is harmless: the waiting step still
    waits for its other dependency, then runs."""
    events.attach(RESCUED)
    wf = baton.Workflow(label="early-prune")
    wf.add("a", app.new("ok", {}))
    wf.add("x", app.new("ok", {}, queue="later"))
    wf.add("b", app.new("ok", {}), deps=["a", "x"])
    wid = await app.insert_workflow(wf)
    ids = await step_ids(app, wid)
    assert await app.drain(queue="default") == {"completed": 1}
    await asyncio.sleep(0.01)
    assert (await Pruner(max_age=0.001, keep_workflow_deps=False).sweep(app))["pruned_count"] == 1
    assert (await app.get_job(ids["a"])) is None
    meta = await WorkflowHealth().sweep(app)
    assert meta["rescued"] == [] and events.of(RESCUED) == []
    assert (await app.get_job(ids["b"])).state == "suspended"
    assert await app.drain() == {"completed": 2}
    status = await app.workflow_status(wid)
    assert status.finished and status.status == "completed"


# --------------------------------------------------------------------------- 2. failure telemetry


async def failed_workflow(app: baton.Baton, label: str) -> str:
    wf = baton.Workflow(label=label)
    wf.add("a", app.new("no", {}))
    wf.add("b", app.new("ok", {}), deps=["a"])
    wf.add("c", app.new("ok", {}))
    wid = await app.insert_workflow(wf)
    await app.drain()
    status = await app.workflow_status(wid)
    assert status.finished and status.steps == {"a": "discarded", "b": "cancelled", "c": "completed"}
    return wid


async def test_failed_workflow_is_reported_exactly_once_across_sweeps_and_nodes(make_app, app, events):
    events.attach(FAILED)
    other = make_app(node="other-node")
    register(other)
    wid = await failed_workflow(app, "nightly")

    first, second = WorkflowHealth(), WorkflowHealth()
    assert (await first.sweep(app))["failed_reported"] == [wid]
    assert (await first.sweep(app))["failed_reported"] == []
    assert (await second.sweep(other))["failed_reported"] == []
    [(measurements, metadata)] = events.of(FAILED)
    assert measurements == {"failed_count": 2, "total_count": 3}
    assert metadata["workflow_id"] == wid
    assert metadata["workflow_label"] == "nightly"
    assert metadata["root_step"] == "a"
    assert "not today" in metadata["error"]
    assert metadata["cancelled_steps"] == ["b"]

    # Two nodes sweeping at the same moment: still one report.
    wid2 = await failed_workflow(app, "hourly")
    results = await asyncio.gather(first.sweep(app), second.sweep(other))
    assert sorted(w for r in results for w in r["failed_reported"]) == [wid2]
    assert [md["workflow_id"] for _, md in events.of(FAILED)] == [wid, wid2]


async def test_a_completed_workflow_is_never_reported_as_failed(app, events):
    events.attach(FAILED)
    wf = baton.Workflow(label="fine")
    wf.add("a", app.new("ok", {}))
    wf.add("b", app.new("ok", {}), deps=["a"])
    await app.insert_workflow(wf)
    await app.drain()
    assert (await WorkflowHealth().sweep(app))["failed_reported"] == []
    assert events.of(FAILED) == []


# --------------------------------------------------------------------------- 3. completion backstop


async def two_nodes(make_app: Any) -> tuple[baton.Baton, baton.Baton, list[dict[str, Any]], list[dict[str, Any]]]:
    """Two started nodes (no queues, no healing plugins), each subscribed to finished events."""
    seen1: list[dict[str, Any]] = []
    seen2: list[dict[str, Any]] = []
    node1 = make_app(node="node-1")
    node2 = make_app(node="node-2")
    for node, seen in ((node1, seen1), (node2, seen2)):
        register(node)
        node.on_workflow_finished(seen.append)
        await node.start()
    return node1, node2, seen1, seen2


async def test_backstop_announces_a_workflow_that_terminated_without_announcement_once(db_url, make_app, events):
    events.attach(FINISHED)
    node1, node2, seen1, seen2 = await two_nodes(make_app)
    wf = baton.Workflow(label="silent")
    wf.add("a", node1.new("ok", {}))
    wf.add("b", node1.new("ok", {}), deps=["a"])
    wid = await node1.insert_workflow(wf)
    ids = await step_ids(node1, wid)
    # Every job ends behind Baton's back (a node killed between its commit and announcing).
    finish_by_sql(db_url, ids["a"], "completed")
    finish_by_sql(db_url, ids["b"], "completed")
    assert not (await node1.workflow_status(wid)).finished

    first, second = WorkflowHealth(), WorkflowHealth()
    assert (await first.sweep(node1))["announced"] == [wid]
    status = await node1.workflow_status(wid)
    assert status.finished and status.status == "completed" and status.announced_by == "node-1"
    await wait_for(lambda: seen2, timeout=5)
    assert [e["workflow_id"] for e in seen1] == [wid]
    assert seen1[0]["status"] == "completed" and seen1[0]["counts"] == {"completed": 2}
    assert [e["workflow_id"] for e in seen2] == [wid]

    assert (await first.sweep(node1))["announced"] == []
    assert (await second.sweep(node2))["announced"] == []
    await asyncio.sleep(0.6)  # any duplicate notification would have arrived by now
    assert len(seen1) == 1 and len(seen2) == 1
    assert [md["workflow_id"] for _, md in events.of(FINISHED)] == [wid]
    assert rows(db_url, "workflow_completions") == 1


async def test_backstop_of_a_silently_failed_workflow_reports_it_once(db_url, make_app, events):
    events.attach(FINISHED, FAILED)
    node1, node2, _seen1, _seen2 = await two_nodes(make_app)
    wf = baton.Workflow(label="silent-failure")
    wf.add("a", node1.new("ok", {}))
    wf.add("b", node1.new("ok", {}), deps=["a"])
    wid = await node1.insert_workflow(wf)
    ids = await step_ids(node1, wid)
    finish_by_sql(db_url, ids["a"], "discarded")
    finish_by_sql(db_url, ids["b"], "cancelled")

    results = await asyncio.gather(WorkflowHealth().sweep(node1), WorkflowHealth().sweep(node2))
    assert sorted(w for r in results for w in r["announced"]) == [wid]
    assert sorted(w for r in results for w in r["failed_reported"]) == [wid]
    [(_, finished)] = events.of(FINISHED)
    assert finished["status"] == "failed" and finished["failed_steps"] == ["a", "b"]
    [(measurements, failed)] = events.of(FAILED)
    assert measurements == {"failed_count": 2, "total_count": 2}
    assert failed["workflow_id"] == wid and failed["workflow_label"] == "silent-failure"
    await WorkflowHealth().sweep(node1)
    await WorkflowHealth().sweep(node2)
    assert len(events.of(FINISHED)) == 1 and len(events.of(FAILED)) == 1


async def test_backstop_is_a_no_op_after_the_worker_announced(app, events):
    events.attach(FINISHED)
    wf = baton.Workflow(label="clean")
    wf.add("a", app.new("ok", {}))
    wid = await app.insert_workflow(wf)
    await app.drain()
    assert [md["workflow_id"] for _, md in events.of(FINISHED)] == [wid]
    assert (await WorkflowHealth().sweep(app))["announced"] == []
    assert len(events.of(FINISHED)) == 1


async def test_a_claim_its_node_never_confirmed_is_taken_over_and_announced_once(db_url, make_app, events):
    """The node that claimed the completion died between its commit and emitting the finished
    event (the row it leaves: claimed, never confirmed). Once stale_after has passed the backstop
    takes the claim over and emits the event, once; the dead node's late confirmation is fenced."""
    events.attach(FINISHED)
    node1 = make_app(node="node-1")
    register(node1)
    wf = baton.Workflow(label="claimed")
    wf.add("a", node1.new("ok", {}))
    wid = await node1.insert_workflow(wf)
    await node1.drain()
    assert len(events.of(FINISHED)) == 1
    events.items.clear()
    side_sql(
        db_url,
        f"UPDATE workflow_completions SET emitted_at = NULL, announced_at = {ago_sql(db_url, 5)} WHERE workflow_id = ?",
        (wid,),
    )
    fresh = make_app(node="node-2", stale_after=60)
    assert (await WorkflowHealth().sweep(fresh))["announced"] == [], "a claim younger than stale_after is left alone"
    node2 = make_app(node="node-2", stale_after=3, refresh_interval=1)
    first = await WorkflowHealth().sweep(node2)
    assert first["announced"] == [wid]
    [(measurements, finished)] = events.of(FINISHED)
    assert finished["workflow_id"] == wid and finished["node"] == "node-2" and measurements["total_count"] == 1
    assert (await node1.engine.run(wfstore.confirm_announcements, [wid], "node-1")) == {}
    assert (await WorkflowHealth().sweep(node2))["announced"] == []
    assert len(events.of(FINISHED)) == 1
    assert side_sql(db_url, "SELECT announced_by FROM workflow_completions WHERE workflow_id = ?", (wid,)) == [
        ("node-2",)
    ]


# --------------------------------------------------------------------------- 4. retention


async def finished_workflow(app: baton.Baton, label: str) -> str:
    wf = baton.Workflow(label=label)
    wf.add("a", app.new("ok", {}))
    wf.add("b", app.new("ok", {}), deps=["a"])
    wid = await app.insert_workflow(wf)
    assert await app.drain() == {"completed": 2}
    return wid


async def test_retention_deletes_workflow_rows_whose_jobs_are_gone_in_bounded_batches(db_url, app, events):
    events.attach(PRUNED)
    await finished_workflow(app, "old")
    assert {t: rows(db_url, t) for t in WORKFLOW_TABLES} == {
        "workflow_nodes": 2,
        "baton_workflow_deps": 1,
        "workflow_step_stats": 2,
        "workflow_debug_logs": 2,
        "baton_usage": 0,
        "workflow_completions": 1,
        "baton_workflows": 1,
    }
    health = WorkflowHealth(prune=True, prune_limit=1)
    # Jobs still there: nothing to delete, no event.
    assert (await health.sweep(app))["pruned"] == {}
    assert events.of(PRUNED) == []

    await asyncio.sleep(0.01)
    assert (await Pruner(max_age=0.001).sweep(app))["pruned_count"] == 2
    # Off by default.
    assert (await WorkflowHealth().sweep(app))["pruned"] == {}
    assert events.of(PRUNED) == []

    first = await health.sweep(app)
    second = await health.sweep(app)
    # At most prune_limit=1 row per table per sweep; completions go once no node is left.
    for table in ("workflow_nodes", "workflow_step_stats", "workflow_debug_logs"):
        assert first["pruned"][table] == 1 and second["pruned"][table] == 1
    assert "workflow_completions" not in first["pruned"]
    assert second["pruned"]["workflow_completions"] == 1 and second["pruned"]["baton_workflows"] == 1
    assert first["pruned"].get("baton_workflow_deps", 0) + second["pruned"].get("baton_workflow_deps", 0) == 1
    assert (await health.sweep(app))["pruned"] == {}
    assert events.of(PRUNED) == [
        ({"count": sum(first["pruned"].values())}, first["pruned"]),
        ({"count": sum(second["pruned"].values())}, second["pruned"]),
    ]
    assert {t: rows(db_url, t) for t in WORKFLOW_TABLES} == dict.fromkeys(WORKFLOW_TABLES, 0)


async def test_retention_never_lets_a_workflow_go_unannounced(db_url, app, events):
    """Rows of a workflow whose jobs are gone are pruned only after it was announced."""
    events.attach(FINISHED)
    wf = baton.Workflow(label="unannounced")
    wf.add("a", app.new("ok", {}, queue="parked"))
    wid = await app.insert_workflow(wf)
    ids = await step_ids(app, wid)
    side_sql(db_url, "DELETE FROM baton_jobs WHERE id = ?", (ids["a"],))
    await WorkflowHealth(prune=True).sweep(app)
    # The sweep itself resolves the deleted step and announces the workflow, then prunes its rows.
    assert [md["workflow_id"] for _, md in events.of(FINISHED)] == [wid]
    assert events.of(FINISHED)[0][1]["status"] == "completed"
    await WorkflowHealth(prune=True).sweep(app)
    assert {t: rows(db_url, t) for t in WORKFLOW_TABLES} == dict.fromkeys(WORKFLOW_TABLES, 0)
    assert (await WorkflowHealth(prune=True).sweep(app))["announced"] == []
    assert len(events.of(FINISHED)) == 1


async def test_retention_keeps_a_workflow_whose_claimant_died_before_its_finished_event(db_url, make_app, events):
    """The node that claimed the completion died before it emitted the finished event, and the
    workflow's jobs were pruned meanwhile. Retention keeps the workflow's rows until the
    backstop has taken the claim over and emitted the event (found by bench/chaos.py's
    retention scenario: a workflow pruned before stale_after passed was never announced)."""
    events.attach(FINISHED)
    node1 = make_app(node="node-1")
    register(node1)
    wid = await finished_workflow(node1, "claimed")
    events.items.clear()
    side_sql(db_url, "UPDATE workflow_completions SET emitted_at = NULL WHERE workflow_id = ?", (wid,))
    await asyncio.sleep(0.01)
    assert (await Pruner(max_age=0.001).sweep(node1))["pruned_count"] == 2

    node2 = make_app(node="node-2", stale_after=3, refresh_interval=1)
    register(node2)
    health = WorkflowHealth(prune=True)
    young = await health.sweep(node2)
    assert young["announced"] == []
    kept = ("workflow_nodes", "baton_workflow_deps", "workflow_completions", "baton_workflows")
    assert {t: rows(db_url, t) for t in kept} == dict(zip(kept, (2, 1, 1, 1), strict=True)), young["pruned"]

    side_sql(
        db_url, f"UPDATE workflow_completions SET announced_at = {ago_sql(db_url, 5)} WHERE workflow_id = ?", (wid,)
    )
    taken = await health.sweep(node2)
    assert taken["announced"] == [wid]
    [(measurements, finished)] = events.of(FINISHED)
    assert finished["workflow_id"] == wid and finished["status"] == "completed" and finished["node"] == "node-2"
    assert measurements["total_count"] == 2
    assert finished["counts"] == {"completed": 2}
    await health.sweep(node2)
    assert {t: rows(db_url, t) for t in WORKFLOW_TABLES} == dict.fromkeys(WORKFLOW_TABLES, 0)
    assert len(events.of(FINISHED)) == 1


async def test_retention_keeps_a_failed_workflow_until_its_failure_is_reported(db_url, app, events):
    """A failed workflow whose jobs were pruned before any sweep reported its failure keeps
    its steps (the report is written from them) until the report went out."""
    events.attach(FAILED)
    wid = await failed_workflow(app, "nightly")
    await asyncio.sleep(0.01)
    assert (await Pruner(max_age=0.001).sweep(app))["pruned_count"] == 3
    assert side_sql(db_url, "SELECT failure_reported FROM workflow_completions WHERE workflow_id = ?", (wid,)) in (
        [(False,)],
        [(0,)],
    )
    pruned = await app.engine.run(maintenance.prune_workflow_rows, limit=100, debug_log_max_age=None)
    assert "workflow_nodes" not in pruned and "workflow_completions" not in pruned, pruned
    assert rows(db_url, "workflow_nodes") == 3

    health = WorkflowHealth(prune=True)
    assert (await health.sweep(app))["failed_reported"] == [wid]
    [(measurements, metadata)] = events.of(FAILED)
    assert measurements == {"failed_count": 2, "total_count": 3}
    assert metadata["root_step"] == "a" and metadata["cancelled_steps"] == ["b"]
    await health.sweep(app)
    assert {t: rows(db_url, t) for t in WORKFLOW_TABLES} == dict.fromkeys(WORKFLOW_TABLES, 0)


async def test_debug_logs_older_than_max_age_are_deleted_whatever_the_job_state(db_url, app, events):
    events.attach(PRUNED)
    wf = baton.Workflow(label="chatty")
    wf.add("a", app.new("ok", {}))
    wf.add("b", app.new("ok", {}, queue="later"), deps=["a"])
    wid = await app.insert_workflow(wf)
    await app.drain(queue="default")
    ids = await step_ids(app, wid)
    # b is still waiting (available): give it an old log line and a fresh one; a's line is old.
    for message, seconds in (("old b", 100), ("fresh b", 0)):
        side_sql(
            db_url,
            "INSERT INTO workflow_debug_logs (workflow_id, job_id, name, level, message, inserted_at) "
            f"VALUES (?, ?, 'b', 'info', ?, {ago_sql(db_url, seconds)})",
            (wid, ids["b"], message),
        )
    side_sql(
        db_url, f"UPDATE workflow_debug_logs SET inserted_at = {ago_sql(db_url, 100)} WHERE job_id = ?", (ids["a"],)
    )

    meta = await WorkflowHealth(prune=True, debug_log_max_age=50).sweep(app)
    assert meta["pruned"] == {"workflow_debug_logs": 2}
    assert events.of(PRUNED) == [({"count": 2}, {"workflow_debug_logs": 2})]
    assert [r[0] for r in side_sql(db_url, "SELECT message FROM workflow_debug_logs")] == ["fresh b"]
    assert rows(db_url, "workflow_nodes") == 2  # the jobs exist: nothing else goes
    assert (await app.get_job(ids["b"])).state == "available"


# --------------------------------------------------------------------------- results of every JSON type


async def test_a_step_returning_a_string_does_not_wedge_its_workflow(app):
    @app.worker(name="greet")
    def greet(job: baton.Job) -> str:
        return "hello"

    @app.worker(name="echo")
    def echo(job: baton.Job) -> Any:
        return job.upstream("a")

    wf = baton.Workflow(label="strings")
    wf.add("a", greet.new({}))
    wf.add("b", echo.new({}), deps=["a"])
    wid = await app.insert_workflow(wf)
    await app.drain()
    status = await app.workflow_status(wid)
    assert status.steps == {"a": "completed", "b": "completed"}
    assert status.details["b"].result == "hello"
