"""The finished announcement (SPEC section 3): exactly once per workflow — one
workflow_completions row (the atomic claim), one ("baton","workflow","finished") event, one
on_workflow_finished callback per node — whoever finishes the last step, whether the worker or
the WorkflowHealth backstop, and even when two nodes ack the last two steps at the same instant."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import baton
import wf_nodes
from baton import read
from conftest import wait_for
from wf_nodes import query, scalar

FINISHED = ("baton", "workflow", "finished")
FAILED = ("baton", "workflow", "failed")
PAYLOAD_KEYS = {"workflow_id", "label", "status", "failed_steps", "counts"}


@pytest.fixture
def workers(app: baton.Baton) -> Any:
    class W:
        ok = app.worker(name="done.ok")(lambda job: {"ok": job.step})
        discard = app.worker(name="done.discard")(lambda job: baton.Discard("nope"))
        held = app.worker(name="done.held", queue="held")(lambda job: 1)

    return W


def _completions(url: str, wid: str) -> list[tuple[Any, ...]]:
    return query(
        url,
        "SELECT workflow_id, status, announced_by, announced_at FROM workflow_completions WHERE workflow_id = ?",
        [wid],
    )


async def test_completed_workflow_is_announced_exactly_once(app, workers, events):
    events.attach(FINISHED)
    finished: list[dict[str, Any]] = []
    app.on_workflow_finished(finished.append)
    wf = baton.Workflow(label="report")
    wf.add("a", workers.ok.new({}))
    wf.add("b", workers.ok.new({}), deps=["a"])
    wf.add("c", workers.ok.new({}), deps=["a"])
    wid = await app.insert_workflow(wf)
    assert _completions(app.url, wid) == []
    assert await app.drain() == {"completed": 3}

    assert finished == [
        {"workflow_id": wid, "label": "report", "status": "completed", "failed_steps": [], "counts": {"completed": 3}}
    ]
    assert set(finished[0]) == PAYLOAD_KEYS
    emitted = events.of(FINISHED)
    assert len(emitted) == 1
    measurements, metadata = emitted[0]
    assert measurements.pop("lag") >= 0  # ms from the last step's end to the event
    assert measurements == {"total_count": 3, "failed_count": 0}
    assert metadata["workflow_id"] == wid and metadata["status"] == "completed" and metadata["label"] == "report"

    rows = _completions(app.url, wid)
    assert len(rows) == 1
    _, status, announced_by, announced_at = rows[0]
    assert status == "completed"
    assert announced_by == app.node
    assert announced_at is not None
    st = await app.workflow_status(wid)
    assert st.finished and st.status == "completed"
    assert st.announced_by == app.node and st.announced_at is not None

    # The backstops find nothing to do: no second announcement, ever.
    health = baton.plugins.WorkflowHealth()
    result = await health.sweep(app)
    assert result["announced"] == []
    await baton.plugins.Lifeline().sweep(app)
    await health.sweep(app)
    assert len(finished) == 1
    assert len(events.of(FINISHED)) == 1
    assert len(_completions(app.url, wid)) == 1
    assert scalar(app.url, "SELECT count(*) FROM workflow_completions") == 1


async def test_failed_workflow_is_announced_once_with_its_failed_steps(app, workers, events):
    events.attach(FINISHED, FAILED)
    finished: list[dict[str, Any]] = []
    app.on_workflow_finished(finished.append)
    wf = baton.Workflow(label="fragile")
    wf.add("fetch", workers.discard.new({}))
    wf.add("clean", workers.ok.new({}), deps=["fetch"])
    wf.add("stats", workers.ok.new({}), deps=["clean"])
    wf.add("side", workers.ok.new({}))
    wid = await app.insert_workflow(wf)
    await app.drain()

    assert finished == [
        {
            "workflow_id": wid,
            "label": "fragile",
            "status": "failed",
            "failed_steps": ["clean", "fetch", "stats"],
            "counts": {"discarded": 1, "cancelled": 2, "completed": 1},
        }
    ]
    assert [{k: v for k, v in m.items() if k != "lag"} for m, _ in events.of(FINISHED)] == [
        {"total_count": 4, "failed_count": 3}
    ]
    rows = _completions(app.url, wid)
    assert len(rows) == 1 and rows[0][1] == "failed"
    st = await app.workflow_status(wid)
    assert st.finished and st.status == "failed" and st.failed_steps == ["clean", "fetch", "stats"]

    # WorkflowHealth reports the failure once, and never re-announces.
    health = baton.plugins.WorkflowHealth()
    first = await health.sweep(app)
    second = await health.sweep(app)
    assert first["announced"] == [] and second["announced"] == []
    assert first["failed_reported"] == [wid] and second["failed_reported"] == []
    failed = events.of(FAILED)
    assert len(failed) == 1
    measurements, metadata = failed[0]
    assert measurements == {"failed_count": 3, "total_count": 4}
    assert metadata["workflow_id"] == wid and metadata["workflow_label"] == "fragile"
    assert metadata["root_step"] == "fetch"
    assert "nope" in (metadata.get("error") or "")
    assert metadata["cancelled_steps"] == ["clean", "stats"]
    assert len(finished) == 1 and len(events.of(FINISHED)) == 1


async def test_a_finished_workflow_reopened_by_a_retry_reports_its_live_status_but_is_not_announced_again(
    app, workers, events
):
    """A retried step of a finished workflow: workflow_status said finished=True,
    status='failed' while the step was live. Now the workflow reads as running until every
    step is terminal again, then reports the new outcome; its finished event (and failure
    report) went out once and are not sent a second time."""
    events.attach(FINISHED, FAILED)
    finished: list[dict[str, Any]] = []
    app.on_workflow_finished(finished.append)
    fixed = {"a": False}

    @app.worker(name="done.flaky", max_attempts=1)
    def flaky(job: baton.Job) -> Any:
        if not fixed["a"]:
            raise RuntimeError("transient outage")
        return "A"

    wf = baton.Workflow(label="reopened")
    wf.add("a", flaky.new({}))
    wf.add("b", workers.ok.new({}), deps=["a"], ignore_discarded=True)
    wid = await app.insert_workflow(wf)
    await app.drain()
    st = await app.workflow_status(wid)
    assert st.steps == {"a": "discarded", "b": "completed"}
    assert st.finished and st.status == "failed"
    assert [e["status"] for e in finished] == ["failed"]
    assert (await baton.plugins.WorkflowHealth().sweep(app))["failed_reported"] == [wid]

    fixed["a"] = True
    retried = await app.retry_job(st.details["a"].job_id)
    assert retried is not None and retried.state == "available"
    st = await app.workflow_status(wid)
    assert st.steps == {"a": "available", "b": "completed"}
    assert not st.finished and st.status == "running"
    assert st.announced_at is not None, "the announcement that went out is still on record"
    # The dashboard and `baton workflows list` read the same status.
    detail = await app.engine.run(read.workflow_detail, wid)
    assert detail is not None and (detail["status"], detail["finished"]) == ("running", False)
    assert await _page_status(app, wid) == "running"

    assert await app.drain() == {"completed": 1}
    st = await app.workflow_status(wid)
    assert st.steps == {"a": "completed", "b": "completed"}
    assert st.finished and st.status == "completed", "the new outcome"
    detail = await app.engine.run(read.workflow_detail, wid)
    assert detail is not None and (detail["status"], detail["finished"]) == ("completed", True)
    assert await _page_status(app, wid) == "completed"
    # Exactly one announcement, ever: not again when the reopened workflow terminates.
    health = baton.plugins.WorkflowHealth()
    assert (await health.sweep(app))["announced"] == []
    assert [e["status"] for e in finished] == ["failed"]
    assert len(events.of(FINISHED)) == 1 and len(events.of(FAILED)) == 1
    assert [r[1] for r in _completions(app.url, wid)] == ["failed"]


async def _page_status(app: baton.Baton, wid: str) -> str | None:
    """The workflow's status in the dashboard's list, and the status filter agreeing with it."""
    page = await app.engine.run(read.workflows_page, None, "reopened", None, 10)
    (row,) = [w for w in page["workflows"] if w["id"] == wid]
    for status in ("running", "completed", "failed"):
        listed = await app.engine.run(read.workflows_page, status, "reopened", None, 10)
        assert (wid in [w["id"] for w in listed["workflows"]]) == (status == row["status"]), status
    return row["status"]


async def test_workflow_health_backstops_an_unannounced_workflow_once(app, workers, events):
    """A node killed between the last ack and the announcement: the rows say terminated, nobody
    announced. The health plugin announces it, exactly once."""
    events.attach(FINISHED)
    finished: list[dict[str, Any]] = []
    app.on_workflow_finished(finished.append)
    wf = baton.Workflow(label="orphan")
    wf.add("a", workers.ok.new({}))
    wf.add("b", workers.ok.new({}), deps=["a"])
    wid = await app.insert_workflow(wf)
    query(app.url, "UPDATE baton_jobs SET state = 'completed', completed_at = inserted_at WHERE workflow_id = ?", [wid])
    assert _completions(app.url, wid) == []

    health = baton.plugins.WorkflowHealth()
    result = await health.sweep(app)
    assert result["announced"] == [wid]
    assert finished == [
        {"workflow_id": wid, "label": "orphan", "status": "completed", "failed_steps": [], "counts": {"completed": 2}}
    ]
    await health.sweep(app)
    await baton.plugins.Lifeline().sweep(app)
    await health.sweep(app)
    assert len(finished) == 1
    assert len(events.of(FINISHED)) == 1
    rows = _completions(app.url, wid)
    assert len(rows) == 1 and rows[0][2] == app.node


async def test_deleted_step_counts_as_terminal_and_the_workflow_is_announced(app, workers, events):
    events.attach(FINISHED)
    finished: list[dict[str, Any]] = []
    app.on_workflow_finished(finished.append)
    wf = baton.Workflow(label="pruned-by-hand")
    wf.add("a", workers.ok.new({}))
    wf.add("gone", workers.held.new({}))
    wid = await app.insert_workflow(wf)
    assert await app.drain(queue="default") == {"completed": 1}
    gone = (await app.workflow_status(wid)).details["gone"].job_id
    query(app.url, "DELETE FROM baton_jobs WHERE id = ?", [gone])
    status = await app.workflow_status(wid)
    assert status.steps == {"a": "completed", "gone": "deleted"}
    assert finished == []

    await baton.plugins.WorkflowHealth().sweep(app)
    assert finished == [
        {
            "workflow_id": wid,
            "label": "pruned-by-hand",
            "status": "completed",
            "failed_steps": [],
            "counts": {"completed": 1, "deleted": 1},
        }
    ]
    await baton.plugins.WorkflowHealth().sweep(app)
    await baton.plugins.Lifeline().sweep(app)
    assert len(finished) == 1 and len(events.of(FINISHED)) == 1
    status = await app.workflow_status(wid)
    assert status.finished and status.status == "completed"


async def test_large_finished_payload_reaches_other_nodes_whole(make_app):
    """A payload over the NOTIFY size limit still reaches every node complete."""
    runner = make_app(queues={"default": 5}, node="big-runner", poll_interval=0.2)
    watcher = make_app(queues={"other": 1}, node="big-watcher", poll_interval=0.2)
    ok = runner.worker(name="done.big", queue="never")(lambda job: 1)
    watcher.register(ok)
    local: list[dict[str, Any]] = []
    remote: list[dict[str, Any]] = []
    runner.on_workflow_finished(local.append)
    watcher.on_workflow_finished(remote.append)
    names = [f"a-rather-long-step-name-{i:04d}" for i in range(400)]
    wf = baton.Workflow(label="big-failure")
    for name in names:
        wf.add(name, ok.new({}))
    async with runner, watcher:
        wid = await runner.insert_workflow(wf)
        assert await runner.cancel_all_jobs(workflow_id=wid) == 400
        await wait_for(lambda: remote, timeout=15)
        await asyncio.sleep(0.6)
    expected = {
        "workflow_id": wid,
        "label": "big-failure",
        "status": "failed",
        "failed_steps": sorted(names),
        "counts": {"cancelled": 400},
    }
    assert local == [expected]
    assert remote == [expected]


async def test_finished_notification_reaches_every_started_node_once(make_app, events):
    events.attach(FINISHED)
    runner = make_app(queues={"default": 5}, node="runner", poll_interval=0.2)
    watcher = make_app(queues={"other": 1}, node="watcher", poll_interval=0.2)
    ok = runner.worker(name="done.multi")(lambda job: 1)
    watcher.register(ok)
    got: dict[str, list[dict[str, Any]]] = {"runner": [], "watcher": []}
    runner.on_workflow_finished(got["runner"].append)
    watcher.on_workflow_finished(got["watcher"].append)

    async with runner, watcher:
        wf = baton.Workflow(label="everywhere")
        wf.add("a", ok.new({}))
        wf.add("b", ok.new({}), deps=["a"])
        wid = await watcher.insert_workflow(wf)
        await wait_for(lambda: got["runner"] and got["watcher"], timeout=15)
        await asyncio.sleep(0.6)  # room for a duplicate to show up
    expected = {
        "workflow_id": wid,
        "label": "everywhere",
        "status": "completed",
        "failed_steps": [],
        "counts": {"completed": 2},
    }
    assert got == {"runner": [expected], "watcher": [expected]}
    assert [md["node"] for _, md in events.of(FINISHED) if md["workflow_id"] == wid] == ["runner"]


async def test_async_finished_callback_and_unsubscribe(app, workers):
    got: list[str] = []
    seen = asyncio.Event()

    async def on_finished(event: dict[str, Any]) -> None:
        got.append(event["workflow_id"])
        seen.set()

    def broken(event: dict[str, Any]) -> None:
        raise RuntimeError("subscriber bug")

    app.on_workflow_finished(broken)  # a failing subscriber breaks nothing
    unsubscribe = app.on_workflow_finished(on_finished)
    wf = baton.Workflow()
    wf.add("a", workers.ok.new({}))
    wid = await app.insert_workflow(wf)
    await app.drain()
    await asyncio.wait_for(seen.wait(), 5)
    assert got == [wid]
    unsubscribe()
    wf2 = baton.Workflow()
    wf2.add("a", workers.ok.new({}))
    wid2 = await app.insert_workflow(wf2)
    await app.drain()
    await asyncio.sleep(0.05)
    assert got == [wid]
    assert (await app.workflow_status(wid2)).finished
    with pytest.raises(baton.ValidationError):
        app.on_workflow_finished("not callable")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- concurrent finish


RACE_WORKFLOWS = 50
RACE_WAVE = 10


@pytest.mark.slow
async def test_concurrent_finish_on_two_processes_announces_exactly_once(make_app, db_url, tmp_path):
    wf_nodes.create_side_tables(db_url)
    inserter = make_app()
    stop_file = tmp_path / "stop"
    tests_dir = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests_dir), os.environ.get("PYTHONPATH", "")])}
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    for role in ("left", "right"):
        log = open(tmp_path / f"{role}.log", "wb")  # noqa: SIM115
        logs.append(log)
        procs.append(
            subprocess.Popen(
                [sys.executable, str(tests_dir / "wf_nodes.py"), db_url, str(stop_file)],
                env={**env, "WF_ROLE": role},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )

    def output() -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(tmp_path.glob("*.log")))

    try:
        try:
            await wait_for(lambda: scalar(db_url, "SELECT count(*) FROM race_ready") == 2, timeout=30)
        except AssertionError:
            raise AssertionError(f"race nodes did not start:\n{output()}") from None
        pids = {p.pid for p in procs}
        wids: list[str] = []
        started = time.monotonic()
        for wave in range(0, RACE_WORKFLOWS, RACE_WAVE):
            batch = [await inserter.insert_workflow(wf_nodes.race_workflow(i)) for i in range(wave, wave + RACE_WAVE)]
            wids += batch
            done = len(wids)
            try:
                await wait_for(
                    lambda n=done: scalar(db_url, "SELECT count(*) FROM finished_events") >= 2 * n, timeout=60
                )
            except AssertionError:
                raise AssertionError(
                    f"wave {wave}: {scalar(db_url, 'SELECT count(*) FROM workflow_completions')} completions, "
                    f"{scalar(db_url, 'SELECT count(*) FROM finished_events')} finished events\n{output()}"
                ) from None
        elapsed = time.monotonic() - started
        await asyncio.sleep(1.0)  # room for any duplicate to show up
    finally:
        stop_file.touch()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    assert all(p.returncode == 0 for p in procs), output()

    # Both final steps of every workflow ran on different processes, side by side.
    barrier = query(db_url, "SELECT workflow_id, step, pid FROM race_barrier")
    by_wf: dict[str, dict[str, int]] = {}
    for wid, step, pid in barrier:
        by_wf.setdefault(wid, {})[step] = pid
    assert set(by_wf) == set(wids)
    for wid in wids:
        assert set(by_wf[wid]) == {"a", "b"}
        assert by_wf[wid]["a"] != by_wf[wid]["b"]
        assert set(by_wf[wid].values()) == pids

    # Exactly one completion row per workflow, claimed by one of the two nodes.
    completions = query(db_url, "SELECT workflow_id, status, announced_by FROM workflow_completions")
    assert sorted(r[0] for r in completions) == sorted(wids)
    assert {r[1] for r in completions} == {"completed"}
    announcers = Counter(r[2].split("-")[1] for r in completions)
    assert set(announcers) <= {"left", "right"}

    # Each node got the finished callback exactly once per workflow.
    events = Counter(
        (wid, pid) for wid, pid, _ in query(db_url, "SELECT workflow_id, pid, status FROM finished_events")
    )
    assert set(events) == {(wid, pid) for wid in wids for pid in pids}, output()
    duplicated = {k: n for k, n in events.items() if n != 1}
    assert duplicated == {}, f"finished callback delivered more than once: {duplicated}"

    # The telemetry event was emitted by exactly one process per workflow: the announcer.
    telemetry = query(db_url, "SELECT workflow_id, pid FROM finished_telemetry")
    per_wf = Counter(wid for wid, _ in telemetry)
    assert per_wf == dict.fromkeys(wids, 1), f"telemetry per workflow: {per_wf}"
    node_of_pid = {p.pid: role for p, role in zip(procs, ("left", "right"), strict=True)}
    announced_by = {r[0]: r[2].split("-")[1] for r in completions}
    for wid, pid in telemetry:
        assert node_of_pid[pid] == announced_by[wid]
    assert elapsed < 120
