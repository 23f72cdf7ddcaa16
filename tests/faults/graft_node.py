"""A worker node for the graft kill tests (test_graft_kills.py), run as a real subprocess:

    python tests/faults/graft_node.py URL NAME QUEUES MODE OUT_DIR

MODE is `normal`, `kill_after_graft_ack` (SIGKILL itself right after an ack transaction that
grafted committed, before any post-commit work) or `kill_in_graft` (SIGKILL itself inside the
graft worker, before the ack). The node prints `ready` once started and runs until SIGTERM.
Workers (fixed names): `gk.expand` (graft step: `Graft.map` over `args.n` items), `gk.item`
(appends `job_id attempt pid` to OUT_DIR/exec.txt and returns its item), `gk.report` (returns
the grafted results). Each `on_workflow_finished` delivery is appended to OUT_DIR/finished.txt.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[2] / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

import baton  # noqa: E402
from baton.plugins import Lifeline, Stager, WorkflowHealth  # noqa: E402


def _append(path: Path, line: str) -> None:
    with open(path, "a") as f:  # one write per line, flushed and synced before the job goes on
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def build(url: str, name: str, queues: dict[str, int], mode: str, out: Path) -> baton.Baton:
    app = baton.Baton(
        url,
        queues=queues,
        plugins=[Stager(interval=0.2), Lifeline(rescue_interval=0.5), WorkflowHealth(interval=0.5)],
        node=name,
        refresh_interval=0.5,
        stale_after=2,
        shutdown_grace=1,
        poll_interval=0.2,
        log_events=False,
    )

    @app.worker(name="gk.item")
    def item(job: baton.Job) -> Any:
        _append(out / "exec.txt", f"{job.id} {job.attempt} {os.getpid()}")
        return job.args["i"]

    @app.worker(name="gk.expand")
    def expand(job: baton.Job) -> Any:
        if mode == "kill_in_graft":
            os.kill(os.getpid(), signal.SIGKILL)
        return baton.Graft.map(item, [{"i": i} for i in range(job.args["n"])])

    @app.worker(name="gk.report")
    def report(job: baton.Job) -> Any:
        return sorted(job.upstream("process").values())

    if mode == "kill_after_graft_ack":
        original = app.after_ack

        async def after_ack(result: Any) -> None:
            if any(a.graft is not None for a in result.acked):
                os.kill(os.getpid(), signal.SIGKILL)  # the ack committed; nothing after it runs
            await original(result)

        app.after_ack = after_ack  # type: ignore[method-assign]

    app.on_workflow_finished(lambda event: _append(out / "finished.txt", json.dumps(event)))
    return app


def workflow(n: int) -> baton.Workflow:
    """The workflow the kill tests run: a graft of `n` items on queue `graft`, then a report."""
    wf = baton.Workflow(label="graft-kill")
    wf.add_graft("process", baton.JobSpec(worker="gk.expand", args={"n": n}, queue="graft"))
    wf.add("report", baton.JobSpec(worker="gk.report"), deps=["process"])
    return wf


async def main(url: str, name: str, queues: str, mode: str, out: str) -> None:
    limits = {q: int(limit) for q, _, limit in (part.partition(":") for part in queues.split(","))}
    app = build(url, name, limits, mode, Path(out))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with app:
        print("ready", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
