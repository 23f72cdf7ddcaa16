"""SPEC section 6: self-healing is observable. Metrics for the orphan backlog, the time from a
node's death to its jobs' rescue, stuck workflows by reason, the finished-notification lag and
each plugin's last successful sweep — in the plugins' stop events and in both bridges
(Prometheus scraped as text, OpenTelemetry through the SDK's in-memory reader). Orphans come
from a real node killed with SIGKILL mid-job; stuck workflows from rows changed behind Baton's
back, as an operator's cleanup or a crash leaves them. Both engines."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import baton
import heal_nodes
from baton.plugins import Lifeline, WorkflowHealth
from baton.telemetry import otel as otel_bridge
from baton.telemetry import prometheus as prom_bridge
from conftest import wait_for
from heal_nodes import NodeProcess, ago_sql, side_sql

STOP = ("baton", "plugin", "stop")
FINISHED = ("baton", "workflow", "finished")
STALE = 2.0


@pytest.fixture
def bridges() -> Iterator[tuple[CollectorRegistry, InMemoryMetricReader]]:
    registry = CollectorRegistry()
    reader = InMemoryMetricReader()
    prom_id = prom_bridge.attach(registry, handler_id="test-heal-prom")
    otel_id = otel_bridge.attach(meter_provider=MeterProvider(metric_readers=[reader]), handler_id="test-heal-otel")
    yield registry, reader
    prom_bridge.detach(prom_id)
    otel_bridge.detach(otel_id)


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the registry as {(name, sorted labels): value}."""
    from prometheus_client import generate_latest

    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def otel_points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    """The data points of every metric the reader collected, by metric name."""
    out: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out.setdefault(m.name, []).extend(m.data.data_points)
    return out


def sweeper(make_app: Callable[..., baton.Baton]) -> baton.Baton:
    return make_app(stale_after=STALE, refresh_interval=STALE / 4)


async def orphans_of_killed_node(
    spawn: Callable[..., NodeProcess], url: str, inserter: baton.Baton, n: int
) -> list[int]:
    """`n` jobs executing on a node killed with SIGKILL, its producer stale by now."""
    w = heal_nodes.register(inserter)
    jobs = await inserter.insert_all([w["heal.sleeper"].new({"n": i, "sleep": 30}) for i in range(n)])
    victim = spawn("worker", url, node="victim")
    await victim.ready()
    await wait_for(
        lambda: int(side_sql(url, "SELECT count(*) FROM exec_log WHERE phase = 'start'")[0][0]) == n, timeout=20
    )
    victim.signal(signal.SIGKILL)
    await asyncio.to_thread(victim.proc.wait)
    await asyncio.sleep(STALE + 0.5)  # the producer row is now older than stale_after
    return [j.id for j in jobs]


async def test_lifeline_reports_orphan_backlog_and_rescue_delays(db_url, side, spawn, make_app, events, bridges):
    registry, reader = bridges
    events.attach(STOP)
    inserter = make_app()
    ids = await orphans_of_killed_node(spawn, db_url, inserter, 5)

    app = sweeper(make_app)
    # A limit of 2 rescues two orphans per sweep: the backlog counts the three left too.
    first = await Lifeline(limit=2).sweep(app)
    assert len(first["rescued_jobs"]) == 2
    assert first["orphan_backlog"] == 5
    delays = first["rescue_delays"]
    assert sorted(d["id"] for d in delays) == sorted(j["id"] for j in first["rescued_jobs"])
    # Measured from the dead producer's last heartbeat, which is at least stale_after old.
    assert all(d["queue"] == "default" and d["delay"] >= STALE * 1000 for d in delays)
    second = await Lifeline(limit=2).sweep(app)
    third = await Lifeline(limit=2).sweep(app)
    assert (second["orphan_backlog"], third["orphan_backlog"]) == (3, 1)
    rescued = [j["id"] for m in (first, second, third) for j in m["rescued_jobs"]]
    assert sorted(rescued) == sorted(ids)
    # Nothing left: the backlog is back to 0 (and the dead producer's row is gone).
    last = await Lifeline().sweep(app)
    assert last["orphan_backlog"] == 0 and last["rescue_delays"] == [] and last["stuck_workflows"] == {}
    stops = [md for _, md in events.of(STOP) if md["plugin"] == "lifeline"]
    assert [md["orphan_backlog"] for md in stops] == [5, 3, 1, 0]

    samples = scrape(registry)
    assert samples[("baton_orphan_backlog", ())] == 0  # the last sweep's
    assert samples[("baton_rescue_delay_seconds_count", (("queue", "default"),))] == 5
    assert samples[("baton_rescue_delay_seconds_sum", (("queue", "default"),))] >= 5 * STALE
    assert samples[("baton_plugin_last_success_timestamp_seconds", (("plugin", "lifeline"),))] > 0
    points = otel_points(reader)
    assert [p.value for p in points["baton.lifeline.orphan_backlog"]] == [0]
    assert sum(p.count for p in points["baton.lifeline.rescue_delay"]) == 5
    assert [p.attributes for p in points["baton.plugin.last_success"]] == [{"plugin": "lifeline"}]


