"""The SQLite engine (stdlib sqlite3): the zero-setup embedded default."""

from .engine import SqliteEngine

__all__ = ["SqliteEngine"]
