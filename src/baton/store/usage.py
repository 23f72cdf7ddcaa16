"""Usage rows (`job.record_usage`): written with the acks that applied, one statement per
batch (and with a stopping node's hand-back of the attempts it could not finish), and read
back summed per workflow (by step, model and attempt) or per model."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from ..engines.base import Conn
from ..job import Job, UsageRecord, dumps
from ..usage import UsageTotals, WorkflowUsage, money_text
from .jobs import Ack


async def record_usage(conn: Conn, acks: Sequence[Ack]) -> None:
    """Store the usage records of applied acks, each marked by its attempt (one statement)."""
    await record_attempts_usage(conn, [(a.job, a.usage) for a in acks if a.usage])


async def record_attempts_usage(conn: Conn, attempts: Iterable[tuple[Job, Sequence[UsageRecord]]]) -> None:
    """Store the usage records of attempts (the job as it ran, its records), each marked by its
    attempt (one statement; none when there is nothing to store)."""
    rows: list[dict[str, Any]] = []
    for job, records in attempts:
        for u in records:
            rows.append(
                {
                    "job_id": job.id,
                    "workflow_id": job.workflow_id,
                    "step": job.step,
                    "attempt": job.attempt,
                    "model": u.model,
                    "input_tokens": u.input_tokens,
                    "output_tokens": u.output_tokens,
                    "extra": u.extra or None,
                    "cost": None if u.cost is None else money_text(u.cost),
                }
            )
    if rows:
        await conn.execute("insert_usage", {"rows": dumps(rows)})


async def workflow_usage(conn: Conn, workflow_id: str) -> WorkflowUsage | None:
    """The usage of a workflow, or None when there is no such workflow."""
    if await conn.fetchone("workflow_exists", {"workflow_id": workflow_id}) is None:
        return None
    return WorkflowUsage.from_rows(workflow_id, await conn.fetch("workflow_usage", {"workflow_id": workflow_id}))


async def usage_by_model(conn: Conn, since: datetime | None) -> dict[str, UsageTotals]:
    """Usage of every job (workflow steps or not) recorded since `since`, by model."""
    rows = await conn.fetch("usage_by_model", {"since": since})
    return {r["model"]: UsageTotals.from_row(r) for r in rows}
