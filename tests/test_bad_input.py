"""Bad input and faults (SPEC section 7): every public call validates its input and fails with
a `BatonError` subclass that names the field; unreachable, unmigrated, missing, read-only and
corrupt databases give a clear `DatabaseUnavailable` / `MigrationError`; nothing is written."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import psycopg
import pytest

import baton
from baton.engines.base import migration_files
from baton.job import JobSpec
from pg import client_backends

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/x"


def _noop(job: baton.Job) -> None:
    return None


# Validation happens before any database access, so most of these tests need no database; the
# ones that show nothing was written run on both engines.
OFFLINE_URLS = ["postgresql://postgres@127.0.0.1:5432/never_connected", "sqlite:///never_created.db"]


@pytest.fixture
def offline() -> baton.Baton:
    """An app that never connects: only its validation runs."""
    return baton.Baton(OFFLINE_URLS[1], plugins=[], log_events=False)


@pytest.fixture
def w(offline: baton.Baton) -> Any:
    return offline.worker(name="bad.w")(_noop)


async def _assert_nothing_inserted(app: baton.Baton) -> None:
    assert await app.count_jobs() == {}


# --------------------------------------------------------------------------- errors are BatonErrors


def test_error_classes_form_one_hierarchy():
    for cls in (baton.ValidationError, baton.WorkflowError, baton.MigrationError, baton.DatabaseUnavailable):
        assert issubclass(cls, baton.BatonError)
    err = baton.ValidationError("priority", "bad")
    assert err.field == "priority"
    assert str(err).startswith("priority")


# --------------------------------------------------------------------------- workers


async def test_unknown_worker_by_name(app):  # on both engines: nothing may be written
    with pytest.raises(baton.ValidationError, match=r"^worker: unknown worker 'nope'") as info:
        app.new("nope")
    assert info.value.field == "worker"
    with pytest.raises(baton.ValidationError, match=r"worker"):
        app.new("no.such.module.fn", {})
    await _assert_nothing_inserted(app)


async def test_a_worker_whose_module_fails_at_import(app, tmp_path, monkeypatch):
    """A module that raises at import (not ImportError: a RuntimeError about a missing setting)
    is a BatonError naming the worker, the module and the cause, not the bare RuntimeError;
    a module missing one of its own imports is that, not an unknown worker."""
    tag = uuid.uuid4().hex[:8]
    (tmp_path / f"bad_setting_{tag}.py").write_text('raise RuntimeError("DATABASE_PASSWORD is not set")\n')
    (tmp_path / f"bad_dependency_{tag}.py").write_text("import bad_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    name = f"bad_setting_{tag}.task"
    with pytest.raises(baton.WorkerImportError) as info:
        app.new(name, {})
    err = info.value
    assert isinstance(err, baton.ValidationError) and err.field == "worker"
    assert (err.worker, err.module) == (name, f"bad_setting_{tag}")
    assert str(err) == (
        f"worker: {name!r} cannot be imported: its module 'bad_setting_{tag}' raised RuntimeError: "
        "DATABASE_PASSWORD is not set"
    )
    assert isinstance(err.__cause__, RuntimeError)
    missing = r"raised ModuleNotFoundError: No module named 'bad_no_such"
    with pytest.raises(baton.WorkerImportError, match=missing) as info:
        app.new(f"bad_dependency_{tag}.Outer.task", {})
    assert info.value.module == f"bad_dependency_{tag}", "the module that raised, not the path tried"
    with pytest.raises(baton.WorkerImportError, match=r"DATABASE_PASSWORD"):
        await app.insert(JobSpec(worker=name, args={}))
    # A missing module, or a missing nested name, is still an unknown worker.
    with pytest.raises(baton.ValidationError, match=r"^worker: unknown worker 'bad_never_there_"):
        app.new(f"bad_never_there_{tag}.Outer.task", {})
    with pytest.raises(baton.ValidationError, match=r"^worker: unknown worker 'os.path.no_such_task'"):
        app.new("os.path.no_such_task", {})
    await _assert_nothing_inserted(app)


async def test_insert_of_a_spec_for_an_unknown_worker(app):
    spec = JobSpec(worker="nowhere.to_be_found", args={})
    with pytest.raises(baton.ValidationError, match=r"unknown worker 'nowhere.to_be_found'") as info:
        await app.insert(spec)
    assert info.value.field == "worker"
    with pytest.raises(baton.ValidationError, match=r"unknown worker"):
        await asyncio.to_thread(app.insert_sync, spec)
    await _assert_nothing_inserted(app)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1}, "timeout"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"priority": 10}, "priority"),
        ({"queue": ""}, "queue"),
        ({"chain_by": ["account_id"]}, "chain_by"),
        ({"chain_by": "args.account_id"}, "chain_by"),
        ({"on_discarded": "explode"}, "on_discarded"),
        ({"backoff": 5}, "backoff"),
        ({"unique": {"period": 0}}, "unique.period"),
        ({"no_such_option": 1}, "worker"),
        ({"tags": [1]}, "tags"),
    ],
)
def test_bad_worker_options(offline, options, field):
    with pytest.raises(baton.ValidationError, match=f"^{field}") as info:
        offline.worker(name="bad.options", **options)(_noop)
    assert info.value.field == field


@pytest.mark.parametrize("tags", ["urgent", 5], ids=["str", "int"])
@pytest.mark.parametrize("where", ["worker", "job"])
def test_tags_that_are_not_a_list(offline, where, tags):
    with pytest.raises(baton.ValidationError, match=r"^tags"):
        if where == "worker":
            offline.worker(name="bad.string_tags", tags=tags)(_noop)
        else:
            offline.worker(name="bad.string_tags")(_noop).new({}, tags=tags)


def test_bad_class_worker_options():
    with pytest.raises(baton.ValidationError, match=r"^priority"):

        class Bad(baton.Worker):
            name = "bad.ClassWorker"
            priority = 12

            def perform(self, job: baton.Job) -> None:
                return None


# --------------------------------------------------------------------------- args and meta


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        ({"s": {1, 2}}, "args: must be JSON-serialisable"),
        ({"when": datetime.now(UTC)}, "args: must be JSON-serialisable"),
        ({"x": math.nan}, "args: must be JSON-serialisable"),
        ({"obj": object()}, "args: must be JSON-serialisable"),
        ([1, 2], "args: must be a dict"),
        ("text", "args: must be a dict"),
    ],
    ids=["set", "datetime", "nan", "object", "list", "str"],
)
def test_args_that_are_not_a_json_object(w, args, pattern):
    with pytest.raises(baton.ValidationError, match=pattern) as info:
        w.new(args)
    assert info.value.field == "args"


def test_meta_that_is_not_json(w):
    with pytest.raises(baton.ValidationError, match=r"^meta") as info:
        w.new({}, meta={"at": datetime.now(UTC)})
    assert info.value.field == "meta"
    with pytest.raises(baton.ValidationError, match=r"^meta"):
        JobSpec(worker="bad.w", meta=[1])  # type: ignore[arg-type]


RECORDS = [{"id": i, "name": f"r{i}"} for i in range(40)]  # a long list of records: checked as a whole


@pytest.mark.parametrize(
    ("args", "field", "stored_as"),
    [
        ({1: "one", "1": "uno"}, "args[1]", "'1'"),
        ({True: "yes", "true": "oui"}, "args[True]", "'true'"),
        ({None: 1}, "args[None]", "'null'"),
        ({1.5: "x"}, "args[1.5]", "'1.5'"),
        ({"a": [1, {"b": {2: "c"}}]}, "args['a'][1]['b'][2]", "'2'"),
        ({"rows": [*RECORDS, {"id": 40, 7: "seven"}]}, "args['rows'][40][7]", "'7'"),
        ({"rows": [*RECORDS, {"id": 40, "tags": {False: 1}}]}, "args['rows'][40]['tags'][False]", "'false'"),
        ({"ids": list(range(100)), "by": {0: "x"}}, "args['by'][0]", "'0'"),
        ({"frozen": MappingProxyType({"in": MappingProxyType({3: 4})})}, "args['frozen']['in'][3]", "'3'"),
    ],
    ids=["int", "bool", "none", "float", "nested", "long-list-of-records", "in-a-record", "after-a-long-list", "proxy"],
)
def test_keys_that_are_not_strings_are_refused_naming_where(w, args, field, stored_as):
    """json.dumps turns a key 1 into "1" without a word (and {1: .., "1": ..} into one key):
    SPEC 1's args are a JSON object, so keys must be strings, at any depth."""
    with pytest.raises(baton.ValidationError) as info:
        w.new(args)
    assert info.value.field == field
    assert f"stored as the key {stored_as}" in str(info.value)
    assert "use string keys" in str(info.value)
    with pytest.raises(baton.ValidationError) as info:
        w.new({}, meta=args)
    assert info.value.field == "meta" + field.removeprefix("args")
    with pytest.raises(baton.ValidationError) as info:
        JobSpec(worker="bad.w", args=args)
    assert info.value.field == field


