"""Grafts survive killed nodes (issue #15, SPEC 9.1), with real processes and `kill -9`, on both
engines:

- a node killed right after the ack of a graft step committed (before any post-commit work):
  the grafted steps committed with that ack, so a second node runs them once each, nothing is
  grafted twice, the report runs after the last grafted step and the finished announcement
  comes once, after them;
- a node killed inside the graft worker, before the ack: nothing was grafted; the Lifeline of a
  second node rescues the graft job, which runs again and grafts once.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import baton
from polling import wait_for
from wf_nodes import query, scalar

pytestmark = pytest.mark.faults

PROGRAM = str(Path(__file__).resolve().parent / "graft_node.py")
N = 60


class Node:
    def __init__(self, url: str, name: str, queues: str, mode: str, out: Path) -> None:
        self.log = open(out / f"{name}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, PROGRAM, url, name, queues, mode, str(out)], stdout=subprocess.PIPE, stderr=self.log
        )

    async def ready(self) -> None:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 30)
        assert line.strip() == b"ready", f"node did not start: exit {self.proc.poll()}"

    async def exited(self, timeout: float = 60) -> int:
        return await asyncio.wait_for(asyncio.to_thread(self.proc.wait), timeout)

    async def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.to_thread(self.proc.wait), 15)
            except TimeoutError:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()


def _grafted_names(url: str, wid: str) -> list[str]:
    return [
        r[0] for r in query(url, "SELECT name FROM workflow_nodes WHERE workflow_id = ? AND parent = 'process'", [wid])
    ]


async def _finish_on_a_second_node(app: baton.Baton, wid: str, tmp_path: Path) -> baton.WorkflowStatus:
    survivor = Node(app.url, "survivor", "graft:2,default:10", "normal", tmp_path)
    try:
        await survivor.ready()
        await wait_for(lambda: (tmp_path / "finished.txt").exists(), timeout=90)
        status = await app.workflow_status(wid)
        await asyncio.sleep(1.0)  # time for a duplicate announcement to show up, if there were one
    finally:
        await survivor.stop()
    return status


def _check_ran_once_in_order(app: baton.Baton, wid: str, status: baton.WorkflowStatus, tmp_path: Path) -> None:
    grafted = sorted(_grafted_names(app.url, wid))
    assert grafted == sorted(f"process.{i}" for i in range(N)), "grafted exactly once"
    assert scalar(app.url, "SELECT count(*) FROM workflow_nodes WHERE workflow_id = ?", [wid]) == N + 2
    assert status.status == "completed" and status.finished
    assert status.details["report"].result == list(range(N))
    executions = Counter(line.split()[0] for line in (tmp_path / "exec.txt").read_text().splitlines())
    assert len(executions) == N and set(executions.values()) == {1}, "every grafted step ran once"
    # The report started after the last grafted step finished; the announcement came after it.
    rows = query(
        app.url,
        "SELECT n.name, j.attempted_at, j.completed_at FROM workflow_nodes n JOIN baton_jobs j ON j.id = n.job_id "
        "WHERE n.workflow_id = ?",
        [wid],
    )
    by_name = {r[0]: r for r in rows}
    last_grafted = max(by_name[f"process.{i}"][2] for i in range(N))
    assert by_name["report"][1] >= last_grafted
    finished = [json.loads(line) for line in (tmp_path / "finished.txt").read_text().splitlines()]
    assert [e["workflow_id"] for e in finished] == [wid], "announced once"
    assert finished[0]["counts"] == {"completed": N + 2}
    assert scalar(app.url, "SELECT count(*) FROM workflow_completions WHERE workflow_id = ?", [wid]) == 1


async def test_a_node_killed_right_after_the_graft_ack_committed_grafts_once(app, tmp_path: Path):
    wid = await app.insert_workflow(_workflow(app))
    doomed = Node(app.url, "doomed", "graft:1", "kill_after_graft_ack", tmp_path)
    try:
        assert await doomed.exited() == -signal.SIGKILL
    finally:
        await doomed.stop()
    # The ack committed with its grafted steps before the process died.
    assert len(_grafted_names(app.url, wid)) == N
    assert (await app.workflow_status(wid)).steps["process"] == "completed"
    status = await _finish_on_a_second_node(app, wid, tmp_path)
    _check_ran_once_in_order(app, wid, status, tmp_path)


async def test_a_graft_job_whose_node_died_before_the_ack_is_rescued_and_grafts_once(app, tmp_path: Path):
    wid = await app.insert_workflow(_workflow(app))
    doomed = Node(app.url, "doomed", "graft:1", "kill_in_graft", tmp_path)
    try:
        assert await doomed.exited() == -signal.SIGKILL
    finally:
        await doomed.stop()
    assert _grafted_names(app.url, wid) == []
    assert (await app.workflow_status(wid)).steps["process"] == "executing"
    status = await _finish_on_a_second_node(app, wid, tmp_path)
    _check_ran_once_in_order(app, wid, status, tmp_path)
    [graft] = await app.list_jobs(ids=[status.details["process"].job_id])
    assert graft.attempt == 2 and graft.meta.get("rescued") == 1


def _workflow(app: baton.Baton) -> baton.Workflow:
    sys.path.insert(0, str(Path(PROGRAM).parent))
    import graft_node

    for name in ("gk.expand", "gk.item", "gk.report"):  # known here by name; they run in the nodes
        app.worker(name=name)(lambda job: None)
    return graft_node.workflow(N)
