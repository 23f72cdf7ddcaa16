"""An ack batch costs in proportion to its size under every plan PostgreSQL may pick for it.

Statistics taken while no job was executing (after a bulk insert, on an idle table) say that
`state = 'executing'` matches one row. With the fence's state test as a filter of its own, the
planner scanned the table for that "one" row and joined the batch to it by a nested loop, which
rescanned the whole batch for each of the hundreds of executing jobs it found: seconds per batch
of a thousand acks, and a benchmark run at 650 jobs/s instead of 12 000. These tests plan the
acks of 300 executing jobs under such statistics, custom and generic, with each join method the
planner may prefer, and count the rows the plan's joins compared and discarded."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import baton
from baton.engines.base import Queries
from conftest import truncate
from wf_nodes import query

JOBS = 3_000
BATCH = 300
SETTINGS = [
    {},
    {"enable_hashjoin": "off"},
    {"enable_hashjoin": "off", "enable_mergejoin": "off"},
    {"enable_hashjoin": "off", "enable_mergejoin": "off", "enable_seqscan": "off"},
]


@pytest.fixture
def executing(pg_url: str) -> Iterator[tuple[str, list[int]]]:
    """JOBS available jobs, analysed so, then BATCH of them executing (attempt 1, producer 'p1')."""
    truncate(pg_url)
    query(
        pg_url,
        "INSERT INTO baton_jobs (queue, worker, args, state) SELECT 'default', 'plan.job', '{}', 'available'"
        " FROM generate_series(1, ?)",
        [JOBS],
    )
    query(pg_url, "ANALYZE baton_jobs")
    ids = [
        r[0]
        for r in query(
            pg_url,
            "UPDATE baton_jobs SET state = 'executing', attempt = 1, attempted_by = ARRAY['n1', 'p1']"
            " WHERE id IN (SELECT id FROM baton_jobs ORDER BY id LIMIT ?) RETURNING id",
            [BATCH],
        )
    ]
    yield pg_url, sorted(ids)
    truncate(pg_url)


def _statement(name: str) -> tuple[str, list[tuple[str, str]]]:
    """The engine's statement `name` with its `%(param)s::type` placeholders numbered ($1, ...),
    and each parameter's (name, type)."""
    text = Queries("baton.engines.postgres").get(name)
    assert text is not None
    params: list[tuple[str, str]] = []

    def number(m: re.Match[str]) -> str:
        params.append((m.group(1), m.group(2)))
        return f"${len(params)}::{m.group(2)}"

    return re.sub(r"%\((\w+)\)s::(\w+(?:\[\])?)", number, text), params


def _discarded(plan: dict[str, Any]) -> int:
    """Rows the plan's joins compared and discarded (`Rows Removed by Join Filter`), over all nodes."""
    return int(plan.get("Rows Removed by Join Filter", 0)) + sum(_discarded(p) for p in plan.get("Plans", []))


def _explain(url: str, name: str, args: dict[str, Any], settings: dict[str, str], generic: bool) -> dict[str, Any]:
    """EXPLAIN ANALYZE of statement `name` run as a prepared statement with `args`, in a
    transaction that is rolled back."""
    text, params = _statement(name)
    with psycopg.connect(url, cursor_factory=psycopg.ClientCursor) as conn:  # EXECUTE's arguments as literals
        mode = "force_generic_plan" if generic else "force_custom_plan"
        for key, value in {**settings, "plan_cache_mode": mode}.items():
            conn.execute(f"SET LOCAL {key} = {value}")
        conn.execute(f"PREPARE plan_probe AS {text}")
        placeholders = ", ".join(f"%s::{kind}" for _, kind in params)
        cur = conn.execute(
            f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE plan_probe({placeholders})", [args[n] for n, _ in params]
        )
        row = cur.fetchone()
        conn.rollback()
    assert row is not None
    doc = row[0] if isinstance(row[0], list) else json.loads(row[0])
    return dict(doc[0])


def _completions(ids: list[int]) -> dict[str, Any]:
    """complete_jobs's arguments: plain completions as typed arrays."""
    return {"ids": ids, "attempts": [1] * len(ids), "uuids": ["p1"] * len(ids)}


def _outcomes(ids: list[int]) -> dict[str, Any]:
    """ack_jobs's argument: other outcomes (here retries with an error) as one JSON document."""
    return {
        "acks": json.dumps(
            [{"id": i, "attempt": 1, "uuid": "p1", "state": "retryable", "delay": 1.0, "error": {"e": 1}} for i in ids]
        )
    }


