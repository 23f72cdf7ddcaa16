"""Inserting jobs (SPEC section 1): singly and in bulk, scheduled or available, with priorities,
tags and meta; from sync code; inside the caller's own transaction; and unique jobs."""

from __future__ import annotations

import asyncio
import collections
import itertools
import sqlite3
import types
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

import baton
from baton.store import jobs as store
from conftest import truncate, wait_for


def _sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


def _count_rows(url: str, where: str = "true") -> int:
    """Rows in baton_jobs, read straight from the database (not through Baton)."""
    if url.startswith("postgres"):
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(f"SELECT count(*) FROM baton_jobs WHERE {where}").fetchone()
            assert row is not None
            return int(row[0])
    conn = sqlite3.connect(_sqlite_path(url))
    try:
        return int(conn.execute(f"SELECT count(*) FROM baton_jobs WHERE {where.replace('true', '1')}").fetchone()[0])
    finally:
        conn.close()


def _noop(job: baton.Job) -> None:
    return None


# --------------------------------------------------------------------------- single and bulk


async def test_insert_one_job_returns_it_available_with_an_id(app):
    w = app.worker(name="ins.one")(_noop)
    job = await app.insert(w.new({"a": 1}))
    assert isinstance(job, baton.Job)
    assert job.id > 0
    assert job.state == "available"
    assert job.args == {"a": 1}
    assert job.attempt == 0
    assert job.max_attempts == 20
    assert job.conflict is False
    stored = await app.get_job(job.id)
    assert stored is not None
    assert stored.state == "available"
    assert stored.worker == "ins.one"
    assert stored.queue == "default"
    assert stored.args == {"a": 1}
    assert stored.errors == []
    assert stored.inserted_at is not None and stored.inserted_at.tzinfo is not None


async def test_insert_all_of_ten_thousand_returns_jobs_in_order_with_ids(app, monkeypatch):
    w = app.worker(name="ins.bulk")(_noop)
    trips: list[int] = []
    original = store.insert_jobs

    async def counting(conn: Any, specs: Any, **kwargs: Any) -> Any:
        result = await original(conn, specs, **kwargs)
        trips.append(conn.round_trips)
        return result

    monkeypatch.setattr(store, "insert_jobs", counting)
    jobs = await app.insert_all([w.new({"n": i}) for i in range(10_000)])

    assert len(trips) == 1, "insert_all must be one transaction"
    # 10 000 rows at 5 000 per statement, plus the wake-up notification.
    assert trips[0] <= 4, f"{trips[0]} round trips for 10 000 jobs"
    assert len(jobs) == 10_000
    assert [j.args["n"] for j in jobs] == list(range(10_000))
    ids = [j.id for j in jobs]
    assert all(a < b for a, b in itertools.pairwise(ids)), "ids must follow the input order"
    assert {j.state for j in jobs} == {"available"}
    assert _count_rows(app.url) == 10_000
    for i in (0, 4_999, 5_000, 9_999):
        stored = await app.get_job(jobs[i].id)
        assert stored is not None and stored.args == {"n": i}


