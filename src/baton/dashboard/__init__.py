"""Baton's web dashboard: `create_app(app, read_only=False, auth=None)` is an ASGI app to mount
under any prefix (FastAPI, Starlette, Django ASGI) or to run alone with `baton dashboard`.
Needs the `dashboard` extra: `pip install 'baton[dashboard]'`."""

from .app import DashboardApp, create_app

__all__ = ["DashboardApp", "create_app"]
