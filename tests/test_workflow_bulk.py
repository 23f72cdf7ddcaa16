"""Bulk workflow inserts (issue #19): `app.insert_workflows([...])` validates every workflow
first, then writes them all in one transaction with the rows of each table together (not a
statement per workflow); ids come back in order, each workflow keeps its label and context and
runs to its own finished event; a bad workflow anywhere writes nothing and is named; inside the
caller's transaction a rollback leaves nothing; round trips do not grow with the number of
workflows."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

import psycopg
import pytest

import baton
from baton.engines.postgres.engine import PgConn
from baton.engines.sqlite.engine import SqliteConn
from baton.store import workflows as wfstore
from conftest import wait_for
from wf_nodes import is_postgres, scalar, sqlite_path

TABLES = ("baton_workflows", "baton_jobs", "workflow_nodes", "baton_workflow_deps")


def _counts(url: str) -> dict[str, int]:
    return {table: scalar(url, f"SELECT count(*) FROM {table}") for table in TABLES}


def _fan(step: Any, label: str, context: dict[str, Any] | None = None, width: int = 8) -> baton.Workflow:
    """The benchmark's shape: a root, `width` parallel steps depending on it, a fan-in on them all."""
    wf = baton.Workflow(label=label, context=context)
    wf.add("root", step.new({"n": 0}))
    middle = [f"m{i}" for i in range(width)]
    for i, name in enumerate(middle, start=1):
        wf.add(name, step.new({"n": i}), deps=["root"])
    wf.add("fanin", step.new({"n": width + 1}), deps=middle)
    return wf


@pytest.fixture
def echo(app: baton.Baton) -> Any:
    """A step that returns its workflow's context value and what its deps returned."""

    @app.worker(name="bulk.echo")
    def echo(job: baton.Job) -> Any:
        return {"tenant": job.context.get("tenant"), "n": job.args["n"], "seen": sorted(job.upstream_all())}

    return echo


# --------------------------------------------------------------------------- insert and run


async def test_ids_come_back_in_order_and_every_workflow_runs_to_its_finished_event(app, echo):
    wfs = [_fan(echo, f"tenant-{i}", {"tenant": f"t{i}"}, width=2 + i % 3) for i in range(6)]
    wfs.append(baton.Workflow(label=None))  # no label, no context: a single step
    wfs[-1].add("only", echo.new({"n": 7}))
    finished: list[dict[str, Any]] = []
    app.on_workflow_finished(finished.append)

    wids = await app.insert_workflows(wfs)

    assert len(wids) == len(set(wids)) == 7
    for i, wid in enumerate(wids[:6]):
        status = await app.workflow_status(wid)
        assert status.label == f"tenant-{i}"
        width = 2 + i % 3
        assert status.steps == {
            "root": "available",
            **{f"m{k}": "suspended" for k in range(width)},
            "fanin": "suspended",
        }
    last = await app.workflow_status(wids[6])
    assert last.label is None and last.steps == {"only": "available"}

    async with app:
        await wait_for(lambda: len(finished) == 7, timeout=60)
    assert sorted(e["workflow_id"] for e in finished) == sorted(wids)
    assert {e["status"] for e in finished} == {"completed"}
    for i, wid in enumerate(wids[:6]):
        status = await app.workflow_status(wid)
        width = 2 + i % 3
        # Each step saw its own workflow's context and deps, nothing of the others.
        assert status.details["root"].result == {"tenant": f"t{i}", "n": 0, "seen": []}
        assert status.details["m0"].result == {"tenant": f"t{i}", "n": 1, "seen": ["root"]}
        assert status.details["fanin"].result == {
            "tenant": f"t{i}",
            "n": width + 1,
            "seen": sorted(f"m{k}" for k in range(width)),
        }
    assert (await app.workflow_status(wids[6])).details["only"].result == {"tenant": None, "n": 7, "seen": []}