async def test_a_bulk_batch_stores_every_field_exactly_as_given(app):
    """A batch big enough for the bulk path (COPY on PostgreSQL, several chunks of rows) with
    text that needs escaping, repeated and distinct values, and every kind of schedule: each
    stored row is what the caller passed, and what insert_all returned."""
    w = app.worker(name="ins.bulk_fields")(_noop)
    odd = ["tab\there", "line\nbreak", 'quote"d', "back\\slash", "com,ma", "{brace}", "NULL", "\\N", "ünï"]
    past = datetime.now(UTC) - timedelta(minutes=5)
    future = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    specs = []
    for i in range(2_345):
        text = odd[i % len(odd)]
        specs.append(
            w.new(
                {"n": i, "text": text, "nested": {"list": [text, i, None, 1.5]}},
                queue=("q-a", "q-b", f"q-{text[:3]}")[i % 3],
                priority=i % 10,
                max_attempts=1 + i % 7,
                tags=[] if i % 4 == 0 else [text, f"t{i % 5}"],
                meta={} if i % 2 else {"who": text},
                **({"schedule_in": 3600} if i % 11 == 0 else {"scheduled_at": past if i % 13 == 0 else future}
                   if i % 13 in (0, 1) else {}),
            )
        )  # fmt: skip
    jobs = await app.insert_all(specs)

    assert [j.args["n"] for j in jobs] == list(range(len(specs)))
    stored = {j.id: j for j in await app.list_jobs(ids=[j.id for j in jobs], limit=len(jobs))}
    assert len(stored) == len(specs)
    for spec, job in zip(specs, jobs, strict=True):
        row = stored[job.id]
        for name in ("queue", "worker", "args", "meta", "tags", "priority", "max_attempts", "state"):
            assert getattr(row, name) == getattr(job, name), (name, spec)
        assert (row.queue, row.args, row.meta, row.tags) == (spec.queue, spec.args, spec.meta, spec.tags)
        assert (row.priority, row.max_attempts) == (spec.priority, spec.max_attempts)
        assert row.scheduled_at is not None and job.scheduled_at is not None
        assert abs((row.scheduled_at - job.scheduled_at).total_seconds()) < 0.001
        if spec.schedule_in or spec.scheduled_at == future:
            assert row.state == "scheduled", spec
        else:
            assert row.state == "available", spec
        if spec.scheduled_at is not None:
            assert abs((row.scheduled_at - spec.scheduled_at).total_seconds()) < 0.001


async def test_one_job_at_a_time_is_stored_exactly_as_given(app):
    """`app.insert` of one job due at once takes a statement of its own on PostgreSQL
    (insert_job: parameters instead of a JSON array, the timestamps left to the column
    defaults): each field, odd text included, is stored as given and as the returned job says,
    like the batch statement stores it; a job with a time or a delay still gets its schedule."""
    w = app.worker(name="ins.single_fields")(_noop)
    odd = ["tab\there", "line\nbreak", 'quote"d', "back\\slash", "com,ma", "{brace}", "NULL", "\\N", "ünï", ""]
    future = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    jobs = []
    specs = []
    for i, text in enumerate(odd):
        spec = w.new(
            {"n": i, "text": text, "nested": {"list": [text, i, None, 1.5]}},
            queue=f"q-{text[:3]}",
            priority=i % 10,
            max_attempts=1 + i % 7,
            tags=[] if i % 3 == 0 else [text, f"t{i}"],
            meta={} if i % 2 else {"who": text},
            **({"schedule_in": 60} if i == 3 else {"scheduled_at": future} if i == 4 else {}),
        )
        specs.append(spec)
        jobs.append(await app.insert(spec))
    stored = {j.id: j for j in await app.list_jobs(ids=[j.id for j in jobs], limit=len(jobs))}
    for i, (spec, job) in enumerate(zip(specs, jobs, strict=True)):
        row = stored[job.id]
        assert (row.queue, row.worker, row.args, row.meta, row.tags) == (
            spec.queue, spec.worker, spec.args, spec.meta, spec.tags,
        )  # fmt: skip
        assert (row.priority, row.max_attempts) == (spec.priority, spec.max_attempts)
        assert (row.state, job.state) == (("scheduled",) * 2 if i in (3, 4) else ("available",) * 2)
        assert row.scheduled_at == job.scheduled_at and row.inserted_at == job.inserted_at
        if i == 4:
            assert row.scheduled_at == future
        elif i == 3:
            assert 50 < (row.scheduled_at - row.inserted_at).total_seconds() < 70
        else:
            assert row.scheduled_at == row.inserted_at