async def test_orphaned_workflow_steps_count_as_stuck_workflows(db_url, side, spawn, make_app, bridges):
    registry, _ = bridges
    inserter = make_app()
    w = heal_nodes.register(inserter)
    wf = baton.Workflow(label="orphaned")
    wf.add("a", w["heal.sleeper"].new({"n": 1, "sleep": 30}))
    wf.add("b", w["heal.sleeper"].new({"n": 2, "sleep": 30}))
    wid = await inserter.insert_workflow(wf)
    victim = spawn("worker", db_url, node="victim")
    await victim.ready()
    await wait_for(
        lambda: int(side_sql(db_url, "SELECT count(*) FROM exec_log WHERE phase = 'start'")[0][0]) == 2, timeout=20
    )
    victim.signal(signal.SIGKILL)
    await asyncio.to_thread(victim.proc.wait)
    await asyncio.sleep(STALE + 0.5)

    meta = await Lifeline().sweep(sweeper(make_app))
    # Two steps rescued, one workflow stuck.
    assert len(meta["rescued_jobs"]) == 2
    assert meta["stuck_workflows"] == {"orphaned": [wid]}
    assert scrape(registry)[("baton_stuck_workflows_total", (("plugin", "lifeline"), ("reason", "orphaned")))] == 1


async def test_stuck_workflows_by_reason_from_both_plugins(db_url, make_app, bridges, events):
    registry, reader = bridges
    events.attach(STOP)
    app = sweeper(make_app)

    @app.worker(name="step")
    def step(job: baton.Job) -> None:
        return None

    # dep_deleted: a -> b, and a's row deleted before it ran; the Lifeline cancels b.
    wf1 = baton.Workflow(label="dep deleted")
    wf1.add("a", step.new({}))
    wf1.add("b", step.new({}), deps=["a"])
    w1 = await app.insert_workflow(wf1)
    # orphaned_step: c -> d, and c's row deleted; WorkflowHealth's first duty cancels d.
    wf2 = baton.Workflow(label="orphaned step")
    wf2.add("c", step.new({}))
    wf2.add("d", step.new({}), deps=["c"])
    w2 = await app.insert_workflow(wf2)
    s1, s2 = await app.workflow_status(w1), await app.workflow_status(w2)
    job_id = {name: s.job_id for st in (s1, s2) for name, s in st.details.items()}
    side_sql(app.url, "DELETE FROM baton_jobs WHERE id = ?", (job_id["c"],))

    health = await WorkflowHealth().sweep(app)
    assert health["stuck_workflows"]["orphaned_step"] == [w2]
    side_sql(app.url, "DELETE FROM baton_jobs WHERE id = ?", (job_id["a"],))
    life = await Lifeline().sweep(app)
    assert life["stuck_workflows"] == {"dep_deleted": [w1]}

    samples = scrape(registry)
    assert samples[("baton_stuck_workflows_total", (("plugin", "lifeline"), ("reason", "dep_deleted")))] == 1
    assert samples[("baton_stuck_workflows_total", (("plugin", "workflow_health"), ("reason", "orphaned_step")))] == 1
    points = otel_points(reader)
    stuck = {(p.attributes["plugin"], p.attributes["reason"]): p.value for p in points["baton.workflows.stuck"]}
    assert stuck[("lifeline", "dep_deleted")] == 1
    assert stuck[("workflow_health", "orphaned_step")] == 1


