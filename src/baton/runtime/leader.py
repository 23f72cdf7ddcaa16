"""Leader election through the `baton_leaders` row: one node at a time holds an expiring
lease and runs the periodic plugins; losing the leader only delays them."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .. import telemetry
from ..store import jobs as store

if TYPE_CHECKING:
    from .parts import NodeParts

log = logging.getLogger("baton.leader")


class Leadership:
    """This node's view of the lease."""

    def __init__(self, node: NodeParts, ttl: float) -> None:
        self.node = node
        self.ttl = ttl
        self.is_leader = False

    async def tick(self) -> bool:
        """Take or renew the lease; emit an event when leadership changes."""
        try:
            # One statement, committed by the server as it ends (autocommit): in a transaction,
            # its lock on the lease row (taken even when another node holds the lease) would last
            # until this node's loop sends COMMIT, and a loop blocked meanwhile (a worker that
            # never awaits) would stall every node's election, the leader's renewal included:
            # the leader then loses its lease, and no Lifeline rescues the blocked node's jobs.
            leader = await self.node.engine.run_autocommit(
                store.elect_leader, self.node.name, self.node.instance, self.ttl
            )
        except Exception as exc:
            log.warning("leader election failed (%s)", exc)
            leader = False
        if leader != self.is_leader:
            self.is_leader = leader
            action = "elected" if leader else "lost"
            log.info("node %s %s leadership", self.node.name, action)
            telemetry.emit(("baton", "leader", action), {}, {"node": self.node.name, "instance": self.node.instance})
        return leader

    def forfeit(self, why: str) -> None:
        """Stop acting as leader without telling the database (it does not answer); the row
        expires after `ttl` and another node takes over."""
        if self.is_leader:
            self.is_leader = False
            log.info("node %s lost leadership (%s)", self.node.name, why)
            telemetry.emit(("baton", "leader", "lost"), {}, {"node": self.node.name, "instance": self.node.instance})

    async def resign(self) -> None:
        if not self.is_leader:
            return
        self.is_leader = False
        try:
            await self.node.engine.run(store.resign_leader, self.node.instance)
        except Exception as exc:
            log.warning("could not resign leadership (%s); it expires in %.0fs", exc, self.ttl)
        telemetry.emit(("baton", "leader", "resigned"), {}, {"node": self.node.name, "instance": self.node.instance})
