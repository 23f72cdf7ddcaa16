"""Bad input, fuzzed (SPEC section 7): whatever a caller passes to the public API, Baton either
accepts it and stores valid rows, or raises a `BatonError` subclass (ValidationError,
WorkflowError, ...). It never raises another exception type (a psycopg error, TypeError,
OverflowError, UnicodeEncodeError...) and never leaves a corrupt row: after each example the
rows it inserted have a known state, attempt 0, args that are a JSON object equal to what was
given, and a priority from 0 to 9; and a call that raised inserted nothing.

Each property runs a fixed (derandomized) set of Hypothesis examples against both engines and
collects every distinct failure before reporting, so one run shows every kind of bad input
that gets through. The deterministic tests at the end pin down the cases found so far.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from harness import _run_sql
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import baton
import pg
from baton.job import STATES

pytestmark = pytest.mark.faults

EXAMPLES = 150
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI failures are reproducible
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# --------------------------------------------------------------------------- strategies

NASTY = st.sampled_from(
    ["", " ", "\x00", "a\x00b", "\ud800", "x\udfffy", "é", "💥", ".", ".x", "..a.b", "a" * 300, "default", "\n", "a.b"]
)
CLEAN_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8)
# Mostly text every database stores, sometimes anything a Python str can hold (NUL, lone
# surrogates), so one bad character does not hide every other kind of bad input.
TEXT = st.one_of(
    CLEAN_TEXT, CLEAN_TEXT, CLEAN_TEXT, CLEAN_TEXT, NASTY, st.text(st.characters(exclude_categories=()), max_size=6)
)
NUMBER = st.one_of(
    st.integers(-10, 20),
    st.integers(),
    st.sampled_from([2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e300, 1e12, 1e9, 1e-9, -0.0, 0.5]),
    st.booleans(),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=10,
)
ANY = st.one_of(
    st.none(),
    NUMBER,
    TEXT,
    st.binary(max_size=4),
    st.lists(TEXT, max_size=3),
    st.tuples(st.integers()),
    st.sets(st.integers(), max_size=2),
    st.dictionaries(TEXT, JSON, max_size=3),
    st.datetimes(),
    st.datetimes(timezones=st.just(UTC)),
    st.builds(object),
)
ARGS = st.one_of(
    st.dictionaries(TEXT, JSON, max_size=4),
    st.dictionaries(TEXT, JSON, max_size=4),
    st.dictionaries(TEXT, JSON, max_size=4),
    st.dictionaries(st.one_of(st.integers(), st.none(), st.booleans(), TEXT), JSON, max_size=3),
    st.dictionaries(TEXT, st.one_of(ANY, st.just(float("nan"))), max_size=2),
    ANY,
)
UNIQUE = st.one_of(
    st.none(),
    st.booleans(),
    st.fixed_dictionaries(
        {},
        optional={
            "period": st.one_of(st.none(), NUMBER),
            "fields": st.one_of(st.lists(st.sampled_from(["worker", "queue", "args", "meta", "x"]), max_size=3), ANY),
            "keys": st.one_of(st.lists(TEXT, max_size=2), ANY),
            "states": st.one_of(st.lists(st.sampled_from([*STATES, "bogus"]), max_size=3), ANY),
            "bogus": ANY,
        },
    ),
    ANY,
)
PLAUSIBLE_OPTIONS = {
    "queue": st.one_of(st.sampled_from(["default", "other"]), TEXT),
    "priority": st.one_of(st.integers(0, 9), NUMBER),
    "max_attempts": st.one_of(st.integers(1, 30), NUMBER),
    "tags": st.lists(TEXT, max_size=3),
    "meta": st.dictionaries(TEXT, JSON, max_size=3),
    "schedule_in": st.one_of(st.floats(0, 100), NUMBER),
    "scheduled_at": st.one_of(
        st.datetimes(timezones=st.just(UTC)),
        st.sampled_from([datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)]),
    ),
    "unique": UNIQUE,
}


@st.composite
def job_options(draw: st.DrawFn) -> dict[str, Any]:
    """A few options with plausible (often edge) values, at most one of them anything at all,
    so most examples get past `new()` and reach the database."""
    keys = sorted(draw(st.sets(st.sampled_from(sorted(PLAUSIBLE_OPTIONS)), max_size=4)))
    wild = draw(st.sampled_from([None, *keys])) if keys else None
    return {k: draw(ANY if k == wild else PLAUSIBLE_OPTIONS[k]) for k in keys}


JOB_OPTIONS = job_options()
SECONDS = st.one_of(NUMBER, ANY)


# --------------------------------------------------------------------------- helpers


class Findings:
    """Distinct unexpected outcomes, each with the first example that produced it."""

    def __init__(self) -> None:
        self.items: dict[str, str] = {}

    def add(self, kind: str, example: str) -> None:
        self.items.setdefault(kind, example[:600])

    def unexpected(self, where: str, exc: BaseException, example: str) -> None:
        message = str(exc).splitlines()[0][:100] if str(exc) else ""
        self.add(f"{where} raised {type(exc).__module__}.{type(exc).__qualname__}", f"{example}\n    -> {message}")

    def check(self) -> None:
        assert not self.items, f"{len(self.items)} kinds of bad input got through:\n" + "\n\n".join(
            f"- {kind}\n    e.g. {example}" for kind, example in self.items.items()
        )


class LoopThread:
    """An event loop in a thread, so sync Hypothesis tests can call the async API."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(params=["postgres", "sqlite"])