async def test_finished_event_carries_the_notification_lag(db_url, make_app, events, bridges):
    registry, reader = bridges
    events.attach(FINISHED)
    app = make_app(queues={"default": 2})

    @app.worker(name="step")
    async def step(job: baton.Job) -> int:
        return 1

    wf = baton.Workflow(label="lagged")
    wf.add("a", step.new({}))
    wf.add("b", step.new({}), deps=["a"])
    async with app:
        wid = await app.insert_workflow(wf)
        await wait_for(lambda: events.of(FINISHED), timeout=20)
    measurements, metadata = events.of(FINISHED)[0]
    assert metadata["workflow_id"] == wid
    assert measurements["lag"] >= 0
    samples = scrape(registry)
    assert samples[("baton_workflow_finished_lag_seconds_count", ())] == 1
    points = otel_points(reader)
    assert [p.count for p in points["baton.workflow.finished_lag"]] == [1]


async def test_backstop_announcement_lag_counts_from_the_last_step(db_url, make_app, events, bridges):
    """A workflow whose last step was finished behind Baton's back (no ack, so no announcement):
    WorkflowHealth's backstop announces it, and the lag runs from that step's end."""
    registry, _ = bridges
    events.attach(FINISHED)
    app = sweeper(make_app)

    @app.worker(name="step")
    def step(job: baton.Job) -> None:
        return None

    wf = baton.Workflow(label="unannounced")
    wf.add("only", step.new({}))
    wid = await app.insert_workflow(wf)
    job_id = (await app.workflow_status(wid)).details["only"].job_id
    side_sql(
        app.url,
        f"UPDATE baton_jobs SET state = 'completed', completed_at = {ago_sql(app.url, 30)} WHERE id = ?",
        (job_id,),
    )
    # The Lifeline resolves the step (a missed release), which finishes and announces it...
    life = await Lifeline().sweep(app)
    health = await WorkflowHealth().sweep(app)
    announced = life["stuck_workflows"].get("missed_release", []) + health["stuck_workflows"].get("unannounced", [])
    assert announced == [wid]
    (measurements, metadata), *_ = events.of(FINISHED)
    assert metadata["workflow_id"] == wid
    assert measurements["lag"] >= 30_000  # the step ended 30 s ago on the database's clock
    assert scrape(registry)[("baton_workflow_finished_lag_seconds_sum", ())] >= 30


async def test_workflow_health_counts_a_workflow_it_unsticks_from_a_deleted_step(db_url, make_app, bridges):
    """`b` ignores a deleted `a`, yet waits on it until a sweep resolves `a` as deleted: the
    sweep that does so counts the workflow (`dep_deleted`), whichever plugin gets there."""
    registry, _ = bridges
    app = sweeper(make_app)

    @app.worker(name="step")
    def step(job: baton.Job) -> None:
        return None

    wf = baton.Workflow(label="ignores deleted")
    wf.add("a", step.new({}))
    wf.add("b", step.new({}), deps=["a"], ignore_deleted=True)
    wid = await app.insert_workflow(wf)
    side_sql(app.url, "DELETE FROM baton_jobs WHERE id = ?", ((await app.workflow_status(wid)).details["a"].job_id,))
    health = await WorkflowHealth().sweep(app)
    assert health["stuck_workflows"] == {"dep_deleted": [wid]}
    assert (await app.workflow_status(wid)).steps == {"a": "deleted", "b": "available"}
    sample = ("baton_stuck_workflows_total", (("plugin", "workflow_health"), ("reason", "dep_deleted")))
    assert scrape(registry)[sample] == 1
