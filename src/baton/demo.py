"""`baton demo`: one real workflow end to end on a real database, in a few seconds.

fetch an album, resize its images in parallel on the `images` queue (one resize fails once
and is retried), build a report from every thumbnail (fan-in), then notify on `mailers`.
It shows the DAG before running, live progress while a node runs it, and a summary after.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import zlib
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .app import Baton
from .job import Job
from .plugins.stager import Stager
from .terminal import STATE_STYLES, counts_text, state_text, workflow_tree
from .workflows.builder import Workflow
from .workflows.status import WorkflowStatus

ALBUM = "harbour-trip"
IMAGES = ("lighthouse.jpg", "ferry.jpg", "fish-market.jpg", "sunset.jpg")
FLAKY_STEP = "resize_3"  # fails on its first attempt, on purpose
TIMEOUT = 30.0  # seconds; the demo normally takes about two


class FlakyThumbnailService(ConnectionError):
    """The demo's deliberate, transient failure."""


def build(url: str, schema: str = "public") -> tuple[Baton, Workflow]:
    """The demo app (workers on three queues, a fast stager, short heartbeats) and its workflow."""
    app = Baton(
        url,
        schema=schema,
        queues={"default": 4, "images": 4, "mailers": 2},
        # A 0.1 s stager moves the failed resize back to `available` right after its backoff.
        plugins=[Stager(interval=0.1)],
        node="baton-demo",
        refresh_interval=1,
        stale_after=5,
        shutdown_grace=5,
        poll_interval=0.5,
        log_events=False,
    )

    @app.worker(name="demo.fetch")
    async def fetch(job: Job) -> dict[str, Any]:
        await asyncio.sleep(0.2)
        return {"album": job.args["album"], "images": list(IMAGES)}

    @app.worker(name="demo.resize", queue="images", backoff=lambda job: 0.2)
    async def resize(job: Job) -> dict[str, Any]:
        image = job.upstream("fetch")["images"][job.args["index"]]
        await asyncio.sleep(0.3 + 0.05 * job.args["index"])
        if job.args.get("flaky") and job.attempt == 1:
            raise FlakyThumbnailService("thumbnail service timed out (failing once on purpose)")
        size = 20_000 + zlib.crc32(image.encode()) % 30_000
        return {"image": image, "thumbnail": image.replace(".jpg", "-320.jpg"), "bytes": size}

    @app.worker(name="demo.report")
    def report(job: Job) -> dict[str, Any]:
        # A sync worker: it runs in the node's thread pool.
        thumbs = [result for result in job.upstream_all().values() if result]
        return {"thumbnails": len(thumbs), "bytes": sum(t["bytes"] for t in thumbs)}

    @app.worker(name="demo.notify", queue="mailers")
    async def notify(job: Job) -> dict[str, Any]:
        summary = job.upstream("report")
        await asyncio.sleep(0.1)
        return {"to": job.args["to"], "subject": f"{summary['thumbnails']} thumbnails ready"}

    wf = Workflow(label="demo-thumbnails")
    wf.add("fetch", fetch.new({"album": ALBUM}))
    resizes = []
    for index in range(len(IMAGES)):
        name = f"resize_{index + 1}"
        wf.add(name, resize.new({"index": index, "flaky": name == FLAKY_STEP}), deps=["fetch"])
        resizes.append(name)
    wf.add("report", report.new({"album": ALBUM}), deps=resizes)
    wf.add("notify", notify.new({"to": "team@example.com"}), deps=["report"])
    return app, wf


async def run_demo(url: str | None = None, *, schema: str = "public", keep: bool = False, console: Console) -> int:
    """Run the demo on `url` (default: a fresh temporary SQLite file); returns the exit code."""
    tmpdir = None
    if url is None:
        tmpdir = tempfile.mkdtemp(prefix="baton-demo-")
        url = f"sqlite:///{tmpdir}/baton.db"
    app, wf = build(url, schema)
    wid = None
    try:
        # Reach the database before printing anything: if it cannot be reached, the error
        # (printed by the caller) is the whole output.
        applied = await app.migrate()
        console.rule(Text("Baton demo", style="bold"))
        console.print(
            Text.assemble(("database  ", "bold"), app.engine.display_url, " (a fresh temporary file)" if tmpdir else "")
        )
        console.print(
            Text.assemble(
                ("migrated  ", "bold"),
                f"applied migration {', '.join(map(str, applied))}" if applied else "already up to date",
            )
        )
        wid = await app.insert_workflow(wf)
        console.print()
        console.print(
            Text("The workflow as inserted: steps stay suspended until their dependencies complete.", style="bold")
        )
        console.print(workflow_tree(await app.workflow_status(wid)))
        console.print()

        finished = asyncio.Event()
        app.on_workflow_finished(lambda event: finished.set() if event.get("workflow_id") == wid else None)
        started = time.monotonic()
        async with app:
            status = await _watch(app, wid, finished, started, console)
        elapsed = time.monotonic() - started

        console.print(Text("Final state", style="bold"))
        console.print(workflow_tree(status))
        console.print()
        console.print(_summary(status, elapsed))
        if not status.finished:
            console.print(Text(f"the workflow did not finish within {TIMEOUT:g}s", style="bold red"))
            return 1
        return 0 if status.status == "completed" else 1
    finally:
        await app.close()
        if tmpdir is not None and not keep:
            shutil.rmtree(tmpdir, ignore_errors=True)
        if wid is not None:  # else no workflow was inserted: nothing to inspect or browse
            _print_hints(console, url, wid, temporary=tmpdir is not None, kept=keep)


