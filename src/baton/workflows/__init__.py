"""Workflows: DAGs of jobs. `builder` validates and flattens a graph, `status` describes a
stored workflow, `render` draws one; the database side lives in `baton.store.workflows`."""

from .builder import Graft, Workflow
from .status import StepStatus, WorkflowStatus

__all__ = ["Graft", "StepStatus", "Workflow", "WorkflowStatus"]
