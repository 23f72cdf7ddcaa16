"""Workers for tests/test_process_executor.py. They live in a module of their own because a
worker process (started with "spawn") imports them by name; the tests register the plain
functions with `app.worker(executor="process", ...)(fn)`."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import baton


def _write_pid(job: baton.Job) -> None:
    if "pidfile" in job.args:
        path = Path(job.args["pidfile"])
        path.with_suffix(".tmp").write_text(str(os.getpid()))
        path.with_suffix(".tmp").replace(path)  # whole, never half-written


def square(job: baton.Job) -> dict[str, int]:
    job.log("info", f"squaring {job.args['x']} in process {os.getpid()}")
    return {"square": job.args["x"] ** 2, "pid": os.getpid()}


def plus_one(job: baton.Job) -> int:
    """A workflow step reading its dependency's result in the child."""
    job.log("debug", "adding one")
    return int(job.upstream("sq")["square"]) + 1


def read_context(job: baton.Job) -> dict[str, Any]:
    """A workflow step reading the workflow's context (and its dependency's result) in the child,
    and trying to change both."""
    context = job.context
    refused = []
    for target in (context, context["limits"]):
        try:
            target["added"] = True  # type: ignore[index]
        except TypeError:
            refused.append(type(target).__name__)
    return {
        "tenant": context.get("tenant"),
        "max": context["limits"]["max"],
        "regions": list(context["regions"]),
        "refused": refused,
        "upstream": job.upstream_all(),
        "pid": os.getpid(),
    }


def record_calls(job: baton.Job) -> int:
    """Record usage in the child (priced by the app's pricing, in the parent)."""
    job.record_usage(model="claude", input_tokens=1000, output_tokens=100)
    job.record_usage(model="free", input_tokens=1, output_tokens=1)
    return 2


def _check(value: Any) -> None:
    raise ValueError(f"bad input {value!r}")


def fail(job: baton.Job) -> None:
    _check(job.args.get("value"))


class LockedError(Exception):
    """An exception that cannot be pickled (it holds a lock)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def fail_unpicklable(job: baton.Job) -> None:
    raise LockedError("holding a lock")


def calls_sys_exit(job: baton.Job) -> None:
    sys.exit(2)


def return_lock(job: baton.Job) -> Any:
    return threading.Lock()


def snooze(job: baton.Job) -> baton.Snooze:
    return baton.Snooze(120)


def discard(job: baton.Job) -> None:
    raise baton.Discard("not worth it")


def sleep(job: baton.Job) -> int:
    """Write the process id to `pidfile` (if given), sleep `seconds`, return the process id."""
    _write_pid(job)
    time.sleep(job.args.get("seconds", 0))
    return os.getpid()


def hang_first_attempt(job: baton.Job) -> dict[str, int]:
    """The first attempt hangs (the test kills its process); later ones return at once."""
    _write_pid(job)
    if job.attempt == 1:
        time.sleep(60)
    return {"attempt": job.attempt}


def exit_first_attempt(job: baton.Job) -> dict[str, int]:
    if job.attempt == 1:
        os._exit(3)
    return {"attempt": job.attempt}


class Cube(baton.Worker):
    """A class-form process worker."""

    name = "proc.cube"
    executor = "process"
    record = True

    def perform(self, job: baton.Job) -> dict[str, int]:
        return {"cube": job.args["x"] ** 3, "pid": os.getpid()}
