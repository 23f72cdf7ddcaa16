"""The `baton` command line against real databases: migrate, jobs, workflows, queues, prune,
and `baton worker` as a real process that stops gracefully on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest
from click.testing import CliRunner, Result

import baton
import cli_app
from baton.cli import cli
from baton.cli.nodes import load_app
from baton.engines.base import migration_files
from conftest import wait_for

T = TypeVar("T")
TESTS = Path(__file__).parent
BATON = str(Path(sys.executable).with_name("baton"))


def invoke(url: str, *args: str) -> Result:
    """Run `baton --url URL ARGS...` in-process; wide columns so table rows never wrap."""
    return CliRunner().invoke(cli, ["--url", url, *args], env={"COLUMNS": "200"})


def with_app(url: str, fn: Callable[[baton.Baton], Awaitable[T]]) -> T:
    """Run `fn(app)` on a fresh app for `url` (the CLI tests are sync: the CLI runs its own loop)."""

    async def go() -> T:
        app = baton.Baton(url, plugins=[], log_events=False)
        app.register(cli_app.echo, cli_app.boom, cli_app.sleepy)
        try:
            return await fn(app)
        finally:
            await app.close()

    return asyncio.run(go())


def listed_ids(result: Result) -> list[int]:
    """The ID column of `baton jobs list` output."""
    return [int(line.split()[0]) for line in result.stdout.splitlines()[1:] if line.strip()]


def assert_clean_error(result: Result | subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    output = result.output if isinstance(result, Result) else result.stdout + result.stderr
    exit_code = result.exit_code if isinstance(result, Result) else result.returncode
    assert exit_code == code, output
    assert "Traceback" not in output, output
    for needle in needles:
        assert needle in output, output


@pytest.fixture(params=["postgres", "sqlite"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    """Global options naming a database with no Baton tables yet: a new PostgreSQL schema, or
    an SQLite file that does not exist."""
    if request.param == "sqlite":
        yield ["--url", f"sqlite:///{tmp_path}/fresh.db"]
        return
    url = request.getfixturevalue("pg_url")
    schema = f"cli_{uuid.uuid4().hex[:10]}"
    yield ["--url", url, "--schema", schema]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# --------------------------------------------------------------------------- migrate


def test_migrate_applies_the_schema_once_then_reports_up_to_date(fresh_url: list[str]) -> None:
    # Every migration the package ships (other branches add theirs: 1, 2, ... 6).
    versions = [v for v, _, _ in migration_files("baton.engines.sqlite")]
    assert versions[:2] == [1, 2] and 6 in versions
    first = CliRunner().invoke(cli, [*fresh_url, "migrate"])
    assert first.exit_code == 0, first.output
    versions = [v for v, _, _ in migration_files("baton.engines.sqlite")]
    assert "applied migrations " + ", ".join(map(str, versions)) in first.stdout

    # The database options may also follow the command, as in `baton migrate --url ...`.
    again = CliRunner().invoke(cli, ["migrate", *fresh_url])
    assert again.exit_code == 0, again.output
    latest = migration_files("baton.engines.postgres")[-1][0]
    assert f"up to date (schema version {latest})" in again.stdout


OLD_COMPLETION = "INSERT INTO workflow_completions (workflow_id, status, announced_by) VALUES ('w1', 'completed', 'n')"


def test_migration_2_upgrades_a_version_1_database_keeping_its_completions(fresh_url: list[str]) -> None:
    """A database at schema version 1 (before two-phase announcements) with a finished
    workflow: `baton migrate` applies 2 only, and the old completion counts as emitted (the
    backstop must not announce it a second time)."""
    assert CliRunner().invoke(cli, [*fresh_url, "migrate"]).exit_code == 0
    url = fresh_url[1]
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("DROP INDEX workflow_completions_unemitted_idx")
        conn.execute("ALTER TABLE workflow_completions DROP COLUMN emitted_at")
        conn.execute("DELETE FROM baton_migrations WHERE version = 2")
        conn.execute(OLD_COMPLETION)
        read = lambda: conn.execute("SELECT emitted_at = announced_at FROM workflow_completions").fetchall()  # noqa: E731
    else:
        conn = psycopg.connect(url, autocommit=True, options=f"-c search_path={fresh_url[3]}")
        conn.execute("ALTER TABLE workflow_completions DROP COLUMN emitted_at")
        conn.execute("DELETE FROM baton_migrations WHERE version = 2")
        conn.execute(OLD_COMPLETION)
        read = lambda: conn.execute("SELECT emitted_at = announced_at FROM workflow_completions").fetchall()  # noqa: E731
    try:
        result = CliRunner().invoke(cli, [*fresh_url, "migrate"])
        assert result.exit_code == 0, result.output
        assert "applied migration 2 " in result.stdout
        assert [tuple(r) for r in read()] in ([(True,)], [(1,)])
    finally:
        conn.close()

    listed = CliRunner().invoke(cli, [*fresh_url, "jobs", "list"])
    assert listed.exit_code == 0, listed.output
    assert "no jobs match" in listed.stdout


def test_an_unmigrated_database_names_the_fix_and_exits_2(fresh_url: list[str]) -> None:
    for args in (["jobs", "list"], ["workflows", "list"], ["queues", "pause", "default"]):
        result = CliRunner().invoke(cli, [*fresh_url, *args])
        assert_clean_error(result, 2, "baton", "migrate")


def test_an_empty_sqlite_file_is_unmigrated_too(tmp_path: Path) -> None:
    (tmp_path / "empty.db").touch()
    result = invoke(f"sqlite:///{tmp_path}/empty.db", "jobs", "show", "1")
    assert_clean_error(result, 2, "schema version 0", "baton migrate")


def test_bad_urls_and_unreachable_servers_are_messages_not_tracebacks(tmp_path: Path) -> None:
    assert_clean_error(invoke("mysql://localhost/db", "jobs", "list"), 2, "unsupported database URL")
    assert_clean_error(invoke("postgresql://postgres@127.0.0.1:1/none", "jobs", "list"), 1, "cannot reach PostgreSQL")
    assert not (tmp_path / "baton.db").exists()


# --------------------------------------------------------------------------- jobs


def seed_jobs(url: str) -> dict[str, int]:
    """Three available echo jobs (one on `mailers`), one completed, one discarded with a traceback."""

    async def go(app: baton.Baton) -> dict[str, int]:
        done = await app.insert(cli_app.echo.new({"n": 0}))
        failed = await app.insert(cli_app.boom.new({}))
        await app.drain()
        jobs = await app.insert_all(
            [cli_app.echo.new({"n": 1}), cli_app.echo.new({"n": 2}), cli_app.echo.new({"n": 3}, queue="mailers")]
        )
        return {"completed": done.id, "discarded": failed.id, "a": jobs[0].id, "b": jobs[1].id, "mail": jobs[2].id}

    return with_app(url, go)


def test_jobs_list_shows_jobs_newest_first_with_filters(db_url: str) -> None:
    ids = seed_jobs(db_url)

    everything = invoke(db_url, "jobs", "list")
    assert everything.exit_code == 0, everything.output
    assert listed_ids(everything) == sorted(ids.values(), reverse=True)
    assert "cli_app.boom" in everything.stdout and "RuntimeError: boom" in everything.stdout

    assert listed_ids(invoke(db_url, "jobs", "list", "--queue", "mailers")) == [ids["mail"]]
    assert listed_ids(invoke(db_url, "jobs", "list", "--state", "discarded")) == [ids["discarded"]]
    two_states = invoke(db_url, "jobs", "list", "-s", "completed", "-s", "discarded")
    assert sorted(listed_ids(two_states)) == sorted([ids["completed"], ids["discarded"]])
    assert listed_ids(invoke(db_url, "jobs", "list", "--worker", "cli_app.boom")) == [ids["discarded"]]
    assert len(listed_ids(invoke(db_url, "jobs", "list", "--limit", "2"))) == 2

    bad = invoke(db_url, "jobs", "list", "--state", "sleeping")
    assert bad.exit_code == 2 and "sleeping" in bad.output


def test_jobs_show_prints_every_field_the_errors_and_the_last_traceback(db_url: str) -> None:
    ids = seed_jobs(db_url)

    result = invoke(db_url, "jobs", "show", str(ids["discarded"]))
    assert result.exit_code == 0, result.output
    for text in (
        "discarded",
        "cli_app.boom",
        "attempt",
        "1 of 1",
        "errors (1)",
        "RuntimeError: boom",
        "last traceback",
        "Traceback (most recent call last)",
        "discarded_at",
        "attempted_by",
    ):
        assert text in result.stdout, text

    assert_clean_error(invoke(db_url, "jobs", "show", "999999"), 1, "no job with id 999999")


def test_jobs_retry_moves_a_finished_job_back_to_available(db_url: str) -> None:
    ids = seed_jobs(db_url)

    result = invoke(db_url, "jobs", "retry", str(ids["discarded"]))
    assert result.exit_code == 0, result.output
    assert f"job {ids['discarded']} is available again" in result.stdout
    job = with_app(db_url, lambda app: app.get_job(ids["discarded"]))
    assert job is not None and job.state == "available"

    assert_clean_error(invoke(db_url, "jobs", "retry", str(ids["a"])), 1, "is available; only completed")
    assert_clean_error(invoke(db_url, "jobs", "retry", "999999"), 1, "no job with id 999999")


def test_jobs_retry_of_a_unique_job_whose_key_a_live_job_holds_says_so(db_url: str) -> None:
    async def go(app: baton.Baton) -> tuple[int, int]:
        failed = await app.insert(cli_app.boom.new({"k": 1}, unique=True))
        await app.drain()
        holder = await app.insert(cli_app.boom.new({"k": 1}, unique=True))  # discarded is not a unique state
        return failed.id, holder.id

    failed, holder = with_app(db_url, go)
    assert_clean_error(
        invoke(db_url, "jobs", "retry", str(failed)),
        1,
        f"job {failed} was not retried: job {holder} (available) has the same unique key",
    )
    assert with_app(db_url, lambda app: app.get_job(failed)).state == "discarded"


def test_jobs_retry_of_a_step_whose_dependency_failed_says_to_retry_that_first(db_url: str) -> None:
    async def go(app: baton.Baton) -> dict[str, int]:
        wf = baton.Workflow()
        wf.add("a", cli_app.boom.new({}))
        wf.add("b", cli_app.echo.new({}), deps=["a"])
        wid = await app.insert_workflow(wf)
        await app.drain()
        return {n: d.job_id for n, d in (await app.workflow_status(wid)).details.items()}

    ids = with_app(db_url, go)
    # Bad input, as documented for the CLI: exit 2, the message says what to do.
    assert_clean_error(
        invoke(db_url, "jobs", "retry", str(ids["b"])),
        2,
        "dependency 'a' is discarded",
        "retry step 'a' first",
    )
    assert with_app(db_url, lambda app: app.get_job(ids["b"])).state == "cancelled"
    assert invoke(db_url, "jobs", "retry", str(ids["a"])).exit_code == 0
    result = invoke(db_url, "jobs", "retry", str(ids["b"]))
    assert result.exit_code == 0, result.output
    assert f"job {ids['b']} is suspended" in result.stdout and "waits for its dependencies" in result.stdout
    assert with_app(db_url, lambda app: app.get_job(ids["b"])).state == "suspended"


def test_jobs_cancel_cancels_each_id_and_fails_on_unknown_ones(db_url: str) -> None:
    ids = seed_jobs(db_url)

    result = invoke(db_url, "jobs", "cancel", str(ids["a"]), str(ids["b"]), str(ids["completed"]))
    assert result.exit_code == 0, result.output
    assert f"job {ids['completed']}: already completed" in result.stdout
    assert "cancelled 2 jobs" in result.stdout
    states = with_app(db_url, lambda app: app.list_jobs(ids=[ids["a"], ids["b"], ids["completed"]]))
    assert {j.id: j.state for j in states} == {
        ids["a"]: "cancelled",
        ids["b"]: "cancelled",
        ids["completed"]: "completed",
    }

    missing = invoke(db_url, "jobs", "cancel", str(ids["mail"]), "999999")
    assert_clean_error(missing, 1, "job 999999: not found", "no job with id 999999")
    job = with_app(db_url, lambda app: app.get_job(ids["mail"]))
    assert job is not None and job.state == "cancelled"


# --------------------------------------------------------------------------- workflows


def seed_workflow(url: str, label: str = "nightly") -> str:
    """fetch -> (clean, stats) -> render, where `stats` is discarded so `render` is cancelled."""

    async def go(app: baton.Baton) -> str:
        wf = baton.Workflow(label=label)
        wf.add("fetch", cli_app.echo.new({"step": "fetch"}))
        wf.add("clean", cli_app.echo.new({"step": "clean"}), deps=["fetch"])
        wf.add("stats", cli_app.boom.new({}), deps=["fetch"])
        wf.add("render", cli_app.echo.new({"step": "render"}), deps=["clean", "stats"])
        wid = await app.insert_workflow(wf)
        await app.drain()
        return wid

    return with_app(url, go)


def test_workflows_list_shows_recent_workflows(db_url: str) -> None:
    wid = seed_workflow(db_url)

    result = invoke(db_url, "workflows", "list")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if line.startswith(wid))
    assert "nightly" in row and "failed" in row and "4/4" in row

    assert invoke(db_url, "workflows", "list", "--label", "other").stdout.strip() == "no workflows"
    # The same page query as the dashboard's, with its status filter.
    assert wid in invoke(db_url, "workflows", "list", "--status", "failed").stdout
    assert invoke(db_url, "workflows", "list", "--status", "running").stdout.strip() == "no workflows"


def test_workflows_show_draws_the_dag_as_a_tree_with_step_states(db_url: str) -> None:
    wid = seed_workflow(db_url)

    result = invoke(db_url, "workflows", "show", wid)
    assert result.exit_code == 0, result.output
    lines = result.stdout.split("\n\n")[0].splitlines()  # the tree, before the totals
    assert wid in lines[0] and "nightly" in lines[0] and "failed" in lines[0]

    def line_of(step: str) -> str:
        return next(line for line in lines if f" {step}  " in line and "see above" not in line)

    assert "completed" in line_of("fetch")
    assert "completed" in line_of("clean")
    assert "discarded" in line_of("stats") and "RuntimeError: boom" in line_of("stats")
    assert "cancelled" in line_of("render")
    # `render` has two deps: drawn once in full, once as a reference, so the tree stays finite.
    assert sum("render" in line for line in lines) == 2
    assert any("render" in line and "↑ see above" in line for line in lines)
    # Children are indented under their dependency.
    assert line_of("clean").index("clean") > line_of("fetch").index("fetch")
    assert "failed steps: render, stats" in result.stdout
    assert "steps: completed 2 · discarded 1 · cancelled 1" in result.stdout

    assert_clean_error(invoke(db_url, "workflows", "show", "no-such-id"), 1, "no workflow with id no-such-id")


MARKUP = "[/]"
KEPT = "[bold]keep[/bold] :thumbs_up:"


def test_user_data_prints_as_it_is_whatever_markup_it_holds(db_url: str) -> None:
    """Args, tags, errors, queue, worker, step and model names and labels holding Rich markup
    or emoji codes neither crash a command nor lose their brackets."""

    async def go(app: baton.Baton) -> tuple[int, str]:
        @app.worker(name=f"markup{MARKUP}.fail", max_attempts=1)
        def fail(job: baton.Job) -> None:
            job.record_usage(model=f"gpt{MARKUP}", input_tokens=3, output_tokens=4)
            raise ValueError(f"bad row {MARKUP} in {KEPT}")

        job = await app.insert(fail.new({"note": MARKUP, "kept": KEPT}, tags=[MARKUP, KEPT], queue=f"q{MARKUP}"))
        wf = baton.Workflow(label=f"{MARKUP}nightly {KEPT}")
        wf.add(f"step{MARKUP}", fail.new({}, queue=f"q{MARKUP}"))
        wid = await app.insert_workflow(wf)
        app.queues[f"q{MARKUP}"] = 1
        await app.drain()
        return job.id, wid

    job_id, wid = with_app(db_url, go)
    for args in (
        ["jobs", "show", str(job_id)],
        ["jobs", "list"],
        ["jobs", "list", "--queue", f"q{MARKUP}"],
        ["workflows", "list"],
        ["workflows", "show", wid],
        ["usage"],
        ["queues", "pause", f"q{MARKUP}"],
        ["queues", "scale", KEPT, "3", "--global-limit", "2", "--rate-limit", "5/60"],
    ):
        result = invoke(db_url, *args)
        assert result.exit_code == 0, (args, result.output)
        assert "MarkupError" not in result.output and "👍" not in result.output, (args, result.output)
    shown = invoke(db_url, "jobs", "show", str(job_id)).stdout
    assert f'"note": "{MARKUP}"' in shown and f'"kept": "{KEPT}"' in shown
    assert f"{MARKUP}, {KEPT}" in shown and f"q{MARKUP}" in shown and f"markup{MARKUP}.fail" in shown
    assert f"ValueError: bad row {MARKUP} in {KEPT}" in shown
    listed = invoke(db_url, "jobs", "list").stdout
    assert f"ValueError: bad row {MARKUP} in {KEPT}" in listed and f"q{MARKUP}" in listed
    assert f"{MARKUP}nightly {KEPT}" in invoke(db_url, "workflows", "list").stdout
    tree = invoke(db_url, "workflows", "show", wid).stdout
    assert f"{MARKUP}nightly {KEPT}" in tree and f"step{MARKUP}" in tree and f"unpriced models: gpt{MARKUP}" in tree
    usage = invoke(db_url, "usage").stdout
    assert f"gpt{MARKUP} " in usage and f"unpriced models: gpt{MARKUP}" in usage
    assert f"pause queue q{MARKUP}" in invoke(db_url, "queues", "pause", f"q{MARKUP}").stdout
    assert f"jobs of queue {KEPT} at once" in invoke(db_url, "queues", "scale", KEPT, "3").stdout


CONTROL = "evil \x1b]0;owned-title\x07\x1b[2J\x1b[31mRED\rCR\x9b31mC1\x7fDEL\nINFO forged line"
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")  # all but the newline that ends a line
ESCAPED = "evil \\x1b]0;owned-title\\x07\\x1b[2J\\x1b[31mRED\\rCR\\x9b31mC1\\x7fDEL\\nINFO forged line"


def test_control_characters_in_user_data_print_escaped(db_url: str) -> None:
    """An ESC sequence (or CR, C1, DEL, a newline) in an error, a label, a step name, args or
    tags is shown escaped by every command, so job data cannot recolour, retitle or clear the
    operator's terminal, nor forge a row; the traceback keeps its own lines."""

    async def go(app: baton.Baton) -> tuple[int, str]:
        @app.worker(name="ctl.fail", max_attempts=1)
        def fail(job: baton.Job) -> None:
            raise ValueError(job.args["msg"])

        job = await app.insert(fail.new({"msg": CONTROL}, tags=[f"tag{CONTROL}"]))
        wf = baton.Workflow(label=f"label {CONTROL}")
        wf.add(f"step{CONTROL}", fail.new({"msg": CONTROL}))
        wid = await app.insert_workflow(wf)
        await app.drain()
        return job.id, wid

    job_id, wid = with_app(db_url, go)
    outputs = {}
    for args in (
        ["jobs", "list"],
        ["jobs", "show", str(job_id)],
        ["workflows", "list"],
        ["workflows", "show", wid],
        ["workflows", "show", wid, "--format", "dot"],
        ["workflows", "show", wid, "--format", "mermaid"],
    ):
        result = invoke(db_url, *args)
        assert result.exit_code == 0, (args, result.output)
        assert not RAW_CONTROL.search(result.stdout), (args, result.stdout)
        outputs[" ".join(args[:2]) if len(args) == 2 else " ".join(args)] = result.stdout
    # The list shows the error's first line (up to the CR), escaped.
    assert "ValueError: evil \\x1b]0;owned-title\\x07\\x1b[2J\\x1b[31mRED\n" in outputs["jobs list"]
    shown = outputs[f"jobs show {job_id}"]
    errors, traceback = shown.split("last traceback")
    one_line_outputs = [errors, *(out for key, out in outputs.items() if not key.startswith("jobs show"))]
    assert not [line for out in one_line_outputs for line in out.splitlines() if line.startswith("INFO forged")], (
        outputs
    )
    assert f"tag{ESCAPED}" in shown
    assert "\\u001b]0;owned-title" in shown and "\\x9b31mC1" in shown  # args: JSON's escapes, then C1
    assert f"ValueError: {ESCAPED}" in errors
    # The traceback keeps its lines; its message's control characters are escaped.
    assert "\nTraceback (most recent call last):\n" in traceback
    assert (
        "ValueError: evil \\x1b]0;owned-title\\x07\\x1b[2J\\x1b[31mRED\\rCR\\x9b31mC1\\x7fDEL\nINFO forged" in traceback
    )
    assert f"label {ESCAPED}" in outputs["workflows list"]
    assert (
        f"label {ESCAPED}" in outputs[f"workflows show {wid}"] and f"step{ESCAPED}" in outputs[f"workflows show {wid}"]
    )
    assert "\\x1b[2J" in outputs[f"workflows show {wid} --format dot"]
    assert "\\x1b[2J" in outputs[f"workflows show {wid} --format mermaid"]


