"""Baton: durable background jobs, workflows and chains in PostgreSQL or SQLite, with a
self-healing layer so no job is lost and no workflow hangs or fails silently."""

from . import plugins, telemetry
from .app import Baton
from .errors import (
    BatonError,
    DatabaseUnavailable,
    JobCancelled,
    MigrationError,
    MissingExtraError,
    ValidationError,
    WorkerImportError,
    WorkflowError,
)
from .job import Cancel, Discard, Job, JobSpec, Snooze, UsageRecord
from .usage import Pricing, StepUsage, UsageTotals, WorkflowUsage
from .worker import Worker
from .workflows import Graft, Workflow, WorkflowStatus

__version__ = "0.2.0"

__all__ = [
    "Baton",
    "BatonError",
    "Cancel",
    "DatabaseUnavailable",
    "Discard",
    "Graft",
    "Job",
    "JobCancelled",
    "JobSpec",
    "MigrationError",
    "MissingExtraError",
    "Pricing",
    "Snooze",
    "StepUsage",
    "UsageRecord",
    "UsageTotals",
    "ValidationError",
    "Worker",
    "WorkerImportError",
    "Workflow",
    "WorkflowError",
    "WorkflowStatus",
    "WorkflowUsage",
    "__version__",
    "plugins",
    "telemetry",
]
