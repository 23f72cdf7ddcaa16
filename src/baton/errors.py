"""Errors Baton raises: every one is a `BatonError` that says what went wrong and how to fix it."""

from __future__ import annotations


class BatonError(Exception):
    """Base class of every error Baton raises on purpose."""


class ValidationError(BatonError, ValueError):
    """Bad input to a public call; `field` names the offending option or argument."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class WorkflowError(ValidationError):
    """An invalid workflow graph; `step` names the offending step when there is one, and for a
    workflow built from data (`Workflow.from_dict`) `path` is the JSON path (`steps[2].deps[0]`)."""

    def __init__(
        self, message: str, *, step: str | None = None, field: str = "workflow", path: str | None = None
    ) -> None:
        self.step = step
        self.path = path
        super().__init__(field if step is None else f"{field} step {step!r}", message)


class WorkerImportError(ValidationError):
    """A worker named by import path (`app.tasks.send`) whose module exists but raised while
    being imported (a missing setting, a broken dependency): `worker` is the name, `module`
    the module that failed, and the module's exception is the `__cause__`. A node records it
    on the job like any failed attempt and keeps running; `app.new` and `app.insert` raise it."""

    def __init__(self, worker: str, module: str, cause: BaseException) -> None:
        self.worker = worker
        self.module = module
        super().__init__(
            "worker",
            f"{worker!r} cannot be imported: its module {module!r} raised {type(cause).__name__}: {cause}",
        )


class MigrationError(BatonError):
    """The database schema is missing or older than this version of Baton expects."""


class DatabaseUnavailable(BatonError, ConnectionError):
    """The database could not be reached (wrong URL, server down, pool exhausted)."""


class MissingExtraError(BatonError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class JobCancelled(BatonError):
    """Raised inside a worker by `job.raise_if_cancelled()` once its attempt was taken away:
    the job was cancelled, or its node lost its lease (docs/lease.md). The executor records
    no outcome for such an attempt: it belongs to the canceller or to the Lifeline's rescue."""
