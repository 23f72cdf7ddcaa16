"""Flask: `init_app(flask_app, app)` makes a Baton app part of a Flask app. Every job of the
Baton app (sync or async worker, and `after_cancelled` hooks) then runs inside
`flask_app.app_context()`, so workers use `current_app`, extensions and their configuration
as views do; the Baton app is `flask_app.extensions["baton"]`."""

from __future__ import annotations

import functools
import inspect
from typing import Any

from ..app import Baton
from ..errors import ValidationError
from ..job import Job
from ..worker import WorkerDef

EXTENSION = "baton"


def init_app(flask_app: Any, app: Baton) -> Baton:
    """Run every job of `app` inside `flask_app.app_context()`, and register `app` as
    `flask_app.extensions["baton"]`. Call it before starting a node or draining."""
    if not isinstance(app, Baton):
        raise ValidationError("app", f"must be a baton.Baton, got {type(app).__name__}")
    if not hasattr(flask_app, "app_context") or not hasattr(flask_app, "extensions"):
        raise ValidationError("flask_app", f"must be a flask.Flask application, got {type(flask_app).__name__}")
    resolve = app.resolve_worker
    wrapped: dict[str, tuple[WorkerDef, WorkerDef]] = {}

    def resolve_in_context(name: str) -> WorkerDef | None:
        definition = resolve(name)
        if definition is None:
            return None
        known = wrapped.get(name)
        if known is None or known[0] is not definition:
            known = (definition, _in_context(flask_app, definition))
            wrapped[name] = known
        return known[1]

    # The app's executors (node and drain) look workers up through this one method.
    app.resolve_worker = resolve_in_context  # type: ignore[method-assign]
    flask_app.extensions[EXTENSION] = app
    return app


def _in_context(flask_app: Any, definition: WorkerDef) -> WorkerDef:
    perform = definition.perform
    if definition.is_async:

        async def perform_async(job: Job) -> Any:
            with flask_app.app_context():
                return await perform(job)

        run: Any = perform_async
    else:

        @functools.wraps(perform)
        def run(job: Job) -> Any:
            with flask_app.app_context():
                return perform(job)

    after = definition.after_cancelled
    after_in_context: Any = None
    if after is not None and inspect.iscoroutinefunction(after):

        async def after_async(reason: str, job: Job) -> Any:
            with flask_app.app_context():
                return await after(reason, job)

        after_in_context = after_async
    elif after is not None:

        def after_sync(reason: str, job: Job) -> Any:
            with flask_app.app_context():
                return after(reason, job)

        after_in_context = after_sync

    return WorkerDef(
        definition.options, run, definition.backoff, after_in_context, definition.source, definition.is_async
    )
