"""The OpenTelemetry bridge (`pip install 'baton-jobs[otel]'`): one span per job attempt and metrics
for jobs, workflows and plugins, recorded through the providers you pass (or the global ones).

```python
from baton.telemetry import otel

otel.attach(tracer_provider=provider, meter_provider=meter_provider)
...
otel.detach()
```

Spans are created when an attempt ends (`job.stop` / `job.exception`), back-dated by the
attempt's measured duration, rather than opened at `job.start`: an attempt can end without a
start event (undecodable args, unknown worker, replayed result) and a start can have no end (the
node was killed), so pairing the two would both miss spans and leak open ones.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import MissingExtraError
from . import events as ev
from .events import Event, attach_many, list_handlers
from .events import detach as _detach_handler

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Meter, MeterProvider, Observation
    from opentelemetry.trace import Tracer, TracerProvider

HANDLER_ID = "baton-otel"
INSTRUMENTATION_NAME = "baton"


# job.start is deliberately absent: spans are built at the end of an attempt (see the module
# docstring), and not listening keeps the executor from building start metadata at all.
EVENTS: tuple[Event, ...] = ev.OUTCOMES


def _require_otel() -> None:
    try:
        from opentelemetry import metrics, trace  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(
            "the OpenTelemetry bridge needs opentelemetry-api: pip install 'baton-jobs[otel]' "
            f"(plus opentelemetry-sdk or another SDK to export anything) ({exc})"
        ) from exc


@dataclass(slots=True)
class _Instruments:
    tracer: Tracer
    jobs: Counter
    job_duration: Histogram
    job_queue_time: Histogram
    jobs_fenced: Counter
    usage_tokens: Counter
    usage_cost: Counter
    workflows_finished: Counter
    workflows_failed: Counter
    plugin_duration: Histogram
    plugin_rescued: Counter
    plugin_pruned: Counter
    plugin_rescued_jobs: Counter
    plugin_discarded_jobs: Counter
    rescue_delay: Histogram
    stuck_workflows: Counter
    finished_lag: Histogram
    gauges: _Gauges


@dataclass(slots=True)
class _Gauges:
    """The last values the observable gauges report: a plugin's last successful sweep (Unix
    time) and the orphan backlog the last Lifeline sweep found."""

    last_success: dict[str, float] = field(default_factory=dict)
    orphan_backlog: float | None = None


def _instruments(tracer_provider: TracerProvider | None, meter_provider: MeterProvider | None) -> _Instruments:
    from opentelemetry import metrics, trace

    from .. import __version__

    tracer = trace.get_tracer(INSTRUMENTATION_NAME, __version__, tracer_provider=tracer_provider)
    meter: Meter = metrics.get_meter(INSTRUMENTATION_NAME, __version__, meter_provider=meter_provider)
    gauges = _Gauges()

    def last_success(options: CallbackOptions) -> list[Observation]:
        return [metrics.Observation(v, {"plugin": k}) for k, v in sorted(gauges.last_success.items())]

    def orphan_backlog(options: CallbackOptions) -> list[Observation]:
        return [] if gauges.orphan_backlog is None else [metrics.Observation(gauges.orphan_backlog)]

    meter.create_observable_gauge(
        "baton.plugin.last_success",
        [last_success],
        unit="s",
        description="Unix time of each plugin's last successful sweep",
    )
    meter.create_observable_gauge(
        "baton.lifeline.orphan_backlog",
        [orphan_backlog],
        unit="{job}",
        description="Orphaned jobs (executing under a dead node) the last Lifeline sweep found, rescued or not",
    )
    return _Instruments(
        gauges=gauges,
        rescue_delay=meter.create_histogram(
            "baton.lifeline.rescue_delay",
            unit="ms",
            description="Time from a dead node's last heartbeat to the Lifeline's rescue of its job",
        ),
        stuck_workflows=meter.create_counter(
            "baton.workflows.stuck", unit="{workflow}", description="Workflows a plugin sweep found stuck, by reason"
        ),
        finished_lag=meter.create_histogram(
            "baton.workflow.finished_lag",
            unit="ms",
            description="Time from the end of a workflow's last step to its finished event",
        ),
        tracer=tracer,
        jobs=meter.create_counter("baton.jobs", unit="{job}", description="Job attempts that ended, by state"),
        job_duration=meter.create_histogram("baton.job.duration", unit="ms", description="Run time of a job attempt"),
        job_queue_time=meter.create_histogram(
            "baton.job.queue_time", unit="ms", description="Time from a job being due to its attempt starting"
        ),
        jobs_fenced=meter.create_counter(
            "baton.jobs.fenced", unit="{job}", description="Late acks dropped because the job was no longer theirs"
        ),
        usage_tokens=meter.create_counter(
            "baton.usage.tokens", unit="{token}", description="Tokens recorded by job.record_usage, by model and kind"
        ),
        usage_cost=meter.create_counter(
            "baton.usage.cost", unit="1", description="Cost of priced calls recorded by job.record_usage, by model"
        ),
        workflows_finished=meter.create_counter(
            "baton.workflows.finished", unit="{workflow}", description="Workflows that finished, by status"
        ),
        workflows_failed=meter.create_counter(
            "baton.workflows.failed", unit="{workflow}", description="Workflows that ended with a failed step"
        ),
        plugin_duration=meter.create_histogram(
            "baton.plugin.duration", unit="ms", description="Duration of one plugin sweep"
        ),
        plugin_rescued=meter.create_counter(
            "baton.plugin.rescued", unit="{job}", description="Orphaned workflow steps rescued by WorkflowHealth"
        ),
        plugin_pruned=meter.create_counter(
            "baton.plugin.pruned", unit="{row}", description="Rows deleted by retention sweeps"
        ),
        plugin_rescued_jobs=meter.create_counter(
            "baton.plugin.rescued_jobs", unit="{job}", description="Jobs a plugin sweep made runnable again"
        ),
        plugin_discarded_jobs=meter.create_counter(
            "baton.plugin.discarded_jobs", unit="{job}", description="Jobs a plugin sweep discarded"
        ),
    )


def _text(value: Any, default: str = "unknown") -> str:
    return default if value is None else str(value)


def _number(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return 0.0


class _Bridge:
    """Turns Baton events into spans and metric points on one set of instruments."""

    def __init__(self, instruments: _Instruments) -> None:
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self.i = instruments
        # Bound once: job events are the hot path.
        self._consumer = SpanKind.CONSUMER
        self._status = Status
        self._error = StatusCode.ERROR

    def __call__(self, event: Event, measurements: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        if event in (ev.JOB_STOP, ev.JOB_EXCEPTION):
            self._job(event, measurements, metadata)
        elif event == ev.JOB_FENCED:
            job = metadata.get("job")
            attrs = {"queue": _text(getattr(job, "queue", None)), "reason": _text(metadata.get("reason"))}
            self.i.jobs_fenced.add(int(_number(measurements.get("count", 1))) or 1, attrs)
        elif event == ev.JOB_USAGE:
            model = _text(metadata.get("model"))
            self.i.usage_tokens.add(int(_number(measurements.get("input_tokens"))), {"model": model, "kind": "input"})
            self.i.usage_tokens.add(int(_number(measurements.get("output_tokens"))), {"model": model, "kind": "output"})
            if measurements.get("cost") is not None:
                self.i.usage_cost.add(_number(measurements.get("cost")), {"model": model})
        elif event == ev.WORKFLOW_FINISHED:
            status = {"status": _text(metadata.get("status"))}
            self.i.workflows_finished.add(1, status)
            if measurements.get("lag") is not None:
                self.i.finished_lag.record(max(0.0, _number(measurements.get("lag"))), status)
        elif event == ev.WORKFLOW_FAILED:
            self.i.workflows_failed.add(1)
        elif event in (ev.PLUGIN_STOP, ev.PLUGIN_EXCEPTION):
            self._plugin(event, measurements, metadata)
        elif event == ev.PLUGIN_RESCUED:
            self.i.plugin_rescued.add(int(_number(measurements.get("count"))), self._plugin_attrs(metadata))
        elif event == ev.PLUGIN_PRUNED:
            self.i.plugin_pruned.add(int(_number(measurements.get("count"))), self._plugin_attrs(metadata))

    @staticmethod
    def _plugin_attrs(metadata: Mapping[str, Any]) -> dict[str, str]:
        plugin = metadata.get("plugin")
        return {"plugin": str(plugin)} if plugin is not None else {}

    def _job(self, event: Event, measurements: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        job = metadata.get("job")
        worker = _text(metadata.get("worker") or getattr(job, "worker", None))
        queue = _text(getattr(job, "queue", None))
        state = _text(metadata.get("state"))
        duration_ms = _number(measurements.get("duration"))
        end_ns = time.time_ns()
        span_attrs: dict[str, Any] = {
            "baton.job.worker": worker,
            "baton.job.queue": queue,
            "baton.job.state": state,
        }
        if job is not None:
            span_attrs["baton.job.id"] = job.id
            span_attrs["baton.job.attempt"] = job.attempt
            span_attrs["baton.job.max_attempts"] = job.max_attempts
            if job.workflow_id is not None:
                span_attrs["baton.workflow.id"] = job.workflow_id
                if job.step is not None:
                    span_attrs["baton.workflow.step"] = job.step
        node = metadata.get("node")
        if node is not None:
            span_attrs["baton.node"] = str(node)
        span = self.i.tracer.start_span(
            f"baton.job {worker}",
            kind=self._consumer,
            attributes=span_attrs,
            start_time=end_ns - int(duration_ms * 1_000_000),
        )
        if event == ev.JOB_EXCEPTION:
            error = _text(metadata.get("error"), "job attempt failed")
            exc_type, _, message = error.partition(": ")
            exc_attrs = {"exception.type": exc_type, "exception.message": message or error}
            if metadata.get("traceback"):
                exc_attrs["exception.stacktrace"] = str(metadata["traceback"])
            span.add_event("exception", exc_attrs, timestamp=end_ns)
            span.set_status(self._status(self._error, error))
        span.end(end_time=end_ns)

        attrs = {"queue": queue, "worker": worker, "state": state}
        self.i.jobs.add(1, attrs)
        self.i.job_duration.record(duration_ms, attrs)
        self.i.job_queue_time.record(_number(measurements.get("queue_time")), {"queue": queue, "worker": worker})

    def _plugin(self, event: Event, measurements: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        plugin = _text(metadata.get("plugin"))
        outcome = "ok" if event == ev.PLUGIN_STOP else "error"
        self.i.plugin_duration.record(_number(measurements.get("duration")), {"plugin": plugin, "outcome": outcome})
        # Lifeline reports each job it rescued or discarded as {id, queue, state} in its stop event.
        counters = (("rescued_jobs", self.i.plugin_rescued_jobs), ("discarded_jobs", self.i.plugin_discarded_jobs))
        for key, counter in counters:
            jobs = metadata.get(key)
            if not isinstance(jobs, list | tuple):
                continue
            per_queue: dict[str, int] = {}
            for item in jobs:
                queue = _text(item.get("queue") if isinstance(item, Mapping) else None)
                per_queue[queue] = per_queue.get(queue, 0) + 1
            for queue, n in per_queue.items():
                counter.add(n, {"plugin": plugin, "queue": queue})
        if event != ev.PLUGIN_STOP:
            return
        # The self-healing figures (Lifeline: backlog and delays; both: stuck workflows).
        self.i.gauges.last_success[plugin] = time.time()
        if "orphan_backlog" in metadata:
            self.i.gauges.orphan_backlog = max(0.0, _number(metadata["orphan_backlog"]))
        delays = metadata.get("rescue_delays")
        for item in delays if isinstance(delays, list | tuple) else ():
            if isinstance(item, Mapping):
                self.i.rescue_delay.record(max(0.0, _number(item.get("delay"))), {"queue": _text(item.get("queue"))})
        stuck = metadata.get("stuck_workflows")
        if isinstance(stuck, Mapping):
            for reason, wids in stuck.items():
                if isinstance(wids, list | tuple | set) and wids:
                    self.i.stuck_workflows.add(len(wids), {"plugin": plugin, "reason": _text(reason)})


_lock = threading.Lock()
_attached: set[str] = set()


def attach(
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    *,
    handler_id: str = HANDLER_ID,
) -> str:
    """Record Baton's events as OpenTelemetry spans and metrics; returns the handler id.

    Without providers the global ones are used (no-ops until an SDK is configured). Raises
    `MissingExtraError` when opentelemetry-api is not installed, and ValueError when a bridge
    with `handler_id` is already attached.
    """
    _require_otel()
    with _lock:
        if handler_id in list_handlers():
            raise ValueError(f"a telemetry handler with id {handler_id!r} is already attached; detach it first")
        attach_many(handler_id, EVENTS, _Bridge(_instruments(tracer_provider, meter_provider)))
        _attached.add(handler_id)
    return handler_id


def detach(handler_id: str = HANDLER_ID) -> bool:
    """Stop recording; True if the bridge was attached (also when it had been auto-detached
    after raising). Instruments already created stay with their meter provider."""
    with _lock:
        was_ours = handler_id in _attached
        _attached.discard(handler_id)
        return _detach_handler(handler_id) or was_ours
