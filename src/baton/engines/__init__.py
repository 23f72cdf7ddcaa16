"""Engines: one per database behind one seam (`base.Engine`). `create_engine` picks one by URL."""

from __future__ import annotations

import os
from typing import Any

from ..errors import ValidationError
from .base import Conn, Engine

DEFAULT_URL = "sqlite:///baton.db"


def resolve_url(url: str | None) -> str:
    """The URL to use: the argument, else $BATON_DATABASE_URL, else an SQLite file ./baton.db."""
    if url is None:
        url = os.environ.get("BATON_DATABASE_URL") or DEFAULT_URL
    if not isinstance(url, str) or not url.strip():
        raise ValidationError("url", "must be a database URL like postgresql://user@host/db or sqlite:///baton.db")
    return url.strip()


def create_engine(url: str, **options: Any) -> Engine:
    """An engine for `url` (`postgresql://` / `postgres://` or `sqlite:`)."""
    if url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        from .postgres import PostgresEngine

        return PostgresEngine(url.replace("postgresql+psycopg://", "postgresql://"), **options)
    if url.startswith("sqlite:"):
        from .sqlite import SqliteEngine

        options.pop("schema", None)
        options.pop("pool_size", None)
        return SqliteEngine(url, **options)
    raise ValidationError(
        "url",
        f"unsupported database URL {url!r}: use postgresql://user@host:5432/db or sqlite:///path/to.db",
    )


__all__ = ["DEFAULT_URL", "Conn", "Engine", "create_engine", "resolve_url"]
