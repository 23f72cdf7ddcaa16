"""`baton demo` runs the README's workflow end to end: fan-out across queues, one step that
fails once and retries, a fan-in, and a summary — on a fresh SQLite file or a given database."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from baton.cli import cli

BATON = str(Path(sys.executable).with_name("baton"))


def assert_demo_summary(output: str) -> None:
    assert "Summary" in output, output
    assert re.search(r"jobs by state\s+completed 7", output), output
    assert re.search(r"retried step\s+resize_3: 2 attempts \(attempt 1 failed: FlakyThumbnailService", output), output
    assert re.search(r"time taken\s+\d+\.\d\d s", output), output
    assert "4 thumbnails" in output
    for step in ("fetch", "resize_1", "resize_4", "report", "notify"):
        assert step in output
    assert "Traceback" not in output


def test_demo_runs_on_a_fresh_sqlite_file_and_can_keep_it(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "160"}
    env.pop("BATON_DATABASE_URL", None)
    proc = subprocess.run([BATON, "demo", "--keep"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_demo_summary(proc.stdout)
    # The tree before running shows steps waiting on their dependencies.
    assert "suspended" in proc.stdout and "waiting on fetch" in proc.stdout
    assert "resize_3   retryable" in proc.stdout  # the live step events
    assert not list(tmp_path.iterdir()), "the demo must not write into the working directory"

    kept = re.search(r"baton --url (\S+) workflows show (\S+)", proc.stdout)
    assert kept, proc.stdout
    url, wid = kept.groups()
    # ... and says how to open the dashboard on it.
    assert f"baton dashboard --url {url}" in proc.stdout and f"/workflows/{wid}" in proc.stdout
    # ... with the extra's name intact (Rich markup used to swallow "[dashboard]").
    assert "(the dashboard extra: pip install 'baton-jobs[dashboard]')" in proc.stdout
    assert " Baton demo " in proc.stdout.splitlines()[0] and "[bold]" not in proc.stdout
    try:
        shown = subprocess.run(
            [BATON, "--url", url, "workflows", "show", wid], env=env, capture_output=True, text=True, timeout=30
        )
        assert shown.returncode == 0, shown.stderr
        assert "demo-thumbnails" in shown.stdout and "attempt 2/" in shown.stdout
    finally:
        shutil.rmtree(Path(url.removeprefix("sqlite:///")).parent, ignore_errors=True)


def test_demo_runs_on_a_given_database(db_url: str) -> None:
    result = CliRunner().invoke(cli, ["demo", "--url", db_url], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert_demo_summary(result.stdout)
    assert "already up to date" in result.stdout


def test_demo_on_an_unreachable_database_prints_only_the_error(tmp_path: Path) -> None:
    """It used to print its header and a dashboard link to workflow "None" before the error."""
    for url, needle in (
        ("postgresql://postgres@127.0.0.1:1/nowhere", "cannot reach PostgreSQL"),
        (f"sqlite:///{tmp_path}/no/such/dir/demo.db", "does not exist"),
    ):
        result = CliRunner().invoke(cli, ["demo", "--url", url], env={"COLUMNS": "160"})
        assert result.exit_code == 1, result.output  # documented: the command ran but failed
        assert result.stdout == "", result.output
        assert result.stderr.startswith("Error: ") and needle in result.stderr, result.output
        assert "Traceback" not in result.output and "workflows/None" not in result.output


def test_demo_help_gives_the_url_default_it_uses() -> None:
    """`--url`'s help said `$BATON_DATABASE_URL, else sqlite:///baton.db`; the demo uses neither."""
    result = CliRunner().invoke(cli, ["demo", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "default: a fresh temporary SQLite file; $BATON_DATABASE_URL is not used" in text
    assert "sqlite:///baton.db" not in text
    # Other commands keep the shared default.
    assert "default: $BATON_DATABASE_URL, else sqlite:///baton.db" in " ".join(
        CliRunner().invoke(cli, ["migrate", "--help"], env={"COLUMNS": "200"}).stdout.split()
    )
