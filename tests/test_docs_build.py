"""The documentation site builds with `mkdocs build --strict`: a broken link, a page left out of
the nav, a missing included report or an API name that no longer exists fails the test suite.
The built pages hold what they are generated from: every `baton` command's help and the
public API's docstrings."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

import baton
from baton.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def text_of(page: Path) -> str:
    """A built page as plain text."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))


def command_paths(command: click.Command, path: str) -> list[str]:
    paths = [path]
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            if not sub.hidden:
                paths += command_paths(sub, f"{path} {name}")
    return paths


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]
    return out


def test_every_markdown_file_of_docs_is_a_page_of_the_site(site: Path) -> None:
    # (--strict already fails on a page missing from the nav; this checks the build wrote them.)
    docs = ROOT / "docs"
    pages = [p.relative_to(docs) for p in docs.rglob("*.md") if "_hooks" not in p.parts]
    assert len(pages) > 20
    for page in pages:
        built = site / "index.html" if page == Path("index.md") else site / page.with_suffix("") / "index.html"
        assert built.exists(), f"{page} was not built"


def test_the_cli_reference_holds_the_help_of_every_command(site: Path) -> None:
    text = text_of(site / "reference" / "cli" / "index.html")
    assert "<!-- baton-cli-reference -->" not in (site / "reference" / "cli" / "index.html").read_text()
    for path in command_paths(cli, "baton"):
        assert f"Usage: {path} " in text, path
    assert "--shutdown-grace SECONDS" in text


def test_the_api_reference_documents_every_public_name(site: Path) -> None:
    text = text_of(site / "reference" / "api" / "index.html")
    for name in baton.__all__:
        if name.startswith("_") or name in ("plugins", "telemetry"):
            continue
        assert re.search(rf"\b{name}\b", text), name
    for method in ("insert_workflow", "workflow_status", "on_workflow_finished", "cancel_all_jobs"):
        assert method in text, method


def test_the_reports_are_included_from_bench_results(site: Path) -> None:
    performance = text_of(site / "performance" / "index.html")
    faults = text_of(site / "faults" / "index.html")
    assert "--8<--" not in performance + faults
    assert "Against the targets (PostgreSQL)" in performance  # bench/results/latest-throughput.md
    assert "B/p" in performance  # bench/results/latest.md
    assert "duplicated announcements" in faults  # bench/results/chaos-latest.md
