"""The seam between the application and the parts it assembles: what a plugin or the runtime
(node, producers, acker) may ask of the `Baton` that runs them. It lives below `app`,
`plugins` and `runtime`, so those two depend on this protocol, never on `app`; `Baton`
implements it.

A host lets its parts: run store operations on its engine; publish the effects of a commit
(wake producers, signal cancelled jobs, run `after_cancelled` hooks, deliver and confirm
finished workflows); wake local producers; announce finished workflows a backstop took over;
hand over what the notifier heard for workflows; and tell the application that its node lost
its lease.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .engines.base import Engine
    from .job import Job, UsageRecord
    from .store.effects import Effects
    from .store.transitions import AckResult
    from .usage import Pricing
    from .worker import WorkerDef


class Host(Protocol):
    """What plugins and the runtime may use of the application (implemented by `baton.Baton`)."""

    # Read-only members (properties in the protocol, plain attributes on `Baton`).
    @property
    def node(self) -> str:
        """This node's name."""
        ...

    @property
    def instance(self) -> str:
        """A uuid new for every application object (the origin of its notifications)."""
        ...

    @property
    def engine(self) -> Engine:
        """The database engine operations run on."""
        ...

    @property
    def queues(self) -> Mapping[str, dict[str, Any]]:
        """Queue name -> options (`limit`, `paused`) this node runs."""
        ...

    @property
    def plugins(self) -> Sequence[Any]:
        """The plugins this node runs when it leads."""
        ...

    @property
    def pricing(self) -> Pricing | None:
        """How recorded usage is priced (`Baton(pricing=...)`), or None."""
        ...

    @property
    def refresh_interval(self) -> float: ...

    @property
    def stale_after(self) -> float: ...

    @property
    def shutdown_grace(self) -> float: ...

    @property
    def poll_interval(self) -> float: ...

    @property
    def lease_guard(self) -> bool:
        """Whether a node that cannot renew its producer rows gives its jobs up (docs/lease.md)."""
        ...

    @property
    def process_pool_size(self) -> int:
        """How many worker processes run `executor="process"` jobs at once on this node."""
        ...

    def resolve_worker(self, name: str) -> WorkerDef | None:
        """The definition of worker `name`, or None when it is unknown here."""
        ...

    async def cancel_all_jobs(
        self,
        *,
        ids: Sequence[int] | None = None,
        queue: str | None = None,
        worker: str | None = None,
        states: Sequence[str] | None = None,
        workflow_id: str | None = None,
        reason: str = "cancelled",
        repair: str | None = None,
    ) -> int:
        """Cancel every job matching the filters through the public path (cascades included)."""
        ...

    async def publish_effects(self, effects: Effects) -> None:
        """Act on what a committed transaction changed (see `baton.store.effects`)."""
        ...

    def wake_producers(self, queues: Iterable[str] | Mapping[str, int]) -> None:
        """Wake this node's idle producers of `queues` (from any thread)."""
        ...

    def announce_finished(
        self, events: Iterable[dict[str, Any]], confirmed: Mapping[str, float | None] | Iterable[str]
    ) -> None:
        """Emit the finished telemetry event of each workflow whose claim this node confirmed
        (a mapping gives each one's finished-notification lag in ms)."""
        ...

    async def after_ack(self, result: AckResult) -> None:
        """Report fenced acks and publish the effects of an ack transaction."""
        ...

    def report_usage(self, attempts: Iterable[tuple[Job, Sequence[UsageRecord]]]) -> None:
        """Emit the usage event of each record just stored for an attempt (after its commit)."""
        ...

    def wants_step_events(self) -> bool:
        """Whether anything on this node subscribed to live step events (a node that did not
        skips their notifications unparsed)."""
        ...

    def deliver_workflow_event(self, message: dict[str, Any]) -> None:
        """Deliver a workflow notification (finished or step event) to local subscribers."""
        ...

    def lease_lost(self, event: dict[str, Any]) -> None:
        """Call the `on_lease_lost` hooks: this node gave its running jobs up (docs/lease.md)."""
        ...