@pytest.mark.parametrize(
    "args",
    [
        {"url": "https://example.com/{id}", "note": "a { and a : in text"},
        {"a": {"b": {"c": [1, 2, {"d": None}]}}, "e": "}{"},
        {"rows": RECORDS, "more": [RECORDS, (1, 2)]},
        {"ids": list(range(100)), "frozen": MappingProxyType({"x": (1, MappingProxyType({"y": 2}))})},
    ],
    ids=["braces-in-text", "nested", "records", "proxy"],
)
def test_string_keys_at_any_depth_are_accepted(w, args):
    spec = w.new(args)
    assert json.loads(spec.args_json) == json.loads(json.dumps(args, default=dict))


async def test_a_recorded_result_with_a_key_that_is_not_a_string_fails_the_attempt(app):
    @app.worker(name="bad.int_key_result", record=True, max_attempts=1)
    def counts(job: baton.Job) -> dict[int, int]:
        return {1: 10, 2: 20}

    job = await app.insert(counts.new({}))
    assert await app.drain() == {"discarded": 1}
    error = (await app.get_job(job.id)).errors[-1]["error"]
    assert "result[1]" in error and "use string keys" in error


@pytest.mark.parametrize(
    ("options", "field", "hint"),
    [
        ({"priorty": 1}, "priorty", "did you mean 'priority'?"),
        ({"metadata": {}}, "metadata", "did you mean 'meta'?"),
        ({"zzz": 1}, "zzz", "the options are"),
    ],
)
def test_an_unknown_option_of_new_names_it_and_the_valid_ones(offline, w, options, field, hint):
    for build in (
        lambda: w.new({}, **options),
        lambda: offline.new("bad.w", {}, **options),
        lambda: baton.Graft.map(w, [{}], **options),
        lambda: baton.Graft.map("bad.w", [{}], **options),
    ):
        with pytest.raises(baton.ValidationError) as info:
            build()
        assert info.value.field == field
        assert hint in str(info.value)
        assert "queue, priority, max_attempts, tags, meta, schedule_in, scheduled_at, unique" in str(info.value)


