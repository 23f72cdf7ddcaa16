"""The distribution a user installs. `python -m build` makes an sdist and a wheel named
`baton-jobs` that `twine check` accepts; the wheel holds every file of `src/baton` (SQL,
migrations, dashboard templates and assets, JSON Schemas); installed into a fresh virtualenv,
away from this checkout, it runs `baton --version`, `baton migrate` on SQLite and on a fresh
PostgreSQL database, `baton demo`, and the getting-started steps of the docs (a worker node
included)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import psycopg
import pytest

import baton

sys.path.insert(0, str(Path(__file__).parent))
import pg
from polling import wait_for
from test_demo import assert_demo_summary

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "baton"
DISTRIBUTION = "baton_jobs"  # "baton-jobs" as a file name (PEP 427 / PEP 625)


def run(args: list[str], **options: object) -> subprocess.CompletedProcess[str]:
    options.setdefault("timeout", 300)
    return subprocess.run(args, capture_output=True, text=True, **options)  # type: ignore[call-overload,no-any-return]


def source_files() -> list[str]:
    """Every file of the package in the source tree, as a path inside the wheel (`baton/...`)."""
    files = []
    for path in sorted(PACKAGE.rglob("*")):
        relative = path.relative_to(PACKAGE.parent)
        if path.is_dir() or "__pycache__" in relative.parts or path.suffix == ".pyc":
            continue
        if any(part.startswith(".") for part in relative.parts):
            continue  # editor and OS droppings (.DS_Store, .swp)
        files.append(relative.as_posix())
    return files


def clean_env() -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH into this checkout (pip would take the
    checkout's egg-info for an installed baton-jobs), no virtualenv, no database set."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BATON_DATABASE_URL", "VIRTUAL_ENV")}
    env["COLUMNS"] = "160"
    return env


def schema_version(engine: str) -> int:
    """The highest migration number shipped for an engine (`NNN_name.sql`)."""
    return max(int(p.name.split("_", 1)[0]) for p in (PACKAGE / "engines" / engine / "migrations").glob("*.sql"))


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel, built the way a release is: `python -m build` (the wheel is
    built from the sdist, so both are proven)."""
    out = tmp_path_factory.mktemp("dist")
    proc = run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    return dist / f"{DISTRIBUTION}-{baton.__version__}-py3-none-any.whl"


@pytest.fixture(scope="module")
def venv_bin(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel (and its dependencies) installed; nothing of this
    checkout on its path."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    proc = run([sys.executable, "-m", "venv", str(venv)])
    assert proc.returncode == 0, proc.stderr
    proc = run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)], env=clean_env())
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return venv / "bin"


@pytest.fixture
def user_env() -> dict[str, str]:
    return clean_env()


def test_build_makes_an_sdist_and_a_wheel_of_baton_jobs_at_the_package_version(dist: Path) -> None:
    assert sorted(p.name for p in dist.iterdir()) == [
        f"{DISTRIBUTION}-{baton.__version__}-py3-none-any.whl",
        f"{DISTRIBUTION}-{baton.__version__}.tar.gz",
    ]


def test_twine_check_accepts_both_artifacts(dist: Path) -> None:
    proc = run([sys.executable, "-m", "twine", "check", "--strict", *map(str, sorted(dist.iterdir()))])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("PASSED") == 2, proc.stdout


def test_the_wheel_and_the_sdist_hold_every_file_of_the_package(dist: Path, wheel: Path) -> None:
    expected = source_files()
    assert any(f.endswith("/001_initial.sql") for f in expected)  # the walk found the tree
    with zipfile.ZipFile(wheel) as zf:
        in_wheel = set(zf.namelist())
    missing = [f for f in expected if f not in in_wheel]
    assert not missing, f"not in the wheel (add a glob to [tool.setuptools.package-data]): {missing}"

    sdist = dist / f"{DISTRIBUTION}-{baton.__version__}.tar.gz"
    with tarfile.open(sdist) as tf:
        prefix = f"{DISTRIBUTION}-{baton.__version__}/src/"
        in_sdist = {name.removeprefix(prefix) for name in tf.getnames()}
    assert not [f for f in expected if f not in in_sdist]

    with zipfile.ZipFile(wheel) as zf:
        metadata = zf.read(f"{DISTRIBUTION}-{baton.__version__}.dist-info/METADATA").decode()
        entry_points = zf.read(f"{DISTRIBUTION}-{baton.__version__}.dist-info/entry_points.txt").decode()
    assert "\nName: baton-jobs\n" in metadata
    assert f"\nVersion: {baton.__version__}\n" in metadata
    assert re.search(r"^baton = baton\.cli:main$", entry_points, re.M), entry_points