def delete_job_row(url: str, job_id: int) -> None:
    """Delete a job row behind Baton's back, as an operator's manual cleanup would."""
    if url.startswith("sqlite:"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn, conn:
            conn.execute("DELETE FROM baton_jobs WHERE id = ?", (job_id,))
    else:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DELETE FROM baton_jobs WHERE id = %s", (job_id,))


def test_workflows_show_says_why_a_stuck_workflow_waits(db_url: str) -> None:
    async def go(app: baton.Baton) -> tuple[str, int]:
        wf = baton.Workflow(label="stuck")
        wf.add("fetch", cli_app.echo.new({}))
        wf.add("render", cli_app.echo.new({}), deps=["fetch"])
        wid = await app.insert_workflow(wf)
        status = await app.workflow_status(wid)
        return wid, status.details["fetch"].job_id

    wid, fetch_id = with_app(db_url, go)
    delete_job_row(db_url, fetch_id)

    result = invoke(db_url, "workflows", "show", wid)
    assert result.exit_code == 0, result.output
    assert "fetch  deleted" in result.stdout
    assert "nothing is running and these steps still wait:" in result.stdout
    assert "render: dependency 'fetch' was deleted before completing (dep_deleted)" in result.stdout


# --------------------------------------------------------------------------- queues


async def test_queue_commands_reach_a_running_node(make_app: Callable[..., baton.Baton], db_url: str) -> None:
    app = make_app(queues={"default": 2, "mailers": 1, MARKUP: 1}, node="cli-node")
    async with app:

        async def run(*args: str) -> Result:
            # The CLI runs its own event loop, so it gets a thread of its own.
            result = await asyncio.to_thread(invoke, db_url, "queues", *args)
            assert result.exit_code == 0, result.output
            return result

        await wait_for(lambda: _lists_queue(run, MARKUP), timeout=5)

        paused = await run("pause", "default")
        assert "asked every node to pause queue default" in paused.stdout
        await wait_for(lambda: app.queue_state()["default"]["paused"], timeout=5)

        await run("resume", "default", "--node", "cli-node")
        await wait_for(lambda: not app.queue_state()["default"]["paused"], timeout=5)

        scaled = await run("scale", "mailers", "7")
        assert "run up to 7 jobs of queue mailers" in scaled.stdout
        await wait_for(lambda: app.queue_state()["mailers"]["limit"] == 7, timeout=5)

        await run("pause", "mailers", "--node", "some-other-node")
        await asyncio.sleep(0.5)
        assert not app.queue_state()["mailers"]["paused"]

    bad = await asyncio.to_thread(invoke, db_url, "queues", "scale", "default", "0")
    assert bad.exit_code == 2 and "0" in bad.output


async def _lists_queue(run: Callable[..., Awaitable[Result]], name: str) -> bool:
    """Whether `baton queues list` shows queue `name` (its name printed as it is)."""
    return any(line.split()[:1] == [name] for line in (await run("list")).stdout.splitlines())


# --------------------------------------------------------------------------- prune


def test_prune_deletes_old_finished_jobs(db_url: str) -> None:
    ids = seed_jobs(db_url)
    time.sleep(0.1)

    only_discarded = invoke(db_url, "prune", "--max-age", "0.05", "--state", "discarded")
    assert only_discarded.exit_code == 0, only_discarded.output
    assert "pruned 1 job (discarded 1)" in only_discarded.stdout

    result = invoke(db_url, "prune", "--max-age", "0.05")
    assert result.exit_code == 0, result.output
    assert "pruned 1 job (completed 1)" in result.stdout
    left = with_app(db_url, lambda app: app.list_jobs())
    assert {j.id for j in left} == {ids["a"], ids["b"], ids["mail"]}

    assert "pruned 0 jobs" in invoke(db_url, "prune").stdout


# --------------------------------------------------------------------------- worker


def start_worker(url: str, cwd: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(TESTS), "PYTHONUNBUFFERED": "1"}
    env.pop("BATON_DATABASE_URL", None)
    return subprocess.Popen(
        [BATON, "--url", url, "worker", "--app", "cli_app:app", "--queues", "default:2", *extra],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_state(url: str, job_id: int, state: str, timeout: float = 10.0) -> baton.Job:
    async def go(app: baton.Baton) -> baton.Job:
        async def reached() -> baton.Job | None:
            job = await app.get_job(job_id)
            return job if job is not None and job.state == state else None

        return await wait_for(reached, timeout=timeout, interval=0.05)

    return with_app(url, go)


def test_worker_runs_jobs_and_exits_0_on_sigterm(db_url: str, tmp_path: Path) -> None:
    proc = start_worker(db_url, tmp_path, "--node", "cli-worker")
    try:
        job = with_app(db_url, lambda app: app.insert(cli_app.echo.new({"hello": "cli"})))
        done = wait_for_state(db_url, job.id, "completed")
        assert done.attempted_by is not None and done.attempted_by[0] == "cli-worker"

        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    assert "baton.jobs" in err and f"id={job.id}" in err  # the logging bridge's job line
    assert "stopping gracefully" in err and "node cli-worker stopped" in err


def test_a_second_signal_stops_the_worker_now_and_hands_running_jobs_back(db_url: str, tmp_path: Path) -> None:
    proc = start_worker(db_url, tmp_path, "--shutdown-grace", "30")
    try:
        job = with_app(db_url, lambda app: app.insert(cli_app.sleepy.new({"seconds": 30})))
        wait_for_state(db_url, job.id, "executing")

        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err, err
    assert "stopping now" in err
    back = wait_for_state(db_url, job.id, "available", timeout=2)
    assert back.errors and "shut down" in back.errors[-1]["error"]


def test_worker_on_an_unmigrated_database_exits_2_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "empty.db").touch()
    proc = start_worker(f"sqlite:///{tmp_path}/empty.db", tmp_path)
    out, err = proc.communicate(timeout=20)
    assert_clean_error(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), 2, "baton migrate")


