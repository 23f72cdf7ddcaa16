"""The `baton` command line, one module per command group; `main` is the console script."""

from . import dashboard, jobs, maintenance, nodes, queues, usage, workflows
from .base import cli, main

__all__ = ["cli", "dashboard", "jobs", "main", "maintenance", "nodes", "queues", "usage", "workflows"]
