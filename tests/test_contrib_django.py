"""Django integration: the Django Tasks backend on a real SQLite file ("default") and a real
PostgreSQL database ("pg"): transactional enqueue, results, worker-thread connections, and
`manage.py baton migrate|worker` in a subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import baton
from baton import testing

PROJECT = Path(__file__).parent / "django_project"
ALIASES = ["default", "pg"]


@pytest.fixture(scope="module")
def django_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Django configured once for this module on a fresh SQLite file and PostgreSQL database,
    Baton's tables migrated in both (the same databases Django's data lives in)."""
    import pg

    pg_url, pg_name = pg.create_database("baton_django")
    env = {
        "BATON_DJANGO_PG_URL": pg_url,
        "BATON_DJANGO_SQLITE": str(tmp_path_factory.mktemp("django") / "django.db"),
        "DJANGO_SETTINGS_MODULE": "settings",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    sys.path.insert(0, str(PROJECT))
    import django

    django.setup()
    from django.db import connections

    from baton.contrib.django import get_app

    for alias in ALIASES:
        asyncio.run(get_app(alias).migrate())
        with connections[alias].cursor() as cur:
            cur.execute("CREATE TABLE shop_order (n INTEGER NOT NULL)")
    asyncio.run(get_app("pg_schema").migrate())
    yield env
    for alias in [*ALIASES, "pg_schema"]:
        asyncio.run(get_app(alias).close())
    connections.close_all()
    pg.drop_database(pg_name)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(params=ALIASES)
def alias(request: pytest.FixtureRequest, django_env: dict[str, str]) -> Iterator[str]:
    """One Django database / tasks backend, emptied before the test."""
    from django.db import connections

    from baton.contrib.django import get_app

    app = get_app(request.param)
    with connections[request.param].cursor() as cur:  # Baton's tables live in Django's database
        cur.execute("DELETE FROM baton_jobs")
        cur.execute("DELETE FROM shop_order")
    yield request.param
    asyncio.run(app.close())  # its async pool belongs to this test's drains


def _orders(alias: str) -> list[int]:
    from django.db import connections

    with connections[alias].cursor() as cur:
        cur.execute("SELECT n FROM shop_order ORDER BY n")
        return [r[0] for r in cur.fetchall()]


def _add_order(alias: str, n: int) -> None:
    from django.db import connections

    with connections[alias].cursor() as cur:
        cur.execute("INSERT INTO shop_order (n) VALUES (%s)", [n])


def test_enqueue_in_atomic_commits_with_the_data(alias: str) -> None:
    from django.db import transaction
    from shop.tasks import add

    from baton.contrib.django import get_app

    with transaction.atomic(using=alias):
        _add_order(alias, 1)
        result = add.using(backend=alias).enqueue(1, 2)
        assert result.status == "READY"
    assert _orders(alias) == [1]
    testing.assert_enqueued(get_app(alias), args={"task": "shop.tasks.add", "args": [1, 2]})
    assert add.using(backend=alias).get_result(result.id).status == "READY"


def test_enqueue_in_atomic_rolls_back_with_the_data(alias: str) -> None:
    from django.db import transaction
    from shop.tasks import add

    from baton.contrib.django import get_app

    with pytest.raises(RuntimeError, match="payment declined"), transaction.atomic(using=alias):
        _add_order(alias, 2)
        result = add.using(backend=alias).enqueue(3, 4)
        raise RuntimeError("payment declined")
    assert _orders(alias) == []
    testing.refute_enqueued(get_app(alias))
    from baton.contrib.django._compat import TaskResultDoesNotExist

    with pytest.raises(TaskResultDoesNotExist):
        add.using(backend=alias).get_result(result.id)


def test_enqueue_in_a_savepoint_that_rolls_back(alias: str) -> None:
    from django.db import transaction
    from shop.tasks import add

    from baton.contrib.django import get_app

    with transaction.atomic(using=alias):
        kept = add.using(backend=alias).enqueue(1, 1)
        with pytest.raises(RuntimeError), transaction.atomic(using=alias):
            add.using(backend=alias).enqueue(2, 2)
            raise RuntimeError("inner")
    assert [j.id for j in testing.all_enqueued(get_app(alias))] == [int(kept.id)]


def test_enqueue_outside_a_transaction_commits_at_once(alias: str) -> None:
    from shop.tasks import add

    from baton.contrib.django import get_app

    result = add.using(backend=alias).enqueue(5, 6)
    (job,) = testing.assert_enqueued(get_app(alias), args={"args": [5, 6]})
    assert str(job.id) == result.id


def test_tasks_run_by_baton_report_results_and_failures(alias: str) -> None:
    from shop.tasks import add, add_async, fail, with_context

    from baton.contrib.django import get_app

    ok = add.using(backend=alias).enqueue(2, 3)
    aok = add_async.using(backend=alias).enqueue(4, 5)
    bad = fail.using(backend=alias).enqueue("card expired")
    ctx = with_context.using(backend=alias).enqueue("x")
    counts = testing.drain(get_app(alias), with_scheduled=True)
    # "pg" allows two attempts: its failing task is retried once, then discarded.
    assert counts["completed"] == 3 and counts["discarded"] == 1
    done = add.using(backend=alias).get_result(ok.id)
    assert done.status == "SUCCESSFUL" and done.return_value == 5 and done.finished_at is not None
    assert add_async.using(backend=alias).get_result(aok.id).return_value == 9
    failed = fail.using(backend=alias).get_result(bad.id)
    assert failed.status == "FAILED"
    assert failed.errors[-1].exception_class is ValueError
    assert "card expired" in failed.errors[-1].traceback
    assert len(failed.errors) == (2 if alias == "pg" else 1)
    context = with_context.using(backend=alias).get_result(ctx.id).return_value
    assert context == {"id": ctx.id, "attempt": 1, "tag": "x"}


def test_priority_queue_and_run_after_map_onto_the_job(alias: str) -> None:
    from datetime import UTC, datetime, timedelta

    from shop.tasks import add

    from baton.contrib.django import get_app

    later = datetime.now(UTC) + timedelta(hours=1)
    result = add.using(backend=alias, priority=100, run_after=later).enqueue(1, 1)
    low = add.using(backend=alias, priority=-100).enqueue(1, 1)
    (job,) = testing.all_enqueued(get_app(alias), states=["scheduled"])
    assert str(job.id) == result.id and job.priority == 0
    assert testing.all_enqueued(get_app(alias), states=["available"])[0].priority == 9
    assert add.using(backend=alias).get_result(low.id).status == "READY"


def test_worker_threads_close_their_django_connections(alias: str) -> None:
    from shop import tasks

    from baton.contrib.django import get_app

    _add_order(alias, 7)
    tasks.USED_CONNECTIONS.clear()
    results = [tasks.count_orders.using(backend=alias).enqueue(alias) for _ in range(12)]
    assert testing.drain(get_app(alias)) == {"completed": 12}
    assert {tasks.count_orders.using(backend=alias).get_result(r.id).return_value for r in results} == {1}
    assert tasks.USED_CONNECTIONS, "the tasks ran"
    # Every worker thread's connection was closed after its task (CONN_MAX_AGE = 0).
    assert all(wrapper.connection is None for wrapper in tasks.USED_CONNECTIONS)
    if alias == "pg":
        with psycopg.connect(os.environ["BATON_DJANGO_PG_URL"], autocommit=True) as conn:
            (open_,) = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = 'django-test' AND pid <> pg_backend_pid()"
            ).fetchone()  # type: ignore[misc]
        assert open_ <= 1  # at most this test thread's own Django connection