@pytest.mark.parametrize("statement", [("complete_jobs", _completions), ("ack_jobs", _outcomes)], ids=lambda s: s[0])
@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(s) or "default")
def test_an_ack_batch_compares_each_ack_with_its_own_job_only(
    executing: tuple[str, list[int]], statement: tuple[str, Any], settings: dict[str, str], generic: bool
) -> None:
    url, ids = executing
    name, arguments = statement
    out = _explain(url, name, arguments(ids), settings, generic)
    assert out["Plan"]["Actual Rows"] == BATCH  # every ack applied
    assert _discarded(out["Plan"]) <= BATCH, json.dumps(out["Plan"])[:2_000]


# -- a batch of workflow-step acks (baton_complete_steps) ---------------------------------------

WORKFLOWS = 100  # of a root and 3 steps depending on it: a batch acks the 100 roots


def _array_filters(plan: dict[str, Any]) -> list[str]:
    """Filters of the plan's nodes that test each row against a whole array parameter
    (`x = ANY ($n)`, `x <> ALL ($n)`): element by element, n x array length comparisons."""
    found = [plan["Filter"]] if re.search(r"(ANY|ALL) \(\$\d+\)", plan.get("Filter", "")) else []
    for sub in plan.get("Plans", []):
        found += _array_filters(sub)
    return found


def test_an_ack_batch_of_workflow_steps_tests_membership_by_hash(pg_url: str) -> None:
    """baton_complete_steps filters the batch's arrays, and the dependents it counts down, by the
    acks that applied. Under the function's generic plan those ids are a parameter, which a
    filter `id = ANY (param)` compares element by element: n^2 work for a batch of n (22 of 44 ms
    for 1 000 acks in bench/hops.py). Every statement the function runs is explained (auto_explain,
    sent to this connection as notices): none may filter rows against a whole array parameter."""
    _insert_stars(pg_url, WORKFLOWS, 3)
    roots = query(
        pg_url,
        "UPDATE baton_jobs j SET state = 'executing', attempt = 1, attempted_by = ARRAY['n1', 'p1']"
        " FROM workflow_nodes n WHERE n.job_id = j.id AND n.name = 'root'"
        " RETURNING j.id, j.workflow_id",
    )
    roots.sort()
    assert len(roots) == WORKFLOWS
    ids, wids = [r[0] for r in roots], [r[1] for r in roots]
    plans: list[dict[str, Any]] = []
    with psycopg.connect(pg_url) as conn:
        _explain_each_statement(conn, plans, analyze=True)
        n = len(ids)
        rows = conn.execute(
            "SELECT kind, payload FROM baton_complete_steps(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " '{}', '{}', '{}', 'n1', '', 'baton_steps', 'baton_insert')",
            [ids, [1] * n, ["p1"] * n, wids, ["root"] * n, [0] * n, [0] * n, [None] * n, [None] * n, [None] * n],
        ).fetchall()
        conn.rollback()
    ids_of = {kind: [int(i) for i in payload.split(",")] for kind, payload in rows}
    assert sorted(ids_of) == ["acked", "released"]
    assert ids_of["acked"] == ids and len(ids_of["released"]) == 3 * WORKFLOWS
    statements = [p for p in plans if "baton_complete_steps" not in p.get("Query Text", "")]
    assert any("workflow_step_stats" in p.get("Query Text", "") for p in statements), "no nested plan seen"
    bad = {p["Query Text"][:200]: _array_filters(p["Plan"]) for p in statements if _array_filters(p["Plan"])}
    assert not bad, json.dumps(bad, indent=1)


def _insert_stars(url: str, workflows: int, dependents: int) -> None:
    """Empty the tables, then insert `workflows` workflows of a root and `dependents` steps
    depending on it (one `insert_workflows` call)."""
    truncate(url)
    app = baton.Baton(url, plugins=[], log_events=False)

    @app.worker(name="plan.step")
    async def step(job: baton.Job) -> None:  # pragma: no cover - never run
        pass

    flows = []
    for w in range(workflows):
        wf = baton.Workflow(label=f"plan-{w}")
        wf.add("root", app.new("plan.step", {"w": w}))
        for i in range(dependents):
            wf.add(f"s{i}", app.new("plan.step", {"w": w, "i": i}), deps=["root"])
        flows.append(wf)

    async def insert() -> None:
        try:
            await app.insert_workflows(flows)
        finally:
            await app.close()

    asyncio.run(insert())


def _explain_each_statement(conn: psycopg.Connection[Any], plans: list[dict[str, Any]], analyze: bool) -> None:
    """Have the server explain every statement `conn` runs from now on, nested ones included
    (auto_explain, sent to this connection as notices), into `plans`."""
    conn.add_notice_handler(lambda diag: plans.extend(_notice_plans(diag.message_primary or "")))
    conn.execute("LOAD 'auto_explain'")
    for name, value in (
        ("log_min_duration", "0"),
        ("log_nested_statements", "on"),
        ("log_analyze", "on" if analyze else "off"),
        ("log_format", "json"),
        ("log_level", "notice"),
    ):
        conn.execute(f"SET auto_explain.{name} = {value}")


