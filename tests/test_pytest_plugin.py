"""The pytest plugin (`baton_app` fixture, `@pytest.mark.baton`), run in a separate pytest
process per scenario through `pytester`, on an SQLite file and on PostgreSQL schemas."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

pytest_plugins = ["pytester"]

TESTS = """
import asyncio
import threading

import pytest

import baton
from baton import testing

SEEN = []


def make_workers(app):
    @app.worker
    def add(job):
        SEEN.append(job.args["a"] + job.args["b"])
        return job.args["a"] + job.args["b"]

    @app.worker(max_attempts=2)
    def boom(job):
        raise RuntimeError("boom")

    return add, boom


def test_fresh_database_each_time_first(baton_app):
    add, _ = make_workers(baton_app)
    baton_app.insert_sync(add.new({"a": 1, "b": 2}))
    testing.assert_enqueued(baton_app, worker=add, args={"a": 1})
    assert len(testing.all_enqueued(baton_app)) == 1


def test_fresh_database_each_time_second(baton_app):
    # Nothing leaks from the test before: a new file or schema.
    testing.refute_enqueued(baton_app)


@pytest.mark.baton(mode="inline")
def test_inline_marker_sync(baton_app):
    add, _ = make_workers(baton_app)
    job = baton_app.insert_sync(add.new({"a": 2, "b": 3}))
    assert job.state == "completed"
    assert testing.current_mode(baton_app) == "inline"


@pytest.mark.baton(mode="inline")
async def test_inline_marker_async_and_threads(baton_app):
    add, _ = make_workers(baton_app)
    job = await baton_app.insert(add.new({"a": 1, "b": 1}))
    other = await asyncio.to_thread(baton_app.insert_sync, add.new({"a": 2, "b": 2}))
    assert job.state == other.state == "completed"


@pytest.mark.baton(mode="inline")
async def test_inline_failure_is_raised_not_hung(baton_app):
    _, boom = make_workers(baton_app)
    with pytest.raises(testing.JobFailed, match="RuntimeError: boom"):
        await baton_app.insert(boom.new({}))


def test_mode_does_not_leak_into_the_next_test(baton_app):
    assert testing.current_mode(baton_app) is None
    assert "insert" not in vars(baton_app)


@pytest.mark.baton(mode="manual", queues={"mail": 3})
async def test_manual_marker_and_options(baton_app):
    add, _ = make_workers(baton_app)
    await baton_app.insert(add.new({"a": 5, "b": 5}, queue="mail"))
    assert baton_app.queues == {"mail": {"limit": 3, "paused": False}}
    testing.assert_enqueued(baton_app, queue="mail")
    assert await testing.drain(baton_app, "mail") == {"completed": 1}


async def test_a_started_node_is_stopped_after_the_test(baton_app):
    add, _ = make_workers(baton_app)
    await baton_app.start()
    await baton_app.insert(add.new({"a": 0, "b": 0}))
"""


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_app=TESTS)
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    return pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider", *args)


def test_baton_app_on_sqlite_files(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BATON_TEST_DATABASE_URL", raising=False)
    result = _run(pytester)
    result.assert_outcomes(passed=8)


def test_baton_app_on_postgresql_schemas(pytester: pytest.Pytester, pg_url: str) -> None:
    result = _run(pytester, f"--baton-url={pg_url}")
    result.assert_outcomes(passed=8)
    with psycopg.connect(pg_url) as conn:
        left: list[Any] = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'baton_test_%'").fetchall()
    assert left == []  # every test's schema was dropped


def test_baton_app_from_the_environment(
    pytester: pytest.Pytester, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATON_TEST_DATABASE_URL", pg_url)
    pytester.makepyfile(test_env="def test_engine(baton_app):\n    assert baton_app.engine.dialect == 'postgres'\n")
    pytester.runpytest_subprocess("-p", "no:randomly").assert_outcomes(passed=1)


def test_bad_marker_mode_is_reported(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_bad="import pytest\n\n@pytest.mark.baton(mode='eager')\ndef test_x(baton_app):\n    pass\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*mode: must be 'inline' or 'manual', got 'eager'*"])