def test_inline_mode_runs_django_tasks_at_enqueue(alias: str) -> None:
    from django.db import transaction
    from shop.tasks import add

    from baton.contrib.django import get_app

    with testing.inline(get_app(alias)):
        result = add.using(backend=alias).enqueue(20, 22)
        assert add.using(backend=alias).get_result(result.id).return_value == 42
        with transaction.atomic(using=alias):
            pending = add.using(backend=alias).enqueue(1, 2)
        # Enqueued in the caller's transaction: it runs when the block ends (or at the next insert).
        assert add.using(backend=alias).get_result(pending.id).status == "READY"
    assert add.using(backend=alias).get_result(pending.id).return_value == 3


def test_get_result_in_atomic_sees_the_task_enqueued_in_it(alias: str) -> None:
    from django.db import transaction
    from shop.tasks import add

    with transaction.atomic(using=alias):
        result = add.using(backend=alias).enqueue(1, 2)
        # Read in the caller's transaction, as a Django TestCase's test would.
        assert add.using(backend=alias).get_result(result.id).status == "READY"
        transaction.set_rollback(True, using=alias)
    from baton.contrib.django._compat import TaskResultDoesNotExist

    with pytest.raises(TaskResultDoesNotExist):
        add.using(backend=alias).get_result(result.id)


def test_inline_block_ending_inside_the_callers_transaction_fails_at_once(alias: str) -> None:
    # As in a Django TestCase (each test inside an atomic block): the task cannot run when the
    # inline block ends, since its job is not committed. A clear error at once, never a wait
    # for the SQLite write lock (25 s) nor a task silently left unrun (PostgreSQL).
    from django.db import transaction
    from shop.tasks import add

    from baton.contrib.django import get_app
    from baton.errors import BatonError

    with transaction.atomic(using=alias):
        with pytest.raises(BatonError, match="TransactionTestCase"), testing.inline(get_app(alias)):
            result = add.using(backend=alias).enqueue(1, 2)
        assert add.using(backend=alias).get_result(result.id).status == "READY"
    # The error ended the mode: the job is committed with the transaction and left enqueued.
    assert testing.current_mode(get_app(alias)) is None
    testing.assert_enqueued(get_app(alias), args={"args": [1, 2]})