def _notice_plans(message: str) -> list[dict[str, Any]]:
    """The plan in an auto_explain notice ("duration: ... ms  plan:" and a JSON document)."""
    start = message.find("{")
    if "plan:" not in message or start < 0:
        return []
    return [json.loads(message[start:])]


def _indexes(plan: dict[str, Any]) -> set[str]:
    """Every index the plan reads."""
    found = {plan["Index Name"]} if "Index Name" in plan else set()
    for sub in plan.get("Plans", []):
        found |= _indexes(sub)
    return found


def test_lookups_by_workflow_id_read_the_workflow_index(pg_url: str) -> None:
    """The workflow-id index of `baton_jobs` is a hash index (migration 012): it serves
    equalities only. The lookups by workflow id that run on every finished workflow (its jobs
    counted by state) and on a cancel must still read it, not the table, on a table of 3 000
    analysed workflow steps."""
    _insert_stars(pg_url, 1_000, 2)
    query(pg_url, "ANALYZE")
    wid = str(query(pg_url, "SELECT workflow_id FROM baton_jobs ORDER BY id DESC LIMIT 1")[0][0])
    args = {"ids": None, "queue": None, "worker": None, "states": None, "workflow_id": wid}
    out = _explain(pg_url, "cancel_targets", args, {}, generic=False)
    assert out["Plan"]["Actual Rows"] == 3
    assert "baton_jobs_workflow_idx" in _indexes(out["Plan"]), json.dumps(out["Plan"])[:2_000]
    plans: list[dict[str, Any]] = []
    with psycopg.connect(pg_url, autocommit=True) as conn:
        _explain_each_statement(conn, plans, analyze=False)
        counts = conn.execute("SELECT baton_step_counts(%s)", [wid]).fetchone()
    assert counts is not None and counts[0] == {"available": 1, "suspended": 2}
    by_state = [p for p in plans if "FROM baton_jobs j WHERE j.workflow_id" in p.get("Query Text", "")]
    assert by_state, [p.get("Query Text", "")[:120] for p in plans]
    assert "baton_jobs_workflow_idx" in _indexes(by_state[0]["Plan"]), json.dumps(by_state[0]["Plan"])[:2_000]


# -- a fetch (fetch_jobs) ---------------------------------------------------------------------


def _function_loops(plan: dict[str, Any], name: str) -> list[int]:
    """`Actual Loops` of every scan of set-returning function `name` in the plan (0: never run)."""
    found = [int(plan["Actual Loops"])] if plan.get("Function Name") == name else []
    for sub in plan.get("Plans", []):
        found += _function_loops(sub, name)
    return found


AFTER_NOTHING = {"after_priority": -1, "after_scheduled_at": "-infinity", "after_id": 0}


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
@pytest.mark.parametrize("statement", [("fetch_jobs", {}), ("fetch_jobs_after", AFTER_NOTHING)], ids=lambda s: s[0])
def test_a_fetch_of_plain_jobs_does_not_build_step_contexts(
    pg_url: str, generic: bool, statement: tuple[str, dict[str, Any]]
) -> None:
    """A fetch returns each workflow step with its context (baton_step_contexts) in the same
    round trip. A fetch that took no step must not call that function at all: on an idle
    server the call cost a single job's fetch 0.06 ms after a notification."""
    _insert_stars(pg_url, 1, 0)  # one workflow of one step, available
    query(pg_url, "UPDATE baton_jobs SET queue = 'steps'")
    query(
        pg_url,
        "INSERT INTO baton_jobs (queue, worker, args) SELECT 'plain', 'plan.job', '{}' FROM generate_series(1, 3)",
    )
    name, after = statement
    common = {"node": "n1", "uuid": "p1", "limit": 10, "channel": "baton_workflow", **after}
    plain = _explain(pg_url, name, {**common, "queue": "plain"}, {}, generic)
    assert plain["Plan"]["Actual Rows"] == 3
    assert _function_loops(plain["Plan"], "baton_step_contexts") == [0], json.dumps(plain["Plan"])[:3_000]
    steps = _explain(pg_url, name, {**common, "queue": "steps"}, {}, generic)
    assert steps["Plan"]["Actual Rows"] == 1
    assert _function_loops(steps["Plan"], "baton_step_contexts") == [1], json.dumps(steps["Plan"])[:3_000]
