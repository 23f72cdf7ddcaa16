"""The telemetry bridges against the real libraries: OpenTelemetry (SDK in-memory exporter and
reader, explicit providers, no globals), Prometheus (a fresh registry, scraped as text) and the
default logging bridge, fed by real jobs on both engines."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import baton
from baton import telemetry
from baton.store import transitions as jobs_store
from baton.telemetry import otel as otel_bridge
from baton.telemetry import prometheus as prom_bridge
from baton.telemetry.logging import HANDLER_ID as LOGGER_ID
from baton.telemetry.logging import detach_default_logger


def _workers(app: baton.Baton) -> tuple[Any, Any, Any]:
    """ok (sleeps 50 ms, succeeds), boom (fails once, discarded), flaky (fails, retryable)."""

    @app.worker(name="ok")
    async def ok(job: baton.Job) -> int:
        await asyncio.sleep(0.05)
        return 1

    @app.worker(name="boom", max_attempts=1)
    def boom(job: baton.Job) -> None:
        raise RuntimeError("nope")

    @app.worker(name="flaky", queue="other", max_attempts=5)
    def flaky(job: baton.Job) -> None:
        raise ValueError("later")

    return ok, boom, flaky


def delete_job_by_hand(db_url: str, job_id: int) -> None:
    """Delete a job row behind Baton's back, as an operator's manual cleanup would."""
    if db_url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(db_url.removeprefix("sqlite:///"))) as conn:
            conn.execute("DELETE FROM baton_jobs WHERE id = ?", (job_id,))
            conn.commit()
    else:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("DELETE FROM baton_jobs WHERE id = %s", (job_id,))


async def self_healing_scenario(app: baton.Baton, db_url: str) -> None:
    """Give WorkflowHealth and Lifeline real work, then sweep both:

    - workflow "orphaned": step b waits on a, whose job row is deleted by hand → rescued (1);
    - workflow "bad": its only step fails → failed report (2 with "orphaned"), then pruned rows;
    - two jobs of queue "lost" fetched by a producer that never existed (a dead node): one is
      rescued, the other has no attempts left and is discarded.
    """
    ok, boom, _ = _workers(app)
    orphaned = baton.Workflow(label="orphaned")
    orphaned.add("a", ok.new({})).add("b", ok.new({}), deps=["a"])
    orphaned_id = await app.insert_workflow(orphaned)
    bad = baton.Workflow(label="bad")
    bad.add("x", boom.new({}))
    await app.insert_workflow(bad)
    status = await app.workflow_status(orphaned_id)
    delete_job_by_hand(db_url, status.details["a"].job_id)

    await app.insert_all([ok.new({"n": 1}, queue="lost"), ok.new({"n": 2}, queue="lost", max_attempts=1)])
    fetched = await app.engine.run(jobs_store.fetch_jobs, "lost", "dead-node", str(uuid.uuid4()), 10)
    assert len(fetched) == 2

    await app.drain(queue="default")
    await baton.plugins.WorkflowHealth(prune=True).sweep(app)
    await baton.plugins.Lifeline().sweep(app)


class Broken(baton.plugins.Plugin):
    """A plugin whose every sweep fails."""

    name = "broken"

    async def _sweep(self, app: baton.Baton) -> dict[str, Any]:
        raise RuntimeError("sweep failed")


def _usage_app(make_app: Callable[..., baton.Baton]) -> baton.Baton:
    """An app whose `llm` worker records 1000/100 tokens of gpt-4.1 (priced) and 5/5 of local (not)."""
    app = make_app(queues={"default": 2}, pricing={"gpt-4.1": {"input": "2.00", "output": "8.00"}})

    @app.worker(name="llm")
    def llm(job: baton.Job) -> None:
        job.record_usage(model="gpt-4.1", input_tokens=1000, output_tokens=100)
        job.record_usage(model="local", input_tokens=5, output_tokens=5)

    return app


# --------------------------------------------------------------------------- OpenTelemetry


@dataclass
class Otel:
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        out: list[Any] = []
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        out.extend(metric.data.data_points)
        return out

    def value(self, name: str, **attributes: Any) -> float:
        """Sum of a counter's points (or a histogram's counts) whose attributes include these."""
        total = 0.0
        for point in self.points(name):
            if all(point.attributes.get(k) == v for k, v in attributes.items()):
                total += point.count if hasattr(point, "bucket_counts") else point.value
        return total


@pytest.fixture
def otel() -> Iterator[Otel]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    assert otel_bridge.attach(tracer_provider=tracer_provider, meter_provider=meter_provider) == otel_bridge.HANDLER_ID
    yield Otel(spans, reader)
    otel_bridge.detach()
    tracer_provider.shutdown()
    meter_provider.shutdown()


async def test_otel_creates_one_span_per_attempt_with_job_attributes(
    make_app: Callable[..., baton.Baton], otel: Otel
) -> None:
    app = make_app(queues={"default": 2, "other": 1})
    ok, boom, flaky = _workers(app)
    good = await app.insert(ok.new({}))
    bad = await app.insert(boom.new({}))
    retry = await app.insert(flaky.new({}))
    assert await app.drain() == {"completed": 1, "discarded": 1, "retryable": 1}

    spans = {span.attributes["baton.job.id"]: span for span in otel.finished()}
    assert set(spans) == {good.id, bad.id, retry.id}

    span = spans[good.id]
    assert span.name == "baton.job ok"
    expected = {
        "baton.job.id": good.id,
        "baton.job.queue": "default",
        "baton.job.worker": "ok",
        "baton.job.attempt": 1,
        "baton.job.state": "completed",
        "baton.node": app.node,
    }
    assert {k: span.attributes.get(k) for k in expected} == expected
    assert span.status.status_code == StatusCode.UNSET
    # Created at the end of the attempt, back-dated by its duration: it covers the 50 ms sleep.
    assert span.start_time is not None and span.end_time is not None
    assert span.end_time - span.start_time >= 45_000_000

    span = spans[bad.id]
    assert span.name == "baton.job boom"
    assert span.attributes["baton.job.state"] == "discarded"
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == "RuntimeError: nope"
    (exc_event,) = [e for e in span.events if e.name == "exception"]
    assert exc_event.attributes["exception.type"] == "RuntimeError"
    assert exc_event.attributes["exception.message"] == "nope"
    assert "raise RuntimeError" in exc_event.attributes["exception.stacktrace"]

    span = spans[retry.id]
    assert span.attributes["baton.job.queue"] == "other"
    assert span.attributes["baton.job.state"] == "retryable"
    assert span.status.status_code == StatusCode.ERROR


async def test_otel_records_job_workflow_fenced_and_plugin_metrics(
    make_app: Callable[..., baton.Baton], otel: Otel
) -> None:
    app = make_app(queues={"default": 2, "other": 1})
    ok, boom, flaky = _workers(app)

    @app.worker(name="self_cancel")
    async def self_cancel(job: baton.Job) -> int:
        await app.cancel_all_jobs(ids=[job.id])
        return 1

    await app.insert_all([ok.new({"n": 1}), ok.new({"n": 2}), boom.new({}), flaky.new({})])
    await app.insert(self_cancel.new({}))
    wf = baton.Workflow(label="w")
    wf.add("a", ok.new({})).add("b", boom.new({}), deps=["a"])
    await app.insert_workflow(wf)
    await app.drain()
    await baton.plugins.Stager().sweep(app)

    assert otel.value("baton.jobs", queue="default", worker="ok", state="completed") == 3
    assert otel.value("baton.jobs", queue="default", worker="boom", state="discarded") == 2
    assert otel.value("baton.jobs", queue="other", worker="flaky", state="retryable") == 1
    assert otel.value("baton.job.duration") == 7  # one point per attempt, self_cancel included
    assert otel.value("baton.job.duration", worker="ok") == 3
    assert otel.value("baton.job.queue_time", queue="default") == 6
    assert all(p.min >= 0 for p in otel.points("baton.job.queue_time"))
    assert otel.value("baton.jobs.fenced") == 1
    assert otel.value("baton.jobs.fenced", reason="cancelled") == 1
    assert otel.value("baton.workflows.finished", status="failed") == 1
    assert otel.value("baton.plugin.duration", plugin="stager") == 1


async def test_otel_counts_usage_tokens_and_cost_by_model(make_app: Callable[..., baton.Baton], otel: Otel) -> None:
    app = _usage_app(make_app)
    await app.insert_all([app.new("llm", {}), app.new("llm", {})])
    await app.drain()
    assert otel.value("baton.usage.tokens", model="gpt-4.1", kind="input") == 2000
    assert otel.value("baton.usage.tokens", model="gpt-4.1", kind="output") == 200
    assert otel.value("baton.usage.tokens", model="local", kind="input") == 10
    # (1000*2 + 100*8) / 1e6 = 0.0028 per job; an unpriced model adds no cost point.
    assert otel.value("baton.usage.cost", model="gpt-4.1") == pytest.approx(0.0056)
    assert otel.points("baton.usage.cost") and all(
        p.attributes["model"] != "local" for p in otel.points("baton.usage.cost")
    )


async def test_otel_counts_the_self_healing_events(
    make_app: Callable[..., baton.Baton], db_url: str, otel: Otel, events: Any
) -> None:
    app = make_app(queues={"default": 2})
    events.attach(("baton", "plugin", "pruned"))
    await self_healing_scenario(app, db_url)

    assert otel.value("baton.plugin.rescued", plugin="workflow_health") == 1
    assert otel.value("baton.workflows.failed") == 2
    pruned = sum(m["count"] for m, _ in events.of(("baton", "plugin", "pruned")))
    assert pruned >= 1 and otel.value("baton.plugin.pruned") == pruned
    assert otel.value("baton.plugin.duration", plugin="workflow_health", outcome="ok") == 1
    assert otel.value("baton.plugin.duration", plugin="lifeline", outcome="ok") == 1
    assert otel.value("baton.plugin.rescued_jobs", plugin="lifeline", queue="lost") == 1
    assert otel.value("baton.plugin.discarded_jobs", plugin="lifeline", queue="lost") == 1


async def test_otel_records_a_failed_sweep_with_outcome_error(make_app: Callable[..., baton.Baton], otel: Otel) -> None:
    app = make_app(queues={"default": 1})
    with pytest.raises(RuntimeError):
        await Broken().sweep(app)
    assert otel.value("baton.plugin.duration", plugin="broken", outcome="error") == 1


def test_otel_attach_twice_is_an_error_and_detach_says_whether_it_was_attached() -> None:
    otel_bridge.attach(tracer_provider=TracerProvider(), meter_provider=MeterProvider())
    try:
        with pytest.raises(ValueError, match="already attached"):
            otel_bridge.attach(tracer_provider=TracerProvider(), meter_provider=MeterProvider())
        # Several bridges may coexist under their own ids (e.g. two exporters).
        assert otel_bridge.attach(handler_id="otel-second") == "otel-second"
        assert otel_bridge.detach("otel-second") is True
    finally:
        assert otel_bridge.detach() is True
    assert otel_bridge.detach() is False
    assert otel_bridge.HANDLER_ID not in telemetry.list_handlers()


def test_otel_without_the_extra_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # makes `import opentelemetry` fail
    with pytest.raises(ImportError, match=r"pip install 'baton-jobs\[otel\]'") as info:
        otel_bridge.attach()
    assert isinstance(info.value, baton.BatonError)
    assert otel_bridge.HANDLER_ID not in telemetry.list_handlers()


# --------------------------------------------------------------------------- Prometheus


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse generate_latest(registry) into {(sample name, sorted labels): value}."""
    text = generate_latest(registry).decode()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def sample(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    registry = CollectorRegistry()
    assert prom_bridge.attach(registry) == prom_bridge.HANDLER_ID
    yield registry
    prom_bridge.detach()


async def test_prometheus_exports_job_metrics(
    make_app: Callable[..., baton.Baton], registry: CollectorRegistry
) -> None:
    app = make_app(queues={"default": 2, "other": 1})
    ok, boom, flaky = _workers(app)
    await app.insert_all([ok.new({"n": 1}), ok.new({"n": 2}), boom.new({}), flaky.new({})])
    await app.drain()

    text = generate_latest(registry).decode()
    assert "# TYPE baton_jobs_total counter" in text
    assert "# TYPE baton_job_duration_seconds histogram" in text
    samples = scrape(registry)
    assert sample(samples, "baton_jobs_total", queue="default", worker="ok", state="completed") == 2
    assert sample(samples, "baton_jobs_total", queue="default", worker="boom", state="discarded") == 1
    assert sample(samples, "baton_jobs_total", queue="other", worker="flaky", state="retryable") == 1
    assert sample(samples, "baton_job_duration_seconds_count", queue="default", worker="ok") == 2
    # ok sleeps 50 ms: the histogram is in seconds, not milliseconds.
    duration_sum = sample(samples, "baton_job_duration_seconds_sum", queue="default", worker="ok")
    assert duration_sum is not None and 0.09 <= duration_sum < 5
    assert sample(samples, "baton_job_duration_seconds_bucket", queue="default", worker="ok", le="0.025") == 0
    assert sample(samples, "baton_job_duration_seconds_bucket", queue="default", worker="ok", le="+Inf") == 2
    assert sample(samples, "baton_job_queue_time_seconds_count", queue="default") == 3
    assert sample(samples, "baton_job_queue_time_seconds_count", queue="other") == 1


async def test_prometheus_exports_workflow_fenced_and_plugin_metrics(
    make_app: Callable[..., baton.Baton], registry: CollectorRegistry
) -> None:
    app = make_app(queues={"default": 2})
    ok, boom, _ = _workers(app)

    @app.worker(name="self_cancel")
    async def self_cancel(job: baton.Job) -> int:
        await app.cancel_all_jobs(ids=[job.id])
        return 1

    good = baton.Workflow(label="good")
    good.add("a", ok.new({}))
    bad = baton.Workflow(label="bad")
    bad.add("a", boom.new({})).add("b", ok.new({}), deps=["a"])
    await app.insert_workflow(good)
    await app.insert_workflow(bad)
    await app.insert(self_cancel.new({}))
    await app.drain()
    before = time.time()
    await baton.plugins.Stager().sweep(app)

    samples = scrape(registry)
    assert sample(samples, "baton_workflows_finished_total", status="completed") == 1
    assert sample(samples, "baton_workflows_finished_total", status="failed") == 1
    assert sample(samples, "baton_jobs_fenced_total") == 1
    assert sample(samples, "baton_plugin_duration_seconds_count", plugin="stager") == 1
    last = sample(samples, "baton_plugin_last_success_timestamp_seconds", plugin="stager")
    assert last is not None and last >= before


async def test_prometheus_counts_usage_tokens_and_cost_by_model(
    make_app: Callable[..., baton.Baton], registry: CollectorRegistry
) -> None:
    app = _usage_app(make_app)
    await app.insert_all([app.new("llm", {}), app.new("llm", {})])
    await app.drain()
    samples = scrape(registry)
    assert sample(samples, "baton_usage_tokens_total", model="gpt-4.1", kind="input") == 2000
    assert sample(samples, "baton_usage_tokens_total", model="gpt-4.1", kind="output") == 200
    assert sample(samples, "baton_usage_tokens_total", model="local", kind="output") == 10
    assert sample(samples, "baton_usage_cost_total", model="gpt-4.1") == pytest.approx(0.0056)
    assert sample(samples, "baton_usage_cost_total", model="local") is None


async def test_prometheus_counts_the_self_healing_events(
    make_app: Callable[..., baton.Baton], db_url: str, registry: CollectorRegistry, events: Any
) -> None:
    app = make_app(queues={"default": 2})
    events.attach(("baton", "plugin", "pruned"))
    await self_healing_scenario(app, db_url)

    samples = scrape(registry)
    assert sample(samples, "baton_plugin_rescued_total") == 1
    assert sample(samples, "baton_workflows_failed_total") == 2
    assert sample(samples, "baton_workflows_finished_total", status="failed") == 2
    pruned = sum(m["count"] for m, _ in events.of(("baton", "plugin", "pruned")))
    assert pruned >= 1 and sample(samples, "baton_plugin_pruned_total") == pruned
    assert sample(samples, "baton_plugin_rescued_jobs_total", plugin="lifeline", queue="lost") == 1
    assert sample(samples, "baton_plugin_discarded_jobs_total", plugin="lifeline", queue="lost") == 1
    for plugin in ("workflow_health", "lifeline"):
        assert sample(samples, "baton_plugin_last_success_timestamp_seconds", plugin=plugin) is not None
        assert sample(samples, "baton_plugin_duration_seconds_count", plugin=plugin) == 1


async def test_prometheus_failed_sweep_records_duration_but_not_success(
    make_app: Callable[..., baton.Baton], registry: CollectorRegistry
) -> None:
    app = make_app(queues={"default": 1})
    with pytest.raises(RuntimeError):
        await Broken().sweep(app)
    samples = scrape(registry)
    assert sample(samples, "baton_plugin_duration_seconds_count", plugin="broken") == 1
    assert sample(samples, "baton_plugin_last_success_timestamp_seconds", plugin="broken") is None


async def test_prometheus_leader_gauge_follows_the_lease(
    make_app: Callable[..., baton.Baton], registry: CollectorRegistry
) -> None:
    app = make_app(queues={"default": 1}, node="prom-node")
    async with app:
        assert sample(scrape(registry), "baton_leader", node="prom-node") == 1
    assert sample(scrape(registry), "baton_leader", node="prom-node") == 0
    telemetry.emit(("baton", "leader", "elected"), {}, {"node": "other", "instance": "i"})
    telemetry.emit(("baton", "leader", "lost"), {}, {"node": "other", "instance": "i"})
    assert sample(scrape(registry), "baton_leader", node="other") == 0


def test_prometheus_detach_unregisters_and_attach_again_works() -> None:
    registry = CollectorRegistry()
    prom_bridge.attach(registry)
    with pytest.raises(ValueError, match="already attached"):
        prom_bridge.attach(registry)
    # A second bridge on the same registry would export clashing series: refused, nothing leaked.
    with pytest.raises(ValueError, match="already registered"):
        prom_bridge.attach(registry, handler_id="prom-second")
    assert "prom-second" not in telemetry.list_handlers()
    assert prom_bridge.detach() is True
    assert prom_bridge.detach() is False
    assert "baton_" not in generate_latest(registry).decode()

    prom_bridge.attach(registry)
    try:
        telemetry.emit(("baton", "workflow", "failed"), {"failed_count": 1, "total_count": 1}, {"workflow_id": "w"})
        assert sample(scrape(registry), "baton_workflows_failed_total") == 1
    finally:
        prom_bridge.detach()


def test_prometheus_without_the_extra_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"pip install 'baton-jobs\[prometheus\]'") as info:
        prom_bridge.attach(CollectorRegistry())
    assert isinstance(info.value, baton.BatonError)
    assert prom_bridge.HANDLER_ID not in telemetry.list_handlers()


