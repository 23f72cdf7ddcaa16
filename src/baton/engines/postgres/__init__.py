"""The PostgreSQL engine (psycopg 3 + psycopg-pool)."""

from .engine import PostgresEngine

__all__ = ["PostgresEngine"]