# --------------------------------------------------------------------------- options of a job


@pytest.mark.parametrize("priority", [10, -1, "1", 1.5, True])
def test_bad_priority(w, priority):
    with pytest.raises(baton.ValidationError, match=r"^priority: must be an integer from 0 \(highest\) to 9") as info:
        w.new({}, priority=priority)
    assert info.value.field == "priority"


@pytest.mark.parametrize("max_attempts", [0, -1, "3", 2.0, False])
def test_bad_max_attempts(w, max_attempts):
    with pytest.raises(baton.ValidationError, match=r"^max_attempts: must be an integer >= 1") as info:
        w.new({}, max_attempts=max_attempts)
    assert info.value.field == "max_attempts"


@pytest.mark.parametrize("schedule_in", [-1, -0.001, math.nan, math.inf, "5", True])
def test_bad_schedule_in(w, schedule_in):
    with pytest.raises(baton.ValidationError, match=r"^schedule_in") as info:
        w.new({}, schedule_in=schedule_in)
    assert info.value.field == "schedule_in"


def test_schedule_in_and_scheduled_at_together(w):
    with pytest.raises(baton.ValidationError, match=r"^schedule_in: give either"):
        w.new({}, schedule_in=5, scheduled_at=datetime.now(UTC))


def test_naive_scheduled_at(w):
    with pytest.raises(baton.ValidationError, match=r"^scheduled_at: must be timezone-aware") as info:
        w.new({}, scheduled_at=datetime.now() + timedelta(minutes=5))
    assert info.value.field == "scheduled_at"
    with pytest.raises(baton.ValidationError, match=r"^scheduled_at: must be a datetime"):
        w.new({}, scheduled_at="2030-01-01T00:00:00Z")