def test_django_test_runner_destroys_its_test_databases(django_env: dict[str, str], tmp_path: Path) -> None:
    # `manage.py test` (shop/runner_tests.py): tasks enqueued and run inline in TransactionTestCase
    # tests (Baton's own connections to the test databases), results read and inline refused
    # in TestCase tests; the runner then drops the PostgreSQL test database, which fails while
    # Baton still holds a connection to it ("being accessed by other users").
    env = {**os.environ, **django_env, "BATON_DJANGO_SQLITE_TEST": str(tmp_path / "test.db")}
    name = "test_" + django_env["BATON_DJANGO_PG_URL"].rsplit("/", 1)[1]
    run = subprocess.run(
        [sys.executable, str(PROJECT / "manage.py"), "test", "shop.runner_tests", "--noinput", "-v", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    with psycopg.connect(django_env["BATON_DJANGO_PG_URL"], autocommit=True) as conn:
        (left,) = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [name]).fetchone()  # type: ignore[misc]
        if left:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Ran 10 tests" in run.stderr and "being accessed by other users" not in run.stderr
    assert left == 0, "the test database was left behind"


def test_enqueue_in_atomic_with_baton_in_its_own_schema(django_env: dict[str, str]) -> None:
    from django.db import connections, transaction
    from shop.tasks import add

    from baton.contrib.django import get_app

    app = get_app("pg_schema")
    with connections["pg"].cursor() as cur:
        cur.execute("DELETE FROM baton_dj.baton_jobs")
        cur.execute("DELETE FROM public.baton_jobs")
        cur.execute("DELETE FROM shop_order")
        cur.execute("SHOW search_path")
        before = cur.fetchone()[0]
    with transaction.atomic(using="pg"):
        kept = add.using(backend="pg_schema").enqueue(1, 2)
        _add_order("pg", 3)  # Django's next query runs on its own search path again
        with connections["pg"].cursor() as cur:
            cur.execute("SHOW search_path")
            assert cur.fetchone()[0] == before
    with pytest.raises(RuntimeError), transaction.atomic(using="pg"):
        add.using(backend="pg_schema").enqueue(5, 5)
        raise RuntimeError("rolled back")
    assert _orders("pg") == [3]
    assert [str(j.id) for j in testing.all_enqueued(app)] == [kept.id]
    with connections["pg"].cursor() as cur:
        cur.execute("SELECT count(*) FROM public.baton_jobs WHERE args->>'task' = 'shop.tasks.add'")
        assert cur.fetchone()[0] == 0  # nothing went to the public schema's tables
    asyncio.run(app.close())


def test_get_result_of_an_unknown_id(alias: str) -> None:
    from shop.tasks import add

    from baton.contrib.django._compat import TaskResultDoesNotExist

    for bad in ("999999", "nope", "-1"):
        with pytest.raises(TaskResultDoesNotExist):
            add.using(backend=alias).get_result(bad)


def test_manage_py_baton_migrate_and_worker(django_env: dict[str, str], tmp_path: Path) -> None:
    env = {**os.environ, **django_env, "BATON_DJANGO_SQLITE": str(tmp_path / "worker.db")}
    manage = [sys.executable, str(PROJECT / "manage.py"), "baton"]
    migrated = subprocess.run([*manage, "migrate"], env=env, capture_output=True, text=True, timeout=60)
    assert migrated.returncode == 0, migrated.stderr
    assert "Baton migrations applied" in migrated.stdout
    again = subprocess.run([*manage, "migrate"], env=env, capture_output=True, text=True, timeout=60)
    assert "up to date" in again.stdout

    app = baton.Baton(f"sqlite:///{tmp_path / 'worker.db'}", plugins=[], log_events=False)
    from baton.contrib.django.backend import run_task

    job = app.insert_sync(run_task.new({"task": "shop.tasks.add", "args": [40, 2], "kwargs": {}, "backend": "default"}))
    worker = subprocess.Popen(
        [*manage, "worker", "--queues", "default:2", "--node", "django-node"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = app.engine.run_sync(_get, job.id)
            if done.state == "completed":
                break
            time.sleep(0.1)
        assert done.state == "completed" and done.meta["result"] == 42
        assert done.attempted_by[0] == "django-node"
    finally:
        worker.send_signal(signal.SIGTERM)
        _out, err = worker.communicate(timeout=60)
        asyncio.run(app.close())
    assert worker.returncode == 0, err


async def _get(conn: Any, job_id: int) -> Any:
    from baton.store import jobs as store

    return await store.get_job(conn, job_id)


def test_unknown_backend_or_database_is_a_clear_error(django_env: dict[str, str]) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from baton.contrib.django.backend import BatonBackend

    backend = BatonBackend("other", {"OPTIONS": {"DATABASE": "missing"}})
    with pytest.raises(ImproperlyConfigured, match="no 'missing' database"):
        _ = backend.app
