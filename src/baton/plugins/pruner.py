"""Pruner: deletes old terminal jobs in bounded batches, so the jobs table stays small and
fast. It never deletes a step of a workflow that has not finished (prevention first; the
WorkflowHealth plugin repairs deletions made by hand)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ValidationError
from ..job import TERMINAL_STATES
from ..store import maintenance
from .base import Plugin, count, flag, positive, statement_timeout

if TYPE_CHECKING:
    from ..host import Host


class Pruner(Plugin):
    """Delete terminal jobs older than `max_age` seconds (default 60), at most `limit`
    (10 000) per sweep, every `interval` seconds (default 30).

    `max_age` may be a dict per state, e.g. `{"completed": 60, "discarded": 7 * 86400}`;
    `states` limits which terminal states are pruned (default all three).
    `keep_workflow_deps` (True) keeps every step of a workflow that has not finished.
    """

    name = "pruner"

    def __init__(
        self,
        max_age: float | Mapping[str, float] = 60.0,
        limit: int = 10_000,
        states: Sequence[str] | None = None,
        keep_workflow_deps: bool = True,
        interval: float = 30.0,
        timeout: float | None = 30.0,
    ) -> None:
        super().__init__(interval)
        if states is None:
            chosen: tuple[Any, ...] = ("completed", "cancelled", "discarded")
        elif isinstance(states, str | bytes | Mapping) or not isinstance(states, Iterable):
            chosen = ()
        else:
            chosen = tuple(states)
        if not chosen or any(not isinstance(s, str) or s not in TERMINAL_STATES for s in chosen):
            raise ValidationError(
                "states", f"must be a list of terminal states {sorted(TERMINAL_STATES)}, got {states!r}"
            )
        if isinstance(max_age, Mapping):
            unknown = set(max_age) - TERMINAL_STATES
            if unknown:
                raise ValidationError("max_age", f"keys must be terminal states, got {sorted(unknown, key=repr)}")
            self.ages = {s: positive(f"max_age.{s}", max_age[s]) or 60.0 for s in chosen if s in max_age}
            if not self.ages:
                raise ValidationError("max_age", "names none of the pruned states")
        else:
            age = positive("max_age", max_age) or 60.0
            self.ages = {s: age for s in chosen}
        self.limit = count("limit", limit)
        self.keep_workflow_deps = flag("keep_workflow_deps", keep_workflow_deps)
        self.timeout = statement_timeout("timeout", timeout, allow_none=True)

    async def _sweep(self, app: Host) -> dict[str, Any]:
        pruned = await app.engine.run(
            maintenance.prune_jobs,
            ages=self.ages,
            limit=self.limit,
            keep_workflow_deps=self.keep_workflow_deps,
            timeout=self.timeout,
        )
        return {"pruned": pruned, "pruned_count": sum(pruned.values())}
