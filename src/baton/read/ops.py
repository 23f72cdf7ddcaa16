"""The operations pages: what the self-healing plugins repaired (with reason codes), what
they will repair next (orphan backlog, missed releases), and the cron schedule's state."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from croniter import croniter

from ..engines.base import Conn
from ..job import meta_count, to_datetime
from ..store.maintenance import ORPHAN_CAP

if TYPE_CHECKING:
    from ..plugins.cron import Cron

REASON_SAMPLE = 1_000


def _repair(row: dict[str, Any]) -> dict[str, Any]:
    rescued = meta_count(row["rescued"])
    reason = row["repair"] or row["last_reason"] or ("orphaned" if rescued else None)
    return {
        "id": row["id"],
        "state": row["state"],
        "queue": row["queue"],
        "worker": row["worker"],
        "workflow_id": row["workflow_id"],
        "step": row["step"],
        "reason": reason,
        "rescued": rescued,
        "last_error": row["last_error"],
        "at": row["last_at"],
    }


async def health(conn: Conn, stale_after: float = 60.0, before: int | None = None, limit: int = 50) -> dict[str, Any]:
    """Repairs and rescues newest first (keyset `before`), counts by reason code over the newest
    `REASON_SAMPLE` of them, the orphan backlog (executing jobs whose node stopped heartbeating)
    and suspended steps whose release was missed."""
    page = [_repair(r) for r in await conn.fetch("read_repairs", {"before": before, "limit": limit})]
    rows = await conn.fetch("read_repair_reasons", {"n": REASON_SAMPLE})
    reasons = {r["reason"]: int(r["n"]) for r in rows}
    orphans = await conn.fetchone("read_orphan_backlog", {"stale": stale_after, "cap": ORPHAN_CAP})
    missed = await conn.fetch("read_missed_releases", {"limit": 50})
    return {
        "repairs": page,
        "next_before": page[-1]["id"] if len(page) == limit else None,
        "reasons": reasons,
        "reasons_sampled": sum(reasons.values()),
        "orphans": {
            "count": int(orphans["n"]) if orphans else 0,
            "capped": bool(orphans and int(orphans["n"]) >= ORPHAN_CAP),
            "oldest_attempt": to_datetime(orphans["oldest"]) if orphans else None,
        },
        "missed_releases": [dict(r) for r in missed],
    }


async def cron_slots(conn: Conn) -> dict[str, dict[str, Any]]:
    """The last slot each cron entry claimed, by entry name (the `baton_cron` table)."""
    return {
        r["name"]: {"last_slot": to_datetime(r["last_slot"]), "updated_at": to_datetime(r["updated_at"])}
        for r in await conn.fetch("read_cron_slots")
    }


def cron_entries(plugin: Cron | None, slots: dict[str, dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """Every cron entry: expression, worker, last claimed slot, the previous and next due slot,
    and whether a slot was missed (the last claimed slot is older than the previous due slot
    by more than the plugin's catch-up window). Entries of `baton_cron` that the given app
    does not configure are listed with what the table knows."""
    out = []
    known = set()
    for entry in plugin.entries if plugin is not None else []:
        known.add(entry.name)
        last = slots.get(entry.name, {}).get("last_slot")
        due = plugin.slot(entry, now)  # type: ignore[union-attr]
        upcoming = croniter(entry.expression, now.astimezone(plugin.tz)).get_next(datetime)  # type: ignore[union-attr]
        grace = timedelta(seconds=plugin.interval * 2 + 5)  # type: ignore[union-attr]
        missed = (last is None or last < due) and now - due > grace
        out.append(
            {
                "name": entry.name,
                "expression": entry.expression,
                "worker": entry.worker,
                "args": entry.args,
                "queue": entry.options.get("queue"),
                "last_slot": last,
                "previous_due": due,
                "next_slot": upcoming,
                "missed": missed,
                "configured": True,
            }
        )
    for name, row in slots.items():
        if name not in known:
            out.append(
                {
                    "name": name,
                    "expression": None,
                    "worker": name.split("@", 1)[0],
                    "args": None,
                    "queue": None,
                    "last_slot": row["last_slot"],
                    "previous_due": None,
                    "next_slot": None,
                    "missed": None,
                    "configured": False,
                }
            )
    return out


def loads(value: Any) -> Any:
    """Decode a JSON column (SQLite gives text)."""
    return json.loads(value) if isinstance(value, str | bytes) else value