def test_the_installed_wheel_prints_its_version_and_imports_from_the_venv(
    venv_bin: Path, tmp_path: Path, user_env: dict[str, str]
) -> None:
    proc = run([str(venv_bin / "baton"), "--version"], cwd=tmp_path, env=user_env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"baton, version {baton.__version__}"

    where = run([str(venv_bin / "python"), "-c", "import baton; print(baton.__file__)"], cwd=tmp_path, env=user_env)
    assert Path(where.stdout.strip()).is_relative_to(venv_bin.parent), where.stdout + where.stderr


def test_the_installed_wheel_migrates_sqlite_and_runs_the_demo(
    venv_bin: Path, tmp_path: Path, user_env: dict[str, str]
) -> None:
    url = f"sqlite:///{tmp_path}/app.db"
    version = schema_version("sqlite")
    proc = run([str(venv_bin / "baton"), "migrate", "--url", url], cwd=tmp_path, env=user_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"schema version {version}" in proc.stdout and "applied migrations 1," in proc.stdout, proc.stdout
    again = run([str(venv_bin / "baton"), "migrate", "--url", url], cwd=tmp_path, env=user_env)
    assert f"is up to date (schema version {version})" in again.stdout, again.stdout + again.stderr

    demo = run([str(venv_bin / "baton"), "demo"], cwd=tmp_path, env=user_env, timeout=120)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert_demo_summary(demo.stdout)


def test_the_installed_wheel_migrates_a_fresh_postgresql_database(
    venv_bin: Path, tmp_path: Path, user_env: dict[str, str]
) -> None:
    url, name = pg.create_database("baton_wheel")
    try:
        proc = run([str(venv_bin / "baton"), "migrate", "--url", url], cwd=tmp_path, env=user_env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"schema version {schema_version('postgres')}" in proc.stdout, proc.stdout
        with psycopg.connect(url) as conn:
            tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"baton_jobs", "workflow_nodes", "workflow_completions", "baton_producers"} <= tables
    finally:
        pg.drop_database(name)


def test_install_hints_name_the_distribution_and_an_extra_it_declares() -> None:
    """`pip install 'baton-jobs[otel]'` everywhere: in error messages, docstrings and docs (the
    import name `baton` is not the distribution on the package index)."""
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    wrong = []
    texts = [*PACKAGE.rglob("*.py"), *(ROOT / "docs").rglob("*.md"), *(ROOT / "examples").rglob("*.py")]
    for path in texts:
        for match in re.finditer(r"(?<![\w.])(baton(?:-[a-z]+)?)\[([a-z]+(?:,[a-z]+)*)\]", path.read_text()):
            name, wanted = match.group(1), set(match.group(2).split(","))
            if name != "baton-jobs" or not wanted <= extras:
                wrong.append(f"{path.relative_to(ROOT)}: {match.group(0)}")
    assert not wrong, f"install hints must read baton-jobs[<one of {sorted(extras)}>]: {wrong}"


TASKS = """
import baton

app = baton.Baton(queues={"default": 5})   # $BATON_DATABASE_URL, else ./baton.db


@app.worker(max_attempts=3)
def greet(job: baton.Job) -> str:
    return f"hello, {job.args['name']}"
"""


async def test_the_getting_started_steps_work_from_the_installed_wheel(
    venv_bin: Path, tmp_path: Path, user_env: dict[str, str]
) -> None:
    """docs/getting-started.md, section 2: a tasks module, `baton migrate`, an insert from sync
    code, `baton worker --app tasks:app` until SIGTERM, `baton jobs list`."""
    (tmp_path / "tasks.py").write_text(TASKS)
    env = {**user_env, "BATON_DATABASE_URL": f"sqlite:///{tmp_path}/tasks.db"}
    assert run([str(venv_bin / "baton"), "migrate"], cwd=tmp_path, env=env).returncode == 0
    insert = "from tasks import app, greet; print(app.insert_sync(greet.new({'name': 'Ada'})).id)"
    inserted = run([str(venv_bin / "python"), "-c", insert], cwd=tmp_path, env=env)
    assert inserted.stdout.strip() == "1", inserted.stdout + inserted.stderr

    node = subprocess.Popen(
        [str(venv_bin / "baton"), "worker", "--app", "tasks:app"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def completed() -> bool:
            listing = run([str(venv_bin / "baton"), "jobs", "list"], cwd=tmp_path, env=env)
            return bool(re.search(r"^\s*1\s+completed\s+default\s+tasks\.greet\s+1/3", listing.stdout, re.M))

        await wait_for(completed, timeout=30, interval=0.5)
    finally:
        node.send_signal(signal.SIGTERM)
        output, _ = node.communicate(timeout=60)
    assert node.returncode == 0, output
    assert "stopped" in output
