"""Lifeline (dynamic, after Oban Pro's DynamicLifeline): uses producer records to rescue jobs
orphaned in `executing` by dead nodes, discards exhausted ones, and heals stuck workflow
steps and chain links. Every repair carries its reason code."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..store import maintenance
from .base import Plugin, count, positive, statement_timeout

if TYPE_CHECKING:
    from ..host import Host


class Lifeline(Plugin):
    """Rescue orphans every `rescue_interval` seconds (default 60).

    - `timeout` (30 s) bounds each sweep query.
    - `retry_exhausted` (False): an orphan with no attempts left is discarded (at-most-once:
      a job that crashes its node must not crash nodes forever); True gives it one more
      attempt instead.
    - `limit` (10 000) bounds the rows each duty changes per sweep.

    A job of a live producer (heartbeat within the app's `stale_after`) is never touched,
    however long it runs. The stop event carries `rescued_jobs` and `discarded_jobs`
    (each `{id, queue, state}`), plus `released_steps`, `cancelled_steps`,
    `released_links`, `dead_producers`, `repairs` (count per reason code), and the
    self-healing figures `orphan_backlog`, `rescue_delays` and `stuck_workflows`
    (docs/telemetry.md).
    """

    name = "lifeline"

    def __init__(
        self,
        rescue_interval: float = 60.0,
        timeout: float = 30.0,
        retry_exhausted: bool = False,
        limit: int = 10_000,
    ) -> None:
        self.rescue_interval = positive("rescue_interval", rescue_interval) or 60.0
        super().__init__(self.rescue_interval)
        self.timeout = statement_timeout("timeout", timeout)
        if not isinstance(retry_exhausted, bool):
            raise_bool("retry_exhausted", retry_exhausted)
        self.retry_exhausted = retry_exhausted
        self.limit = count("limit", limit)

    async def _sweep(self, app: Host) -> dict[str, Any]:
        jobs = await app.engine.run(
            maintenance.rescue_orphans,
            stale_after=app.stale_after,
            retry_exhausted=self.retry_exhausted,
            limit=self.limit,
            timeout=self.timeout,
            node=app.node,
            origin=app.instance,
        )
        await app.publish_effects(jobs.effects)
        steps = await app.engine.run(
            maintenance.repair_workflows, limit=self.limit, timeout=self.timeout, node=app.node, origin=app.instance
        )
        await app.publish_effects(steps.effects)
        links = await app.engine.run(
            maintenance.repair_chains, limit=self.limit, timeout=self.timeout, origin=app.instance
        )
        await app.publish_effects(links.effects)
        repairs: dict[str, int] = {}
        for part in (jobs, steps, links):
            for reason, n in part.repairs.items():
                repairs[reason] = repairs.get(reason, 0) + n
        if jobs.rescued:
            repairs["orphaned"] = len(jobs.rescued)
        stuck: dict[str, set[str]] = {}
        for part in (jobs, steps):
            for reason, wids in part.stuck.items():
                stuck.setdefault(reason, set()).update(wids)
        return {
            "rescued_jobs": [maintenance.brief(j) for j in jobs.rescued],
            "discarded_jobs": [maintenance.brief(j) for j in jobs.discarded],
            "released_steps": steps.released_steps,
            "cancelled_steps": [j.id for j in steps.cancelled_steps],
            "released_links": links.released_links,
            "dead_producers": [dict(p) for p in jobs.dead_producers],
            "repairs": repairs,
            # Self-healing metrics (docs/telemetry.md): orphans this sweep found, including
            # those its limit left for the next one; each rescue's delay since the dead
            # producer's last heartbeat; the workflows it found stuck, by reason.
            "orphan_backlog": jobs.orphans + jobs.left,
            "rescue_delays": jobs.delays,
            "stuck_workflows": {reason: sorted(wids) for reason, wids in sorted(stuck.items())},
        }


def raise_bool(field: str, value: Any) -> None:
    from ..errors import ValidationError

    raise ValidationError(field, f"must be True or False, got {value!r}")