@pytest.mark.parametrize("tags", [[1, 2], [None]])
def test_bad_tags(w, tags):
    with pytest.raises(baton.ValidationError, match=r"^tags"):
        w.new({}, tags=tags)


@pytest.mark.parametrize("queue", ["", "   ", "q" * 129, 5])
def test_bad_queue_name_of_a_job(w, queue):
    with pytest.raises(baton.ValidationError, match=r"^queue: must be a non-empty name") as info:
        w.new({}, queue=queue)
    assert info.value.field == "queue"


@pytest.mark.parametrize(
    ("unique", "field"),
    [
        ({"period": 0}, "unique.period"),
        ({"period": -5}, "unique.period"),
        ({"period": "60"}, "unique.period"),
        ({"fields": ["nope"]}, "unique.fields"),
        ({"fields": []}, "unique.fields"),
        ({"keys": "id"}, "unique.keys"),
        ({"keys": [1]}, "unique.keys"),
        ({"states": ["bogus"]}, "unique.states"),
        ({"states": []}, "unique.states"),
        ({"bogus": 1}, "unique"),
        ("yes", "unique"),
        (60, "unique"),
    ],
)
def test_bad_unique_options(w, unique, field):
    with pytest.raises(baton.ValidationError, match=f"^{field}: ") as info:
        w.new({}, unique=unique)
    assert info.value.field == field


def test_bad_snooze():
    for seconds in (-1, math.nan, "5", None):
        with pytest.raises(baton.ValidationError, match=r"^seconds"):
            baton.Snooze(seconds)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- other public calls


async def test_insert_all_needs_a_list_of_job_specs(app):
    w = app.worker(name="bad.w")(_noop)
    with pytest.raises(baton.ValidationError, match=r"^jobs: insert_all takes a list"):
        await app.insert_all(w.new({}))  # type: ignore[arg-type]
    with pytest.raises(baton.ValidationError, match=r"^jobs\[1\]: expected a job built with worker.new"):
        await app.insert_all([w.new({}), {"worker": "bad.w"}])  # type: ignore[list-item]
    await _assert_nothing_inserted(app)


async def test_bad_filters_of_cancel_list_and_retry(offline):
    app = offline
    with pytest.raises(baton.ValidationError, match=r"^ids: give at least one filter"):
        await app.cancel_all_jobs()
    with pytest.raises(baton.ValidationError, match=r"^states: must be a list"):
        await app.cancel_all_jobs(states="available")  # type: ignore[arg-type]
    with pytest.raises(baton.ValidationError, match=r"^states: unknown state\(s\) \['bogus'\]"):
        await app.cancel_all_jobs(states=["bogus"])
    with pytest.raises(baton.ValidationError, match=r"^states"):
        await app.list_jobs(states=["running"])
    with pytest.raises(baton.ValidationError, match=r"^limit"):
        await app.scale_queue("default", 0)
    with pytest.raises(baton.ValidationError, match=r"^queue"):
        await app.pause_queue("")


# --------------------------------------------------------------------------- Baton options


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"stale_after": 15, "refresh_interval": 15}, "stale_after"),
        ({"stale_after": 10, "refresh_interval": 15}, "stale_after"),
        ({"queues": {"x": 0}}, "queues.x"),
        ({"queues": {"x": -3}}, "queues.x"),
        ({"queues": {"x": "10"}}, "queues.x"),
        ({"queues": {"x": {"limit": 2, "speed": 1}}}, "queues.x"),
        ({"queues": {"": 1}}, "queues"),
        ({"queues": {"   ": 1}}, "queues"),
        ({"queues": {"q" * 129: 1}}, "queues"),
        ({"refresh_interval": 0}, "refresh_interval"),
        ({"refresh_interval": "15"}, "refresh_interval"),
        ({"shutdown_grace": -1}, "shutdown_grace"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"node": ""}, "node"),
        ({"plugins": [object()]}, "plugins"),
        ({"plugins": [baton.plugins.Stager(), baton.plugins.Stager()]}, "plugins"),
    ],
)
@pytest.mark.parametrize("url", OFFLINE_URLS, ids=["postgres", "sqlite"])
def test_bad_baton_options(url, options, field):
    with pytest.raises(baton.ValidationError, match=f"^{field}: ") as info:
        baton.Baton(url, log_events=False, **options)
    assert info.value.field == field