def test_copy_chunks_format_each_column_as_value_by_value():
    """PostgreSQL's COPY text is built a column at a time (whole columns of one kind without a
    Python call per value); every column, uniform or mixed, comes out as each value alone."""
    from baton.engines.postgres.engine import _copy_lines, _copy_value

    class Text(str):
        pass

    now = datetime.now(UTC)
    later = now + timedelta(seconds=1)
    columns = [
        [f"plain{i}" for i in range(50)],
        ["tab\there" if i == 7 else "x" for i in range(50)],
        [None if i % 3 else f"n{i}" for i in range(50)],
        [None if i % 3 else "back\\slash" for i in range(50)],
        list(range(50)),
        [i % 2 == 0 for i in range(50)],
        [None] * 50,
        [now] * 50,
        [now if i % 2 else later for i in range(50)],
        [[] if i % 4 else ["root", 'q"uote', "b\\s"] for i in range(50)],
        [(["1"], [1], [True], [1.0], [Text("1")], [None])[i % 6] for i in range(50)],
        [{"k": i} if i % 2 else 1.5 for i in range(50)],
        [Text("sub") if i % 2 else "str" for i in range(50)],
    ]
    rows = list(zip(*columns, strict=True))
    stamps: dict[int, str] = {}
    expected = "".join("\t".join(_copy_value(v, stamps) for v in row) + "\n" for row in rows).encode()
    assert _copy_lines(rows) == expected
    assert _copy_lines(iter(rows)) == expected
    assert _copy_lines([]) == b""
    ragged = [(1, "a"), (2,)]
    assert _copy_lines(ragged) == b"1\ta\n2\n"


async def test_any_mapping_for_args_and_meta_and_any_iterable_of_tags_is_stored(app):
    """Plain dicts and lists take a fast path when a job is built; other mappings and
    iterables are copied into them, and the stored job is the same."""
    w = app.worker(name="ins.mappings")(_noop)
    args = types.MappingProxyType({"a": 1, "nested": {"b": [1, 2]}})
    meta = collections.OrderedDict(who="x")
    by_worker = w.new(args, meta=meta, tags=("t1", "t2"))
    direct = baton.JobSpec(worker="ins.mappings", args=args, meta=meta, tags=iter(["t3"]))
    for spec in (by_worker, direct):
        assert type(spec.args) is dict and type(spec.meta) is dict and type(spec.tags) is list
    jobs = await app.insert_all([by_worker, direct])
    stored = [await app.get_job(j.id) for j in jobs]
    assert [(s.args, s.meta, s.tags) for s in stored if s is not None] == [
        ({"a": 1, "nested": {"b": [1, 2]}}, {"who": "x"}, ["t1", "t2"]),
        ({"a": 1, "nested": {"b": [1, 2]}}, {"who": "x"}, ["t3"]),
    ]


async def test_insert_all_of_nothing_returns_nothing(app):
    assert await app.insert_all([]) == []


# --------------------------------------------------------------------------- scheduling


async def test_schedule_in_makes_a_scheduled_job_due_in_the_future(app):
    w = app.worker(name="ins.sched")(_noop)
    before = datetime.now(UTC)
    job = await app.insert(w.new({}, schedule_in=60))
    assert job.state == "scheduled"
    stored = await app.get_job(job.id)
    assert stored is not None and stored.state == "scheduled"
    assert stored.scheduled_at is not None
    delta = (stored.scheduled_at - before).total_seconds()
    assert 55 < delta < 65
    # A scheduled job is not run by a drain before it is due.
    assert await app.drain() == {}
    assert (await app.get_job(job.id)).state == "scheduled"


async def test_scheduled_at_in_the_future_is_scheduled_and_kept_exactly(app):
    w = app.worker(name="ins.at")(_noop)
    at = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    job = await app.insert(w.new({}, scheduled_at=at))
    stored = await app.get_job(job.id)
    assert stored is not None and stored.state == "scheduled"
    assert abs((stored.scheduled_at - at).total_seconds()) < 0.01


async def test_scheduled_at_in_the_past_is_available_at_once(app):
    w = app.worker(name="ins.past")(_noop)
    job = await app.insert(w.new({}, scheduled_at=datetime.now(UTC) - timedelta(minutes=5)))
    assert job.state == "available"
    assert (await app.get_job(job.id)).state == "available"
    assert await app.drain() == {"completed": 1}


async def test_schedule_in_zero_is_available(app):
    w = app.worker(name="ins.zero")(_noop)
    job = await app.insert(w.new({}, schedule_in=0))
    assert job.state == "available"


# --------------------------------------------------------------------------- stored fields


