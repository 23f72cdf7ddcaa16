"""Cron: insert jobs on a schedule from crontab expressions, from the leader only. Claiming a
slot is one conditional upsert on `baton_cron` in the same transaction as the insert, so each
slot yields exactly one job whatever the number of nodes or leader changes."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from ..engines.base import Conn
from ..errors import ValidationError
from ..job import JobSpec, dumps
from ..store import jobs as store
from ..store import maintenance
from ..worker import FunctionWorker, Worker
from .base import Plugin, positive

if TYPE_CHECKING:
    from ..host import Host

JOB_OPTIONS = {"queue", "priority", "max_attempts", "tags", "meta"}


@dataclass(slots=True)
class Entry:
    """One crontab line: expression, worker, args and job options."""

    expression: str
    worker: str
    args: dict[str, Any]
    options: dict[str, Any]
    name: str


def _worker_name(worker: Any) -> str:
    if isinstance(worker, FunctionWorker):
        return worker.name
    if isinstance(worker, type) and issubclass(worker, Worker):
        return worker.name
    if isinstance(worker, str) and worker:
        return worker
    raise ValidationError(
        "crontab", f"worker must be an @app.worker function, a Worker class or a name, got {worker!r}"
    )


class Cron(Plugin):
    """`Cron(crontab=[("*/5 * * * *", worker, {args}), ...], timezone="UTC")`.

    Entries are `(expression, worker)`, `(expression, worker, args)` or
    `(expression, worker, args, options)` with options among queue, priority, max_attempts,
    tags, meta. Expressions are standard 5-field crontab or `@hourly`, `@daily`, `@weekly`,
    `@monthly`, `@yearly`. A slot missed by more than `catch_up` seconds (default: 60, e.g.
    while no node ran) is skipped rather than run late.
    """

    name = "cron"

    def __init__(
        self,
        crontab: Sequence[Sequence[Any]] = (),
        timezone: str = "UTC",
        interval: float = 1.0,
        catch_up: float = 60.0,
    ) -> None:
        super().__init__(interval)
        try:
            if not isinstance(timezone, str):
                raise TypeError(timezone)
            self.tz = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):  # OSError: 'America' is a directory
            raise ValidationError(
                "timezone", f"unknown time zone {timezone!r}; use an IANA name like 'Europe/Paris'"
            ) from None
        self.timezone = timezone
        self.catch_up = positive("catch_up", catch_up) or 60.0
        if isinstance(crontab, str | bytes) or not isinstance(crontab, Sequence):
            raise ValidationError("crontab", "must be a list of (expression, worker, args) tuples")
        self.entries: list[Entry] = []
        for i, item in enumerate(crontab):
            if isinstance(item, str | bytes) or not isinstance(item, Sequence) or not 2 <= len(item) <= 4:
                raise ValidationError(f"crontab[{i}]", f"must be (expression, worker[, args[, options]]), got {item!r}")
            expression, worker = item[0], item[1]
            args = item[2] if len(item) > 2 else {}
            options = item[3] if len(item) > 3 and item[3] is not None else {}
            if not isinstance(options, Mapping):
                raise ValidationError(
                    f"crontab[{i}]", f"options must be a dict like {{'queue': 'reports'}}, got {options!r:.80}"
                )
            options = dict(options)
            if (
                not isinstance(expression, str)
                or not (expression.strip().startswith("@") or len(expression.split()) == 5)
                or not croniter.is_valid(expression.strip())
            ):
                raise ValidationError(
                    f"crontab[{i}]",
                    f"invalid cron expression {expression!r}; use 5 fields like '*/5 * * * *' or an alias "
                    "like '@hourly'",
                )
            if not isinstance(args, Mapping):
                raise ValidationError(f"crontab[{i}]", f"args must be a dict, got {args!r}")
            unknown = set(options) - JOB_OPTIONS
            if unknown:
                raise ValidationError(
                    f"crontab[{i}]", f"unknown job option(s) {sorted(unknown, key=repr)}; use {sorted(JOB_OPTIONS)}"
                )
            worker_name = _worker_name(worker)
            options = _check_options(i, expression.strip(), worker_name, args, options)
            digest = hashlib.sha256(dumps([expression.strip(), worker_name, dict(args), options]).encode()).hexdigest()[
                :16
            ]
            self.entries.append(Entry(expression.strip(), worker_name, dict(args), options, f"{worker_name}@{digest}"))
        self._last_seen: dict[str, datetime] = {}

    def validate(self, app: Host) -> None:
        for entry in self.entries:
            if app.resolve_worker(entry.worker) is None:
                raise ValidationError("crontab", f"unknown worker {entry.worker!r} in cron entry {entry.expression!r}")

    def slot(self, entry: Entry, now: datetime) -> datetime:
        """The latest slot of `entry` at or before `now` (in the plugin's time zone)."""
        local = now.astimezone(self.tz)
        probe = local + timedelta(microseconds=1)
        return croniter(entry.expression, probe).get_prev(datetime)  # type: ignore[no-any-return]

    async def _sweep(self, app: Host) -> dict[str, Any]:
        now = await app.engine.run(maintenance.db_now)
        due: list[tuple[Entry, datetime, JobSpec]] = []
        for entry in self.entries:
            slot = self.slot(entry, now)
            if self._last_seen.get(entry.name) == slot:
                continue  # this node already handled the slot; no database work needed
            if (now - slot).total_seconds() > self.catch_up:
                self._last_seen[entry.name] = slot
                continue
            definition = app.resolve_worker(entry.worker)
            if definition is None:
                raise ValidationError("crontab", f"unknown worker {entry.worker!r}")
            meta = {**entry.options.get("meta", {}), "cron": entry.expression, "cron_slot": slot.isoformat()}
            opts = {k: v for k, v in entry.options.items() if k != "meta"}
            due.append((entry, slot, definition.options.new(entry.args, meta=meta, **opts)))
        inserted = []
        for entry, slot, spec in due:
            job = await app.engine.run(_insert_for_slot, entry.name, slot, spec)
            self._last_seen[entry.name] = slot
            if job is not None:
                inserted.append({"id": job.id, "worker": job.worker, "slot": slot.isoformat()})
                app.wake_producers({job.queue})
        return {"inserted": inserted, "inserted_count": len(inserted)}


def _check_options(
    i: int, expression: str, worker: str, args: Mapping[str, Any], options: dict[str, Any]
) -> dict[str, Any]:
    """Validate a cron entry's args and job options now, as the job each slot inserts would
    (the worker's own defaults fill in at insert time), so a bad entry fails at construction
    instead of every sweep. Returns the options in JSON form."""
    meta = options.get("meta")
    if meta is None:
        meta = {}
    if not isinstance(meta, Mapping):
        raise ValidationError(f"crontab[{i}]", f"meta must be a dict of JSON values, got {meta!r:.80}")
    given = {k: v for k, v in options.items() if k != "meta" and v is not None}
    try:
        probe = JobSpec(worker=worker, args=dict(args), meta={**meta, "cron": expression, "cron_slot": ""}, **given)
    except ValidationError as exc:
        raise ValidationError(f"crontab[{i}]", str(exc)) from None
    out = dict(options)
    if "meta" in out:
        out["meta"] = dict(meta)
    if given.get("tags") is not None:
        out["tags"] = probe.tags
    return out


async def _insert_for_slot(conn: Conn, name: str, slot: datetime, spec: JobSpec) -> Any:
    if not await maintenance.claim_cron_slot(conn, name, slot):
        return None
    return (await store.insert_jobs(conn, [spec]))[0]