@pytest.mark.parametrize("url", ["mysql://root@localhost/db", "", "sqlite:"])
def test_bad_urls(url):
    with pytest.raises(baton.ValidationError, match=r"^url: "):
        baton.Baton(url, log_events=False)


def test_bad_plugin_options():
    with pytest.raises(baton.ValidationError, match=r"^interval"):
        baton.plugins.Stager(interval=0)
    with pytest.raises(baton.ValidationError, match=r"^limit"):
        baton.plugins.Stager(limit=0)


# --------------------------------------------------------------------------- unreachable PostgreSQL


async def test_unreachable_database_on_insert_and_start():
    app = baton.Baton(UNREACHABLE, plugins=[], log_events=False, queues={"default": 1})
    w = app.worker(name="bad.unreachable")(_noop)
    try:
        with pytest.raises(baton.DatabaseUnavailable, match=r"postgresql://postgres@127\.0\.0\.1:1/x") as info:
            await app.insert(w.new({}))
        assert "refused" in str(info.value).lower() or "connect" in str(info.value).lower()
        with pytest.raises(baton.DatabaseUnavailable, match=r"127\.0\.0\.1:1/x"):
            await app.start()
        assert not app.running
        with pytest.raises(baton.DatabaseUnavailable, match=r"127\.0\.0\.1:1/x"):
            await app.migrate()
    finally:
        await app.close()


async def test_unreachable_database_hides_the_password():
    app = baton.Baton("postgresql://postgres:s3cret@127.0.0.1:1/x", plugins=[], log_events=False)
    w = app.worker(name="bad.password")(_noop)
    try:
        with pytest.raises(baton.DatabaseUnavailable) as info:
            await app.insert(w.new({}))
        assert "s3cret" not in str(info.value)
        assert "127.0.0.1:1/x" in str(info.value)
    finally:
        await app.close()


def test_unreachable_database_on_insert_sync_fails_fast_and_names_the_cause():
    app = baton.Baton(UNREACHABLE, plugins=[], log_events=False)
    w = app.worker(name="bad.unreachable_sync")(_noop)
    outcome: list[BaseException | None] = []

    def insert() -> None:
        try:
            app.insert_sync(w.new({}))
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    # A daemon thread, so a hanging insert cannot hold the test run.
    thread = threading.Thread(target=insert, daemon=True)
    thread.start()
    thread.join(2)
    assert outcome, "insert_sync against a refused port must fail within seconds"
    error = outcome[0]
    assert isinstance(error, baton.DatabaseUnavailable)
    assert "127.0.0.1:1/x" in str(error)
    assert "refused" in str(error).lower()


# --------------------------------------------------------------------------- unmigrated databases


