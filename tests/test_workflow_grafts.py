"""Dynamic workflows (SPEC 9.1, issue #15): a graft step's worker returns `baton.Graft(sub)` or
`baton.Graft.map(worker, items)`; its ack inserts the grafted steps (once, in the ack's own
transaction), the graft's dependents wait for every grafted step and read their results, a
failed grafted step cascades under the ignore_* rules, grafts nest, and status, the tree and
the Mermaid/DOT drawing show grafted steps under their graft. Every test runs on both engines."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

import baton
from baton.store import transitions
from baton.store.jobs import Ack
from baton.terminal import workflow_tree
from conftest import wait_for
from wf_nodes import is_postgres, scalar, waits_for_a_lock


def _tree_text(status: baton.WorkflowStatus) -> str:
    from rich.console import Console

    console = Console(width=200, record=True, color_system=None)
    console.print(workflow_tree(status))
    return console.export_text()


def _ingest(app: baton.Baton, order: list[str], n: int = 3, with_report: bool = True) -> baton.Workflow:
    @app.worker(name="g.list")
    def list_files(job: baton.Job) -> Any:
        order.append(job.step or "")
        return [f"f{i}" for i in range(n)]

    @app.worker(name="g.resize")
    def resize(job: baton.Job) -> Any:
        order.append(job.step or "")
        return {"resized": job.args["file"]}

    @app.worker(name="g.expand")
    def expand(job: baton.Job) -> Any:
        order.append(job.step or "")
        files = job.upstream("list")
        return baton.Graft.map(resize, [{"file": f} for f in files])

    @app.worker(name="g.report")
    def report(job: baton.Job) -> Any:
        order.append(job.step or "")
        return job.upstream("process")

    wf = baton.Workflow(label="ingest")
    wf.add("list", list_files.new({}))
    wf.add_graft("process", expand.new({}), deps=["list"])
    if with_report:
        wf.add("report", report.new({}), deps=["process"])
    return wf


async def test_map_grafts_one_step_per_item_and_dependents_read_their_results(app):
    order: list[str] = []
    finished: list[dict[str, Any]] = []
    app.on_workflow_finished(finished.append)
    wid = await app.insert_workflow(_ingest(app, order))
    await app.drain()

    status = await app.workflow_status(wid)
    assert status.steps == {
        "list": "completed",
        "process": "completed",
        "process.0": "completed",
        "process.1": "completed",
        "process.2": "completed",
        "report": "completed",
    }
    assert status.finished and status.status == "completed"
    # report ran after every grafted step and read {grafted step name: result}
    assert order.index("report") > max(order.index(f"process.{i}") for i in range(3))
    assert status.details["report"].result == {f"process.{i}": {"resized": f"f{i}"} for i in range(3)}
    assert status.details["process"].graft is True
    assert {status.details[f"process.{i}"].parent for i in range(3)} == {"process"}
    await wait_for(lambda: len(finished) >= 1)
    assert [f["workflow_id"] for f in finished] == [wid]
    assert finished[0]["counts"] == {"completed": 6}


async def test_dependents_wait_until_the_last_grafted_step_is_terminal(app):
    order: list[str] = []
    wid = await app.insert_workflow(_ingest(app, order, n=2))
    # Run list, then the graft; the grafted steps are inserted with the graft's ack.
    for _ in range(2):
        [job] = await app.engine.run(transitions.fetch_jobs, "default", app.node, "u-1", 1)
        ack = Ack(job, "completed")
        if job.step == "list":
            ack.result_json = '["a", "b"]'
        else:
            assert job._graft
            ack.graft = baton.Graft.map("g.resize", [{"file": "a"}, {"file": "b"}]).plan("process")
        await app.engine.run(transitions.ack_jobs, [ack], app.node, app.instance)
    status = await app.workflow_status(wid)
    assert status.steps["process.0"] == "available" and status.steps["process.1"] == "available"
    assert status.steps["report"] == "suspended"
    assert "process" in status.waiting["report"]

    # One grafted step finishes: report still waits for the other.
    [job] = await app.engine.run(transitions.fetch_jobs, "default", app.node, "u-1", 1)
    await app.engine.run(transitions.ack_jobs, [Ack(job, "completed")], app.node, app.instance)
    assert (await app.workflow_status(wid)).steps["report"] == "suspended"
    [job] = await app.engine.run(transitions.fetch_jobs, "default", app.node, "u-1", 1)
    await app.engine.run(transitions.ack_jobs, [Ack(job, "completed")], app.node, app.instance)
    assert (await app.workflow_status(wid)).steps["report"] == "available"


async def test_a_retried_ack_grafts_once(app):
    order: list[str] = []
    wid = await app.insert_workflow(_ingest(app, order, n=2))
    [job] = await app.engine.run(transitions.fetch_jobs, "default", app.node, "u-1", 1)
    await app.engine.run(transitions.ack_jobs, [Ack(job, "completed", result_json='["a","b"]')], app.node, "")
    [graft] = await app.engine.run(transitions.fetch_jobs, "default", app.node, "u-1", 1)
    plan = baton.Graft.map("g.resize", [{"file": "a"}, {"file": "b"}]).plan("process")
    first = await app.engine.run(transitions.ack_jobs, [Ack(graft, "completed", graft=plan)], app.node, "")
    assert [a.job.id for a in first.acked] == [graft.id]
    again = await app.engine.run(transitions.ack_jobs, [Ack(graft, "completed", graft=plan)], app.node, "")
    assert again.acked == [] and [d.reason for d in again.dropped] == ["finished"]
    status = await app.workflow_status(wid)
    assert sorted(status.steps) == ["list", "process", "process.0", "process.1", "report"]
    assert scalar(app.url, "SELECT count(*) FROM workflow_nodes WHERE workflow_id = ?", [wid]) == 5
    # A manual retry of the completed graft step re-runs it but grafts nothing more.
    assert await app.retry_job(graft.id) is not None
    await app.drain()
    status = await app.workflow_status(wid)
    assert sorted(status.steps) == ["list", "process", "process.0", "process.1", "report"]
    assert status.status == "completed"


async def test_a_sub_workflow_graft_keeps_its_deps_and_nests(app):
    order: list[str] = []

    @app.worker(name="n.step")
    def step(job: baton.Job) -> Any:
        order.append(job.step or "")
        return job.step

    @app.worker(name="n.inner")
    def inner(job: baton.Job) -> Any:
        order.append(job.step or "")
        return baton.Graft.map(step, [{}, {}])

    @app.worker(name="n.outer")
    def outer(job: baton.Job) -> Any:
        order.append(job.step or "")
        sub = baton.Workflow()
        sub.add("a", step.new({}))
        sub.add("b", step.new({}), deps=["a"])
        sub.add_graft("nested", inner.new({}), deps=["a"])
        return baton.Graft(sub)

    @app.worker(name="n.report")
    def report(job: baton.Job) -> Any:
        order.append(job.step or "")
        return job.upstream("process")

    wf = baton.Workflow()
    wf.add_graft("process", outer.new({}))
    wf.add("report", report.new({}), deps=["process"])
    wid = await app.insert_workflow(wf)
    await app.drain()
    status = await app.workflow_status(wid)
    assert status.status == "completed"
    assert set(status.steps) == {
        "process", "process.a", "process.b", "process.nested", "process.nested.0", "process.nested.1", "report"
    }  # fmt: skip
    assert status.details["process.b"].deps == ["process.a"]
    assert order.index("process.b") > order.index("process.a")
    assert order.index("report") == len(order) - 1
    assert status.details["process.nested.0"].parent == "process.nested"
    # Grafted steps by full name; a graft step inside stands for its own grafted steps.
    assert status.details["report"].result == {
        "process.a": "process.a",
        "process.b": "process.b",
        "process.nested.0": "process.nested.0",
        "process.nested.1": "process.nested.1",
    }
    mermaid = status.to_mermaid()  # nested grafts draw nested subgraphs, edges kept
    assert 'subgraph n_process_nested__grafted ["nested (grafted)"]' in mermaid
    assert "n_process_a --> n_process_b" in mermaid and "n_process_nested --> n_process_nested_0" in mermaid
    assert "n_process_nested_1 --> n_report" in mermaid and "n_process_b --> n_report" in mermaid


@pytest.mark.parametrize("ignore", [False, True])
async def test_a_failed_grafted_step_cascades_under_the_ignore_rules(app, ignore):
    @app.worker(name="c.fail", max_attempts=1)
    def fail(job: baton.Job) -> Any:
        if job.args["n"] == 1:
            raise RuntimeError("boom")
        return job.args["n"]

    @app.worker(name="c.expand")
    def expand(job: baton.Job) -> Any:
        return baton.Graft.map(fail, [{"n": 0}, {"n": 1}, {"n": 2}])

    ran: list[str] = []
    report = app.worker(name="c.report")(lambda job: ran.append("report"))
    wf = baton.Workflow()
    wf.add_graft("process", expand.new({}))
    wf.add("report", report.new({}), deps=["process"], ignore_discarded=ignore)
    wid = await app.insert_workflow(wf)
    await app.drain()
    status = await app.workflow_status(wid)
    assert status.steps["process.1"] == "discarded"
    assert status.status == "failed" and status.finished
    if ignore:
        assert status.steps["report"] == "completed" and ran == ["report"]
    else:
        assert status.steps["report"] == "cancelled" and ran == []
        assert status.details["report"].reason == "dep_discarded"


async def test_a_graft_worker_returning_anything_else_fails_clearly(app):
    @app.worker(name="x.bad", max_attempts=1)
    def bad(job: baton.Job) -> Any:
        return {"not": "a graft"}

    @app.worker(name="x.plain", max_attempts=1)
    def plain(job: baton.Job) -> Any:
        return baton.Graft.map("x.bad", [{}])

    wf = baton.Workflow()
    wf.add_graft("g", bad.new({}))
    wf.add("p", plain.new({}))
    wid = await app.insert_workflow(wf)
    await app.drain()
    status = await app.workflow_status(wid)
    assert status.steps == {"g": "discarded", "p": "discarded"}
    assert "graft step 'g' must return baton.Graft" in (status.details["g"].last_error or "")
    assert "is not a graft step; add it with wf.add_graft" in (status.details["p"].last_error or "")


async def test_grafting_jobs_of_an_unknown_worker_fails_the_attempt(app):
    @app.worker(name="u.expand", max_attempts=1)
    def expand(job: baton.Job) -> Any:
        return baton.Graft.map("nowhere.to_be_found", [{}])

    wf = baton.Workflow()
    wf.add_graft("g", expand.new({}))
    wid = await app.insert_workflow(wf)
    await app.drain()
    status = await app.workflow_status(wid)
    assert status.steps == {"g": "discarded"}
    assert "unknown worker 'nowhere.to_be_found'" in (status.details["g"].last_error or "")


async def test_an_empty_map_releases_the_dependents(app):
    expand = app.worker(name="e.expand")(lambda job: baton.Graft.map("e.expand", []))
    report = app.worker(name="e.report")(lambda job: job.upstream("g"))
    wf = baton.Workflow()
    wf.add_graft("g", expand.new({}))
    wf.add("r", report.new({}), deps=["g"])
    wid = await app.insert_workflow(wf)
    await app.drain()
    status = await app.workflow_status(wid)
    assert status.steps == {"g": "completed", "r": "completed"} and status.details["r"].result == {}


async def test_append_workflow_after_a_graft_waits_for_the_grafted_steps(app):
    order: list[str] = []
    wf = _ingest(app, order, n=2)
    wid = await app.insert_workflow(wf)
    for _ in range(2):  # list, then the graft
        [job] = await app.engine.run(transitions.fetch_jobs, "default", app.node, "u-1", 1)
        ack = Ack(job, "completed", result_json='["a","b"]')
        if job._graft:
            ack.graft = baton.Graft.map("g.resize", [{"file": "a"}, {"file": "b"}]).plan("process")
        await app.engine.run(transitions.ack_jobs, [ack], app.node, "")
    late = baton.Workflow()
    late.add("late", app.worker(name="g.late")(lambda job: job.upstream("process")).new({}), deps=["process"])
    await app.append_workflow(wid, late)
    status = await app.workflow_status(wid)
    assert status.steps["late"] == "suspended" and status.details["late"].pending == 2
    await app.drain()
    status = await app.workflow_status(wid)
    assert status.status == "completed"
    assert set(status.details["late"].result) == {"process.0", "process.1"}


@pytest.mark.parametrize("dependent", [True, False], ids=["with-dependent", "graft-last"])
async def test_cancelling_a_workflow_while_a_graft_is_acked_cancels_the_grafted_steps(app, db_url, dependent):
    """PostgreSQL: cancel_all_jobs(workflow_id=) waits for the graft step's row, which the
    ack's transaction holds; the steps that ack inserts were not in the cancel's first snapshot
    and must be cancelled all the same (SQLite runs one writer at a time: nothing to race)."""
    if not is_postgres(db_url):
        pytest.skip("SQLite serialises the ack and the cancel")
    order: list[str] = []
    wf = _ingest(app, order, n=2, with_report=dependent)  # without: the graft is the last live step
    wid = await app.insert_workflow(wf)
    [job] = await app.engine.run(transitions.fetch_jobs, "default", app.node, "u-1", 1)
    await app.engine.run(transitions.ack_jobs, [Ack(job, "completed", result_json='["a","b"]')], app.node, "")
    [graft] = await app.engine.run(transitions.fetch_jobs, "default", app.node, "u-1", 1)
    plan = baton.Graft.map("g.resize", [{"file": "a"}, {"file": "b"}]).plan("process")
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        async with conn.transaction():  # the graft's ack, held open
            acked = await app.engine.run_on(
                conn, transitions.ack_jobs, [Ack(graft, "completed", graft=plan)], app.node, ""
            )
            assert [a.job.id for a in acked.acked] == [graft.id]
            cancel = asyncio.create_task(app.cancel_all_jobs(workflow_id=wid))
            await wait_for(lambda: waits_for_a_lock(db_url))  # on the graft step's row
            assert not cancel.done()
        cancelled = await asyncio.wait_for(cancel, 10)
    status = await app.workflow_status(wid)
    expected = {"list": "completed", "process": "completed", "process.0": "cancelled", "process.1": "cancelled"}
    if dependent:
        expected["report"] = "cancelled"
    assert status.steps == expected
    assert cancelled == len(expected) - 2
    assert status.finished and status.status == "failed"
    assert await app.drain() == {}


async def test_status_tree_and_drawings_show_grafted_steps_under_their_graft(app):
    order: list[str] = []
    wid = await app.insert_workflow(_ingest(app, order, n=2))
    await app.drain()
    status = await app.workflow_status(wid)
    text = _tree_text(status)
    lines = text.splitlines()
    graft_line = next(i for i, line in enumerate(lines) if "process  completed" in line)
    grafted = [i for i, line in enumerate(lines) if "process.0" in line or "process.1" in line]
    indent = lambda line: len(line) - len(line.lstrip(" │├└─"))  # noqa: E731
    assert grafted and all(i > graft_line and indent(lines[i]) > indent(lines[graft_line]) for i in grafted)
    mermaid = status.to_mermaid()
    assert 'subgraph n_process__grafted ["process (grafted)"]' in mermaid
    assert "n_process --> n_process_0" in mermaid
    assert "n_process_1 --> n_report" in mermaid
    dot = status.to_dot()
    assert "subgraph cluster_n_process__grafted" in dot and "n_process_0 -> n_report;" in dot
    # Before it ran, the builder draws the graft step as one (hexagon) node.
    assert 'n_process{{"process' in _ingest(app, []).to_mermaid()


@pytest.mark.parametrize("ignore_deleted", [False, True])
async def test_workflow_health_heals_a_graft_whose_grafted_step_was_deleted(app, ignore_deleted):
    from baton.plugins import WorkflowHealth
    from wf_nodes import query

    expand = app.worker(name="h.expand")(lambda job: baton.Graft.map("h.item", [{}, {}], queue="parked"))
    app.worker(name="h.item")(lambda job: None)
    app.worker(name="h.report")(lambda job: sorted(job.upstream("g")))
    wf = baton.Workflow()
    wf.add_graft("g", expand.new({}))
    wf.add("r", app.new("h.report", {}), deps=["g"], ignore_deleted=ignore_deleted)
    wid = await app.insert_workflow(wf)
    await app.drain("default")  # the graft runs; its grafted steps wait in the unserved queue
    status = await app.workflow_status(wid)
    assert status.steps == {"g": "completed", "g.0": "available", "g.1": "available", "r": "suspended"}
    query(app.url, "DELETE FROM baton_jobs WHERE id = ?", [status.details["g.0"].job_id])
    await app.drain("parked")  # g.1 completes; g.0 is gone and never will
    assert (await app.workflow_status(wid)).steps["r"] == "suspended"
    await WorkflowHealth().sweep(app)
    await app.drain()
    status = await app.workflow_status(wid)
    assert status.finished
    if ignore_deleted:
        assert status.steps["r"] == "completed" and status.details["r"].result == ["g.0", "g.1"]  # g.0: None
    else:
        assert status.steps["r"] == "cancelled" and status.status == "failed"


async def test_names_under_a_graft_step_are_reserved_for_its_grafted_steps(app):
    step = app.worker(name="r.step")(lambda job: None)
    wf = baton.Workflow()
    wf.add_graft("process", step.new({}))
    wf.add("process.0", step.new({}))
    with pytest.raises(baton.WorkflowError, match="reserved for the steps it grafts"):
        wf.plan()
    sub = baton.Workflow()
    sub.add_graft("inner", step.new({}))
    sub.add("inner.x", step.new({}))
    with pytest.raises(baton.WorkflowError, match="reserved"):
        baton.Graft(sub).plan("process")
    ok = baton.Workflow()
    ok.add_graft("process", step.new({}))
    wid = await app.insert_workflow(ok)
    late = baton.Workflow()
    late.add("process.7", step.new({}))
    with pytest.raises(baton.WorkflowError, match="reserved"):
        await app.append_workflow(wid, late)


async def test_a_graft_inside_a_sub_workflow_holds_the_sub_workflows_dependents(app):
    order: list[str] = []

    @app.worker(name="s.step")
    def step(job: baton.Job) -> Any:
        order.append(job.step or "")
        return job.step

    expand = app.worker(name="s.expand")(lambda job: baton.Graft.map(step, [{}, {}]))
    final = app.worker(name="s.final")(lambda job: (order.append("final"), job.upstream("sub"))[1])
    inner = baton.Workflow()
    inner.add("a", step.new({}))
    inner.add_graft("g", expand.new({}), deps=["a"])
    wf = baton.Workflow()
    wf.add_workflow("sub", inner)
    wf.add("final", final.new({}), deps=["sub"])
    wid = await app.insert_workflow(wf)
    await app.drain()
    status = await app.workflow_status(wid)
    assert status.status == "completed"
    assert set(status.steps) == {"sub.a", "sub.g", "sub.g.0", "sub.g.1", "final"}
    assert order[-1] == "final"
    assert status.details["final"].result == {"a": "sub.a", "g.0": "sub.g.0", "g.1": "sub.g.1"}


async def test_step_events_of_grafted_steps_name_their_graft(make_app):
    import asyncio

    app = make_app(queues={"default": 5}, plugins=[baton.plugins.Stager(interval=0.1)], poll_interval=0.2)
    item = app.worker(name="ev.item")(lambda job: 1)
    expand = app.worker(name="ev.expand")(lambda job: baton.Graft.map(item, [{}, {}]))
    got: list[dict[str, Any]] = []
    finished = asyncio.Event()
    app.on_workflow_finished(lambda e: finished.set())
    async with app:
        await app.pause_queue("default", local=True)
        wf = baton.Workflow()
        wf.add_graft("g", expand.new({}))
        wf.add("r", item.new({}), deps=["g"])
        wid = await app.insert_workflow(wf)
        app.subscribe_workflow(wid, got.append)
        await app.resume_queue("default", local=True)
        await asyncio.wait_for(finished.wait(), 20)
        await wait_for(lambda: sum(1 for e in got if e.get("event") == "completed") == 4)
    by_step: dict[str, list[tuple[str, str | None]]] = {}
    for e in got:
        by_step.setdefault(e["step"], []).append((e["event"], e.get("parent")))
    assert by_step == {
        "g": [("executing", None), ("completed", None)],
        "g.0": [("executing", "g"), ("completed", "g")],
        "g.1": [("executing", "g"), ("completed", "g")],
        "r": [("executing", None), ("completed", None)],
    }
