"""A node's lease on its running jobs, as the node itself sees it (docs/lease.md).

The Lifeline of any node rescues the jobs of a producer whose row was not refreshed within
`stale_after` (database clock). A node that cannot refresh its rows (a network partition, a
hung database) keeps running its jobs unless it notices; this module is how it notices: it
counts time from the start of its last renewal that committed, on its own monotonic clock,
and holds the lease until `stale_after - margin` after that.

Why this is safe: a renewal's start on this node comes before the database evaluates `now()`
for it, so the row's `updated_at` is never earlier than the node's `renewed_at`; the Lifeline
can therefore rescue no sooner than `renewed_at + stale_after`, which the node's deadline
precedes by `margin`. The margin only has to cover what happens after the deadline: the
watchdog waking (a timer, one event loop turn) and the running attempts being stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: The margin as a share of `stale_after`; bounded below by MIN_MARGIN (seconds) and above by
#: half the slack between refresh_interval and stale_after (see `lease_margin`).
MARGIN_SHARE = 0.1
MIN_MARGIN = 0.1


def lease_margin(refresh_interval: float, stale_after: float) -> float:
    """Seconds before `stale_after` at which a node gives its jobs up.

    10 % of `stale_after` (at least 0.1 s), but never more than half of `stale_after -
    refresh_interval`: the next renewal starts `refresh_interval` after the last one and must
    still have room to commit before the deadline, so a node whose heartbeats are merely slow
    never trips. Defaults (refresh 15 s, stale 60 s): 6 s, so a renewal may take up to 39 s.
    With refresh 0.5 s and stale 2 s: 0.2 s (renewals may take up to 1.3 s)."""
    slack = max(0.0, stale_after - refresh_interval)
    return min(max(MARGIN_SHARE * stale_after, MIN_MARGIN), slack / 2)


class Lease:
    """When this node last renewed its producer rows, and whether it still holds its jobs."""

    def __init__(self, refresh_interval: float, stale_after: float, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.stale_after = stale_after
        self.margin = lease_margin(refresh_interval, stale_after)
        self.span = stale_after - self.margin
        self.renewed_at = clock()  # start of the last renewal that committed
        self.lost_at: float | None = None

    @property
    def lost(self) -> bool:
        return self.lost_at is not None

    @property
    def deadline(self) -> float:
        """The monotonic time at which the lease lapses unless a renewal commits before."""
        return self.renewed_at + self.span

    def renewed(self, started: float) -> None:
        """A renewal that started at `started` (monotonic, taken before sending) committed."""
        self.renewed_at = max(self.renewed_at, started)

    def since_renewal(self) -> float:
        return self.clock() - self.renewed_at