def test_worker_rejects_an_app_it_cannot_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `worker --url` exports BATON_DATABASE_URL for the app it imports; undo that afterwards.
    monkeypatch.setenv("BATON_DATABASE_URL", f"sqlite:///{tmp_path}/x.db")
    result = CliRunner().invoke(cli, ["--url", f"sqlite:///{tmp_path}/x.db", "worker", "--app", "no_such_module:app"])
    assert_clean_error(result, 2, "cannot import module 'no_such_module'")
    result = CliRunner().invoke(cli, ["worker", "--app", "cli_app:missing"])
    assert_clean_error(result, 2, "has no attribute 'missing'")
    result = CliRunner().invoke(cli, ["worker", "--app", "cli_app"])
    assert_clean_error(result, 2, "module:attribute")
    result = CliRunner().invoke(cli, ["worker", "--app", "cli_app:app", "--queues", "default:zero"])
    assert_clean_error(result, 2, "whole number")


def test_worker_app_must_be_an_app_or_a_factory_taking_no_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker function given as the app (an easy slip) was called with no arguments and died
    with a traceback (TypeError, exit 1); now it is named as a worker, exit 2, like any other
    attribute that is not an app. A factory taking no arguments still gives the app."""
    monkeypatch.setenv("BATON_DATABASE_URL", f"sqlite:///{tmp_path}/x.db")
    result = CliRunner().invoke(cli, ["worker", "--app", "cli_app:echo"])
    assert_clean_error(result, 2, "cli_app:echo is a worker, not a baton.Baton app", "cli_app:app")
    assert result.exception is None or isinstance(result.exception, SystemExit)
    result = CliRunner().invoke(cli, ["worker", "--app", "cli_app:not_a_factory"])
    assert_clean_error(result, 2, "cli_app:not_a_factory is a function that takes arguments, not a baton.Baton app")
    result = CliRunner().invoke(cli, ["worker", "--app", "cli_app:returns_no_app"])
    assert_clean_error(result, 2, "cli_app:returns_no_app() returned a int, not a baton.Baton app")
    result = CliRunner().invoke(cli, ["worker", "--app", "cli_app:baton.Worker"])
    assert_clean_error(result, 2, "cli_app:baton.Worker is a worker, not a baton.Baton app")
    assert load_app("cli_app:make_app") is cli_app.app
    assert load_app("cli_app:app") is cli_app.app


# --------------------------------------------------------------------------- examples


def test_the_example_worker_app_runs_its_workflow(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The example builds `baton.Baton()` with no URL, exactly as `baton --url ... worker` expects.
    monkeypatch.setenv("BATON_DATABASE_URL", db_url)
    spec = importlib.util.spec_from_file_location("worker_app_example", TESTS.parent / "examples" / "worker_app.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    async def go() -> tuple[str, dict[str, int]]:
        wid = await example.app.insert_workflow(example.welcome_workflow(["ada", "grace"]))
        await example.app.drain()
        status = await example.app.workflow_status(wid)
        await example.app.close()
        return status.status, status.counts

    assert asyncio.run(go()) == ("completed", {"completed": 5})
