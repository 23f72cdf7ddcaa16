"""The app `baton worker --app cli_app:app` runs in the CLI tests (workers at module level, so
the worker subprocess and the test process know them by the same names)."""

from __future__ import annotations

import time

import baton

# No URL: the CLI's --url reaches it through BATON_DATABASE_URL, set before this is imported.
app = baton.Baton(queues={"default": 1}, plugins=[], refresh_interval=1, stale_after=5)


@app.worker()
def echo(job: baton.Job) -> dict:
    """Complete with the job's args."""
    return job.args


@app.worker(max_attempts=1)
def boom(job: baton.Job) -> None:
    """Fail for good on the first attempt."""
    raise RuntimeError("boom")


@app.worker()
def sleepy(job: baton.Job) -> None:
    """Run long enough that only a forced stop ends it."""
    time.sleep(job.args.get("seconds", 30))


def make_app() -> baton.Baton:
    """An app factory: `--app cli_app:make_app` runs the app it returns."""
    return app


def not_a_factory(name: str) -> baton.Baton:
    """Takes an argument, so `--app` must not call it."""
    return app


def returns_no_app() -> int:
    return 42
