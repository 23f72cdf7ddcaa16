"""A network partition between one node and PostgreSQL (issue #20, docs/lease.md), with real
processes: three nodes, one of them behind a TCP proxy frozen for 8 s (stale_after 2 s, a
Lifeline sweep every second), 20 jobs that sleep 5 s and then write a side effect outside the
database. The cut-off node gives its jobs up when its lease lapses, so none of them reaches its
side effect there; the other nodes run them once; nothing is lost or completed twice.
bench/partition.py runs the same scenario with and without the lease guard and reports both."""

from __future__ import annotations

import pytest
from partition_scenario import PartitionConfig, run_partition

pytestmark = pytest.mark.faults


def _check_nothing_lost_or_completed_twice(figures: dict[str, object]) -> None:
    assert figures["settled"], "every job completed"
    assert figures["jobs lost (not completed)"] == 0
    assert figures["jobs completed twice"] == 0
    assert figures["jobs without a side effect"] == 0


async def test_a_cut_off_node_gives_its_jobs_up_and_none_runs_twice(fault_db, tmp_path):
    db = await fault_db("postgres")
    result = await run_partition(db, PartitionConfig(), tmp_path / "logs")
    figures = result.figures
    print(figures)
    _check_nothing_lost_or_completed_twice(figures)
    assert figures["held by the cut-off node at the freeze"] == 20
    assert figures["held attempts without their side effect at the lapse"] == 20
    assert figures["held attempts' side effects after the lapse"] == 0, result.logs["node-a"]
    assert figures["jobs run twice (side effect written twice)"] == 0
    assert figures["lease_lost events"] == 1
    # The node gave its jobs up before any of them was rescued (an order, not a duration).
    assert figures["first job back to available after the lapse (s)"] > 0
    assert figures["async jobs cancelled / sync jobs flagged"] == "10 / 10"
    # Every job came back once: rescued by the Lifeline, or handed back by node-a itself.
    rescued = figures["rescued by the Lifeline (orphaned)"]
    assert rescued + figures["handed back on regaining the lease (lease_lost)"] == 20


@pytest.mark.slow
async def test_without_the_lease_guard_the_cut_off_node_runs_its_jobs_twice(fault_db, tmp_path):
    """The behaviour the issue reported (the 'before' of bench/partition.py)."""
    db = await fault_db("postgres")
    result = await run_partition(db, PartitionConfig(lease_guard=False), tmp_path / "logs")
    figures = result.figures
    _check_nothing_lost_or_completed_twice(figures)
    assert figures["held attempts' side effects after the lapse"] == 20
    assert figures["jobs run twice (side effect written twice)"] == 20
    assert figures["fenced acks of the cut-off node"] == 20


async def test_on_sqlite_a_held_write_lock_cuts_every_node_off_and_still_nothing_runs_twice(fault_db, tmp_path):
    """SQLite has no network to cut: another process holds the write lock for 8 s, so every
    node's lease lapses. node-a gives its 20 jobs up; they run once after the lock is gone."""
    db = await fault_db("sqlite")
    result = await run_partition(db, PartitionConfig(), tmp_path / "logs")
    figures = result.figures
    print(figures)
    _check_nothing_lost_or_completed_twice(figures)
    assert figures["held by the cut-off node at the freeze"] == 20
    assert figures["held attempts' side effects after the lapse"] == 0, result.logs["node-a"]
    assert figures["jobs run twice (side effect written twice)"] == 0
    assert figures["lease_lost events"] == 1
    assert figures["first job back to available after the lapse (s)"] > 0
