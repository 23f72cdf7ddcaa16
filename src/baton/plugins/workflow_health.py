"""WorkflowHealth (after the Baton.Plugin seed): keeps workflows healthy. Each sweep, on the
leader:

1. cancels orphaned waiting steps — unfinished steps whose dependency's job row was pruned or
   deleted before completing — through the public `cancel_all_jobs` (never a raw state
   write), emitting ("baton", "plugin", "rescued");
2. backstops the finished announcement of every terminated workflow nobody announced (a node
   killed after the last ack, rows changed by hand) through the same atomic claim the worker
   uses, so it can never be a duplicate;
3. emits ("baton", "workflow", "failed") once per workflow that terminated with a cancelled or
   discarded step;
4. with `prune=True`, deletes Baton's workflow rows whose backing job rows are gone, at most
   `prune_limit` per table per sweep (and debug logs older than `debug_log_max_age`),
   emitting ("baton", "plugin", "pruned") when it deleted anything; a workflow's steps and
   completion row only once its finished event went out (the claim confirmed, or taken over)
   and, if it failed, its failure report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import telemetry
from ..store import maintenance
from .base import Plugin, count, flag, positive

if TYPE_CHECKING:
    from ..host import Host


class WorkflowHealth(Plugin):
    """Sweep every `interval` seconds (default 60); retention is opt-in (`prune=True`)."""

    name = "workflow_health"

    def __init__(
        self,
        interval: float = 60.0,
        prune: bool = False,
        prune_limit: int = 10_000,
        debug_log_max_age: float | None = None,
        limit: int = 10_000,
    ) -> None:
        super().__init__(interval)
        self.prune = flag("prune", prune)
        self.prune_limit = count("prune_limit", prune_limit)
        self.debug_log_max_age = positive("debug_log_max_age", debug_log_max_age, allow_none=True)
        self.limit = count("limit", limit)

    async def _sweep(self, app: Host) -> dict[str, Any]:
        # 1. orphaned waiting steps, through the public API.
        orphans = await app.engine.run(maintenance.orphaned_waiting_steps, self.limit)
        rescued: list[int] = []
        stuck: dict[str, set[str]] = {}
        if orphans:
            stuck["orphaned_step"] = {r["workflow_id"] for r in orphans}
            by_dep: dict[str, list[int]] = {}
            for r in orphans:
                by_dep.setdefault(r["dep_name"], []).append(r["job_id"])
            for dep, ids in by_dep.items():
                await app.cancel_all_jobs(
                    ids=ids,
                    reason=f"orphaned_step: dependency {dep!r} was deleted before completing",
                    repair="orphaned_step",
                )
            ids = [r["job_id"] for r in orphans]
            rescued = ids
            telemetry.emit(("baton", "plugin", "rescued"), {"count": len(ids)}, {"job_ids": ids, "plugin": self.name})
        # Steps whose own job row is gone resolve as `deleted`, so dependents that ignore
        # deleted deps are released and the workflow can finish.
        resolved, unstuck = await app.engine.run(
            maintenance.resolve_deleted, limit=self.limit, node=app.node, origin=app.instance
        )
        if unstuck:
            stuck.setdefault("dep_deleted", set()).update(unstuck)
        await app.publish_effects(resolved)
        # 2. completion backstop (before failure telemetry, which needs the completion row).
        effects = await app.engine.run(
            maintenance.announce_terminated, limit=self.limit, node=app.node, origin=app.instance
        )
        await app.publish_effects(effects)
        # Claims whose node died before it emitted the finished event (it confirms within a
        # round trip of its commit, so a claim unconfirmed for stale_after is orphaned).
        taken, lags = await app.engine.run(
            maintenance.take_over_announcements, stale=app.stale_after, limit=self.limit, node=app.node
        )
        app.announce_finished(taken, lags)
        for reason, found in (
            ("unannounced", effects.finished),
            ("announcement_lost", taken),
        ):
            if found:
                stuck.setdefault(reason, set()).update(e["workflow_id"] for e in found)
        # 3. failure telemetry, once per workflow.
        reports = await app.engine.run(maintenance.claim_failure_reports, self.limit)
        for rep in reports:
            telemetry.emit(
                ("baton", "workflow", "failed"),
                {"failed_count": rep["failed_count"], "total_count": rep["total_count"]},
                {k: v for k, v in rep.items() if k not in ("failed_count", "total_count")},
            )
        # 4. retention.
        pruned: dict[str, int] = {}
        if self.prune:
            pruned = await app.engine.run(
                maintenance.prune_workflow_rows, limit=self.prune_limit, debug_log_max_age=self.debug_log_max_age
            )
            if pruned:
                telemetry.emit(("baton", "plugin", "pruned"), {"count": sum(pruned.values())}, dict(pruned))
        return {
            "rescued": rescued,
            "announced": [e["workflow_id"] for e in resolved.finished + effects.finished + taken],
            "failed_reported": [r["workflow_id"] for r in reports],
            "pruned": pruned,
            "stuck_workflows": {reason: sorted(wids) for reason, wids in sorted(stuck.items())},
        }