def _print_hints(console: Console, url: str, wid: str, *, temporary: bool, kept: bool) -> None:
    """How to inspect the run: the CLI on a kept file, the dashboard on a kept or given database."""
    console.print()
    if temporary and not kept:
        console.print("to browse this run in the web dashboard, run  baton demo --keep  and follow its hint")
        return
    # Text, not str: the URL (a path, a password) and the extra's "[dashboard]" print as they
    # are whatever the console's markup setting.
    if temporary:
        console.print(
            Text(f"kept the database: inspect it with  baton --url {url} workflows show {wid}"), soft_wrap=True
        )
    console.print(
        Text(
            f"open it in the web dashboard:  baton dashboard --url {url}  then  "
            f"http://127.0.0.1:8484/workflows/{wid}  (the dashboard extra: pip install 'baton-jobs[dashboard]')"
        ),
        soft_wrap=True,
    )


async def _watch(app: Baton, wid: str, finished: asyncio.Event, started: float, console: Console) -> WorkflowStatus:
    """Show progress until the workflow finishes (announcement or, as a fallback, polling)."""
    deadline = started + TIMEOUT
    if console.is_terminal:
        status = await app.workflow_status(wid)
        with Live(_progress(status, started), console=console, refresh_per_second=12, transient=True) as live:
            while not status.finished and time.monotonic() < deadline:
                await _tick(finished)
                status = await app.workflow_status(wid)
                live.update(_progress(status, started))
        return status

    # Not a terminal (a log, CI, a pipe): one line per step event instead of a redrawn tree.
    console.print(Text("Running: step events as this node hears them", style="bold"))
    pending: list[dict[str, Any]] = []

    def on_step(event: dict[str, Any]) -> None:
        pending.append({**event, "t": time.monotonic() - started})

    unsubscribe = app.subscribe_workflow(wid, on_step)
    try:
        status = await app.workflow_status(wid)
        while not status.finished and time.monotonic() < deadline:
            await _tick(finished)
            _print_events(console, pending)
            status = await app.workflow_status(wid)
        # Step events travel through the database and may trail the finished announcement.
        settle = time.monotonic() + 1.0
        while time.monotonic() < settle and sum(1 for e in pending if e["event"] == "completed") < len(status.steps):
            await asyncio.sleep(0.05)
            if pending and pending[-1]["event"] == "completed" and pending[-1]["step"] == "notify":
                break
        _print_events(console, pending)
    finally:
        unsubscribe()
    console.print()
    return status


async def _tick(finished: asyncio.Event) -> None:
    try:
        await asyncio.wait_for(finished.wait(), timeout=0.1)
    except TimeoutError:
        pass


def _print_events(console: Console, pending: list[dict[str, Any]]) -> None:
    for event in pending:
        console.print(
            Text.assemble(
                (f"  {event['t']:5.2f}s  ", "dim"), (f"{event['step']:<10}", "bold"), " ", state_text(event["event"])
            )
        )
    pending.clear()


def _progress(status: WorkflowStatus, started: float) -> Group:
    line = Text.assemble((f"running {time.monotonic() - started:4.1f}s  ", "bold"), counts_text(status.counts))
    return Group(workflow_tree(status), Text(), line)


def _summary(status: WorkflowStatus, elapsed: float) -> Group:
    """Jobs by state, time taken, the retried step's attempts, and per-step timings."""
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold", no_wrap=True)
    facts.add_column()
    facts.add_row("workflow", Text.assemble(f"{status.label}  {status.workflow_id}  ", state_text(status.status)))
    facts.add_row("time taken", f"{elapsed:.2f} s from node start to the finished announcement")
    facts.add_row("jobs by state", counts_text(status.counts))
    flaky = status.details.get(FLAKY_STEP)
    if flaky is not None:
        facts.add_row(
            "retried step",
            Text(f"{FLAKY_STEP}: {flaky.attempt} attempts (attempt 1 failed: {flaky.last_error or 'unknown error'})"),
        )
    report = status.details.get("report")
    if report is not None and isinstance(report.result, dict):
        facts.add_row("report", f"{report.result['thumbnails']} thumbnails, {report.result['bytes']:,} bytes")
    notify = status.details.get("notify")
    if notify is not None and isinstance(notify.result, dict):
        facts.add_row("notify", f"sent \u201c{notify.result['subject']}\u201d to {notify.result['to']}")

    steps = Table(
        title="Steps", title_style="bold", title_justify="left", header_style="bold", box=None, pad_edge=False
    )
    steps.add_column("STEP", no_wrap=True)
    steps.add_column("QUEUE", no_wrap=True)
    steps.add_column("STATE", no_wrap=True)
    steps.add_column("ATTEMPTS", justify="right")
    steps.add_column("QUEUED MS", justify="right")
    steps.add_column("RUN MS", justify="right")
    for name, step in status.details.items():
        steps.add_row(
            name,
            step.queue or "-",
            Text(step.state, style=STATE_STYLES.get(step.state, "")),
            str(step.attempt),
            "-" if step.queued_ms is None else str(step.queued_ms),
            "-" if step.run_ms is None else str(step.run_ms),
        )
    return Group(Text("Summary", style="bold"), facts, Text(), steps)