@contextlib.contextmanager
def _unmigrated(db_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Baton options for a database Baton has never migrated: a fresh schema of the test
    PostgreSQL database (creating a whole database costs a second), or a new SQLite file."""
    if db_url.startswith("postgres"):
        schema = f"unmigrated_{uuid.uuid4().hex[:8]}"
        try:
            yield {"url": db_url, "schema": schema}
        finally:
            with psycopg.connect(db_url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    else:
        yield {"url": f"sqlite:///{tmp_path}/empty.db"}


async def test_unmigrated_database_on_start_names_baton_migrate(db_url, tmp_path):
    with _unmigrated(db_url, tmp_path) as options:
        app = baton.Baton(**options, plugins=[], log_events=False, queues={"default": 1})
        try:
            with pytest.raises(baton.MigrationError, match=r"`baton migrate") as info:
                await app.start()
            assert "app.migrate()" in str(info.value)
            assert not app.running
            # The fix the message names works.
            shipped = [version for version, _, _ in migration_files(f"baton.engines.{app.engine.dialect}")]
            assert await app.migrate() == shipped
            await app.start()
            assert app.running
            await app.stop()
        finally:
            await app.close()


async def test_a_start_refused_for_the_schema_leaves_no_connection_open(pg_url):
    """The probe checks the schema while the pools connect (Engine.open_checked): when the
    check fails, the pools that were connecting are closed, and a later start opens afresh."""
    schema = f"unmigrated_{uuid.uuid4().hex[:8]}"
    app = baton.Baton(pg_url, schema=schema, plugins=[], log_events=False, queues={"default": 1})
    try:
        before = client_backends(pg_url)
        for _ in range(3):
            with pytest.raises(baton.MigrationError, match=r"`baton migrate"):
                await app.start()
            assert not app.running
        assert client_backends(pg_url) == before
        await app.migrate()
        await app.start()
        assert app.running
        assert client_backends(pg_url) > before
        await app.stop()
    finally:
        await app.close()
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    assert client_backends(pg_url) == before


async def test_a_node_that_cannot_register_leaves_no_listener_behind(pg_url):
    """LISTEN connects while the producers register (Node.start); when the registration fails,
    the listener is closed again before the error reaches the caller."""
    schema = f"noproducers_{uuid.uuid4().hex[:8]}"
    app = baton.Baton(pg_url, schema=schema, plugins=[], log_events=False, queues={"default": 1})
    try:
        await app.migrate()
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP TABLE "{schema}".baton_producers')
        before = client_backends(pg_url, "LISTEN%")
        with pytest.raises(baton.MigrationError, match="baton migrate"):
            await app.start()
        assert not app.running
        assert client_backends(pg_url, "LISTEN%") == before
    finally:
        await app.close()
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def test_unmigrated_database_on_insert_names_baton_migrate(db_url, engine_name, tmp_path, request):
    with _unmigrated(db_url, tmp_path) as options:
        app = baton.Baton(**options, plugins=[], log_events=False)
        w = app.worker(name="bad.unmigrated")(_noop)
        try:
            with pytest.raises(baton.MigrationError, match=r"baton migrate"):
                await app.insert(w.new({}))
        finally:
            await app.close()


async def test_unmigrated_database_on_insert_on_a_callers_connection_names_baton_migrate(db_url, tmp_path):
    """insert(conn=...) and insert_sync(conn=...) say what every other call says, not the
    driver's "no such table" / UndefinedTable."""
    with _unmigrated(db_url, tmp_path) as options:
        app = baton.Baton(**options, plugins=[], log_events=False)
        w = app.worker(name="bad.unmigrated_conn")(_noop)
        fix = "--schema " + options["schema"] if "schema" in options else "baton migrate --url"
        try:
            if db_url.startswith("postgres"):
                async with await psycopg.AsyncConnection.connect(db_url) as aconn:
                    with pytest.raises(baton.MigrationError, match=r"`baton migrate") as info:
                        await app.insert(w.new({}), conn=aconn)
                    assert fix in str(info.value)
                    await aconn.rollback()
                with psycopg.connect(db_url) as conn:
                    with pytest.raises(baton.MigrationError, match=r"`baton migrate") as info:
                        app.insert_all_sync([w.new({})], conn=conn)
                    assert fix in str(info.value)
                    conn.rollback()
            else:
                conn = sqlite3.connect(options["url"].removeprefix("sqlite:///"))
                try:
                    with pytest.raises(baton.MigrationError, match=r"`baton migrate --url sqlite"):
                        await app.insert(w.new({}), conn=conn)
                    with pytest.raises(baton.MigrationError, match=r"`baton migrate --url sqlite"):
                        app.insert_sync(w.new({}), conn=conn)
                    conn.rollback()
                finally:
                    conn.close()
        finally:
            await app.close()


async def test_migrate_is_idempotent(db_url):
    app = baton.Baton(db_url, plugins=[], log_events=False)
    try:
        assert await app.migrate() == []
        assert await app.migrate() == []
    finally:
        await app.close()


# --------------------------------------------------------------------------- broken SQLite files


async def test_sqlite_path_in_a_missing_directory(tmp_path):
    missing = tmp_path / "no" / "such" / "dir"
    app = baton.Baton(f"sqlite:///{missing}/baton.db", plugins=[], log_events=False, queues={"default": 1})
    w = app.worker(name="bad.missing_dir")(_noop)
    try:
        with pytest.raises(baton.DatabaseUnavailable, match=r"does not exist") as info:
            await app.insert(w.new({}))
        assert str(missing) in str(info.value)
        with pytest.raises(baton.DatabaseUnavailable, match=r"does not exist"):
            await app.start()
        with pytest.raises(baton.DatabaseUnavailable, match=r"does not exist"):
            await app.migrate()
    finally:
        await app.close()
    assert not missing.exists(), "Baton must not create directories it was not asked for"


def _make_read_only(path: Path) -> Any:
    """Make `path` read-only even for root (who ignores file modes). Returns an undo callable,
    or None when that is impossible here (then the caller checks as an unprivileged user)."""
    os.chmod(path, 0o444)
    if os.geteuid() != 0:
        return lambda: os.chmod(path, 0o644)
    chattr = shutil.which("chattr")
    if chattr and subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode == 0:
        return lambda: (subprocess.run([chattr, "-i", str(path)], check=False), os.chmod(path, 0o644))
    return None


async def test_read_only_sqlite_file(tmp_path):
    directory = Path(tempfile.mkdtemp(prefix="baton-ro-"))
    try:
        os.chmod(directory, 0o777)
        path = directory / "baton.db"
        url = f"sqlite:///{path}"
        setup = baton.Baton(url, plugins=[], log_events=False)
        await setup.migrate()
        await setup.close()
        undo = _make_read_only(path)
        if undo is None:
            _read_only_check_as_nobody(url)
            return
        try:
            app = baton.Baton(url, plugins=[], log_events=False, queues={"default": 1})
            w = app.worker(name="bad.read_only")(_noop)
            try:
                with pytest.raises(baton.DatabaseUnavailable, match=r"read-only") as info:
                    await app.insert(w.new({}))
                assert str(path) in str(info.value)
                with pytest.raises(baton.DatabaseUnavailable, match=r"read-only"):
                    await app.start()
            finally:
                await app.close()
        finally:
            undo()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _read_only_check_as_nobody(url: str) -> None:
    code = textwrap.dedent(
        f"""
        import asyncio, baton
        app = baton.Baton({url!r}, plugins=[], log_events=False)
        w = app.worker(name="bad.read_only")(lambda job: None)
        async def main():
            try:
                await app.insert(w.new({{}}))
            except baton.DatabaseUnavailable as exc:
                print("UNAVAILABLE", exc)
            finally:
                await app.close()
        asyncio.run(main())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, user=65534, timeout=60)
    assert "UNAVAILABLE" in out.stdout and "read-only" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("content", [b"this is not a database at all" * 200, os.urandom(8192)], ids=["text", "random"])
async def test_corrupt_sqlite_file(tmp_path, content):
    path = tmp_path / "corrupt.db"
    path.write_bytes(content)
    app = baton.Baton(f"sqlite:///{path}", plugins=[], log_events=False, queues={"default": 1})
    w = app.worker(name="bad.corrupt")(_noop)
    try:
        with pytest.raises(baton.DatabaseUnavailable, match=r"not a usable SQLite database") as info:
            await app.insert(w.new({}))
        assert str(path) in str(info.value) and "corrupt" in str(info.value)
        with pytest.raises(baton.DatabaseUnavailable, match=r"not a usable SQLite database"):
            await app.start()
        with pytest.raises(baton.DatabaseUnavailable, match=r"not a usable SQLite database"):
            await app.migrate()
    finally:
        await app.close()
    assert path.read_bytes() == content, "Baton must not write into a file that is not its database"


async def test_sqlite_path_that_is_a_directory(tmp_path):
    app = baton.Baton(f"sqlite:///{tmp_path}", plugins=[], log_events=False)
    w = app.worker(name="bad.dir")(_noop)
    try:
        with pytest.raises(baton.DatabaseUnavailable, match=r"is a directory"):
            await app.insert(w.new({}))
    finally:
        await app.close()


async def test_a_database_locked_by_another_writer_is_unavailable_not_a_hang(tmp_path):
    url = f"sqlite:///{tmp_path}/locked.db"
    setup = baton.Baton(url, plugins=[], log_events=False)
    await setup.migrate()
    await setup.close()
    holder = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        from baton.engines.sqlite.engine import SqliteEngine

        app = baton.Baton(url, plugins=[], log_events=False)
        app.engine = SqliteEngine(url, busy_timeout=0.05)
        w = app.worker(name="bad.locked")(_noop)
        started = time.monotonic()
        try:
            with pytest.raises(baton.DatabaseUnavailable, match=r"locked"):
                await app.insert(w.new({}))
        finally:
            await app.close()
        assert time.monotonic() - started < 5
    finally:
        holder.execute("ROLLBACK")
        holder.close()