async def test_priority_tags_meta_and_max_attempts_are_stored(app):
    w = app.worker(name="ins.fields", priority=3, tags=["worker-tag"], max_attempts=7)(_noop)
    default = await app.insert(w.new({}))
    custom = await app.insert(
        w.new(
            {"x": [1, {"y": None}]},
            priority=9,
            tags=["a", "b"],
            meta={"tenant": "t1", "n": 2},
            max_attempts=2,
            queue="other",
        )
    )
    d = await app.get_job(default.id)
    c = await app.get_job(custom.id)
    assert (d.priority, d.tags, d.meta, d.max_attempts, d.queue) == (3, ["worker-tag"], {}, 7, "default")
    assert (c.priority, c.tags, c.max_attempts, c.queue) == (9, ["a", "b"], 2, "other")
    assert c.meta == {"tenant": "t1", "n": 2}
    assert c.args == {"x": [1, {"y": None}]}


async def test_unicode_args_round_trip(app):
    w = app.worker(name="ins.unicode")(_noop)
    args = {"text": "héllo \u2013 世界 \U0001f600", "quote": 'it\'s "quoted"', "back": "\\n"}
    job = await app.insert(w.new(args))
    assert (await app.get_job(job.id)).args == args


async def test_app_new_builds_a_job_for_a_worker_known_by_name(app):
    app.worker(name="ins.by_name", queue="mailers")(_noop)
    spec = app.new("ins.by_name", {"to": "a@b"}, priority=2)
    job = await app.insert(spec)
    stored = await app.get_job(job.id)
    assert (stored.worker, stored.queue, stored.priority, stored.args) == ("ins.by_name", "mailers", 2, {"to": "a@b"})


# --------------------------------------------------------------------------- sync inserts


def test_insert_sync_works_from_plain_sync_code(db_url):
    app = baton.Baton(db_url, plugins=[], log_events=False)
    w = app.worker(name="ins.sync")(_noop)
    job = app.insert_sync(w.new({"n": 1}, priority=4))
    more = app.insert_all_sync([w.new({"n": i}) for i in range(2, 5)])
    assert job.id > 0 and job.state == "available"
    assert [j.args["n"] for j in more] == [2, 3, 4]

    async def read() -> list[baton.Job | None]:
        try:
            return [await app.get_job(j.id) for j in [job, *more]]
        finally:
            await app.close()

    stored = asyncio.run(read())
    assert [s.args["n"] for s in stored if s is not None] == [1, 2, 3, 4]
    assert stored[0].priority == 4


async def test_insert_sync_from_a_thread_wakes_the_running_node(make_app):
    app = make_app(queues={"default": 2}, poll_interval=30)
    ran = asyncio.Event()

    @app.worker(name="ins.thread")
    async def w(job: baton.Job) -> None:
        ran.set()

    async with app:
        job = await asyncio.to_thread(app.insert_sync, w.new({}))
        await asyncio.wait_for(ran.wait(), 5)

        async def done() -> bool:
            return (await app.get_job(job.id)).state == "completed"

        await wait_for(done, 5)


# --------------------------------------------------------------------------- caller's transaction


@pytest.fixture
async def pg_app(pg_url: str) -> AsyncIterator[baton.Baton]:
    """An app on the (emptied) PostgreSQL test database, for psycopg-connection tests."""
    truncate(pg_url)
    app = baton.Baton(pg_url, plugins=[], log_events=False)
    yield app
    await app.close()


@pytest.fixture
async def sqlite_app(tmp_path: Path) -> AsyncIterator[baton.Baton]:
    """An app on a fresh migrated SQLite file, for sqlite3-connection tests."""
    app = baton.Baton(f"sqlite:///{tmp_path}/baton.db", plugins=[], log_events=False)
    await app.migrate()
    yield app
    await app.close()


async def test_insert_inside_a_postgres_async_transaction(pg_app):
    app, db_url = pg_app, pg_app.url
    w = app.worker(name="ins.tx")(_noop)
    async with await psycopg.AsyncConnection.connect(db_url) as aconn:
        await aconn.execute("CREATE TEMP TABLE business (x int)")
        await aconn.commit()
        await aconn.execute("INSERT INTO business VALUES (1)")
        rolled = await app.insert(w.new({"case": "rollback"}), conn=aconn)
        await aconn.rollback()
        assert await app.get_job(rolled.id) is None

        await aconn.execute("INSERT INTO business VALUES (2)")
        kept = await app.insert(w.new({"case": "commit"}), conn=aconn)
        # Not visible to others before the commit.
        assert await app.get_job(kept.id) is None
        await aconn.commit()
    stored = await app.get_job(kept.id)
    assert stored is not None and stored.args == {"case": "commit"} and stored.state == "available"
    assert _count_rows(db_url) == 1


