"""ASGI servers (FastAPI, Starlette, any framework with a lifespan): run a Baton node inside
the server's lifespan and stop it gracefully when the server shuts down.

    from baton.contrib.asgi import lifespan
    api = FastAPI(lifespan=lifespan(app))          # or Starlette(lifespan=lifespan(app))

Each server process (every uvicorn/gunicorn worker) runs one node; leader-only plugins elect
one leader among them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..app import Baton
from ..errors import ValidationError

Lifespan = Callable[[Any], contextlib.AbstractAsyncContextManager[Any]]


def lifespan(
    app: Baton,
    *,
    migrate: bool = False,
    grace: float | None = None,
    inner: Lifespan | None = None,
    state: bool = True,
) -> Lifespan:
    """A lifespan for `FastAPI(lifespan=...)` / `Starlette(lifespan=...)` that starts `app`'s
    node at startup and stops it at shutdown: fetching stops, running jobs get up to `grace`
    seconds (default the app's `shutdown_grace`), unfinished ones are handed back.

    `migrate=True` runs `app.migrate()` first (handy in development; use `baton migrate` in
    deployments). `inner` wraps another lifespan of yours inside this one (the node is up
    while it runs). With `state=True` the lifespan state holds `{"baton": app}`, so handlers
    read `request.state.baton` (needs a server with lifespan state: uvicorn, hypercorn)."""
    if not isinstance(app, Baton):
        raise ValidationError("app", f"must be a baton.Baton, got {type(app).__name__}")
    if grace is not None and (not isinstance(grace, int | float) or isinstance(grace, bool) or grace < 0):
        raise ValidationError("grace", f"must be a number of seconds >= 0 or None, got {grace!r:.80}")

    @contextlib.asynccontextmanager
    async def run(asgi_app: Any) -> AsyncIterator[Any]:
        if migrate:
            await app.migrate()
        await app.start()
        try:
            if inner is not None:
                async with inner(asgi_app) as inner_state:
                    if state:
                        yield {**(inner_state or {}), "baton": app}
                    else:
                        yield inner_state
            else:
                yield {"baton": app} if state else None
        finally:
            await app.stop(grace)

    return run
