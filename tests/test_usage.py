"""Usage and cost of steps (SPEC 9.4): `job.record_usage` from sync and async workers, written
with the attempt's ack (only acks that applied, one statement per batch, none for plain jobs),
priced by `Baton(pricing=...)` in exact Decimals, read back by `workflow_usage` and
`usage_by_model`, shown by the CLI, emitted as telemetry, pruned with the workflow tables."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import baton
from baton.cli import cli
from baton.plugins import Pruner, WorkflowHealth
from baton.store import transitions
from baton.store.jobs import Ack
from wf_nodes import query

USAGE = ("baton", "job", "usage")
PRICES = {"gpt-4.1": {"input": "2.00", "output": "8.00"}, "mini": {"input": "0.15", "output": "0.60"}}


def usage_rows(url: str) -> list[tuple[Any, ...]]:
    """(job_id, workflow_id, step, attempt, model, input, output, cost) of every stored record."""
    return query(
        url,
        "SELECT job_id, workflow_id, step, attempt, model, input_tokens, output_tokens, cost "
        "FROM baton_usage ORDER BY id",
    )


def llm_workers(app: baton.Baton) -> Any:
    class W:
        @staticmethod
        @app.worker(name="llm.sync")
        def sync(job: baton.Job) -> dict[str, Any]:
            for call in job.args["calls"]:
                job.record_usage(**call)
            return {"done": True}

        @staticmethod
        @app.worker(name="llm.async")
        async def async_(job: baton.Job) -> dict[str, Any]:
            for call in job.args["calls"]:
                await asyncio.sleep(0)
                job.record_usage(**call)
            return {"done": True}

    return W


def call(model: str, i: int, o: int, **extra: Any) -> dict[str, Any]:
    return {"model": model, "input_tokens": i, "output_tokens": o, **extra}


# --------------------------------------------------------------------------- recording


async def test_sync_and_async_steps_record_several_calls_each_summed_by_step_and_model(make_app, db_url):
    app = make_app(queues={"default": 4}, pricing=PRICES)
    w = llm_workers(app)
    wf = baton.Workflow(label="llm")
    wf.add("draft", w.sync.new({"calls": [call("gpt-4.1", 1200, 300), call("mini", 1000, 100, cached=40)]}))
    wf.add("review", w.async_.new({"calls": [call("gpt-4.1", 500, 50)] * 3}), deps=["draft"])
    wf.add("quiet", w.sync.new({"calls": []}), deps=["draft"])
    wid = await app.insert_workflow(wf)
    assert await app.drain() == {"completed": 3}

    u = await app.workflow_usage(wid)
    assert isinstance(u, baton.WorkflowUsage)
    # gpt-4.1: (1200*2 + 300*8)/1e6 = 0.0048; mini: (1000*0.15 + 100*0.6)/1e6 = 0.00021;
    # review: 3 * (500*2 + 50*8)/1e6 = 3 * 0.0014.
    assert u.by_step["draft"].cost == Decimal("0.00501")
    assert u.by_step["review"].cost == Decimal("0.0042")
    assert "quiet" not in u.by_step  # a step that recorded nothing has no row
    assert u.total_cost == Decimal("0.00921")
    assert (u.input_tokens, u.output_tokens, u.calls) == (3700, 550, 5)
    assert u.by_model["gpt-4.1"] == baton.UsageTotals(Decimal("0.009"), 2700, 450, 4, 0)
    assert u.by_model["mini"] == baton.UsageTotals(Decimal("0.00021"), 1000, 100, 1, 0)
    assert u.by_step["draft"].by_model["mini"].input_tokens == 1000
    assert list(u.by_step["review"].by_attempt) == [1]
    assert u.unpriced_models == [] and u.unpriced_calls == 0
    assert isinstance(u.total_cost, Decimal)

    extra = query(db_url, "SELECT extra FROM baton_usage WHERE model = 'mini'")[0][0]
    assert (extra if isinstance(extra, dict) else __import__("json").loads(extra)) == {"cached": 40}
    steps = {(r[2], r[4]) for r in usage_rows(db_url)}
    assert steps == {("draft", "gpt-4.1"), ("draft", "mini"), ("review", "gpt-4.1")}
    assert all(r[1] == wid and r[3] == 1 for r in usage_rows(db_url))


async def test_plain_jobs_record_usage_too_and_count_in_usage_by_model(make_app, db_url):
    app = make_app(queues={"default": 2}, pricing=PRICES)
    w = llm_workers(app)
    await app.insert_all([w.sync.new({"calls": [call("mini", 10, 10)]}), w.async_.new({"calls": [call("mini", 5, 5)]})])
    assert await app.drain() == {"completed": 2}
    rows = usage_rows(db_url)
    assert [(r[1], r[2]) for r in rows] == [(None, None), (None, None)]
    assert await app.usage_by_model() == {
        "mini": {
            "cost": Decimal("0.0000112500"),
            "input_tokens": 15,
            "output_tokens": 15,
            "calls": 2,
            "unpriced_calls": 0,
        }
    }


async def test_the_usage_of_a_failed_attempt_counts_and_is_marked_by_its_attempt(make_app, db_url):
    app = make_app(queues={"default": 1}, pricing=PRICES)

    @app.worker(name="llm.flaky", max_attempts=3)
    def flaky(job: baton.Job) -> str:
        job.record_usage(model="gpt-4.1", input_tokens=1000, output_tokens=0)
        if job.attempt == 1:
            raise RuntimeError("the model answered garbage")
        return "ok"

    wf = baton.Workflow(label="retry")
    wf.add("ask", flaky.new({}))
    wid = await app.insert_workflow(wf)
    assert await app.drain() == {"retryable": 1}
    job_id = (await app.workflow_status(wid)).details["ask"].job_id
    await app.retry_job(job_id)
    assert await app.drain() == {"completed": 1}

    u = await app.workflow_usage(wid)
    step = u.by_step["ask"]
    assert step.calls == 2 and step.cost == Decimal("0.004")
    assert step.by_attempt == {
        1: baton.UsageTotals(Decimal("0.002"), 1000, 0, 1, 0),
        2: baton.UsageTotals(Decimal("0.002"), 1000, 0, 1, 0),
    }
    assert [r[3] for r in usage_rows(db_url)] == [1, 2]


async def test_a_snoozed_or_discarded_attempt_keeps_its_usage(make_app, db_url):
    app = make_app(queues={"default": 1}, pricing=PRICES)

    @app.worker(name="llm.gives_up")
    def gives_up(job: baton.Job) -> Any:
        job.record_usage(model="mini", input_tokens=100, output_tokens=0)
        return baton.Discard("refused")

    await app.insert(gives_up.new({}))
    assert await app.drain() == {"discarded": 1}
    assert [r[4:7] for r in usage_rows(db_url)] == [("mini", 100, 0)]


@pytest.mark.parametrize("kind", ["async", "thread", "timed"])
async def test_a_graceful_stop_writes_the_usage_of_the_attempts_it_hands_back(make_app, db_url, events, kind):
    """An attempt still running when a stop's grace ends is handed back (attempt 2 runs later),
    but the calls it made were paid for: they are written with the hand-back, in its
    transaction, and emitted after it. Here the worker, once taken away (a sync one sees
    job.cancelled(); the async one swallows its cancellation), records one more call and
    returns: the stop waits for it to end, so that call counts too, and the attempt's own
    outcome (with its records) is never written, so nothing is stored twice. Sync workers with
    a timeout run on another path than those without ("timed")."""
    events.attach(USAGE)
    # The grace also bounds the stop's wait for attempts it took away to end (at most 1 s).
    app = make_app(queues={"default": 1}, pricing=PRICES, shutdown_grace=1)
    started, ended = threading.Event(), threading.Event()

    def paid(job: baton.Job) -> str:
        job.record_usage(model="gpt-4.1", input_tokens=1000, output_tokens=100)
        if job.attempt > 1:
            return "ok"
        started.set()
        try:
            end = time.monotonic() + 60
            while not job.cancelled() and time.monotonic() < end:
                time.sleep(0.01)
            job.record_usage(model="mini", input_tokens=1, output_tokens=1)
            return "late"
        finally:
            ended.set()

    async def paid_async(job: baton.Job) -> str:
        job.record_usage(model="gpt-4.1", input_tokens=1000, output_tokens=100)
        if job.attempt > 1:
            return "ok"
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            job.record_usage(model="mini", input_tokens=1, output_tokens=1)
            return "late"
        finally:
            ended.set()
        return "slept"

    if kind == "async":
        worker = app.worker(name="llm.paid_async")(paid_async)
    else:
        worker = app.worker(name=f"llm.paid_{kind}", timeout=120 if kind == "timed" else None)(paid)
    wid = await app.insert_workflow(baton.Workflow(label="stop").add("ask", worker.new({})))
    await app.start()
    await asyncio.to_thread(started.wait, 20)
    await app.stop()
    assert ended.is_set()
    assert [r[3:7] for r in usage_rows(db_url)] == [(1, "gpt-4.1", 1000, 100), (1, "mini", 1, 1)]
    assert [(md["attempt"], md["model"], md["step"], md["workflow_id"]) for _, md in events.of(USAGE)] == [
        (1, "gpt-4.1", "ask", wid),
        (1, "mini", "ask", wid),
    ]
    job = (await app.list_jobs(limit=5))[0]
    assert (job.state, job.attempt, [e["reason"] for e in job.errors]) == ("available", 1, ["shutdown"])

    assert await app.drain() == {"completed": 1}
    assert (await app.workflow_usage(wid)).by_step["ask"].by_attempt == {
        1: baton.UsageTotals(Decimal("0.00280075"), 1001, 101, 2, 0),
        2: baton.UsageTotals(Decimal("0.0028"), 1000, 100, 1, 0),
    }
    assert [r[3:5] for r in usage_rows(db_url)] == [(1, "gpt-4.1"), (1, "mini"), (2, "gpt-4.1")]


# --------------------------------------------------------------------------- the ack path


async def _fetched(app: baton.Baton, worker: str, n: int = 1) -> list[baton.Job]:
    if app.resolve_worker(worker) is None:
        app.worker(name=worker)(lambda job: None)
    await app.insert_all([app.new(worker, {"i": i}) for i in range(n)])
    return await app.engine.run(transitions.fetch_jobs, "default", app.node, str(uuid.uuid4()), n)


def _usage(model: str = "mini", i: int = 1, o: int = 1) -> baton.UsageRecord:
    return baton.UsageRecord(model, i, o, {}, None)


async def test_a_fenced_ack_writes_no_usage(app, db_url):
    [job] = await _fetched(app, "nobody")
    await app.cancel_job(job.id)
    ack = Ack(job, "completed", usage=[_usage()])
    result = await app.engine.run(transitions.ack_jobs, [ack], app.node)
    assert result.acked == [] and [d.reason for d in result.dropped] == ["cancelled"]
    assert usage_rows(db_url) == []


async def test_usage_is_one_statement_per_batch_and_plain_acks_pay_nothing(app, db_url):
    async def round_trips(conn: Any, acks: list[Ack]) -> int:
        before = conn.round_trips
        await transitions.ack_jobs(conn, acks, app.node)
        return int(conn.round_trips - before)

    plain = [Ack(j, "completed") for j in await _fetched(app, "nobody", 3)]
    used = [Ack(j, "completed", usage=[_usage(), _usage("gpt-4.1")]) for j in await _fetched(app, "nobody", 3)]
    # One applied, two fenced (their attempt is not the fetched one any more).
    mixed_jobs = await _fetched(app, "nobody", 3)
    query(db_url, "UPDATE baton_jobs SET attempt = attempt + 1 WHERE id IN (?, ?)", [j.id for j in mixed_jobs[1:]])
    mixed = [Ack(j, "completed", usage=[_usage()]) for j in mixed_jobs]

    base = await app.engine.run(round_trips, plain)
    assert await app.engine.run(round_trips, used) == base + 1
    assert len(usage_rows(db_url)) == 6
    await app.engine.run(round_trips, mixed)
    assert [r[0] for r in usage_rows(db_url)][6:] == [mixed_jobs[0].id]


async def test_a_running_node_writes_the_usage_of_the_jobs_it_runs(make_app, db_url):
    """The node's acker writes plain jobs without a transaction; a job with usage is written in
    one, with its rows (node.flush_acks)."""
    app = make_app(queues={"default": 2}, pricing=PRICES)
    w = llm_workers(app)
    await app.insert_all([w.sync.new({"calls": [call("mini", 3, 4)]}), w.sync.new({"calls": []})])
    async with app:
        for _ in range(200):
            if (await app.count_jobs()).get("completed") == 2:
                break
            await asyncio.sleep(0.05)
    assert (await app.count_jobs()).get("completed") == 2
    assert [r[4:7] for r in usage_rows(db_url)] == [("mini", 3, 4)]


# --------------------------------------------------------------------------- pricing


async def test_unpriced_models_cost_none_never_zero(make_app, db_url):
    app = make_app(queues={"default": 1}, pricing=PRICES)
    w = llm_workers(app)
    wf = baton.Workflow(label="mixed")
    wf.add("a", w.sync.new({"calls": [call("gpt-4.1", 1000, 0), call("local-llama", 5000, 500)]}))
    wf.add("b", w.sync.new({"calls": [call("local-llama", 1, 1)]}))
    wid = await app.insert_workflow(wf)
    await app.drain()
    u = await app.workflow_usage(wid)
    assert u.by_model["local-llama"].cost is None
    assert u.by_model["local-llama"].unpriced_calls == 2
    assert u.by_step["b"].cost is None
    assert u.by_step["a"].cost == Decimal("0.002") and u.by_step["a"].unpriced_calls == 1
    assert u.total_cost == Decimal("0.002") and u.unpriced_models == ["local-llama"] and u.unpriced_calls == 2
    assert (await app.usage_by_model())["local-llama"]["cost"] is None
    costs = {r[4]: r[7] for r in usage_rows(db_url)}
    assert costs["local-llama"] is None

    none = make_app(queues={"default": 1})  # no pricing at all: everything unpriced
    llm_workers(none)
    wid = await none.insert_workflow(baton.Workflow().add("x", none.new("llm.sync", {"calls": [call("m", 1, 1)]})))
    await none.drain()
    assert (await none.workflow_usage(wid)).total_cost is None


async def test_a_pricing_callable_prices_each_call(make_app):
    seen: list[tuple[Any, ...]] = []

    def price(model: str, input_tokens: int, output_tokens: int, extra: dict[str, Any]) -> Decimal | None:
        seen.append((model, input_tokens, output_tokens, extra))
        if model == "free":
            return None
        cached = extra.get("cached", 0)
        return (Decimal("3") * (input_tokens - cached) + Decimal("0.3") * cached + Decimal(15) * output_tokens) / (
            10**6
        )

    app = make_app(queues={"default": 1}, pricing=price)
    w = llm_workers(app)
    wf = baton.Workflow().add("a", w.async_.new({"calls": [call("claude", 1000, 100, cached=800), call("free", 1, 1)]}))
    wid = await app.insert_workflow(wf)
    await app.drain()
    assert seen == [("claude", 1000, 100, {"cached": 800}), ("free", 1, 1, {})]
    u = await app.workflow_usage(wid)
    # (3*200 + 0.3*800 + 15*100) / 1e6
    assert u.by_model["claude"].cost == Decimal("0.00234")
    assert u.by_model["free"].cost is None


async def test_a_failing_pricing_callable_records_the_call_unpriced_and_logs(make_app, db_url, caplog):
    def broken(model: str, i: int, o: int, extra: dict[str, Any]) -> Any:
        if model == "bad-type":
            return object()
        raise ZeroDivisionError("oops")

    app = make_app(queues={"default": 1}, pricing=broken)
    w = llm_workers(app)
    await app.insert(w.sync.new({"calls": [call("raises", 1, 2), call("bad-type", 3, 4)]}))
    with caplog.at_level(logging.ERROR, logger="baton.usage"):
        assert await app.drain() == {"completed": 1}
    assert [(r[4], r[7]) for r in usage_rows(db_url)] == [("raises", None), ("bad-type", None)]
    assert "pricing callable failed for model 'raises'" in caplog.text
    assert "pricing" in caplog.text and "bad-type" in caplog.text


async def test_decimal_sums_are_exact_on_every_engine(make_app):
    # 0.1 + 0.2 in binary floating point is 0.30000000000000004; tiny costs vanish in floats.
    app = make_app(
        queues={"default": 4}, pricing={"a": {"input": "0.1", "output": "0.2"}, "t": {"input": "0.15", "output": 0}}
    )
    w = llm_workers(app)
    calls = [call("a", 1_000_000, 0), call("a", 0, 1_000_000)] + [call("t", 1, 0)] * 7
    wid = await app.insert_workflow(baton.Workflow().add("s", w.sync.new({"calls": calls})))
    await app.drain()
    u = await app.workflow_usage(wid)
    assert u.by_model["a"].cost == Decimal("0.3")
    assert u.by_model["t"].cost == Decimal("0.00000105")
    assert u.total_cost == Decimal("0.30000105")
    assert (await app.usage_by_model())["t"]["cost"] == Decimal("0.00000105")


async def test_the_price_at_recording_time_is_kept(make_app, db_url):
    app = make_app(queues={"default": 1}, pricing={"m": {"input": "1", "output": "1"}})
    w = llm_workers(app)
    await app.insert(w.sync.new({"calls": [call("m", 1_000_000, 0)]}))
    await app.drain()
    later = make_app(queues={"default": 1}, pricing={"m": {"input": "5", "output": "5"}})
    llm_workers(later)
    await later.insert(later.new("llm.sync", {"calls": [call("m", 1_000_000, 0)]}))
    await later.drain()
    assert (await later.usage_by_model())["m"]["cost"] == Decimal("6")


# --------------------------------------------------------------------------- queries


async def test_usage_by_model_since(make_app, db_url):
    app = make_app(queues={"default": 1}, pricing=PRICES)
    w = llm_workers(app)
    await app.insert(w.sync.new({"calls": [call("mini", 10, 0)]}))
    await app.drain()
    query(db_url, "UPDATE baton_usage SET recorded_at = recorded_at - ?", [_age(db_url, 3 * 86400)])
    await app.insert(w.sync.new({"calls": [call("mini", 1, 0), call("gpt-4.1", 2, 0)]}))
    await app.drain()

    everything = await app.usage_by_model()
    assert everything["mini"]["input_tokens"] == 11 and everything["mini"]["calls"] == 2
    last_day = await app.usage_by_model(since=datetime.now(UTC) - timedelta(days=1))
    assert {m: u["input_tokens"] for m, u in last_day.items()} == {"gpt-4.1": 2, "mini": 1}
    assert await app.usage_by_model(since=timedelta(days=1)) == last_day
    assert await app.usage_by_model(since=datetime.now(UTC) + timedelta(hours=1)) == {}


def _age(url: str, seconds: int) -> Any:
    return timedelta(seconds=seconds) if url.startswith("postgres") else seconds


async def test_workflow_usage_of_a_workflow_without_usage_is_empty_and_unknown_ids_are_errors(app):
    app.worker(name="noop")(lambda job: None)
    wid = await app.insert_workflow(baton.Workflow().add("a", app.new("noop", {})))
    await app.drain()
    u = await app.workflow_usage(wid)
    assert (u.total_cost, u.calls, u.by_step, u.by_model) == (None, 0, {}, {})
    with pytest.raises(baton.ValidationError) as err:
        await app.workflow_usage("no-such-workflow")
    assert err.value.field == "workflow_id"


# --------------------------------------------------------------------------- telemetry


async def test_each_recorded_call_is_a_telemetry_event_after_the_ack(make_app, events):
    events.attach(USAGE)
    app = make_app(queues={"default": 1}, pricing=PRICES)
    w = llm_workers(app)
    wid = await app.insert_workflow(
        baton.Workflow().add("s", w.sync.new({"calls": [call("gpt-4.1", 1000, 10), call("other", 1, 2)]}))
    )
    await app.drain()
    got = events.of(USAGE)
    assert [m for m, _ in got] == [
        {"input_tokens": 1000, "output_tokens": 10, "cost": 0.00208},
        {"input_tokens": 1, "output_tokens": 2, "cost": None},
    ]
    md = got[0][1]
    assert md["model"] == "gpt-4.1" and md["cost"] == Decimal("0.00208")
    assert (md["workflow_id"], md["step"], md["attempt"], md["worker"], md["queue"]) == (
        wid,
        "s",
        1,
        "llm.sync",
        "default",
    )
    assert md["job_id"] == md["job"].id and md["node"] == app.node


# --------------------------------------------------------------------------- retention


async def test_workflow_health_prunes_usage_rows_whose_job_is_gone(make_app, db_url):
    app = make_app(queues={"default": 1}, pricing=PRICES)
    w = llm_workers(app)
    await app.insert_workflow(baton.Workflow().add("s", w.sync.new({"calls": [call("mini", 1, 1)] * 3})))
    await app.insert(w.sync.new({"calls": [call("mini", 1, 1)]}))
    await app.drain()
    health = WorkflowHealth(prune=True, prune_limit=2)
    assert "baton_usage" not in (await health.sweep(app))["pruned"]  # jobs still there
    await asyncio.sleep(0.01)
    assert (await Pruner(max_age=0.001).sweep(app))["pruned_count"] == 2
    assert (await health.sweep(app))["pruned"]["baton_usage"] == 2
    assert (await health.sweep(app))["pruned"]["baton_usage"] == 2
    assert "baton_usage" not in (await health.sweep(app))["pruned"]
    assert usage_rows(db_url) == []


# --------------------------------------------------------------------------- CLI


def _cli(url: str, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--url", url, *args], env={"COLUMNS": "200"})


def test_baton_usage_prints_cost_by_model_and_workflows_show_cost_by_step(db_url):
    async def setup() -> str:
        app = baton.Baton(db_url, plugins=[], log_events=False, pricing=PRICES)
        w = llm_workers(app)
        try:
            wf = baton.Workflow(label="cli")
            wf.add("draft", w.sync.new({"calls": [call("gpt-4.1", 1200, 300), call("llama", 7, 7)]}))
            wf.add("review", w.sync.new({"calls": [call("mini", 1000, 100)]}), deps=["draft"])
            wid = await app.insert_workflow(wf)
            await app.drain()
            return wid
        finally:
            await app.close()

    wid = asyncio.run(setup())
    result = _cli(db_url, "usage", "--since", "1d")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split() for line in result.output.splitlines() if line.strip()}
    assert lines["gpt-4.1"][1:] == ["1", "1,200", "300", "0.0048"]
    assert lines["mini"][1:] == ["1", "1,000", "100", "0.00021"]
    assert lines["llama"][1:] == ["1", "7", "7", "-", "(1", "unpriced)"]
    assert lines["total"][1:] == ["3", "2,207", "407", "0.00501", "+", "1", "unpriced"]
    assert "unpriced models: llama" in result.output

    shown = _cli(db_url, "workflows", "show", wid)
    assert shown.exit_code == 0, shown.output
    steps = {line.split()[0]: line.split() for line in shown.output.splitlines() if line.strip()}
    assert steps["draft"][1:] == ["2", "1,207", "307", "0.0048", "+", "1", "unpriced"]
    assert steps["review"][1:] == ["1", "1,000", "100", "0.00021"]
    assert steps["total"][4] == "0.00501"

    bad = _cli(db_url, "usage", "--since", "yesterday")
    assert bad.exit_code == 2 and "30m, 12h, 1d" in bad.output


def test_workflows_show_prints_no_cost_section_without_usage(db_url):
    async def setup() -> str:
        app = baton.Baton(db_url, plugins=[], log_events=False)
        app.worker(name="noop")(lambda job: None)
        try:
            wid = await app.insert_workflow(baton.Workflow().add("a", app.new("noop", {})))
            await app.drain()
            return wid
        finally:
            await app.close()

    shown = _cli(db_url, "workflows", "show", asyncio.run(setup()))
    assert shown.exit_code == 0 and "COST" not in shown.output
    assert _cli(db_url, "usage").output.strip() == "no usage recorded"
    # `all` is no time span: not "in the last all".
    assert _cli(db_url, "usage", "--since", "all").output.strip() == "no usage recorded"
    assert _cli(db_url, "usage", "--since", "2h").output.strip() == "no usage recorded in the last 2h"


# --------------------------------------------------------------------------- bad input


async def test_bad_record_usage_arguments_are_validation_errors_naming_the_field(make_app, db_url):
    app = make_app(queues={"default": 1})
    errors: list[tuple[str, str]] = []
    bad_calls: list[dict[str, Any]] = [
        {"model": "m", "input_tokens": -1, "output_tokens": 0},
        {"model": "m", "input_tokens": 1.5, "output_tokens": 0},
        {"model": "m", "input_tokens": True, "output_tokens": 0},
        {"model": "m", "input_tokens": 1, "output_tokens": "2"},
        {"model": "m", "input_tokens": 1, "output_tokens": 2**63},
        {"model": 4, "input_tokens": 1, "output_tokens": 1},
        {"model": "", "input_tokens": 1, "output_tokens": 1},
        {"model": "m\x00", "input_tokens": 1, "output_tokens": 1},
        {"model": "m", "input_tokens": 1, "output_tokens": 1, "note": object()},
        {"model": "m", "input_tokens": 1, "output_tokens": 1, "ratio": float("nan")},
    ]

    @app.worker(name="llm.bad")
    def bad(job: baton.Job) -> None:
        for kwargs in bad_calls:
            try:
                job.record_usage(**kwargs)
            except baton.ValidationError as exc:
                errors.append((exc.field, str(exc)))
        job.record_usage(model="m", input_tokens=0, output_tokens=0)  # zero is fine

    await app.insert(bad.new({}))
    assert await app.drain() == {"completed": 1}
    assert [f for f, _ in errors] == [
        "input_tokens",
        "input_tokens",
        "input_tokens",
        "output_tokens",
        "output_tokens",
        "model",
        "model",
        "model",
        "extra",
        "extra",
    ]
    assert "whole number of tokens" in errors[0][1]
    assert [r[4:7] for r in usage_rows(db_url)] == [("m", 0, 0)]


@pytest.mark.parametrize(
    ("pricing", "field", "needle"),
    [
        ({"m": {"input": "abc", "output": "1"}}, "pricing.m.input", "number"),
        ({"m": {"input": "1", "output": [1]}}, "pricing.m.output", "price"),
        ({"m": {"input": "-1", "output": "1"}}, "pricing.m.input", ">= 0"),
        ({"m": {"input": "NaN", "output": "1"}}, "pricing.m.input", "finite"),
        ({"m": {"input": True, "output": "1"}}, "pricing.m.input", "price"),
        ({"m": {"input": "1"}}, "pricing.m.output", "missing"),
        ({"m": {"input": "1", "output": "1", "cached": "0.5"}}, "pricing.m.cached", "input' and 'output"),
        ({5: {"input": "1", "output": "1"}}, "pricing", "model names must be non-empty strings, got int"),
        ({"m": "2.00"}, "pricing.m", "must be a dict"),
        ("gpt-4.1=2", "pricing", "callable"),
    ],
)
def test_bad_pricing_is_a_validation_error_naming_the_entry(pricing: Any, field: str, needle: str) -> None:
    with pytest.raises(baton.ValidationError) as err:
        baton.Baton("sqlite:///unused.db", plugins=[], log_events=False, pricing=pricing)
    assert err.value.field == field
    assert needle in str(err.value)


def test_prices_may_be_str_int_decimal_or_float() -> None:
    pricing = baton.Pricing.parse({"m": {"input": 2, "output": Decimal("8.5")}, "f": {"input": 0.1, "output": "0"}})
    assert pricing is not None
    assert pricing("m", 1_000_000, 1_000_000, {}) == Decimal("10.5")
    assert pricing("f", 1_000_000, 0, {}) == Decimal("0.1")  # a float is taken by its str
    assert pricing("other", 1, 1, {}) is None


async def test_usage_by_model_rejects_a_naive_datetime(app: baton.Baton) -> None:
    for since in (datetime.now(), "1d", 5):
        with pytest.raises(baton.ValidationError) as err:
            await app.usage_by_model(since=since)  # type: ignore[arg-type]
        assert err.value.field == "since"


# --------------------------------------------------------------------------- the example

EXAMPLE = Path(__file__).parent.parent / "examples" / "llm_costs.py"


def test_the_llm_costs_example_prices_each_model_of_its_fan_out(db_url: str) -> None:
    spec = importlib.util.spec_from_file_location("llm_costs_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = example  # its dataclasses look their module up
    try:
        spec.loader.exec_module(example)
    finally:
        del sys.modules[spec.name]

    usage = asyncio.run(example.main(db_url))
    assert list(usage.by_model) == sorted([*example.MODELS, example.SYNTHESIZER])
    assert set(usage.by_step) == {*(f"ask_{m}" for m in example.MODELS), "synthesize"}
    assert usage.by_model["local-llama"].cost is None and usage.unpriced_models == ["local-llama"]
    expected = Decimal(0)
    for model, u in usage.by_model.items():
        if model in example.PRICING:
            price = example.PRICING[model]
            cost = (u.input_tokens * Decimal(price["input"]) + u.output_tokens * Decimal(price["output"])) / 10**6
            assert u.cost == cost
            expected += cost
    assert usage.total_cost == expected


def test_the_llm_costs_example_runs_as_a_script_on_sqlite() -> None:
    out = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120, check=True)
    lines = out.stdout.splitlines()
    assert lines[0].startswith("workflow ")
    assert any(line.startswith("local-llama") and line.endswith("unpriced") for line in lines)
    assert lines[-1].startswith("total: $") and "not counting local-llama" in lines[-1]
