"""What the overview shows: jobs per queue and state (exact while cheap, estimated beyond a
cap), completions per minute, the nodes with their producers, the leader, and a change stamp
the dashboard polls to know when to refresh."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ..engines.base import Conn
from ..job import STATES, to_datetime

COUNT_CAP = 2_000
"""A (queue, state) count stops at this many jobs; beyond it the count is estimated."""
SAMPLE_ROWS = 50_000
"""Rows' worth of pages the estimate samples (PostgreSQL)."""
MAX_QUEUES = 200


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


async def queue_counts(
    conn: Conn, extra_queues: list[str] | None = None, cap: int = COUNT_CAP, sample_rows: int = SAMPLE_ROWS
) -> dict[str, Any]:
    """Jobs by queue and state.

    Each (queue, state) is counted through an index up to `cap`; where the cap is reached the
    count comes from a table sample scaled to the table's size (PostgreSQL) and is flagged in
    `estimated`, or is shown as at least `cap` (SQLite, `capped`). Returns
    `{queues: [{queue, counts, estimated, capped}], totals, estimated, capped}`."""
    names = [r["queue"] for r in await conn.fetch("read_queues", {"limit": MAX_QUEUES})]
    for q in extra_queues or []:
        if q not in names:
            names.append(q)
    names.sort()
    queues: dict[str, dict[str, Any]] = {
        q: {"queue": q, "counts": dict.fromkeys(STATES, 0), "estimated": [], "capped": []} for q in names
    }
    if names:
        rows = await conn.fetch("read_queue_counts", {"queues": names, "states": list(STATES), "cap": cap})
        full = []
        for r in rows:
            queues[r["queue"]]["counts"][r["state"]] = int(r["n"])
            if int(r["n"]) >= cap:
                full.append((r["queue"], r["state"]))
        if full:
            sample = {
                (r["queue"], r["state"]): int(r["n"])
                for r in await conn.fetch("read_count_sample", {"rows": sample_rows})
            }
            for q, s in full:
                if (q, s) in sample:
                    queues[q]["counts"][s] = max(cap, sample[(q, s)])
                    queues[q]["estimated"].append(s)
                else:
                    queues[q]["capped"].append(s)
    totals = dict.fromkeys(STATES, 0)
    for entry in queues.values():
        for state, n in entry["counts"].items():
            totals[state] += n
    return {
        "queues": list(queues.values()),
        "totals": totals,
        "estimated": sorted({s for q in queues.values() for s in q["estimated"]}),
        "capped": sorted({s for q in queues.values() for s in q["capped"]}),
        "cap": cap,
    }


async def throughput(conn: Conn, since: datetime, until: datetime) -> dict[datetime, int]:
    """Completed jobs per minute (keyed by the minute's start, UTC) in [since, until)."""
    rows = await conn.fetch("read_throughput", {"since": since, "until": until})
    out: dict[datetime, int] = {}
    for r in rows:
        minute = to_datetime(r["minute"])
        assert minute is not None
        out[minute] = int(r["n"])
    return out


async def nodes(conn: Conn, stale_after: float = 60.0) -> list[dict[str, Any]]:
    """Running nodes with their producers (one per queue): limit, paused, running, heartbeat age."""
    by_node: dict[str, dict[str, Any]] = {}
    for r in await conn.fetch("list_producers"):
        meta = _loads(r["meta"]) or {}
        age = float(r["age"] or 0)
        node = by_node.setdefault(r["node"], {"node": r["node"], "producers": [], "started_at": None, "age": age})
        stale = age > float(meta.get("stale_after") or stale_after)
        node["producers"].append(
            {
                "uuid": str(r["uuid"]),
                "queue": r["queue"],
                "limit": meta.get("limit"),
                "paused": bool(meta.get("paused", False)),
                "running": meta.get("running"),
                "drain": bool(meta.get("drain", False)),
                "started_at": to_datetime(r["started_at"]),
                "updated_at": to_datetime(r["updated_at"]),
                "age": age,
                "stale": stale,
            }
        )
        started = to_datetime(r["started_at"])
        if node["started_at"] is None or (started is not None and started < node["started_at"]):
            node["started_at"] = started
        node["age"] = min(node["age"], age)
    for node in by_node.values():
        node["stale"] = all(p["stale"] for p in node["producers"])
    return sorted(by_node.values(), key=lambda n: n["node"])


async def leader(conn: Conn) -> dict[str, Any] | None:
    """The node holding the leader lease (runs the plugins), or None."""
    row = await conn.fetchone("current_leader")
    if row is None:
        return None
    return {
        "node": row["node"],
        "elected_at": to_datetime(row["elected_at"]),
        "expires_at": to_datetime(row["expires_at"]),
    }


async def change_stamp(conn: Conn) -> str:
    """A value that differs whenever Baton's rows changed since the last call (O(1) to read)."""
    row = await conn.fetchone("read_change_stamp")
    return str(row["stamp"]) if row else ""