async def test_insert_inside_a_postgres_sync_transaction(pg_app):
    app, db_url = pg_app, pg_app.url
    w = app.worker(name="ins.tx_sync")(_noop)

    def business() -> tuple[int, int]:
        with psycopg.connect(db_url) as conn:
            rolled = app.insert_sync(w.new({"case": "rollback"}), conn=conn)
            conn.rollback()
            kept = app.insert_all_sync([w.new({"case": "commit"})], conn=conn)[0]
            conn.commit()
        return rolled.id, kept.id

    rolled_id, kept_id = await asyncio.to_thread(business)
    assert await app.get_job(rolled_id) is None
    assert (await app.get_job(kept_id)).args == {"case": "commit"}


@pytest.fixture
async def schema_app(pg_app: baton.Baton) -> AsyncIterator[baton.Baton]:
    """An app on its own schema of the PostgreSQL test database, beside `pg_app` on public."""
    schema = f"ins_{uuid.uuid4().hex[:8]}"
    app = baton.Baton(pg_app.url, schema=schema, plugins=[], log_events=False)
    await app.migrate()
    yield app
    await app.close()
    with psycopg.connect(pg_app.url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


async def test_insert_on_a_callers_connection_goes_to_the_apps_schema(pg_app, schema_app):
    """Baton(schema=) on a connection of the caller's, whose search_path is the default: the
    jobs go to the app's schema (not public, another app's), the caller's transaction decides
    whether they exist, and the caller's later statements still see their own tables."""
    app, url = schema_app, pg_app.url
    w = app.worker(name="ins.schema_conn")(_noop)
    async with await psycopg.AsyncConnection.connect(url) as aconn:
        path = (await (await aconn.execute("SHOW search_path")).fetchone())[0]
        rolled = await app.insert(w.new({"case": "rollback"}), conn=aconn)
        await aconn.rollback()
        kept = await app.insert_all([w.new({"case": "commit"}), w.new({"case": "bulk", "n": 1})], conn=aconn)
        # In the same transaction, the caller's own statements are on their own search_path.
        assert (await (await aconn.execute("SHOW search_path")).fetchone())[0] == path
        assert (await (await aconn.execute("SELECT count(*) FROM baton_jobs")).fetchone())[0] == 0  # public's
        assert await app.get_job(kept[0].id) is None  # not committed yet
        await aconn.commit()
    assert await app.get_job(rolled.id) is None
    assert [j.args["case"] for j in await app.list_jobs()] == ["bulk", "commit"]
    assert await pg_app.count_jobs() == {}

    def sync_business() -> list[int]:
        ids = []
        with psycopg.connect(url) as conn:  # a transaction
            ids.append(app.insert_sync(w.new({"case": "sync"}), conn=conn).id)
            assert conn.execute("SHOW search_path").fetchone()[0] == path
            conn.commit()
        with psycopg.connect(url, autocommit=True) as conn:  # no transaction: set and put back
            ids.append(app.insert_sync(w.new({"case": "autocommit", "u": 1}), conn=conn).id)
            assert conn.execute("SHOW search_path").fetchone()[0] == path
            with conn.transaction():  # a transaction opened on an autocommit connection
                ids.append(app.insert_sync(w.new({"case": "block"}), conn=conn).id)
            assert conn.execute("SHOW search_path").fetchone()[0] == path
        return ids

    ids = await asyncio.to_thread(sync_business)
    assert [(await app.get_job(i)).args["case"] for i in ids] == ["sync", "autocommit", "block"]
    assert await pg_app.count_jobs() == {}


async def test_a_failed_insert_on_a_callers_connection_leaves_its_search_path(pg_app, schema_app):
    """When Baton's statements fail in the caller's transaction (here a CHECK constraint
    refuses the row), the caller's rollback restores its search_path; on an autocommit
    connection Baton puts it back itself."""
    app, url = schema_app, pg_app.url
    w = app.worker(name="ins.schema_fail")(_noop)
    with psycopg.connect(url, autocommit=True) as admin:
        table = f'"{app.engine.schema}".baton_jobs'
        admin.execute(f"ALTER TABLE {table} ADD CONSTRAINT no_x CHECK (args->>'x' IS NULL)")
    async with await psycopg.AsyncConnection.connect(url) as aconn:
        path = (await (await aconn.execute("SHOW search_path")).fetchone())[0]
        with pytest.raises(psycopg.errors.CheckViolation):
            await app.insert(w.new({"x": 1}), conn=aconn)
        await aconn.rollback()
        assert (await (await aconn.execute("SHOW search_path")).fetchone())[0] == path
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as aconn:
        with pytest.raises(psycopg.errors.CheckViolation):
            await app.insert(w.new({"x": 1}), conn=aconn)
        assert (await (await aconn.execute("SHOW search_path")).fetchone())[0] == path
    assert await app.count_jobs() == {}


async def test_a_postgres_bulk_batch_gets_the_ids_and_stamps_it_returns(pg_app):
    """COPY takes one sequence value per job. When they are not one run (other sessions took
    values in between; here the sequence steps by 3) every job still gets its own, in order.
    Columns every job leaves at the default (the timestamps: the transaction's now()) are left
    to the server, also in a caller's transaction (conn=), and sent on an autocommit connection,
    where each statement has its own now(): each row is stamped as the job returned says."""
    app, db_url = pg_app, pg_app.url
    w = app.worker(name="ins.bulk_ids")(_noop)

    def stored(jobs: list[baton.Job]) -> None:
        with psycopg.connect(db_url) as conn:
            rows = conn.execute(
                "SELECT id, args, inserted_at, scheduled_at, state, priority, max_attempts, meta, tags"
                " FROM baton_jobs WHERE id = ANY(%s) ORDER BY id",
                ([j.id for j in jobs],),
            ).fetchall()
        assert [r[0] for r in rows] == sorted(j.id for j in jobs) and len({j.id for j in jobs}) == len(jobs)
        by_id = {r[0]: r for r in rows}
        for i, job in enumerate(jobs):
            _, args, inserted_at, scheduled_at, state, *rest = by_id[job.id]
            assert args == {"n": i}
            assert (inserted_at, scheduled_at, state) == (job.inserted_at, job.scheduled_at, "available")
            assert rest == [0, 20, {}, []]

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("ALTER SEQUENCE baton_jobs_id_seq INCREMENT BY 3")
    try:
        spread = await app.insert_all([w.new({"n": i}) for i in range(300)])
        assert all(b.id - a.id == 3 for a, b in itertools.pairwise(spread))
        stored(spread)
    finally:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("ALTER SEQUENCE baton_jobs_id_seq INCREMENT BY 1")
    run = await app.insert_all([w.new({"n": i}) for i in range(300)])
    assert [j.id for j in run] == list(range(run[0].id, run[0].id + 300))
    stored(run)
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as aconn:
        auto = await app.insert_all([w.new({"n": i}) for i in range(300)], conn=aconn)
    stored(auto)
    async with await psycopg.AsyncConnection.connect(db_url) as aconn:
        await aconn.execute("SELECT pg_sleep(0.01)")  # the transaction's now() is older than the statements'
        inside = await app.insert_all([w.new({"n": i}) for i in range(300)], conn=aconn)
        await aconn.commit()
    stored(inside)


def test_the_columns_a_postgres_copy_leaves_out_default_to_what_the_jobs_hold(pg_url):
    """A bulk batch leaves columns out of its COPY when every job holds the column's default
    (store.jobs._copy_columns): the schema's defaults must be exactly those values."""
    with psycopg.connect(pg_url) as conn:
        defaults = dict(
            conn.execute(
                "SELECT column_name, column_default FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = 'baton_jobs'"
            ).fetchall()
        )
    assert defaults["unique_key"] is None and defaults["chain_key"] is None
    assert defaults["meta"] == "'{}'::jsonb" and defaults["tags"] == "'{}'::text[]"
    assert defaults["priority"] == "0" and defaults["max_attempts"] == "20"
    assert defaults["inserted_at"] == "now()" and defaults["scheduled_at"] == "now()"
    spec = baton.JobSpec(worker="w")
    assert (spec.unique, spec.chain_key, spec.meta_json, spec.tags) == (None, None, "{}", [])
    assert (spec.priority, spec.max_attempts) == (0, 20)


async def test_insert_inside_a_sqlite_transaction_after_a_business_write(sqlite_app):
    app, db_url = sqlite_app, sqlite_app.url
    w = app.worker(name="ins.tx_sqlite")(_noop)
    conn = sqlite3.connect(_sqlite_path(db_url), timeout=5)
    try:
        conn.execute("CREATE TABLE business (x int)")
        conn.commit()
        conn.execute("INSERT INTO business VALUES (1)")
        rolled = await app.insert(w.new({"case": "rollback"}), conn=conn)
        conn.rollback()
        conn.execute("INSERT INTO business VALUES (2)")
        kept = await app.insert(w.new({"case": "commit"}), conn=conn)
        conn.commit()
    finally:
        conn.close()
    # SQLite may reuse the rolled-back id (AUTOINCREMENT rolls back too): compare contents.
    assert rolled.args == {"case": "rollback"}
    assert [j.args for j in await app.list_jobs()] == [{"case": "commit"}]
    assert (await app.get_job(kept.id)).args == {"case": "commit"}


async def test_insert_as_the_first_statement_of_a_sqlite_transaction_rolls_back(sqlite_app):
    app, db_url = sqlite_app, sqlite_app.url
    w = app.worker(name="ins.tx_sqlite_first")(_noop)
    conn = sqlite3.connect(_sqlite_path(db_url), timeout=5)
    try:
        rolled = await app.insert(w.new({"case": "rollback"}), conn=conn)
        conn.rollback()
    finally:
        conn.close()
    assert await app.get_job(rolled.id) is None
    assert _count_rows(db_url) == 0


async def test_insert_with_the_wrong_kind_of_connection_is_refused(app, db_url):
    w = app.worker(name="ins.tx_wrong")(_noop)
    with pytest.raises(baton.ValidationError, match=r"conn"):
        await app.insert(w.new({}), conn=object())
    assert _count_rows(db_url) == 0


# --------------------------------------------------------------------------- unique jobs


async def test_unique_conflict_returns_the_existing_job_with_conflict_true(app, db_url):
    w = app.worker(name="ins.uniq", unique={"period": 60})(_noop)
    first = await app.insert(w.new({"id": 1}))
    second = await app.insert(w.new({"id": 1}))
    other = await app.insert(w.new({"id": 2}))
    assert first.conflict is False
    assert second.conflict is True
    assert second.id == first.id
    assert second.args == {"id": 1}
    assert second.state == "available"
    assert other.conflict is False and other.id != first.id
    assert _count_rows(db_url) == 2


async def test_unique_per_job_option_and_sync_insert(app, db_url):
    w = app.worker(name="ins.uniq_job")(_noop)
    first = await app.insert(w.new({"id": 1}, unique=True))
    second = await asyncio.to_thread(app.insert_sync, w.new({"id": 1}, unique=True))
    plain = await app.insert(w.new({"id": 1}))  # not unique: always a new row
    assert second.conflict and second.id == first.id
    assert not plain.conflict and plain.id != first.id
    assert _count_rows(db_url) == 2


async def test_unique_conflict_is_scoped_by_fields(app, db_url):
    w = app.worker(name="ins.uniq_fields", unique={"fields": ["worker", "args"]})(_noop)
    a = await app.insert(w.new({"id": 1}, queue="q1"))
    b = await app.insert(w.new({"id": 1}, queue="q2"))  # queue is not a unique field here
    assert b.conflict and b.id == a.id
    v = app.worker(name="ins.uniq_fields2", unique={"period": None})(_noop)
    c = await app.insert(v.new({"id": 1}, queue="q1"))
    d = await app.insert(v.new({"id": 1}, queue="q2"))  # default fields include the queue
    assert not c.conflict and not d.conflict
    m = app.worker(name="ins.uniq_meta", unique={"fields": ["worker", "meta"], "keys": ["tenant"]})(_noop)
    e = await app.insert(m.new({"x": 1}, meta={"tenant": "a", "other": 1}))
    f = await app.insert(m.new({"x": 2}, meta={"tenant": "a", "other": 2}))
    g = await app.insert(m.new({"x": 1}, meta={"tenant": "b"}))
    assert f.conflict and f.id == e.id
    assert not g.conflict
    assert _count_rows(db_url) == 5


async def test_unique_period_expires(app, db_url):
    w = app.worker(name="ins.uniq_period", unique={"period": 0.8})(_noop)
    first = await app.insert(w.new({"id": 1}))
    again = await app.insert(w.new({"id": 1}))
    assert again.conflict and again.id == first.id
    await asyncio.sleep(0.9)
    later = await app.insert(w.new({"id": 1}))
    assert not later.conflict and later.id != first.id
    assert _count_rows(db_url) == 2


async def test_unique_keys_compare_only_a_subset_of_args(app, db_url):
    w = app.worker(name="ins.uniq_keys", unique={"keys": ["account"]})(_noop)
    a = await app.insert(w.new({"account": 7, "amount": 1}))
    b = await app.insert(w.new({"account": 7, "amount": 2}))
    c = await app.insert(w.new({"account": 8, "amount": 1}))
    assert b.conflict and b.id == a.id and b.args == {"account": 7, "amount": 1}
    assert not c.conflict
    assert _count_rows(db_url) == 2


async def test_unique_states_filter_lets_a_finished_job_be_inserted_again(app, db_url):
    w = app.worker(name="ins.uniq_states", unique={"states": ["available", "scheduled", "executing", "retryable"]})(
        _noop
    )
    first = await app.insert(w.new({"id": 1}))
    assert (await app.insert(w.new({"id": 1}))).conflict
    assert await app.drain() == {"completed": 1}
    assert (await app.get_job(first.id)).state == "completed"
    again = await app.insert(w.new({"id": 1}))
    assert not again.conflict and again.id != first.id
    # With the default states a completed job still conflicts.
    d = app.worker(name="ins.uniq_default_states", unique=True)(_noop)
    one = await app.insert(d.new({"id": 1}))
    await app.drain()
    two = await app.insert(d.new({"id": 1}))
    assert two.conflict and two.id == one.id and two.state == "completed"


async def test_unique_does_not_conflict_with_cancelled_or_discarded_jobs_by_default(app):
    w = app.worker(name="ins.uniq_cancelled", unique=True)(_noop)
    first = await app.insert(w.new({"id": 1}))
    assert await app.cancel_all_jobs(ids=[first.id]) == 1
    again = await app.insert(w.new({"id": 1}))
    assert not again.conflict and again.id != first.id


async def test_duplicate_unique_specs_in_one_insert_all_make_one_row(app, db_url):
    w = app.worker(name="ins.uniq_bulk", unique=True)(_noop)
    jobs = await app.insert_all([w.new({"id": 1}), w.new({"id": 2}), w.new({"id": 1}), w.new({"id": 1})])
    assert len(jobs) == 4
    assert [j.conflict for j in jobs] == [False, False, True, True]
    assert jobs[2].id == jobs[0].id == jobs[3].id
    assert jobs[1].id != jobs[0].id
    assert [j.args for j in jobs] == [{"id": 1}, {"id": 2}, {"id": 1}, {"id": 1}]
    assert _count_rows(db_url) == 2
    # A later bulk insert sees the stored ones.
    again = await app.insert_all([w.new({"id": 2}), w.new({"id": 3})])
    assert [j.conflict for j in again] == [True, False]
    assert again[0].id == jobs[1].id
    assert _count_rows(db_url) == 3


async def test_concurrent_unique_inserts_in_one_process_make_one_row(app, db_url):
    w = app.worker(name="ins.uniq_concurrent", unique=True)(_noop)
    results = await asyncio.gather(*(app.insert(w.new({"id": 1})) for _ in range(20)))
    assert len({j.id for j in results}) == 1
    assert sum(not j.conflict for j in results) == 1
    assert _count_rows(db_url) == 1
