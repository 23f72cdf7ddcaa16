"""The Prometheus bridge (`pip install 'baton-jobs[prometheus]'`): counters, histograms and gauges
for jobs, workflows, plugins and leadership, registered in a registry you choose.

```python
from prometheus_client import start_http_server
from baton.telemetry import prometheus

prometheus.attach()          # the default prometheus_client registry
start_http_server(9100)
```

Metric names and labels are listed in docs/telemetry.md. Labels are kept to bounded sets
(queue, worker, state, status, plugin, node, model): never job or workflow ids.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import MissingExtraError
from . import events as ev
from .events import Event, attach_many, list_handlers
from .events import detach as _detach_handler

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

HANDLER_ID = "baton-prometheus"


EVENTS: tuple[Event, ...] = (*ev.OUTCOMES, ev.LEADER_ELECTED, ev.LEADER_LOST, ev.LEADER_RESIGNED)

# Jobs run from milliseconds to hours; the client's default buckets stop at 10 s.
JOB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
# A rescue comes stale_after (60 s by default) plus up to a rescue_interval (60 s) after a death.
RESCUE_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 1800.0, 3600.0)
# Announced by the ack that finished the workflow (milliseconds), or by a backstop sweep (minutes).
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
PLUGIN_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _require_prometheus() -> None:
    try:
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(
            f"the Prometheus bridge needs prometheus-client: pip install 'baton-jobs[prometheus]' ({exc})"
        ) from exc


def _text(value: Any, default: str = "unknown") -> str:
    return default if value is None else str(value)


def _number(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return 0.0


class _Bridge:
    """The metrics of one attachment, registered in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.registry = registry
        self.jobs = Counter(
            "baton_jobs_total",
            "Job attempts that ended, by final state of the attempt",
            ["queue", "worker", "state"],
            registry=None,
        )
        self.job_duration = Histogram(
            "baton_job_duration_seconds",
            "Run time of a job attempt",
            ["queue", "worker"],
            buckets=JOB_BUCKETS,
            registry=None,
        )
        self.job_queue_time = Histogram(
            "baton_job_queue_time_seconds",
            "Time from a job being due to its attempt starting",
            ["queue"],
            buckets=JOB_BUCKETS,
            registry=None,
        )
        self.jobs_fenced = Counter(
            "baton_jobs_fenced_total",
            "Late acks dropped because the job was no longer theirs",
            registry=None,
        )
        self.usage_tokens = Counter(
            "baton_usage_tokens_total",
            "Tokens recorded by job.record_usage, by model and kind (input or output)",
            ["model", "kind"],
            registry=None,
        )
        self.usage_cost = Counter(
            "baton_usage_cost_total",
            "Cost of the priced calls recorded by job.record_usage, by model (in the pricing's currency)",
            ["model"],
            registry=None,
        )
        self.workflows_finished = Counter(
            "baton_workflows_finished_total",
            "Workflows that finished, by status",
            ["status"],
            registry=None,
        )
        self.workflows_failed = Counter(
            "baton_workflows_failed_total",
            "Workflows that ended with a cancelled or discarded step",
            registry=None,
        )
        self.plugin_rescued = Counter(
            "baton_plugin_rescued_total",
            "Orphaned workflow steps rescued by WorkflowHealth",
            registry=None,
        )
        self.plugin_pruned = Counter(
            "baton_plugin_pruned_total",
            "Rows deleted by WorkflowHealth retention sweeps",
            registry=None,
        )
        self.plugin_rescued_jobs = Counter(
            "baton_plugin_rescued_jobs_total",
            "Jobs a plugin sweep made runnable again (Lifeline orphans)",
            ["plugin", "queue"],
            registry=None,
        )
        self.plugin_discarded_jobs = Counter(
            "baton_plugin_discarded_jobs_total",
            "Jobs a plugin sweep discarded (Lifeline, attempts exhausted)",
            ["plugin", "queue"],
            registry=None,
        )
        self.plugin_last_success = Gauge(
            "baton_plugin_last_success_timestamp_seconds",
            "Unix time of each plugin's last successful sweep",
            ["plugin"],
            registry=None,
        )
        self.plugin_duration = Histogram(
            "baton_plugin_duration_seconds",
            "Duration of one plugin sweep (successful or not)",
            ["plugin"],
            buckets=PLUGIN_BUCKETS,
            registry=None,
        )
        self.leader = Gauge("baton_leader", "1 while this node holds the leader lease", ["node"], registry=None)
        self.orphan_backlog = Gauge(
            "baton_orphan_backlog",
            "Orphaned jobs (executing under a dead node) the last Lifeline sweep found, rescued or not",
            registry=None,
        )
        self.rescue_delay = Histogram(
            "baton_rescue_delay_seconds",
            "Time from a dead node's last heartbeat to the Lifeline's rescue of its job",
            ["queue"],
            buckets=RESCUE_BUCKETS,
            registry=None,
        )
        self.stuck_workflows = Counter(
            "baton_stuck_workflows_total",
            "Workflows a plugin sweep found stuck and repaired, by reason",
            ["plugin", "reason"],
            registry=None,
        )
        self.finished_lag = Histogram(
            "baton_workflow_finished_lag_seconds",
            "Time from the end of a workflow's last step to its finished event",
            buckets=LAG_BUCKETS,
            registry=None,
        )
        self.collectors = [
            self.jobs,
            self.job_duration,
            self.job_queue_time,
            self.jobs_fenced,
            self.usage_tokens,
            self.usage_cost,
            self.workflows_finished,
            self.workflows_failed,
            self.plugin_rescued,
            self.plugin_pruned,
            self.plugin_rescued_jobs,
            self.plugin_discarded_jobs,
            self.plugin_last_success,
            self.plugin_duration,
            self.leader,
            self.orphan_backlog,
            self.rescue_delay,
            self.stuck_workflows,
            self.finished_lag,
        ]
        # Built unregistered and registered one by one so that a clash with metrics already in
        # the registry (another attachment) leaves nothing half-registered behind.
        registered: list[Any] = []
        try:
            for collector in self.collectors:
                registry.register(collector)
                registered.append(collector)
        except ValueError as exc:
            for collector in registered:
                registry.unregister(collector)
            raise ValueError(
                f"Baton's metrics are already registered in this registry ({exc}); detach the other bridge "
                "or pass a different registry"
            ) from exc

    def unregister(self) -> None:
        # Lets attach() be called again on the same registry without "Duplicated timeseries".
        for collector in self.collectors:
            try:
                self.registry.unregister(collector)
            except KeyError:
                pass

    def __call__(self, event: Event, measurements: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        if event in (ev.JOB_STOP, ev.JOB_EXCEPTION):
            job = metadata.get("job")
            queue = _text(getattr(job, "queue", None))
            worker = _text(metadata.get("worker") or getattr(job, "worker", None))
            self.jobs.labels(queue, worker, _text(metadata.get("state"))).inc()
            self.job_duration.labels(queue, worker).observe(_number(measurements.get("duration")) / 1000)
            self.job_queue_time.labels(queue).observe(_number(measurements.get("queue_time")) / 1000)
        elif event == ev.JOB_FENCED:
            self.jobs_fenced.inc(_number(measurements.get("count", 1)) or 1)
        elif event == ev.JOB_USAGE:
            model = _text(metadata.get("model"))
            self.usage_tokens.labels(model, "input").inc(max(0.0, _number(measurements.get("input_tokens"))))
            self.usage_tokens.labels(model, "output").inc(max(0.0, _number(measurements.get("output_tokens"))))
            if measurements.get("cost") is not None:
                self.usage_cost.labels(model).inc(max(0.0, _number(measurements.get("cost"))))
        elif event == ev.WORKFLOW_FINISHED:
            self.workflows_finished.labels(_text(metadata.get("status"))).inc()
            if measurements.get("lag") is not None:
                self.finished_lag.observe(max(0.0, _number(measurements.get("lag"))) / 1000)
        elif event == ev.WORKFLOW_FAILED:
            self.workflows_failed.inc()
        elif event in (ev.PLUGIN_STOP, ev.PLUGIN_EXCEPTION):
            self._plugin(event, measurements, metadata)
        elif event == ev.PLUGIN_RESCUED:
            self.plugin_rescued.inc(max(0.0, _number(measurements.get("count"))))
        elif event == ev.PLUGIN_PRUNED:
            self.plugin_pruned.inc(max(0.0, _number(measurements.get("count"))))
        elif event == ev.LEADER_ELECTED:
            self.leader.labels(_text(metadata.get("node"))).set(1)
        elif event in (ev.LEADER_LOST, ev.LEADER_RESIGNED):
            self.leader.labels(_text(metadata.get("node"))).set(0)

    def _plugin(self, event: Event, measurements: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        plugin = _text(metadata.get("plugin"))
        self.plugin_duration.labels(plugin).observe(_number(measurements.get("duration")) / 1000)
        if event != ev.PLUGIN_STOP:
            return
        self.plugin_last_success.labels(plugin).set(time.time())
        # Lifeline reports each job it rescued or discarded as {id, queue, state} in its stop event.
        counters = (("rescued_jobs", self.plugin_rescued_jobs), ("discarded_jobs", self.plugin_discarded_jobs))
        for key, counter in counters:
            jobs = metadata.get(key)
            if not isinstance(jobs, list | tuple):
                continue
            for item in jobs:
                queue = _text(item.get("queue") if isinstance(item, Mapping) else None)
                counter.labels(plugin, queue).inc()
        # The self-healing figures (Lifeline: backlog and delays; both: stuck workflows).
        if "orphan_backlog" in metadata:
            self.orphan_backlog.set(max(0.0, _number(metadata["orphan_backlog"])))
        for item in _items(metadata.get("rescue_delays")):
            self.rescue_delay.labels(_text(item.get("queue"))).observe(max(0.0, _number(item.get("delay"))) / 1000)
        stuck = metadata.get("stuck_workflows")
        if isinstance(stuck, Mapping):
            for reason, wids in stuck.items():
                if isinstance(wids, list | tuple | set) and wids:
                    self.stuck_workflows.labels(plugin, _text(reason)).inc(len(wids))


def _items(value: Any) -> list[Mapping[str, Any]]:
    return [i for i in value if isinstance(i, Mapping)] if isinstance(value, list | tuple) else []


_lock = threading.Lock()
_bridges: dict[str, _Bridge] = {}


def attach(registry: CollectorRegistry | None = None, *, handler_id: str = HANDLER_ID) -> str:
    """Export Baton's events as Prometheus metrics in `registry` (default: the global
    `prometheus_client.REGISTRY`); returns the handler id.

    Raises `MissingExtraError` when prometheus-client is not installed, and ValueError when a
    bridge with `handler_id` is already attached.
    """
    _require_prometheus()
    from prometheus_client import REGISTRY

    with _lock:
        stale = _bridges.pop(handler_id, None)
        if handler_id in list_handlers():
            if stale is not None:
                _bridges[handler_id] = stale
            raise ValueError(f"a telemetry handler with id {handler_id!r} is already attached; detach it first")
        if stale is not None:
            # The handler raised once and was detached by `emit`; free its metric names.
            stale.unregister()
        bridge = _Bridge(registry if registry is not None else REGISTRY)
        try:
            attach_many(handler_id, EVENTS, bridge)
        except Exception:
            bridge.unregister()
            raise
        _bridges[handler_id] = bridge
    return handler_id


def detach(handler_id: str = HANDLER_ID) -> bool:
    """Stop exporting and unregister the bridge's metrics; True if it was attached."""
    with _lock:
        bridge = _bridges.pop(handler_id, None)
        found = _detach_handler(handler_id)
        if bridge is not None:
            bridge.unregister()
        return found or bridge is not None
