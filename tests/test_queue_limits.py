"""Queue limits across nodes (SPEC 9.3, docs/limits.md), on both engines: a global limit is
never exceeded and is reached, per partition too; a rate limit never lets more than `allowed`
start in any window and does not stall; cancel, snooze and error free a slot at once; limits
change at run time and follow the newest declaration; bad options fail when the app is built."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import baton
from baton.store import jobs as store

try:  # main moves the fetch to store.transitions ("Structure"); this branch has it in store.jobs
    from baton.store.transitions import fetch_jobs  # type: ignore[import-not-found, unused-ignore]
except ImportError:
    from baton.store.jobs import fetch_jobs
from conftest import wait_for


class Gauge:
    """Counts jobs running at once (in total and per key) and remembers the highest counts."""

    def __init__(self) -> None:
        self.now: Counter[Any] = Counter()
        self.peak: Counter[Any] = Counter()

    @contextlib.contextmanager
    def running(self, key: Any = None) -> Any:
        for k in (None, key) if key is not None else (None,):
            self.now[k] += 1
            self.peak[k] = max(self.peak[k], self.now[k])
        try:
            yield
        finally:
            for k in (None, key) if key is not None else (None,):
                self.now[k] -= 1


async def all_done(app: baton.Baton, count: int, timeout: float = 30.0) -> None:
    async def done() -> bool:
        return (await app.count_jobs()).get("completed", 0) == count

    await wait_for(done, timeout, interval=0.05)


@contextlib.asynccontextmanager
async def started(*apps: baton.Baton) -> AsyncIterator[None]:
    for a in apps:
        await a.start()
    try:
        yield
    finally:
        for a in apps:
            await a.stop()


# --------------------------------------------------------------------------- global limit


async def test_global_limit_holds_across_two_nodes_and_is_reached(make_app: Callable[..., baton.Baton]):
    # Each node may run 3 at once: reaching the global 4 takes both of them, exceeding it either.
    queues = {"api": {"limit": 3, "global_limit": 4}}
    a, b = make_app(queues=queues, node="a"), make_app(queues=queues, node="b")
    gauge = Gauge()

    @a.worker(queue="api")
    async def call(job: baton.Job) -> None:
        with gauge.running():
            await asyncio.sleep(0.05)

    b.register(call)
    await a.insert_all([call.new({"n": i}) for i in range(40)])
    async with started(a, b):
        await all_done(a, 40)
    assert gauge.peak[None] == 4, "never more than the global limit, and the limit is reached"


async def test_global_limit_per_partition_runs_one_job_per_tenant(make_app: Callable[..., baton.Baton]):
    partition = {"fields": ["args"], "keys": ["tenant"]}
    app = make_app(queues={"api": {"limit": 10, "global_limit": {"allowed": 1, "partition": partition}}})
    gauge = Gauge()

    @app.worker(queue="api")
    async def call(job: baton.Job) -> None:
        with gauge.running(job.args["tenant"]):
            await asyncio.sleep(0.05)

    # Tenant by tenant, so the head of the queue belongs to one tenant at a time.
    await app.insert_all([call.new({"tenant": t, "n": i}) for t in ("a", "b", "c") for i in range(5)])
    async with app:
        await all_done(app, 15)
    assert {t: gauge.peak[t] for t in "abc"} == {"a": 1, "b": 1, "c": 1}
    assert gauge.peak[None] == 3, "each tenant ran its job alongside the others"


async def test_partition_by_worker_and_arg_value_types(make_app: Callable[..., baton.Baton]):
    partition = {"fields": ["worker", "args"], "keys": ["account"]}
    app = make_app(queues={"api": {"limit": 10, "global_limit": {"allowed": 2, "partition": partition}}})
    gauge = Gauge()

    @app.worker(queue="api")
    async def one(job: baton.Job) -> None:
        with gauge.running(("one", repr(job.args.get("account")))):
            await asyncio.sleep(0.05)

    @app.worker(queue="api")
    async def two(job: baton.Job) -> None:
        with gauge.running(("two", repr(job.args.get("account")))):
            await asyncio.sleep(0.05)

    # 1 and "1" are different accounts; a missing key is a partition of its own.
    accounts: list[Any] = [1, "1", None]
    specs = [
        w.new({"account": acc} if acc is not None else {}) for w in (one, two) for acc in accounts for _ in range(4)
    ]
    await app.insert_all(specs)
    async with app:
        await all_done(app, len(specs))
    keys = [(w, repr(acc)) for w in ("one", "two") for acc in accounts]
    assert {k: gauge.peak[k] for k in keys} == dict.fromkeys(keys, 2)
    assert gauge.peak[None] == 10, "six partitions of two, capped by the node's limit of 10"


async def test_equal_args_share_a_partition_whatever_their_key_order(make_app: Callable[..., baton.Baton]):
    # Partition keys compare args as JSON values on both engines (PostgreSQL's jsonb), not as
    # the text they were written in: equal objects with keys in another order are one
    # partition, and true is not 1.
    whole = {"allowed": 1, "partition": {"fields": ["args"]}}
    by_key = {"allowed": 1, "partition": {"fields": ["args"], "keys": ["pair", "tenant"]}}
    app = make_app(
        queues={"whole": {"limit": 10, "global_limit": whole}, "keyed": {"limit": 10, "global_limit": by_key}}
    )
    gauge = Gauge()

    @app.worker(queue="whole")
    async def whole_args(job: baton.Job) -> None:
        with gauge.running(("whole", job.args["pair"])):
            await asyncio.sleep(0.2)

    @app.worker(queue="keyed")
    async def keyed(job: baton.Job) -> None:
        with gauge.running(("keyed", job.args["pair"])):
            await asyncio.sleep(0.2)

    pairs: dict[str, tuple[Any, Any]] = {
        "key order": (
            {"x": 1, "y": {"b": 2, "a": [1, {"d": 4, "c": 3}]}},
            {"y": {"a": [1, {"c": 3, "d": 4}], "b": 2}, "x": 1},
        ),
        "true vs 1": (True, 1),
        "false vs 0": (False, 0),
        "1 vs '1'": (1, "1"),
    }
    specs = []
    for name, (first, second) in pairs.items():
        for value in (first, second):
            specs.append(keyed.new({"pair": name, "tenant": value}))
            # Whole args: the same two values, each as an object written in its own key order.
            specs.append(
                whole_args.new({"tenant": value, "pair": name} if value is second else {"pair": name, "tenant": value})
            )
    await app.insert_all(specs)
    async with app:
        await all_done(app, len(specs))
    same = {"key order"}
    for queue in ("whole", "keyed"):
        for name in pairs:
            want = 1 if name in same else 2
            assert gauge.peak[(queue, name)] == want, f"{queue} {name}: {'one' if want == 1 else 'two'} partition(s)"


async def test_queue_usage_keys_are_the_same_json_on_both_engines(make_app: Callable[..., baton.Baton]):
    # The keys of executing_by_partition and window_by_partition are the text of a JSON array
    # of the partition's values, the same on both engines (PostgreSQL prints jsonb so): a
    # whole-args key holds the args object (keys ordered as jsonb orders them), not a string.
    partition = {"fields": ["worker", "args"], "keys": ["tenant"]}
    rate = {"allowed": 50, "period": 60, "partition": {"fields": ["args"]}}
    app = make_app(
        queues={"api": {"limit": 10, "global_limit": {"allowed": 5, "partition": partition}, "rate_limit": rate}}
    )
    release = asyncio.Event()

    @app.worker(queue="api")
    async def call(job: baton.Job) -> None:
        await release.wait()

    args = [{"tenant": "acme", "n": 1.5}, {"n": 1.5, "tenant": "acme"}, {"tenant": 7, "n": True}, {"n": 2}]
    await app.insert_all([call.new(a) for a in args])
    async with app:

        async def all_running() -> bool:
            return (await app.count_jobs()).get("executing", 0) == len(args)

        await wait_for(all_running, 10)
        usage = (await app.queue_usage())["api"]
        release.set()
    name = call.name
    assert usage["executing_by_partition"] == {f'["{name}", "acme"]': 2, f'["{name}", 7]': 1, f'["{name}", null]': 1}
    assert usage["window_by_partition"] == {
        '[{"n": 1.5, "tenant": "acme"}]': 2,
        '[{"n": true, "tenant": 7}]': 1,
        '[{"n": 2}]': 1,
    }


def test_sqlite_partition_keys_are_postgresql_keys(pg_url: str) -> None:
    # SQLite computes partition keys with a Python function (engine.partition_key); for the same
    # args it gives the text of PostgreSQL's baton_partition_key, whatever the values.
    import json

    import psycopg

    from baton.engines.sqlite.engine import partition_key
    from baton.job import dumps

    values: list[Any] = [
        None,
        True,
        False,
        0,
        1,
        -1,
        1.0,
        -0.0,
        1.5,
        1e16,
        1e-7,
        2**70,
        -(2**63),
        0.1 + 0.2,
        1.25e300,
        "",
        "a",
        "é",
        "日本",
        '\n\t"\\/',
        "\x01\x1f\x7f",
        "\u2028",
        "😀",
        [],
        {},
        [1, [2, {}]],
        {"b": 1, "a": 2, "aa": 3, "é": 4, "": 5, "A": 6, "日": 7, "Z": {"y": [True, None], "x": 1.50}},
    ]
    specs = [(["args"], []), (["worker", "args"], ["t"]), (["args"], ["n", "missing", "t"]), (["worker"], [])]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for value in values:
            text = dumps({"t": value, "n": value, "m": [value]})
            for fields, keys in specs:
                row = conn.execute(
                    "SELECT baton_partition_key(%s, %s::jsonb, %s::text[], %s::text[])",
                    ('mod.wörk"er', text, fields, keys),
                ).fetchone()
                assert row is not None
                got = partition_key('mod.wörk"er', text, json.dumps(fields), json.dumps(keys))
                assert got == row[0], (value, fields, keys)


# --------------------------------------------------------------------------- rate limit


def windows_over(starts: list[float], period: float) -> int:
    """The most starts in any window (t - period, t]."""
    starts = sorted(starts)
    most, lo = 0, 0
    for hi, t in enumerate(starts):
        while starts[lo] <= t - period:
            lo += 1
        most = max(most, hi - lo + 1)
    return most


async def test_rate_limit_never_lets_more_start_in_a_window_and_does_not_stall(make_app: Callable[..., baton.Baton]):
    queues = {"api": {"limit": 10, "rate_limit": {"allowed": 5, "period": 0.5}}}
    a, b = make_app(queues=queues, node="a"), make_app(queues=queues, node="b")

    @a.worker(queue="api")
    async def call(job: baton.Job) -> None:
        return None

    b.register(call)
    await a.insert_all([call.new({"n": i}) for i in range(20)])
    async with started(a, b):
        await all_done(a, 20, timeout=20)
    jobs = await a.list_jobs(states=["completed"], limit=100)
    starts = [j.attempted_at.timestamp() for j in jobs]
    assert windows_over(starts, 0.5) == 5, "full windows, never more than allowed"
    assert len(jobs) == 20


async def test_rate_limit_per_partition_counts_each_tenant_alone(make_app: Callable[..., baton.Baton]):
    rate = {"allowed": 2, "period": 30, "partition": {"fields": ["args"], "keys": ["tenant"]}}
    app = make_app(queues={"api": {"limit": 10, "rate_limit": rate}})

    @app.worker(queue="api")
    async def call(job: baton.Job) -> None:
        return None

    await app.insert_all([call.new({"tenant": t, "n": i}) for t in ("a", "b", "c") for i in range(4)])
    async with app:

        async def six_done() -> bool:
            return (await app.count_jobs()).get("completed", 0) == 6

        await wait_for(six_done, 10)
        await asyncio.sleep(0.3)  # room for a wrong seventh start
        done = await app.list_jobs(states=["completed"], limit=100)
        usage = (await app.queue_usage())["api"]
    assert Counter(j.args["tenant"] for j in done) == {"a": 2, "b": 2, "c": 2}
    assert (await app.count_jobs()).get("available") == 6, "the rest waits for the window"
    assert usage["window"] == 6
    assert sorted(usage["window_by_partition"].values()) == [2, 2, 2]


async def test_a_retried_attempt_counts_as_a_new_start(make_app: Callable[..., baton.Baton]):
    app = make_app(queues={"api": {"limit": 5, "rate_limit": {"allowed": 3, "period": 30}}})

    @app.worker(queue="api", max_attempts=5)
    async def flaky(job: baton.Job) -> None:
        if job.attempt == 1:
            raise RuntimeError("first attempt fails")

    job = await app.insert(flaky.new({}))
    other = await app.insert(flaky.new({"other": True}))
    async with app:
        await wait_for(lambda: app.get_job(other.id), 5)

        async def both_failed_once() -> bool:
            return all(j.attempt >= 1 and j.state != "executing" for j in await app.list_jobs(ids=[job.id, other.id]))

        await wait_for(both_failed_once, 5)
        await app.retry_job(job.id)
        await app.retry_job(other.id)
        await asyncio.sleep(0.5)
        states = {j.id: (j.state, j.attempt) for j in await app.list_jobs(ids=[job.id, other.id])}
    # Two first attempts and one retry fill the window of three; the other retry waits.
    assert sorted(states.values()) == [("available", 1), ("completed", 2)]


# --------------------------------------------------------------------------- slots freed at once


@pytest.mark.parametrize("ending", ["cancel", "snooze", "error"])
async def test_an_ended_attempt_frees_its_slot_at_once(make_app: Callable[..., baton.Baton], ending: str):
    app = make_app(queues={"api": {"limit": 5, "global_limit": 1}}, poll_interval=30.0)
    release = asyncio.Event()

    @app.worker(queue="api", max_attempts=5)
    async def first(job: baton.Job) -> Any:
        if ending == "cancel":
            await asyncio.sleep(60)
        await release.wait()
        if ending == "snooze" and job.attempt == 1:
            return baton.Snooze(60)
        if ending == "error" and job.attempt == 1:
            raise RuntimeError("boom")
        return None

    @app.worker(queue="api")
    async def second(job: baton.Job) -> None:
        return None

    holder = await app.insert(first.new({}))
    async with app:
        await wait_for(lambda: app.get_job(holder.id), 5)

        async def holder_runs() -> bool:
            return (await app.get_job(holder.id)).state == "executing"

        await wait_for(holder_runs, 5)
        waiting = await app.insert(second.new({}))
        await asyncio.sleep(0.2)
        assert (await app.get_job(waiting.id)).state == "available", "the global limit of 1 is taken"
        if ending == "cancel":
            await app.cancel_job(holder.id)
        else:
            release.set()

        async def second_done() -> bool:
            return (await app.get_job(waiting.id)).state == "completed"

        # poll_interval is 30 s: only a freed slot (not the timer) can start it this soon.
        await wait_for(second_done, 5)
    expected = {"cancel": "cancelled", "snooze": "scheduled", "error": "retryable"}[ending]
    assert (await app.get_job(holder.id)).state == expected


async def test_jobs_of_a_dead_node_hold_their_slots_until_rescued(make_app: Callable[..., baton.Baton]):
    app = make_app(queues={"api": {"limit": 5, "global_limit": 2}})

    @app.worker(queue="api")
    async def call(job: baton.Job) -> None:
        return None

    jobs = await app.insert_all([call.new({"n": i}) for i in range(4)])
    # A node that died mid-run: two jobs executing under a producer that no longer exists.
    await app.engine.run(fetch_jobs, "api", "dead-node", "00000000-0000-0000-0000-000000000000", 2)
    async with app:
        await asyncio.sleep(0.5)
        assert (await app.count_jobs()) == {"executing": 2, "available": 2}
        rescued = await app.engine.run(
            store.release_jobs_of_producer,
            [j.id for j in jobs[:2]],
            "00000000-0000-0000-0000-000000000000",
            "node dead-node died",
            "orphaned",
        )
        assert len(rescued) == 2
        await all_done(app, 4, timeout=10)


# --------------------------------------------------------------------------- run time changes


async def test_scale_changes_the_global_limit_on_every_node(make_app: Callable[..., baton.Baton]):
    queues = {"api": {"limit": 10, "global_limit": 1}}
    a, b = make_app(queues=queues, node="a"), make_app(queues=queues, node="b")
    gauge = Gauge()
    go_on = asyncio.Event()

    @a.worker(queue="api")
    async def call(job: baton.Job) -> None:
        with gauge.running():
            await go_on.wait()

    b.register(call)
    await a.insert_all([call.new({"n": i}) for i in range(6)])
    async with started(a, b):
        await asyncio.sleep(0.5)
        assert gauge.peak[None] == 1
        await a.scale_queue("api", global_limit=3)
        await wait_for(lambda: gauge.now[None] == 3, 10)
        await asyncio.sleep(0.3)
        assert gauge.peak[None] == 3
        assert a.queue_state()["api"]["global_limit"] == {"allowed": 3}
        await wait_for(lambda: b.queue_state()["api"]["global_limit"] == {"allowed": 3}, 5)
        go_on.set()
        await all_done(a, 6)


async def test_a_node_declaring_no_limits_follows_the_others(make_app: Callable[..., baton.Baton]):
    limited = make_app(queues={"api": {"limit": 10, "global_limit": 2}}, node="limited")
    free = make_app(queues={"api": 10}, node="free")
    gauge = Gauge()

    @limited.worker(queue="api")
    async def call(job: baton.Job) -> None:
        with gauge.running():
            await asyncio.sleep(0.05)

    free.register(call)
    await limited.start()
    try:
        await free.start()  # started after the limited node: it reads the limits at start
        assert free.queue_state()["api"]["global_limit"] == {"allowed": 2}
        await limited.insert_all([call.new({"n": i}) for i in range(20)])
        await all_done(limited, 20)
    finally:
        await free.stop()
        await limited.stop()
    assert gauge.peak[None] == 2


async def test_the_newest_declaration_wins_on_every_node(make_app: Callable[..., baton.Baton]):
    old = make_app(queues={"api": {"limit": 10, "global_limit": 5}}, node="old", refresh_interval=0.2)
    new = make_app(queues={"api": {"limit": 10, "global_limit": 2}}, node="new", refresh_interval=0.2)
    async with started(old, new):
        assert new.queue_state()["api"]["global_limit"] == {"allowed": 2}
        await wait_for(lambda: old.queue_state()["api"]["global_limit"] == {"allowed": 2}, 5)
        usage = await old.queue_usage()
    assert usage["api"]["global_limit"] == {"allowed": 2}
    assert set(usage["api"]["nodes"]) == {"old", "new"}


async def test_queues_without_limits_publish_none_and_write_no_window(make_app: Callable[..., baton.Baton]):
    app = make_app(queues={"default": 5})

    @app.worker()
    async def call(job: baton.Job) -> None:
        return None

    await app.insert_all([call.new({"n": i}) for i in range(5)])
    async with app:
        await all_done(app, 5)
        usage = await app.queue_usage()
    assert usage["default"]["global_limit"] is None and usage["default"]["rate_limit"] is None
    assert app.queue_state()["default"]["global_limit"] is None


# --------------------------------------------------------------------------- validation


G, R = "queues.api.global_limit", "queues.api.rate_limit"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"global_limit": 0}, G),
        ({"global_limit": -3}, G),
        ({"global_limit": True}, G),
        ({"global_limit": {"allowed": 0}}, f"{G}.allowed"),
        ({"global_limit": {"partition": {"fields": ["args"]}}}, f"{G}.allowed"),
        ({"global_limit": {"allowed": 2, "partition": {"fields": ["tenant"]}}}, f"{G}.partition.fields"),
        ({"global_limit": {"allowed": 2, "partition": {"fields": []}}}, f"{G}.partition.fields"),
        ({"global_limit": {"allowed": 2, "partition": {"fields": ["worker"], "keys": ["t"]}}}, f"{G}.partition.keys"),
        ({"global_limit": {"allowed": 2, "per": 1}}, G),
        (
            {"global_limit": {"allowed": 2, "partition": {"fields": ["args"], "keys": list("abcde")}}},
            f"{G}.partition.keys",
        ),
        ({"rate_limit": {"allowed": 5, "period": 0}}, f"{R}.period"),
        ({"rate_limit": {"allowed": 5, "period": -1}}, f"{R}.period"),
        ({"rate_limit": {"allowed": 0, "period": 1}}, f"{R}.allowed"),
        ({"rate_limit": {"allowed": 5}}, f"{R}.period"),
        ({"rate_limit": 5}, R),
        ({"rate_limit": {"allowed": 5, "period": 1, "partition": {"fields": ["meta"]}}}, f"{R}.partition.fields"),
        ({"global_limt": 5}, "queues.api"),
    ],
)
def test_bad_limit_options_fail_when_the_app_is_built(db_url: str, options: dict[str, Any], field: str):
    with pytest.raises(baton.ValidationError) as info:
        baton.Baton(db_url, queues={"api": {"limit": 5, **options}}, plugins=[], log_events=False)
    assert info.value.field == field
    assert "api" in str(info.value)


async def test_bad_limits_given_to_scale_queue(make_app: Callable[..., baton.Baton]):
    app = make_app(queues={"api": 5})
    calls = [
        (app.scale_queue("api", global_limit=0), G),
        (app.scale_queue("api", rate_limit={"allowed": 1, "period": 0}), f"{R}.period"),
        (app.scale_queue("api", global_limit=2, node="other"), "node"),
        (app.scale_queue("api"), "limit"),
    ]
    for call, field in calls:
        with pytest.raises(baton.ValidationError) as info:
            await call
        assert info.value.field == field
    async with app:
        with pytest.raises(baton.ValidationError) as info:
            await app.scale_queue("nope", global_limit=2, local=True)
        assert info.value.field == "queues.nope"


# --------------------------------------------------------------------------- CLI


async def test_cli_lists_usage_against_limits_and_scales_them(make_app: Callable[..., baton.Baton], db_url: str):
    from click.testing import CliRunner

    from baton.cli import cli

    def invoke(*args: str) -> Any:
        return CliRunner().invoke(cli, ["--url", db_url, *args], env={"COLUMNS": "200"})

    partition = {"fields": ["args"], "keys": ["tenant"]}
    app = make_app(
        queues={
            "api": {"limit": 10, "global_limit": {"allowed": 2, "partition": partition}},
            "llm": {"limit": 5, "rate_limit": {"allowed": 60, "period": 60}},
        }
    )
    hold = asyncio.Event()

    @app.worker(queue="api")
    async def call(job: baton.Job) -> None:
        await hold.wait()

    @app.worker(queue="llm")
    async def ask(job: baton.Job) -> None:
        return None

    await app.insert_all([call.new({"tenant": t}) for t in ("a", "a", "a", "b")] + [ask.new({}) for _ in range(3)])
    async with app:
        await wait_for(lambda: app.count_jobs(), 5)

        async def settled() -> bool:
            counts = await app.count_jobs()
            return counts.get("executing") == 3 and counts.get("completed") == 3

        await wait_for(settled, 10)
        listed = await asyncio.to_thread(invoke, "queues", "list")
        assert listed.exit_code == 0, listed.output
        api = next(line for line in listed.output.splitlines() if line.startswith("api"))
        llm = next(line for line in listed.output.splitlines() if line.startswith("llm"))
        assert "2/2 per args tenant (3 in 2 partitions)" in api
        assert "3/60 per 60s" in llm

        scaled = await asyncio.to_thread(invoke, "queues", "scale", "api", "--global-limit", "3")
        assert scaled.exit_code == 0, scaled.output
        # The partition is kept: tenant a now runs 3, tenant b still 1.
        await wait_for(lambda: app.queue_state()["api"]["global_limit"] == {"allowed": 3, "partition": partition}, 5)

        async def four_running() -> bool:
            return (await app.count_jobs()).get("executing") == 4

        await wait_for(four_running, 5)
        bad = await asyncio.to_thread(invoke, "queues", "scale", "llm", "--rate-limit", "10")
        assert bad.exit_code != 0 and "ALLOWED/PERIOD" in bad.output
        rate = await asyncio.to_thread(invoke, "queues", "scale", "llm", "--rate-limit", "10/2")
        assert rate.exit_code == 0, rate.output
        await wait_for(lambda: app.queue_state()["llm"]["rate_limit"] == {"allowed": 10, "period": 2.0}, 5)
        hold.set()
