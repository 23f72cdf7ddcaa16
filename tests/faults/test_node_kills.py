"""Nodes killed with `kill -9` (SPEC sections 2, 3, 4, 5 and 7): three worker node
subprocesses run a mixed workload (plain jobs, some failing, snoozing or scheduled; chained
jobs; workflows: fan-out/fan-in, chains of steps, failing steps that are discarded, steps that
ignore a discarded dependency, snoozes, first-attempt failures, sub-workflows) while every few
seconds one of them is killed with SIGKILL and restarted. Whatever was executing on a killed
node is rescued by the Lifeline of another, and in the end:

- every inserted job is terminal, none vanished;
- no job was completed twice, and no completion was overwritten (a rescued attempt may run
  twice; `completed` is recorded once);
- every job state change was one the spec allows, and no attempt was executed twice;
- the links of a chain ran one at a time, in insertion order;
- every workflow terminated, with exactly one `workflow_completions` row, exactly one
  ("baton", "workflow", "finished") event, and at most one delivery per subscribing node;
- no producer row of a dead node is left once the Lifeline ran;
- with retention on, Baton's tables drain back to empty.
"""

from __future__ import annotations

import pytest
from fault_node import RESCUE_INTERVAL, STALE_AFTER
from harness import ChaosConfig, ChaosResult, assert_no_violations, run_scenario

pytestmark = pytest.mark.faults

# A rescue waits for the producer row to go stale, then for the next Lifeline sweep.
RECOVERY_BOUND = STALE_AFTER + 2 * RESCUE_INTERVAL + 3.0


def assert_nothing_lost_or_duplicated(result: ChaosResult) -> None:
    assert_no_violations(result)
    figures = result.figures
    assert figures["lost"] == 0
    assert figures["duplicated completions"] == 0
    assert figures["duplicated announcements"] == 0
    assert figures["missing announcements"] == 0
    assert figures["illegal transitions"] == 0


@pytest.mark.parametrize("engine", ["postgres", "sqlite"])
async def test_nothing_is_lost_or_done_twice_when_nodes_are_killed(fault_db, engine, tmp_path):
    db = await fault_db(engine)
    config = ChaosConfig(jobs=3_000, workflows=40, feed_seconds=12, kill_interval=2.5)
    result = await run_scenario(db, config, tmp_path)

    assert_nothing_lost_or_duplicated(result)
    figures = result.figures
    assert figures["kills (kill -9)"] >= 3, "the scenario killed nodes"
    assert figures["jobs executing on killed nodes"] > 0, "kills caught jobs in flight"
    assert figures["rescues (executing -> available)"] > 0, "the Lifeline rescued them"
    assert figures["time to recover after kill -9, max (s)"] <= RECOVERY_BOUND, (
        f"a dead node's jobs came back after {figures['time to recover after kill -9, max (s)']}s "
        f"(stale_after={STALE_AFTER}s, rescue_interval={RESCUE_INTERVAL}s)"
    )


@pytest.mark.parametrize("engine", ["postgres", "sqlite"])
async def test_with_retention_on_tables_stay_bounded_and_nothing_is_announced_twice(fault_db, engine, tmp_path):
    """Pruner(max_age=1) deletes finished jobs while nodes die; WorkflowHealth(prune=True)
    deletes the workflow rows behind them. Pruning must never take a job that was not
    terminal or a step an unfinished workflow still needs, nor let a workflow be announced
    twice once its completion row is gone."""
    db = await fault_db(engine)
    config = ChaosConfig(jobs=1_500, workflows=24, feed_seconds=8, kill_interval=3.0, retention=True)
    result = await run_scenario(db, config, tmp_path)

    assert_nothing_lost_or_duplicated(result)
    left = result.figures["rows left with retention"]
    assert not any(left.values()), f"retention left rows behind: {left}"
    peak_jobs = result.figures["peak rows"]["baton_jobs"]
    assert peak_jobs < config.jobs, f"baton_jobs peaked at {peak_jobs} rows: the Pruner did not keep up"


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["postgres", "sqlite"])
async def test_the_full_chaos_run(fault_db, engine, tmp_path):
    """The size bench/chaos.py runs: 20 000 jobs and 200 workflows."""
    db = await fault_db(engine)
    config = ChaosConfig(jobs=20_000, workflows=200, feed_seconds=60, kill_interval=4.0, settle_timeout=300)
    result = await run_scenario(db, config, tmp_path)
    assert_nothing_lost_or_duplicated(result)
