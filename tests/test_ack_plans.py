"""An ack batch costs in proportion to its size under every plan PostgreSQL may pick for it.

Statistics taken while no job was executing (after a bulk insert, on an idle table) say that
`state = 'executing'` matches one row. With the fence's state test as a filter of its own, the
planner scanned the table for that "one" row and joined the batch to it by a nested loop, which
rescanned the whole batch for each of the hundreds of executing jobs it found: seconds per batch
of a thousand acks, and a benchmark run at 650 jobs/s instead of 12 000. These tests plan the
acks of 300 executing jobs under such statistics, custom and generic, with each join method the
planner may prefer, and count the rows the plan's joins compared and discarded."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

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

    return re.sub(r"%\((\w+)\)s::([\w\[\]]+)", number, text), params


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
