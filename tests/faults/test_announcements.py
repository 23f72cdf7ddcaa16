"""Exactly one finished announcement, whatever fails (SPEC sections 3 and 5), and cascade hooks
that cannot take a node down with them.

The worker that acks a workflow's last step claims its `workflow_completions` row in the ack's
transaction and announces after the commit; the WorkflowHealth plugin backstops the
announcement of "any terminated workflow not yet announced, e.g. after a hard crash or kill".
Here a node is killed between the two: after it committed the claim, while it runs a slow
`after_cancelled` hook of a step the same ack cancelled. The workflow must still be announced,
once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import fault_node
import pytest
from harness import Cluster, FaultDatabase, wait_for

import baton

pytestmark = pytest.mark.faults


def hooked_workflow(workers: dict[str, baton.FunctionWorker], hook_sleep: float) -> baton.Workflow:
    """`boom` fails for good; the cascade cancels `after`, whose after_cancelled hook takes
    `hook_sleep` seconds. Both run on the `hooks` queue."""
    wf = baton.Workflow(label="hooked")
    wf.add("boom", workers["chaos.work"].new({"mode": "fail"}, max_attempts=1, queue="hooks"))
    wf.add("after", workers["chaos.cleanup"].new({"hook_sleep": hook_sleep}, queue="hooks"), deps=["boom"])
    return wf


async def hook_started(db: FaultDatabase, wid: str) -> bool:
    rows = await asyncio.to_thread(
        db.side, "SELECT count(*) FROM chaos_events WHERE kind = 'hook' AND workflow_id = ?", (wid,)
    )
    return rows[0][0] > 0


def producer_age(db: FaultDatabase, node: str) -> float | None:
    """Seconds since `node` last refreshed its producer rows (database clock); None when it has
    none left (the Lifeline deletes the rows of nodes it declared dead)."""
    if db.postgres:
        sql = "SELECT extract(epoch FROM now() - max(updated_at)) FROM baton_producers WHERE node = ?"
    else:
        sql = "SELECT (julianday('now') - 2440587.5) * 86400.0 - max(updated_at) FROM baton_producers WHERE node = ?"
    age = db.query(sql, (node,))[0][0]
    return None if age is None else float(age)


@pytest.fixture
async def cluster(fault_db, tmp_path: Path):
    """Two nodes on PostgreSQL: n0 runs `default` and `hooks`, n1 only `default` (it hears
    announcements and runs the plugins when n0 is gone). The code under test is the same on
    both engines (what a node does after an ack commits), so one engine is enough."""
    db = await fault_db("postgres")
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    nodes = Cluster(db, 2, log_dir, queues="default:4")
    app = baton.Baton(db.url, plugins=[], log_events=False)
    try:
        await nodes.start_slot(0, "default:4,hooks:2")
        await nodes.start_slot(1, "default:4")
        yield db, nodes, app, fault_node.register(app)
    finally:
        await nodes.stop()
        nodes.close()
        await app.close()


async def test_a_workflow_claimed_by_a_node_killed_before_it_announced_is_still_announced_once(cluster):
    db, nodes, app, workers = cluster
    wid = await app.insert_workflow(hooked_workflow(workers, hook_sleep=30))
    # n0 acked `boom` (discarded), cancelled `after` and claimed the completion in one
    # transaction; it is now running the hook, before its announcement.
    await wait_for(lambda: hook_started(db, wid), timeout=20)
    assert db.query("SELECT status FROM chaos_claims WHERE workflow_id = ?", (wid,)) == [("failed",)]
    await nodes.kill(0)
    await nodes.restart(0)

    # Several WorkflowHealth sweeps (interval 1 s) on n1 or the restarted n0.
    await asyncio.sleep(fault_node.STALE_AFTER + 3 * fault_node.HEALTH_INTERVAL)
    finished = db.side("SELECT node, status FROM chaos_events WHERE kind = 'finished' AND workflow_id = ?", (wid,))
    deliveries = db.side("SELECT node FROM chaos_events WHERE kind = 'delivery' AND workflow_id = ?", (wid,))
    assert len(finished) == 1, (
        f"the workflow was claimed by the killed node and announced {len(finished)} times "
        f"(finished events {finished}, deliveries {deliveries}); the backstop never announces a claimed workflow"
    )


async def test_a_slow_after_cancelled_hook_does_not_stall_its_node(cluster):
    """A sync hook runs like a sync worker would, off the event loop: while it takes its time
    the node keeps heartbeating (it must not look dead to the Lifeline) and keeps running jobs."""
    db, nodes, app, workers = cluster
    hook_sleep = fault_node.STALE_AFTER + 2.0
    wid = await app.insert_workflow(hooked_workflow(workers, hook_sleep=hook_sleep))
    await wait_for(lambda: hook_started(db, wid), timeout=20)
    quick = await app.insert_all([workers["chaos.work"].new({"sleep": 0.01}, queue="hooks") for _ in range(5)])
    await asyncio.sleep(fault_node.STALE_AFTER + 0.5)

    node = nodes.nodes[0].name
    age = producer_age(db, node)
    done = await app.list_jobs(ids=[j.id for j in quick], states=["completed"])
    assert age is not None, (
        f"while the after_cancelled hook ran, node {node} stopped heartbeating and the Lifeline of the other "
        "node declared it dead (its producer rows are gone): the hook blocks the event loop"
    )
    assert age < fault_node.STALE_AFTER, (
        f"while the after_cancelled hook ran, node {node} did not heartbeat for {age:.1f}s "
        f"(stale_after={fault_node.STALE_AFTER}s): the hook blocks the event loop"
    )
    assert len(done) == len(quick), "the node kept running jobs while the hook ran"
