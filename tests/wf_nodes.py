"""Helpers shared by the workflow tests, and the worker-node program the concurrent-finish race
test runs in subprocesses.

As a helper module: `query(url, sql, params)` runs raw SQL on either engine (`?` placeholders),
straight to the database and not through Baton, so tests can inspect and tamper with rows.

As a program: `python tests/wf_nodes.py URL STOP_FILE` starts a node (`async with app:`) that
serves the `race_root`, `race_left` or `race_right` queue (`WF_ROLE`), records every
`on_workflow_finished` callback in `finished_events(workflow_id, pid)` and every
("baton","workflow","finished") telemetry event in `finished_telemetry(workflow_id, pid)`, and
stops when STOP_FILE exists.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

if __name__ == "__main__":  # make `import baton` work when run as a script from anywhere
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import baton


def is_postgres(url: str) -> bool:
    return url.startswith("postgres")


def sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


def query(url: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement (placeholders written `?`) in its own transaction; return its rows."""
    if is_postgres(url):
        with psycopg.connect(url, autocommit=True) as conn:
            cur = conn.execute(sql.replace("?", "%s"), tuple(params))  # type: ignore[arg-type]
            return list(cur.fetchall()) if cur.description else []
    conn = sqlite3.connect(sqlite_path(url), timeout=30, isolation_level=None)
    try:
        cur = conn.execute(sql, tuple(params))
        return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


def scalar(url: str, sql: str, params: Sequence[Any] = ()) -> Any:
    rows = query(url, sql, params)
    return rows[0][0] if rows else None


def waits_for_a_lock(url: str) -> bool:
    """PostgreSQL: whether a session of this database waits for a lock (a row or advisory lock
    that another transaction holds)."""
    return bool(
        scalar(
            url,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
    )


SIDE_TABLES = {
    "race_barrier": "workflow_id TEXT NOT NULL, step TEXT NOT NULL, pid INTEGER NOT NULL",
    "race_ready": "pid INTEGER NOT NULL, role TEXT NOT NULL",
    "finished_events": "workflow_id TEXT NOT NULL, pid INTEGER NOT NULL, status TEXT",
    "finished_telemetry": "workflow_id TEXT NOT NULL, pid INTEGER NOT NULL",
}


def create_side_tables(url: str) -> None:
    for name, columns in SIDE_TABLES.items():
        query(url, f"DROP TABLE IF EXISTS {name}")
        query(url, f"CREATE TABLE {name} ({columns})")


# --------------------------------------------------------------------------- race workers


class RaceRoot(baton.Worker):
    """The root of a race workflow: nothing to do."""

    name = "wf_nodes.race_root"
    queue = "race_root"

    def perform(self, job: baton.Job) -> Any:
        return {"root": job.workflow_id}


def _barrier(job: baton.Job) -> Any:
    """Record this step, then wait until its sibling is executing too, so both final acks of
    the workflow land at the same moment on two different nodes."""
    url = os.environ["WF_URL"]
    step = job.step or "?"
    wid = job.workflow_id
    if is_postgres(url):
        conn: Any = psycopg.connect(url, autocommit=True)
        mark = "%s"
    else:
        conn = sqlite3.connect(sqlite_path(url), timeout=30, isolation_level=None)
        mark = "?"
    try:
        conn.execute(
            f"INSERT INTO race_barrier (workflow_id, step, pid) VALUES ({mark}, {mark}, {mark})",
            (wid, step, os.getpid()),
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            (n,) = conn.execute(f"SELECT count(*) FROM race_barrier WHERE workflow_id = {mark}", (wid,)).fetchone()
            if int(n) >= 2:
                return {"step": step, "pid": os.getpid()}
            time.sleep(0.002)
    finally:
        conn.close()
    raise RuntimeError(f"barrier of workflow {wid} never filled")


class RaceLeft(baton.Worker):
    name = "wf_nodes.race_left"
    queue = "race_left"
    max_attempts = 1

    def perform(self, job: baton.Job) -> Any:
        return _barrier(job)


class RaceRight(baton.Worker):
    name = "wf_nodes.race_right"
    queue = "race_right"
    max_attempts = 1

    def perform(self, job: baton.Job) -> Any:
        return _barrier(job)


def race_workflow(i: int) -> baton.Workflow:
    """root -> a, b (two parallel final steps, no fan-in); a and b run on different nodes."""
    wf = baton.Workflow(label=f"race-{i}")
    wf.add("root", RaceRoot.new({"i": i}))
    wf.add("a", RaceLeft.new({"i": i}), deps=["root"])
    wf.add("b", RaceRight.new({"i": i}), deps=["root"])
    return wf


async def node_main(url: str, stop_file: str, role: str) -> None:
    os.environ["WF_URL"] = url
    pid = os.getpid()
    queues = {"race_root": 5, f"race_{role}": 60}
    app = baton.Baton(url, queues=queues, plugins=[], log_events=False, node=f"race-{role}-{pid}", poll_interval=0.2)

    def on_finished(event: dict[str, Any]) -> None:
        query(
            url,
            "INSERT INTO finished_events (workflow_id, pid, status) VALUES (?, ?, ?)",
            (event["workflow_id"], pid, event.get("status")),
        )

    def on_telemetry(event: Any, measurements: dict[str, Any], metadata: dict[str, Any]) -> None:
        query(url, "INSERT INTO finished_telemetry (workflow_id, pid) VALUES (?, ?)", (metadata["workflow_id"], pid))

    app.on_workflow_finished(on_finished)
    baton.telemetry.attach(f"race-{pid}", ("baton", "workflow", "finished"), on_telemetry)
    async with app:
        query(url, "INSERT INTO race_ready (pid, role) VALUES (?, ?)", (pid, role))
        while not os.path.exists(stop_file):
            await asyncio.sleep(0.05)
        # Let in-flight notifications arrive before stopping.
        await asyncio.sleep(0.5)


if __name__ == "__main__":
    asyncio.run(node_main(sys.argv[1], sys.argv[2], os.environ.get("WF_ROLE", "left")))