async def test_stored_rows_match_one_insert_workflow_per_workflow(app, echo):
    wf = _fan(echo, "same", {"tenant": "x"}, width=3)
    wf.add("late", echo.new({"n": 9}, schedule_in=3600), deps=[])
    single = await app.insert_workflow(wf)
    (bulk,) = await app.insert_workflows([wf])

    def rows(wid: str) -> list[tuple[Any, ...]]:
        nodes = scalar(
            app.url,
            "SELECT count(*) FROM workflow_nodes WHERE workflow_id = ? AND label = 'same'",
            [wid],
        )
        edges = scalar(app.url, "SELECT count(*) FROM baton_workflow_deps WHERE workflow_id = ?", [wid])
        context = scalar(app.url, "SELECT context FROM baton_workflows WHERE id = ?", [wid])
        return [nodes, edges, context if isinstance(context, dict) else json.loads(context)]

    assert rows(bulk) == rows(single) == [6, 6, {"tenant": "x"}]
    a, b = await app.workflow_status(single), await app.workflow_status(bulk)
    assert a.steps == b.steps and a.steps["late"] == "scheduled"
    for name in a.steps:
        assert a.details[name].deps == b.details[name].deps


async def test_an_empty_list_inserts_nothing(app):
    assert await app.insert_workflows([]) == []
    assert app.insert_workflows_sync(iter([])) == []
    assert _counts(app.url) == dict.fromkeys(TABLES, 0)


async def test_not_a_list_of_workflows_is_rejected(app, echo):
    with pytest.raises(baton.ValidationError, match=r"insert_workflow\(\) for one"):
        await app.insert_workflows(_fan(echo, "one"))
    with pytest.raises(baton.ValidationError, match=r"must be a list of baton\.Workflow"):
        await app.insert_workflows("workflows")
    with pytest.raises(baton.ValidationError, match=r"workflows\[1\]: expected a baton.Workflow, got dict"):
        await app.insert_workflows([_fan(echo, "ok"), {"steps": []}])
    assert _counts(app.url) == dict.fromkeys(TABLES, 0)


# --------------------------------------------------------------------------- all or nothing


def _broken(step: Any, kind: str) -> baton.Workflow:
    wf = baton.Workflow(label=f"broken-{kind}")
    if kind == "unknown-dep":
        wf.add("a", step.new({"n": 0}))
        wf.add("b", step.new({"n": 1}), deps=["a", "nope"])
    elif kind == "cycle":
        wf.add("a", step.new({"n": 0}), deps=["b"])
        wf.add("b", step.new({"n": 1}), deps=["a"])
    elif kind == "unknown-worker":
        wf.add("a", baton.JobSpec(worker="no.such.worker"))
    return wf  # "empty": no steps


WHERE = r"^workflows\[2\] \(label 'broken-"


@pytest.mark.parametrize(
    ("kind", "error", "message"),
    [
        ("unknown-dep", baton.WorkflowError, WHERE + r"unknown-dep'\) step 'b': depends on unknown step 'nope'"),
        ("cycle", baton.WorkflowError, WHERE + r"cycle'\) step '[ab]': cycle: "),
        ("empty", baton.WorkflowError, WHERE + r"empty'\): workflow is empty"),
        ("unknown-worker", baton.ValidationError, WHERE + r"unknown-worker'\) worker: unknown worker 'no\.such"),
    ],
)
async def test_a_bad_workflow_in_the_middle_writes_nothing_and_is_named(app, echo, kind, error, message):
    await app.insert_workflow(_fan(echo, "already-there"))
    before = _counts(app.url)
    wfs = [_fan(echo, "first"), _fan(echo, "second"), _broken(echo, kind), _fan(echo, "fourth")]

    with pytest.raises(error, match=message) as raised:
        await app.insert_workflows(wfs)
    assert raised.value.field.startswith(f"workflows[2] (label 'broken-{kind}')")
    if kind in ("unknown-dep",):
        assert raised.value.step == "b"  # type: ignore[attr-defined]
    with pytest.raises(error, match=message):
        await asyncio.to_thread(app.insert_workflows_sync, wfs)
    assert _counts(app.url) == before

    wfs[2] = _fan(echo, "fixed")
    wids = await app.insert_workflows(wfs)
    assert [(await app.workflow_status(w)).label for w in wids] == ["first", "second", "fixed", "fourth"]