def fuzz_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh migrated database per engine (PostgreSQL ones are dropped afterwards)."""
    if request.param == "postgres":
        url, name = pg.create_database("baton_fuzz")
    else:
        url, name = f"sqlite:///{tmp_path / 'fuzz.db'}", None
    asyncio.run(baton.Baton(url, plugins=[], log_events=False).migrate())
    try:
        yield url
    finally:
        if name is not None:
            pg.drop_database(name)


@pytest.fixture
def fuzz_app(fuzz_url: str) -> Iterator[tuple[baton.Baton, LoopThread]]:
    """An app on the fuzz database with a plain worker `fuzz.w` and a chained one
    `fuzz.chained`, and a loop thread for its async API."""
    loop = LoopThread()
    app = baton.Baton(fuzz_url, plugins=[], log_events=False)
    app.worker(name="fuzz.w")(_noop)
    app.worker(name="fuzz.chained", chain_by=["args.k"])(_noop)
    try:
        yield app, loop
    finally:
        loop.run(app.close())
        loop.close()


def _noop(job: baton.Job) -> None:
    return None


def _count(url: str, table: str = "baton_jobs") -> int:
    return int(_run_sql(url, f"SELECT count(*) FROM {table}")[0][0])


def _same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values (numbers compared as numbers: jsonb may print 1e20 as an integer)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (isinstance(a, bool) and isinstance(b, bool) and a == b)
    if isinstance(a, int | float) and isinstance(b, int | float):
        if abs(a) > 1e300 or abs(b) > 1e300:
            return True  # beyond what a float keeps exactly; not Baton's business
        return a == b or math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-300)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def check_job_rows(url: str, specs: list[baton.JobSpec], jobs: list[baton.Job], findings: Findings, example: str):
    """The rows behind `jobs` are valid and hold what `specs` asked for."""
    ids = sorted({j.id for j in jobs})
    rows = _run_sql(
        url,
        "SELECT id, state, attempt, args, priority, queue, max_attempts, tags, meta FROM baton_jobs WHERE id IN ("
        + ",".join(str(i) for i in ids)
        + ")",
    )
    if len(rows) != len(ids):
        findings.add("returned job ids without rows", example)
    by_id = {r[0]: r for r in rows}
    for spec, job in zip(specs, jobs, strict=True):
        row = by_id.get(job.id)
        if row is None:
            continue
        _, state, attempt, args, priority, queue, max_attempts, tags, meta = row
        try:
            args = _loads(args)
        except ValueError:
            findings.add("args stored as invalid JSON", example)
            continue
        if state not in STATES:
            findings.add(f"stored state {state!r}", example)
        if job.conflict:
            continue
        if attempt != 0:
            findings.add("a new job with attempt != 0", example)
        if not isinstance(args, dict):
            findings.add("args stored as a non-object", example)
        elif not _same_json(args, json.loads(spec.args_json)):
            findings.add("args changed on the way to the database", f"{example} -> stored {args!r}")
        if not (isinstance(priority, int) and 0 <= priority <= 9):
            findings.add(f"stored priority {priority!r}", example)
        if queue != spec.queue:
            findings.add("queue changed on the way to the database", f"{example} -> stored {queue!r}")
        if max_attempts != spec.max_attempts:
            findings.add("max_attempts changed on the way to the database", f"{example} -> {max_attempts!r}")
        if list(_loads(tags)) != list(spec.tags):
            findings.add("tags changed on the way to the database", f"{example} -> stored {tags!r}")
        if not _same_json(_loads(meta), json.loads(spec.meta_json)):
            findings.add("meta changed on the way to the database", f"{example} -> stored {meta!r}")


# --------------------------------------------------------------------------- properties


def test_any_job_options_are_stored_valid_or_refused_with_a_baton_error(fuzz_app):
    app, loop = fuzz_app
    findings = Findings()
    worker = app.worker(name="fuzz.opts")(_noop)

    @settings(FUZZ, max_examples=400)
    @given(args=ARGS, options=JOB_OPTIONS, path=st.sampled_from(["insert", "insert_sync", "copy", "chained"]))
    def run(args: Any, options: dict[str, Any], path: str) -> None:
        example = f"{path}: .new({args!r}, **{options!r})"
        try:
            if path == "chained":
                args = {**args, "k": 1} if isinstance(args, dict) else args
                spec = app._workers["fuzz.chained"].options.new(args, **options)
            else:
                spec = worker.new(args, **options)
        except baton.BatonError:
            return
        except Exception as exc:
            findings.unexpected("worker.new", exc, example)
            return
        specs = [spec] * (250 if path == "copy" else 1)  # 250 rows take the COPY path
        before = _count(app.url)
        try:
            jobs = loop.run(app.insert_all(specs)) if path == "insert" else app.insert_all_sync(specs)
        except baton.BatonError:
            if _count(app.url) != before:
                findings.add("a refused insert wrote rows", example)
            return
        except Exception as exc:
            findings.unexpected(f"insert ({path})", exc, example)
            if _count(app.url) != before:
                findings.add("an insert that raised wrote rows", example)
            return
        check_job_rows(app.url, specs, jobs, findings, example)

    run()
    findings.check()


@st.composite
def workflows(draw: st.DrawFn, depth: int = 0) -> tuple[Callable[[baton.Baton], baton.Workflow], str]:
    """A random workflow graph: random (and nasty) names, deps naming steps or nothing,
    cycles, self-deps, duplicate names, sub-workflows, ignore flags, odd labels."""
    names = draw(st.lists(st.one_of(st.sampled_from(["a", "b", "c", "d", "e"]), TEXT), max_size=6))
    label = draw(st.one_of(st.none(), TEXT, ANY))
    flags = draw(
        st.fixed_dictionaries(
            {},
            optional={
                k: st.one_of(st.booleans(), ANY) for k in ("ignore_cancelled", "ignore_discarded", "ignore_deleted")
            },
        )
    )
    steps = []
    for name in names:
        deps = draw(
            st.one_of(
                st.lists(st.sampled_from([*names, "ghost"]), max_size=3),
                st.lists(TEXT, max_size=2),
                ANY,
            )
        )
        sub = draw(workflows(depth + 1)) if depth == 0 and draw(st.integers(0, 9)) == 0 else None
        step_flags = draw(st.fixed_dictionaries({}, optional={"ignore_discarded": st.one_of(st.booleans(), ANY)}))
        args = draw(st.one_of(st.dictionaries(TEXT, JSON, max_size=2), st.just({})))
        steps.append((name, deps, sub, step_flags, args))

    def build(app: baton.Baton) -> baton.Workflow:
        wf = baton.Workflow(label=label, **flags)
        for name, deps, sub, step_flags, args in steps:
            if sub is not None:
                wf.add_workflow(name, sub[0](app), deps=deps)
            else:
                wf.add(name, app.new("fuzz.w", args), deps=deps, **step_flags)
        return wf

    return build, f"label={label!r} flags={flags!r} steps={[(s[0], s[1], s[2] is not None, s[3]) for s in steps]!r}"


def test_any_workflow_graph_is_stored_whole_or_refused_with_a_workflow_error(fuzz_app):
    app, loop = fuzz_app
    findings = Findings()

    @FUZZ
    @given(graph=workflows(), path=st.sampled_from(["async", "sync"]))
    def run(graph: tuple[Callable[[baton.Baton], baton.Workflow], str], path: str) -> None:
        build, example = graph
        try:
            wf = build(app)
        except baton.BatonError:
            return
        except Exception as exc:
            findings.unexpected("building a Workflow", exc, example)
            return
        before = (_count(app.url), _count(app.url, "workflow_nodes"))
        try:
            wid = loop.run(app.insert_workflow(wf)) if path == "async" else app.insert_workflow_sync(wf)
        except baton.BatonError:
            if (_count(app.url), _count(app.url, "workflow_nodes")) != before:
                findings.add("a refused workflow wrote rows", example)
            return
        except Exception as exc:
            findings.unexpected(f"insert_workflow ({path})", exc, example)
            return
        plan = wf.plan()
        rows = _run_sql(
            app.url,
            "SELECT n.name, j.state, j.attempt, n.pending FROM workflow_nodes n JOIN baton_jobs j ON j.id = n.job_id "
            "WHERE n.workflow_id = ?",
            (wid,),
        )
        stored = {name: (state, attempt, pending) for name, state, attempt, pending in rows}
        if set(stored) != {p.name for p in plan}:
            findings.add("stored steps differ from the plan", f"{example} -> {sorted(stored)}")
            return
        for step in plan:
            state, attempt, pending = stored[step.name]
            want = "suspended" if step.edges else "available"
            if state != want or attempt != 0 or pending != len(step.edges):
                findings.add("a step stored in the wrong state", f"{example}: {step.name} {state} pending={pending}")
        try:
            status = loop.run(app.workflow_status(wid))
            if status.finished or set(status.steps) != set(stored):
                findings.add("workflow_status disagrees with the stored steps", example)
        except Exception as exc:
            findings.unexpected("workflow_status", exc, example)

    run()
    findings.check()


BATON_OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "queues": st.one_of(
            st.dictionaries(TEXT, st.one_of(NUMBER, st.dictionaries(TEXT, ANY, max_size=2)), max_size=3), ANY
        ),
        "plugins": st.one_of(st.none(), st.lists(st.builds(baton.plugins.Stager), max_size=2), ANY),
        "node": st.one_of(TEXT, ANY),
        "refresh_interval": SECONDS,
        "stale_after": SECONDS,
        "shutdown_grace": SECONDS,
        "poll_interval": SECONDS,
        "schema": st.one_of(TEXT, ANY),
        "pool_size": st.one_of(NUMBER, ANY),
        "lease_guard": st.one_of(st.booleans(), ANY),
    },
)
FINITE_SECONDS = ("refresh_interval", "stale_after", "poll_interval")


def test_any_baton_options_are_refused_with_a_validation_error_or_sane(fuzz_url):
    findings = Findings()
    urls = st.one_of(
        st.just(fuzz_url),
        TEXT,
        ANY,
        st.sampled_from(["sqlite:", "sqlite:///", "postgresql://[::1", "sqlite:///a\x00b.db", "mysql://x/y"]),
    )

    @FUZZ
    @given(url=urls, options=BATON_OPTIONS)
    def run(url: Any, options: dict[str, Any]) -> None:
        example = f"Baton({url!r}, **{options!r})"
        try:
            app = baton.Baton(url, log_events=False, **options)
        except baton.BatonError:
            return
        except Exception as exc:
            findings.unexpected("Baton()", exc, example)
            return
        for name in FINITE_SECONDS:
            value = getattr(app, name)
            if not (isinstance(value, float) and math.isfinite(value) and value > 0):
                findings.add(f"Baton accepted {name}={value!r}", example)
        if not isinstance(app.lease_guard, bool):
            findings.add(f"Baton accepted lease_guard={app.lease_guard!r}", example)
        if math.isnan(app.shutdown_grace):
            findings.add("Baton accepted shutdown_grace=nan", example)
        for queue, opts in app.queues.items():
            if not (isinstance(queue, str) and queue.strip() and isinstance(opts["limit"], int) and opts["limit"] >= 1):
                findings.add("Baton accepted a bad queue", example)

    run()
    findings.check()


PLUGINS = {
    "Stager": (baton.plugins.Stager, {"interval": SECONDS, "limit": st.one_of(NUMBER, ANY)}),
    "Lifeline": (
        baton.plugins.Lifeline,
        {"rescue_interval": SECONDS, "timeout": SECONDS, "retry_exhausted": ANY, "limit": st.one_of(NUMBER, ANY)},
    ),
    "Pruner": (
        baton.plugins.Pruner,
        {
            "max_age": st.one_of(SECONDS, st.dictionaries(st.sampled_from(["completed", "discarded", "x"]), SECONDS)),
            "limit": st.one_of(NUMBER, ANY),
            "states": st.one_of(st.lists(st.sampled_from(["completed", "cancelled", "available"]), max_size=2), ANY),
            "keep_workflow_deps": ANY,
            "interval": SECONDS,
            "timeout": SECONDS,
        },
    ),
    "WorkflowHealth": (
        baton.plugins.WorkflowHealth,
        {
            "interval": SECONDS,
            "prune": ANY,
            "prune_limit": st.one_of(NUMBER, ANY),
            "debug_log_max_age": SECONDS,
            "limit": st.one_of(NUMBER, ANY),
        },
    ),
    "Cron": (
        baton.plugins.Cron,
        {
            "crontab": st.one_of(
                st.lists(
                    st.tuples(
                        st.one_of(
                            st.sampled_from(["* * * * *", "*/5 * * * *", "1-0 * * * *", "@hourly", "* * 31 2 *"]), TEXT
                        ),
                        st.sampled_from(["fuzz.w", "no.such.worker"]),
                        st.one_of(st.dictionaries(TEXT, JSON, max_size=2), ANY),
                        st.one_of(
                            st.fixed_dictionaries(
                                {},
                                optional={
                                    "queue": TEXT,
                                    "priority": NUMBER,
                                    "max_attempts": NUMBER,
                                    "tags": ANY,
                                    "meta": ANY,
                                },
                            ),
                            ANY,
                        ),
                    ),
                    max_size=2,
                ),
                ANY,
            ),
            "timezone": st.one_of(st.sampled_from(["UTC", "Europe/Paris", "America", "a" * 300, "posix/"]), TEXT),
            "interval": SECONDS,
            "catch_up": SECONDS,
        },
    ),
}


@pytest.mark.parametrize("plugin", sorted(PLUGINS))
def test_any_plugin_options_are_refused_at_construction_or_sweep_cleanly(fuzz_app, plugin):
    """Options a plugin accepts must work: its sweep then runs without raising."""
    app, loop = fuzz_app
    cls, fields = PLUGINS[plugin]
    findings = Findings()

    @settings(FUZZ, max_examples=60)
    @given(options=st.fixed_dictionaries({}, optional=fields))
    def run(options: dict[str, Any]) -> None:
        example = f"{plugin}(**{options!r})"
        try:
            instance = cls(**options)
            instance.validate(app)
        except baton.BatonError:
            return
        except Exception as exc:
            findings.unexpected(f"{plugin}()", exc, example)
            return
        interval = instance.interval
        if not (isinstance(interval, float) and math.isfinite(interval) and interval > 0):
            findings.add(f"{plugin} accepted interval={interval!r}", example)
        try:
            loop.run(instance.sweep(app))
        except Exception as exc:
            findings.unexpected(f"a sweep of an accepted {plugin}", exc, example)

    run()
    findings.check()


CALLS: dict[str, Callable[[baton.Baton, Any], Any]] = {
    "get_job": lambda app, x: app.get_job(x),
    "retry_job": lambda app, x: app.retry_job(x),
    "retry_all_jobs": lambda app, x: app.retry_all_jobs(x),
    "cancel_all_jobs(ids=)": lambda app, x: app.cancel_all_jobs(ids=x),
    "cancel_all_jobs(queue=)": lambda app, x: app.cancel_all_jobs(queue=x),
    "cancel_all_jobs(states=)": lambda app, x: app.cancel_all_jobs(states=x),
    "list_jobs(limit=)": lambda app, x: app.list_jobs(limit=x),
    "list_jobs(queue=)": lambda app, x: app.list_jobs(queue=x),
    "list_jobs(ids=)": lambda app, x: app.list_jobs(ids=x),
    "list_jobs(workflow_id=)": lambda app, x: app.list_jobs(workflow_id=x),
    "count_jobs": lambda app, x: app.count_jobs(x),
    "workflow_status": lambda app, x: app.workflow_status(x),
    "list_workflows(limit=)": lambda app, x: app.list_workflows(limit=x),
    "list_workflows(label=)": lambda app, x: app.list_workflows(label=x),
    "pause_queue": lambda app, x: app.pause_queue(x),
    "scale_queue": lambda app, x: app.scale_queue("default", x),
    "drain(queue=)": lambda app, x: app.drain(queue=x),
}
CALL_ARGS = st.one_of(NUMBER, TEXT, ANY, st.lists(st.one_of(NUMBER, TEXT), max_size=3))


def test_any_argument_to_the_query_and_admin_api_is_answered_or_refused_with_a_baton_error(fuzz_app):
    app, loop = fuzz_app
    app.insert_all_sync([app.new("fuzz.w", {"i": i}) for i in range(3)])
    findings = Findings()

    @settings(FUZZ, max_examples=300)
    @given(call=st.sampled_from(sorted(CALLS)), value=CALL_ARGS)
    def run(call: str, value: Any) -> None:
        try:
            loop.run(CALLS[call](app, value))
        except baton.BatonError:
            return
        except Exception as exc:
            findings.unexpected(call, exc, f"{call}({value!r})")

    run()
    findings.check()


# --------------------------------------------------------------------------- the cases found so far


def _insert(app: baton.Baton, loop: LoopThread, spec: baton.JobSpec, path: str) -> Any:
    specs = [spec] * (250 if path == "copy" else 1)
    if path == "insert":
        return loop.run(app.insert_all(specs))
    return app.insert_all_sync(specs)


FOUND = {
    "NUL in an args string": lambda w: w.new({"a": "x\x00y"}),
    "NUL in an args key": lambda w: w.new({"a\x00": 1}),
    "lone surrogate in args": lambda w: w.new({"a": "\ud800"}),
    "lone surrogate in meta": lambda w: w.new({}, meta={"k": "\udfff"}),
    "NUL in the queue name": lambda w: w.new({}, queue="q\x00"),
    "NUL in a tag": lambda w: w.new({}, tags=["a\x00"]),
    "max_attempts beyond a 32-bit integer": lambda w: w.new({}, max_attempts=2**31),
    "schedule_in of 1e12 seconds": lambda w: w.new({}, schedule_in=1e12),
    "schedule_in of 1e300 seconds": lambda w: w.new({}, schedule_in=1e300),
}


@pytest.mark.parametrize("case", sorted(FOUND))
def test_bad_values_that_reach_the_database_are_refused_with_a_validation_error(fuzz_app, case):
    """Each of these used to escape as a driver error (psycopg DataError, UnicodeEncodeError,
    OverflowError...) instead of a ValidationError naming the field, on one insert path or
    another (one INSERT statement, COPY for 200 rows and more, the sync API)."""
    app, loop = fuzz_app
    worker = app.worker(name="fuzz.found")(_noop)
    findings = Findings()
    for path in ("insert", "insert_sync", "copy"):
        before = _count(app.url)
        try:
            spec = FOUND[case](worker)
            jobs = _insert(app, loop, spec, path)
        except baton.ValidationError:
            if _count(app.url) != before:
                findings.add(f"{path}: a refused insert wrote rows", case)
            continue
        except Exception as exc:
            findings.unexpected(f"{path}", exc, case)
            continue
        # Accepted: then it must be stored faithfully (SQLite can store NUL, for instance).
        check_job_rows(app.url, [spec] * len(jobs), jobs, findings, f"{path}: {case}")
    findings.check()


@pytest.mark.parametrize("name", [".x", "..a.b", "."])
def test_a_worker_name_with_an_empty_module_part_is_an_unknown_worker(fuzz_app, name):
    """`app.new(".x")` used to raise ValueError/TypeError from importlib."""
    app, _ = fuzz_app
    with pytest.raises(baton.ValidationError, match="worker"):
        app.new(name)
    with pytest.raises(baton.ValidationError, match="worker"):
        app.insert_sync(baton.JobSpec(worker=name))


def _offline_worker() -> baton.FunctionWorker:
    """A worker of an app that never connects (validation needs no database)."""
    return baton.Baton("sqlite:///never_created.db", plugins=[], log_events=False).worker(name="fuzz.offline")(_noop)


BAD_OPTIONS = {
    "Baton(queues=[('a', 1)])": (lambda: baton.Baton("sqlite:///x.db", queues=[("a", 1)]), "queues"),
    "Baton(queues='default')": (lambda: baton.Baton("sqlite:///x.db", queues="default"), "queues"),
    "Baton(plugins=5)": (lambda: baton.Baton("sqlite:///x.db", plugins=5), "plugins"),
    "Baton(schema=5)": (lambda: baton.Baton("postgresql://h/db", schema=5), "schema"),
    "Baton(refresh_interval=nan)": (lambda: baton.Baton("sqlite:///x.db", refresh_interval=math.nan), "refresh"),
    "Baton(poll_interval=nan)": (lambda: baton.Baton("sqlite:///x.db", poll_interval=math.nan), "poll_interval"),
    "Workflow.add(deps=5)": (lambda: baton.Workflow().add("a", baton.JobSpec(worker="w"), deps=5), "deps"),
    "Workflow.add(deps=None)": (lambda: baton.Workflow().add("a", baton.JobSpec(worker="w"), deps=None), "deps"),
    "worker.new(meta=[1])": (lambda: _offline_worker().new({}, meta=[1]), "meta"),
    "worker.new(meta='x')": (lambda: _offline_worker().new({}, meta="x"), "meta"),
    "unique={'states': None}": (lambda: baton.JobSpec(worker="w", unique={"states": None}), "unique"),
    "unique={'fields': 5}": (lambda: baton.JobSpec(worker="w", unique={"fields": 5}), "unique"),
    "Pruner(states=5)": (lambda: baton.plugins.Pruner(states=5), "states"),
    "Lifeline(timeout=inf)": (lambda: baton.plugins.Lifeline(timeout=math.inf), "timeout"),
    "Lifeline(timeout=1e9)": (lambda: baton.plugins.Lifeline(timeout=1e9), "timeout"),
    "Stager(interval=nan)": (lambda: baton.plugins.Stager(interval=math.nan), "interval"),
    "Cron(timezone='America')": (lambda: baton.plugins.Cron(timezone="America"), "timezone"),
    "Cron(timezone='a' * 300)": (lambda: baton.plugins.Cron(timezone="a" * 300), "timezone"),
    "Cron options meta=5": (lambda: baton.plugins.Cron(crontab=[("* * * * *", "w", {}, {"meta": 5})]), "crontab"),
    "Cron options priority=99": (
        lambda: baton.plugins.Cron(crontab=[("* * * * *", "w", {}, {"priority": 99})]),
        "crontab",
    ),
    "Cron options [1, 2]": (lambda: baton.plugins.Cron(crontab=[("* * * * *", "w", {}, [1, 2])]), "crontab"),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_bad_options_are_refused_when_given(case):
    """Options that used to raise TypeError/AttributeError/OSError, or were accepted and then
    broke later (every sweep of the plugin, every heartbeat of the node)."""
    make, field = BAD_OPTIONS[case]
    with pytest.raises(baton.ValidationError, match=field):
        make()


@pytest.mark.parametrize("flag", ["false", "no", 0.5])
def test_a_step_ignore_flag_that_is_not_a_bool_is_refused(fuzz_app, flag):
    """`wf.add(..., ignore_discarded="false")` used to be stored as given: PostgreSQL then
    failed the insert with a psycopg error, SQLite stored the string and treated it as true."""
    app, _ = fuzz_app
    wf = baton.Workflow(label="flags")
    wf.add("a", app.new("fuzz.w"))
    with pytest.raises(baton.ValidationError, match="ignore_discarded"):
        wf.add("b", app.new("fuzz.w"), deps=["a"], ignore_discarded=flag)
        app.insert_workflow_sync(wf)
