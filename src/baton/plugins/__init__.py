"""Periodic plugins that run on the leader node: one file per plugin."""

from .base import Plugin
from .stager import Stager

__all__ = ["Cron", "Lifeline", "Plugin", "Pruner", "Stager", "WorkflowHealth"]


def __getattr__(name: str) -> object:
    # Imported lazily so `baton.plugins.Cron` does not import croniter until used.
    if name == "Lifeline":
        from .lifeline import Lifeline

        return Lifeline
    if name == "Pruner":
        from .pruner import Pruner

        return Pruner
    if name == "WorkflowHealth":
        from .workflow_health import WorkflowHealth

        return WorkflowHealth
    if name == "Cron":
        from .cron import Cron

        return Cron
    raise AttributeError(name)