async def test_a_template_error_keeps_its_json_path(app, echo):
    bad = baton.Workflow.from_dict({"label": "tpl", "steps": [{"name": "a", "worker": "bulk.echo", "args": {"n": 0}}]})
    bad.add("b", echo.new({"n": 1}), deps=["missing"])
    with pytest.raises(baton.WorkflowError, match=r"workflows\[1\] \(label 'tpl'\) step 'b'") as raised:
        await app.insert_workflows([_fan(echo, "ok"), bad])
    assert raised.value.step == "b"
    assert _counts(app.url) == dict.fromkeys(TABLES, 0)


async def test_a_failing_write_rolls_back_every_workflow(app, echo, monkeypatch):
    def broken(*args: Any) -> Any:
        raise RuntimeError("disk full while writing the edges")

    monkeypatch.setattr(wfstore, "_edge_rows", broken)  # called once the jobs and nodes are written
    with pytest.raises(RuntimeError, match="disk full"):
        await app.insert_workflows([_fan(echo, f"w{i}") for i in range(30)])
    assert _counts(app.url) == dict.fromkeys(TABLES, 0)


# --------------------------------------------------------------------------- the caller's transaction


async def test_inside_the_callers_transaction(make_app, db_url):
    app = make_app(queues={"default": 5})

    @app.worker(name="bulk.tx")
    def step(job: baton.Job) -> Any:
        return job.step

    wfs = [_fan(step, f"tx-{i}", width=2) for i in range(3)]

    class Rollback(Exception):
        pass

    if is_postgres(db_url):
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            with pytest.raises(Rollback):
                async with conn.transaction():
                    await conn.execute("CREATE TEMP TABLE IF NOT EXISTS business (x int)")
                    await app.insert_workflows(wfs, conn=conn)
                    raise Rollback
            assert _counts(db_url) == dict.fromkeys(TABLES, 0)
            async with conn.transaction():
                wids = await app.insert_workflows(wfs, conn=conn)
                assert scalar(db_url, "SELECT count(*) FROM baton_workflows") == 0  # not before the commit
            await conn.commit()
    else:
        conn = sqlite3.connect(sqlite_path(db_url), isolation_level=None, timeout=30)
        try:
            conn.execute("BEGIN IMMEDIATE")
            app.insert_workflows_sync(wfs, conn=conn)  # the sync call on the caller's own connection
            conn.execute("ROLLBACK")
            assert _counts(db_url) == dict.fromkeys(TABLES, 0)
            conn.execute("BEGIN IMMEDIATE")
            wids = await app.insert_workflows(wfs, conn=conn)
            conn.execute("COMMIT")
        finally:
            conn.close()

    assert [(await app.workflow_status(w)).label for w in wids] == ["tx-0", "tx-1", "tx-2"]
    assert await app.drain() == {"completed": 12}
    for wid in wids:
        status = await app.workflow_status(wid)
        assert status.finished and status.status == "completed"


async def test_sync_from_a_thread_without_a_loop(app, echo):
    def web_view() -> list[str]:
        return app.insert_workflows_sync([_fan(echo, "sync-a", width=1), _fan(echo, "sync-b", width=1)])

    wids = await asyncio.to_thread(web_view)
    assert [(await app.workflow_status(w)).label for w in wids] == ["sync-a", "sync-b"]
    assert await app.drain() == {"completed": 6}


# --------------------------------------------------------------------------- size and round trips