# --------------------------------------------------------------------------- logging


async def test_the_logging_bridge_is_on_by_default_and_logs_job_ends(
    make_app: Callable[..., baton.Baton], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(queues={"default": 2}, log_events=True)
    try:
        assert LOGGER_ID in telemetry.list_handlers()
        ok, boom, _ = _workers(app)
        good = await app.insert(ok.new({}))
        bad = await app.insert(boom.new({}))
        with caplog.at_level(logging.INFO, logger="baton.jobs"):
            await app.drain()
    finally:
        detach_default_logger()
    records = {r.baton["id"]: r for r in caplog.records if r.name == "baton.jobs"}
    assert records[good.id].levelno == logging.INFO
    assert records[good.id].baton["event"] == "job.stop"
    assert records[good.id].baton["state"] == "completed"
    assert records[good.id].baton["worker"] == "ok"
    assert "duration" in records[good.id].baton and "queue_time" in records[good.id].baton
    assert records[bad.id].levelno == logging.WARNING
    assert records[bad.id].baton["error"] == "RuntimeError: nope"
    assert "traceback" not in records[bad.id].baton


def test_log_events_false_does_not_attach_the_logging_bridge(make_app: Callable[..., baton.Baton]) -> None:
    make_app(queues={"default": 1}, log_events=False)
    assert LOGGER_ID not in telemetry.list_handlers()


async def test_the_logging_bridge_writes_one_line_per_event_whatever_the_values_hold(
    make_app: Callable[..., baton.Baton], caplog: pytest.LogCaptureFixture
) -> None:
    """An error message from job data with a newline (a forged log line), ESC, quotes, `=` and
    C1/DEL characters stays on its event's line, quoted and escaped; `record.baton` keeps it raw."""
    app = make_app(queues={"default": 1}, log_events=True)
    forged = 'bad input\nINFO baton.jobs event=job.stop id=999 state=completed\r\x1b[31m "q" \\ \x7f\x85\u2028end'

    @app.worker(name="boom", max_attempts=1)
    def boom(job: baton.Job) -> None:
        raise ValueError(job.args["msg"])

    try:
        bad = await app.insert(boom.new({"msg": forged}))
        with caplog.at_level(logging.INFO, logger="baton.jobs"):
            await app.drain()
    finally:
        detach_default_logger()
    [record] = [r for r in caplog.records if r.name == "baton.jobs"]
    assert record.baton["id"] == bad.id
    assert record.baton["error"] == "ValueError: " + forged
    text = record.getMessage()
    assert len(text.splitlines()) == 1
    assert not any(not c.isprintable() for c in text)
    assert "event=job.exception " in text and f"id={bad.id} worker=boom queue=default attempt=1 " in text
    assert (
        ' error="ValueError: bad input\\nINFO baton.jobs event=job.stop id=999 state=completed'
        '\\r\\x1b[31m \\"q\\" \\\\ \\x7f\\x85\\u2028end" '
    ) in text
