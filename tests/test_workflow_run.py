"""Running workflows (SPEC section 3): roots start, dependents wait `suspended` and are released
by the ack of their last dependency in the same transaction; steps read upstream results, log
debug lines and leave per-step stats; workflows insert from sync code and inside the caller's
transaction; and large graphs (10 000 steps, a 500-step chain) run to the end."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from typing import Any

import psycopg
import pytest

import baton
from baton.store import transitions as store
from baton.store import workflows as wfstore
from conftest import wait_for
from wf_nodes import is_postgres, query, scalar, sqlite_path


def _record(order: list[str]) -> Any:
    def step(job: baton.Job) -> Any:
        order.append(job.step or "")
        return {"step": job.step}

    return step


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _assert_topological(order: list[str], wf_deps: dict[str, list[str]]) -> None:
    position = {name: i for i, name in enumerate(order)}
    assert sorted(order) == sorted(wf_deps), f"each step runs exactly once: {order}"
    for name, deps in wf_deps.items():
        for dep in deps:
            assert position[dep] < position[name], f"{name} ran before its dependency {dep}: {order}"


# --------------------------------------------------------------------------- insert


async def test_roots_are_available_and_dependents_suspended_at_insert(app):
    step = app.worker(name="run.step")(lambda job: None)
    wf = baton.Workflow(label="nightly-report")
    wf.add("fetch", step.new({"day": 1}))
    wf.add("extra", step.new({}))
    wf.add("later", step.new({}, schedule_in=3600))
    wf.add("clean", step.new({}), deps=["fetch"])
    wf.add("stats", step.new({}), deps=["clean"])
    wf.add("render", step.new({}), deps=["clean", "stats", "extra"])
    wid = await app.insert_workflow(wf)

    status = await app.workflow_status(wid)
    assert status.workflow_id == wid
    assert status.label == "nightly-report"
    assert status.steps == {
        "fetch": "available",
        "extra": "available",
        "later": "scheduled",
        "clean": "suspended",
        "stats": "suspended",
        "render": "suspended",
    }
    assert status.finished is False and status.status == "running"
    jobs = await app.list_jobs(workflow_id=wid)
    assert len(jobs) == 6 and all(j.workflow_id == wid for j in jobs)

    # The contract columns of workflow_nodes.
    rows = query(
        app.url, "SELECT name, job_id, deps, label, workflow_id FROM workflow_nodes WHERE workflow_id = ?", [wid]
    )
    nodes = {r[0]: r for r in rows}
    assert set(nodes) == set(status.steps)
    by_id = {j.id: j for j in jobs}
    for name, (_, job_id, deps, label, workflow_id) in nodes.items():
        assert by_id[job_id].workflow_id == workflow_id == wid
        assert label == "nightly-report"
        assert list(_loads(deps)) == list(wf.steps[name].deps)
    assert status.details["render"].job_id == nodes["render"][1]


async def test_insert_workflow_is_all_or_nothing(app, monkeypatch):
    step = app.worker(name="run.atomic")(lambda job: None)
    wf = baton.Workflow(label="atomic")
    wf.add("a", step.new({}))
    wf.add("b", step.new({}), deps=["a"])

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk full while writing workflow_nodes")

    monkeypatch.setattr(wfstore, "_insert_rows", broken)  # the nodes, after the jobs
    with pytest.raises(RuntimeError, match="disk full"):
        await app.insert_workflow(wf)
    assert await app.count_jobs() == {}
    assert scalar(app.url, "SELECT count(*) FROM baton_workflows") == 0
    monkeypatch.undo()
    wid = await app.insert_workflow(wf)
    assert (await app.workflow_status(wid)).steps == {"a": "available", "b": "suspended"}


async def test_ack_releases_dependents_in_the_same_transaction(app, monkeypatch):
    order: list[str] = []
    step = app.worker(name="run.order")(_record(order))
    wf = baton.Workflow(label="diamond")
    wf.add("root", step.new({}))
    wf.add("b", step.new({}), deps=["root"])
    wf.add("c", step.new({}), deps=["root"])
    wf.add("d", step.new({}), deps=["b", "c"])
    wid = await app.insert_workflow(wf)

    names = {job_id: name for name, job_id in query(app.url, "SELECT name, job_id FROM workflow_nodes")}
    # Look at the states from inside each ack transaction, just before it commits.
    snapshots: list[dict[str, str]] = []
    ack_jobs = store.ack_jobs

    async def spying_ack(conn: Any, acks: Any, node: str, origin: str = "") -> Any:
        result = await ack_jobs(conn, acks, node, origin)
        rows = await conn.fetch(
            "list_jobs",
            {"ids": None, "queue": None, "worker": None, "states": None, "workflow_id": wid, "limit": 100},
        )
        snapshots.append({names[r["id"]]: r["state"] for r in rows})
        return result

    monkeypatch.setattr(store, "ack_jobs", spying_ack)
    counts = await app.drain()
    assert counts == {"completed": 4}
    # The ack of root already made b and c available (and left d waiting on both).
    assert snapshots[0]["root"] == "completed"
    assert snapshots[0]["b"] == snapshots[0]["c"] == "available"
    assert snapshots[0]["d"] == "suspended"
    _assert_topological(order, {"root": [], "b": ["root"], "c": ["root"], "d": ["b", "c"]})
    status = await app.workflow_status(wid)
    assert set(status.steps.values()) == {"completed"}
    assert status.finished and status.status == "completed"
    # Released by the ack, never polled or snoozed.
    for job in await app.list_jobs(workflow_id=wid):
        assert "snoozed" not in job.meta and "repair" not in job.meta
        assert job.attempt == 1


async def test_complex_graph_runs_every_step_after_all_its_deps(app):
    order: list[str] = []
    step = app.worker(name="run.graph")(_record(order))
    deps = {
        "a": [],
        "b": [],
        "c": ["a"],
        "d": ["a", "b"],
        "e": ["c", "d"],
        "f": ["b"],
        "g": ["e", "f", "a"],
        "h": ["g"],
        "i": ["c"],
    }
    wf = baton.Workflow(label="graph")
    for name in reversed(list(deps)):  # declaration order does not matter
        wf.add(name, step.new({}), deps=deps[name])
    wid = await app.insert_workflow(wf)
    assert await app.drain() == {"completed": len(deps)}
    _assert_topological(order, deps)
    assert (await app.workflow_status(wid)).counts == {"completed": len(deps)}


async def test_scheduled_dependent_is_released_to_scheduled_not_available(app):
    step = app.worker(name="run.sched")(lambda job: 1)
    wf = baton.Workflow()
    wf.add("now", step.new({}))
    wf.add("later", step.new({}, schedule_in=3600), deps=["now"])
    wid = await app.insert_workflow(wf)
    assert await app.drain() == {"completed": 1}
    status = await app.workflow_status(wid)
    assert status.steps == {"now": "completed", "later": "scheduled"}


# --------------------------------------------------------------------------- upstream


async def test_upstream_and_upstream_all_give_recorded_results(app):
    seen: dict[str, Any] = {}

    @app.worker(name="run.fetch")
    def fetch(job: baton.Job) -> Any:
        return {"rows": [1, 2, 3], "day": job.args["day"]}

    @app.worker(name="run.count")
    async def count(job: baton.Job) -> int:
        return len(job.upstream("fetch")["rows"])

    @app.worker(name="run.nothing")
    def nothing(job: baton.Job) -> None:
        return None

    @app.worker(name="run.render")
    def render(job: baton.Job) -> str:
        seen["fetch"] = job.upstream("fetch")
        seen["count"] = job.upstream("count")
        seen["nothing"] = job.upstream("nothing")
        seen["all"] = job.upstream_all()
        return {"ok": True}

    wf = baton.Workflow(label="upstream")
    wf.add("fetch", fetch.new({"day": "2024-01-01"}))
    wf.add("count", count.new({}), deps=["fetch"])
    wf.add("nothing", nothing.new({}))
    wf.add("render", render.new({}), deps=["fetch", "count", "nothing"])
    wid = await app.insert_workflow(wf)
    assert await app.drain() == {"completed": 4}
    assert seen["fetch"] == {"rows": [1, 2, 3], "day": "2024-01-01"}
    assert seen["count"] == 3
    assert seen["nothing"] is None
    assert seen["all"] == {"fetch": {"rows": [1, 2, 3], "day": "2024-01-01"}, "count": 3, "nothing": None}
    status = await app.workflow_status(wid)
    assert status.details["count"].result == 3
    assert status.details["count"].recorded is True


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(1.5, id="float"),
        pytest.param([1, "x", None], id="list"),
        pytest.param({"nested": {"a": [True, False]}}, id="dict"),
        pytest.param(True, id="true"),
        pytest.param("hello", id="string"),
        pytest.param("42", id="numeric-string"),
    ],
)
async def test_upstream_round_trips_every_json_value(app, value):
    got: list[Any] = []
    src = app.worker(name="run.src")(lambda job: job.args["v"])

    @app.worker(name="run.sink")
    def sink(job: baton.Job) -> None:
        got.append(job.upstream("src"))

    wf = baton.Workflow()
    wf.add("src", src.new({"v": value}))
    wf.add("sink", sink.new({}), deps=["src"])
    wid = await app.insert_workflow(wf)
    await asyncio.wait_for(app.drain(), 20)
    assert got == [value]
    assert type(got[0]) is type(value)
    assert (await app.workflow_status(wid)).details["src"].result == value


async def test_upstream_of_a_sub_workflow_gives_its_steps_results_by_inner_name(app):
    seen: dict[str, Any] = {}
    value = app.worker(name="run.value")(lambda job: job.args["v"])

    @app.worker(name="run.collect")
    def collect(job: baton.Job) -> int:
        seen["report"] = job.upstream("report")
        seen["prep"] = job.upstream("prep")
        seen["all"] = job.upstream_all()
        return 0

    report = baton.Workflow(label="report")
    report.add("x", value.new({"v": 10}))
    report.add("y", value.new({"v": 20}), deps=["x"])
    report.add("z", value.new({"v": {"k": 30}}))
    wf = baton.Workflow(label="outer")
    wf.add("prep", value.new({"v": 1}))
    wf.add_workflow("report", report, deps=["prep"])
    wf.add("collect", collect.new({}), deps=["prep", "report"])
    wid = await app.insert_workflow(wf)

    status = await app.workflow_status(wid)
    # Sub-workflow steps are stored under prefixed names; its roots wait for the outer deps.
    assert status.steps == {
        "prep": "available",
        "report.x": "suspended",
        "report.y": "suspended",
        "report.z": "suspended",
        "collect": "suspended",
    }
    assert await app.drain() == {"completed": 5}
    assert seen["prep"] == 1
    assert seen["report"] == {"x": 10, "y": 20, "z": {"k": 30}}
    assert seen["all"] == {"prep": 1, "report": {"x": 10, "y": 20, "z": {"k": 30}}}


async def test_inner_step_of_a_sub_workflow_sees_its_inner_deps(app):
    seen: dict[str, Any] = {}
    value = app.worker(name="run.v2")(lambda job: job.args["v"])

    @app.worker(name="run.inner")
    def inner(job: baton.Job) -> int:
        seen["step"] = job.step
        seen["all"] = job.upstream_all()
        return 2

    sub = baton.Workflow()
    sub.add("x", value.new({"v": 7}))
    sub.add("y", inner.new({}), deps=["x"])
    wf = baton.Workflow()
    wf.add("pre", value.new({"v": 1}))
    wf.add_workflow("s", sub, deps=["pre"])
    await app.insert_workflow(wf)
    assert await app.drain() == {"completed": 3}
    assert seen["step"] == "s.y"
    assert seen["all"] == {"s.x": 7}


async def test_upstream_of_a_step_that_is_not_a_dependency_raises(app):
    outcome: dict[str, Any] = {}
    value = app.worker(name="run.v3")(lambda job: job.args["v"])

    @app.worker(name="run.curious")
    def curious(job: baton.Job) -> int:
        for name in ("sibling", "curious", "nope"):
            try:
                job.upstream(name)
            except baton.ValidationError as exc:
                outcome[name] = str(exc)
        return 1

    wf = baton.Workflow()
    wf.add("dep", value.new({"v": 1}))
    wf.add("sibling", value.new({"v": 2}))
    wf.add("curious", curious.new({}), deps=["dep"])
    await app.insert_workflow(wf)
    assert await app.drain() == {"completed": 3}
    assert set(outcome) == {"sibling", "curious", "nope"}
    assert "'sibling'" in outcome["sibling"] and "not a dependency" in outcome["sibling"]
    assert "'dep'" in outcome["sibling"]  # lists the real deps


async def test_upstream_outside_a_workflow_raises(app):
    errors: list[str] = []

    @app.worker(name="run.plain")
    def plain(job: baton.Job) -> None:
        for call in (lambda: job.upstream("x"), job.upstream_all):
            try:
                call()
            except baton.ValidationError as exc:
                errors.append(str(exc))

    await app.insert(plain.new({}))
    assert await app.drain() == {"completed": 1}
    assert len(errors) == 2 and all("workflow" in e for e in errors)


async def test_step_returning_a_non_json_value_errors_clearly(app):
    bad = app.worker(name="run.bad", max_attempts=1)(lambda job: {"when": object()})
    after = app.worker(name="run.after")(lambda job: 1)
    unrecorded = app.worker(name="run.unrecorded", record=False)(lambda job: object())
    wf = baton.Workflow()
    wf.add("bad", bad.new({}))
    wf.add("after", after.new({}), deps=["bad"])
    wf.add("unrecorded", unrecorded.new({}))
    wid = await app.insert_workflow(wf)
    assert await app.drain() == {"discarded": 1, "completed": 1}
    status = await app.workflow_status(wid)
    assert status.steps == {"bad": "discarded", "after": "cancelled", "unrecorded": "completed"}
    job = await app.get_job(status.details["bad"].job_id)
    assert job is not None
    message = job.errors[-1]["error"]
    assert "'bad'" in message
    assert "JSON" in message
    assert "record=False" in message
    assert status.details["bad"].recorded is False
    assert status.details["unrecorded"].recorded is False


async def test_step_with_a_non_json_value_is_retried_not_completed(app):
    calls: list[int] = []

    @app.worker(name="run.flaky_json", max_attempts=3, backoff=lambda job: 0)
    def flaky(job: baton.Job) -> Any:
        calls.append(job.attempt)
        return {1, 2} if job.attempt == 1 else [1, 2]

    wf = baton.Workflow()
    wf.add("s", flaky.new({}))
    wid = await app.insert_workflow(wf)
    assert await app.drain() == {"retryable": 1, "completed": 1}
    assert calls == [1, 2]
    assert (await app.workflow_status(wid)).details["s"].result == [1, 2]


# --------------------------------------------------------------------------- logs and stats


async def test_job_log_lines_are_stored_in_workflow_debug_logs(app):
    @app.worker(name="run.logger", max_attempts=2, backoff=lambda job: 0)
    def logger(job: baton.Job) -> int:
        job.log("info", f"attempt {job.attempt} starting")
        job.log("DEBUG", {"k": "structured"})  # type: ignore[arg-type]
        if job.attempt == 1:
            job.log("error", "about to fail")
            raise RuntimeError("first attempt fails")
        job.log("warning", "second attempt ok")
        return 1

    @app.worker(name="run.badlevel")
    def badlevel(job: baton.Job) -> dict[str, str]:
        try:
            job.log("loud", "x")
        except baton.ValidationError as exc:
            return {"error": str(exc)}
        return {"error": "accepted"}

    wf = baton.Workflow(label="logs")
    wf.add("talk", logger.new({}))
    wf.add("level", badlevel.new({}))
    wid = await app.insert_workflow(wf)
    await app.drain()
    status = await app.workflow_status(wid)
    assert status.steps == {"talk": "completed", "level": "completed"}
    assert "level" in status.details["level"].result["error"]

    rows = query(
        app.url,
        "SELECT workflow_id, job_id, name, level, message, inserted_at FROM workflow_debug_logs ORDER BY id",
    )
    assert [(r[2], r[3], r[4]) for r in rows] == [
        ("talk", "info", "attempt 1 starting"),
        ("talk", "debug", "{'k': 'structured'}"),
        ("talk", "error", "about to fail"),
        ("talk", "info", "attempt 2 starting"),
        ("talk", "debug", "{'k': 'structured'}"),
        ("talk", "warning", "second attempt ok"),
    ]
    assert {r[0] for r in rows} == {wid}
    assert {r[1] for r in rows} == {status.details["talk"].job_id}
    assert all(r[5] is not None for r in rows)


async def test_workflow_step_stats_per_step(app):
    @app.worker(name="run.slow")
    async def slow(job: baton.Job) -> int:
        await asyncio.sleep(0.12)
        return 1

    @app.worker(name="run.twice", max_attempts=3, backoff=lambda job: 0)
    def twice(job: baton.Job) -> int:
        if job.attempt == 1:
            raise ValueError("once")
        return 2

    gives_up = app.worker(name="run.gives_up", max_attempts=1)(lambda job: baton.Discard("no"))
    never = app.worker(name="run.never")(lambda job: 0)
    wf = baton.Workflow(label="stats")
    wf.add("slow", slow.new({}))
    wf.add("twice", twice.new({}), deps=["slow"])
    wf.add("gives_up", gives_up.new({}))
    wf.add("never", never.new({}), deps=["gives_up"])
    wid = await app.insert_workflow(wf)
    await app.drain()

    rows = query(
        app.url,
        "SELECT name, queued_ms, run_ms, attempts, state, workflow_id, job_id FROM workflow_step_stats",
    )
    stats = {r[0]: r for r in rows}
    status = await app.workflow_status(wid)
    assert set(stats) == {"slow", "twice", "gives_up"}  # `never` never ran
    for name, (_, queued_ms, run_ms, _attempts, _state, workflow_id, job_id) in stats.items():
        assert workflow_id == wid
        assert job_id == status.details[name].job_id
        assert queued_ms is not None and 0 <= queued_ms < 60_000
        assert run_ms is not None and run_ms >= 0
    assert stats["slow"][2] >= 100
    assert stats["slow"][3:5] == (1, "completed")
    assert stats["twice"][3:5] == (2, "completed")
    assert stats["gives_up"][3:5] == (1, "discarded")
    assert status.details["slow"].run_ms == stats["slow"][2]
    assert status.details["slow"].queued_ms == stats["slow"][1]


# --------------------------------------------------------------------------- sync and transactional inserts


async def test_insert_workflow_sync_from_sync_code(make_app, db_url):
    app = make_app(queues={"default": 5})
    order: list[str] = []
    step = app.worker(name="run.sync_step")(_record(order))

    def web_view() -> str:  # plain sync code, in a thread with no event loop
        wf = baton.Workflow(label="from-sync")
        wf.add("a", step.new({}))
        wf.add("b", step.new({}), deps=["a"])
        return app.insert_workflow_sync(wf)

    wid = await asyncio.to_thread(web_view)
    status = await app.workflow_status(wid)
    assert status.label == "from-sync"
    assert status.steps == {"a": "available", "b": "suspended"}
    assert await app.drain() == {"completed": 2}
    assert order == ["a", "b"]

    # And from an app that only ever lives in sync code.
    def script() -> str:
        other = baton.Baton(db_url, plugins=[], log_events=False)
        other.register(step)
        wf = baton.Workflow(label="script")
        wf.add("only", step.new({}))
        wid = other.insert_workflow_sync(wf)
        close = getattr(other.engine, "close_sync", None)
        if close is not None:
            close()
        else:
            sync_pool = getattr(other.engine, "_sync_pool", None)
            if sync_pool is not None:
                sync_pool.close()
        return wid

    wid2 = await asyncio.to_thread(script)
    assert (await app.workflow_status(wid2)).steps == {"only": "available"}


async def test_insert_workflow_inside_the_callers_transaction(make_app, db_url):
    app = make_app(queues={"default": 5})
    step = app.worker(name="run.tx_step")(lambda job: {"step": job.step})

    def build(label: str) -> baton.Workflow:
        wf = baton.Workflow(label=label)
        wf.add("a", step.new({}))
        wf.add("b", step.new({}), deps=["a"])
        return wf

    class Rollback(Exception):
        pass

    if is_postgres(db_url):
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            with pytest.raises(Rollback):
                async with conn.transaction():
                    await conn.execute("CREATE TEMP TABLE IF NOT EXISTS business (x int)")
                    await app.insert_workflow(build("rolled-back"), conn=conn)
                    raise Rollback
            assert scalar(db_url, "SELECT count(*) FROM baton_workflows") == 0
            assert await app.count_jobs() == {}

            async with conn.transaction():
                wid = await app.insert_workflow(build("committed"), conn=conn)
                # Not visible to others before the caller commits.
                assert scalar(db_url, "SELECT count(*) FROM baton_jobs") == 0
            await conn.commit()
    else:
        conn = sqlite3.connect(sqlite_path(db_url), isolation_level=None, timeout=30)
        try:
            conn.execute("BEGIN IMMEDIATE")
            await app.insert_workflow(build("rolled-back"), conn=conn)
            conn.execute("ROLLBACK")
            assert scalar(db_url, "SELECT count(*) FROM baton_workflows") == 0
            assert await app.count_jobs() == {}
            conn.execute("BEGIN IMMEDIATE")
            wid = await app.insert_workflow(build("committed"), conn=conn)
            conn.execute("COMMIT")
        finally:
            conn.close()

    status = await app.workflow_status(wid)
    assert status.label == "committed"
    assert status.steps == {"a": "available", "b": "suspended"}
    assert await app.drain() == {"completed": 2}
    status = await app.workflow_status(wid)
    assert status.finished and status.status == "completed"
    assert status.details["b"].result == {"step": "b"}


# --------------------------------------------------------------------------- scale


@pytest.mark.slow
async def test_ten_thousand_step_workflow_inserts_in_one_call_and_runs_to_the_end(make_app, events, monkeypatch):
    app = make_app(queues={"default": 50}, poll_interval=0.5)
    fan_out = 9_998
    finished: list[dict[str, Any]] = []
    app.on_workflow_finished(finished.append)
    events.attach(("baton", "workflow", "finished"))
    joined: dict[str, Any] = {}

    root = app.worker(name="run.big_root")(lambda job: 1)
    leaf = app.worker(name="run.big_leaf")(lambda job: job.upstream("root") + job.args["i"])

    @app.worker(name="run.big_join")
    def join(job: baton.Job) -> int:
        results = job.upstream_all()
        joined["n"] = len(results)
        return sum(results.values())

    wf = baton.Workflow(label="big")
    wf.add("root", root.new({}))
    names = [f"leaf{i:05d}" for i in range(fan_out)]
    for i, name in enumerate(names):
        wf.add(name, leaf.new({"i": i}), deps=["root"])
    wf.add("join", join.new({}), deps=names)
    assert len(wf) == 10_000

    calls: list[int] = []
    insert = wfstore.insert_workflow

    async def counting(conn: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return await insert(conn, *args, **kwargs)

    monkeypatch.setattr(wfstore, "insert_workflow", counting)
    started = time.monotonic()
    wid = await app.insert_workflow(wf)
    assert calls == [1], "one transaction for the whole workflow"
    assert await app.count_jobs() == {"available": 1, "suspended": 9_999}

    async with app:
        await wait_for(lambda: finished, timeout=180, interval=0.1)
    elapsed = time.monotonic() - started

    assert len(finished) == 1
    assert finished[0]["workflow_id"] == wid
    assert finished[0]["status"] == "completed"
    assert finished[0]["counts"] == {"completed": 10_000}
    assert finished[0]["failed_steps"] == []
    assert len([md for _, md in events.of(("baton", "workflow", "finished")) if md["workflow_id"] == wid]) == 1
    assert await app.count_jobs() == {"completed": 10_000}
    status = await app.workflow_status(wid)
    assert status.finished and status.status == "completed"
    assert joined["n"] == fan_out
    assert status.details["join"].result == sum(1 + i for i in range(fan_out))
    assert elapsed < 180


async def test_chain_of_five_hundred_steps_runs_to_the_end(app, events):
    events.attach(("baton", "workflow", "finished"))

    @app.worker(name="run.link")
    def link(job: baton.Job) -> int:
        if not job.upstream_all():
            return 0
        (previous,) = job.upstream_all().values()
        return previous + 1

    wf = baton.Workflow(label="chain")
    wf.add("s0", link.new({}))
    for i in range(1, 500):
        wf.add(f"s{i}", link.new({}), deps=[f"s{i - 1}"])
    wid = await app.insert_workflow(wf)
    assert await app.drain() == {"completed": 500}
    status = await app.workflow_status(wid)
    assert status.finished and status.status == "completed"
    assert status.details["s499"].result == 499
    assert len(events.of(("baton", "workflow", "finished"))) == 1