async def test_more_than_five_thousand_rows_per_table(app, echo):
    """600 workflows of 10 steps: 6 000 jobs and nodes, 9 600 edges, beyond one 5 000-row batch."""
    wfs = [_fan(echo, f"big-{i}", {"tenant": f"t{i}"}) for i in range(600)]
    wids = await app.insert_workflows(wfs)
    assert len(wids) == 600
    assert _counts(app.url) == {
        "baton_workflows": 600,
        "baton_jobs": 6_000,
        "workflow_nodes": 6_000,
        "baton_workflow_deps": 9_600,
    }
    # Every workflow's jobs, nodes and edges are its own.
    assert scalar(app.url, "SELECT count(DISTINCT workflow_id) FROM baton_jobs") == 600
    mismatched = scalar(
        app.url,
        "SELECT count(*) FROM workflow_nodes n JOIN baton_jobs j ON j.id = n.job_id "
        "WHERE j.workflow_id <> n.workflow_id",
    )
    assert mismatched == 0
    crossed = scalar(
        app.url,
        "SELECT count(*) FROM baton_workflow_deps d JOIN workflow_nodes a ON a.job_id = d.dep_job_id "
        "JOIN workflow_nodes b ON b.job_id = d.job_id "
        "WHERE a.workflow_id <> b.workflow_id OR a.workflow_id <> d.workflow_id",
    )
    assert crossed == 0
    assert scalar(app.url, "SELECT sum(pending) FROM workflow_nodes") == 9_600
    assert await app.count_jobs() == {"available": 600, "suspended": 5_400}
    status = await app.workflow_status(wids[599])
    assert status.label == "big-599" and status.details["fanin"].deps == [f"m{i}" for i in range(8)]


def _count_round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Round trips of each insert_workflows transaction (PgConn and SqliteConn count them)."""
    seen: list[int] = []
    insert = wfstore.insert_workflows

    async def counting(conn: Any, *args: Any) -> Any:
        assert isinstance(conn, PgConn | SqliteConn)
        before = conn.round_trips
        result = await insert(conn, *args)
        seen.append(conn.round_trips - before)
        return result

    monkeypatch.setattr(wfstore, "insert_workflows", counting)
    return seen


async def test_round_trips_do_not_grow_with_the_number_of_workflows(app, echo, monkeypatch, engine_name):
    seen = _count_round_trips(monkeypatch)
    await app.insert_workflows([_fan(echo, f"a{i}") for i in range(30)])  # 300 steps
    await app.insert_workflows([_fan(echo, f"b{i}") for i in range(700)])  # 7 000 steps, 11 200 edges
    small, large = seen
    # PostgreSQL: the workflow rows, the id reservation, then one COPY each for the jobs, nodes
    # and edges (SQLite: two more, its id block and the wake-up notice); the large call adds its
    # one ANALYZE. A statement per workflow would be thousands.
    assert small <= (5 if engine_name == "postgres" else 7), seen
    assert large == small + 1, seen
    assert _counts(app.url)["baton_jobs"] == 7_300


async def test_planner_statistics_once_per_call(app, echo, monkeypatch):
    analyzed: list[str] = []
    for cls in (PgConn, SqliteConn):
        execute = cls.execute

        async def spy(self: Any, query: str, params: Any = None, _execute: Any = execute) -> int:
            if query.startswith("analyze_"):
                analyzed.append(query)
            return int(await _execute(self, query, params))

        monkeypatch.setattr(cls, "execute", spy)

    await app.insert_workflows([_fan(echo, f"s{i}") for i in range(20)])  # 200 steps: none
    assert analyzed == []
    await app.insert_workflows([_fan(echo, f"m{i}") for i in range(150)])  # 1 500 small: one, sampled
    assert analyzed == ["analyze_workflow_tables_sampled"]
    big = _fan(echo, "big", width=1_000)
    await app.insert_workflows([_fan(echo, "small"), big, _fan(echo, "small2")])  # a big one: its full ANALYZE
    assert analyzed == ["analyze_workflow_tables_sampled", "analyze_workflow_tables"]
