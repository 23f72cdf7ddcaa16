"""Workflow hops in as few round trips as their semantics allow (#19): on PostgreSQL a batch of
plain completions of steps or chain links is one statement that also releases what comes next
and hands it to the acking node's producer (no fetch for the next hop), a fetched step brings
its context in the fetch, and the acking node does not fetch twice on its own wake-up
notification — while every other node still hears it."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import psycopg
import pytest

import baton
from baton.store import transitions
from baton.store import workflows as wfstore
from baton.store.effects import parse_wake, wake_payload
from baton.store.jobs import Ack
from wf_nodes import query


def steps(app: baton.Baton) -> Any:
    @app.worker(name="hop.step", queue="default")
    async def step(job: baton.Job) -> Any:
        return {"i": job.args.get("i"), "seen": sorted(job.upstream_all())}

    @app.worker(name="hop.link", queue="default", chain_by=["args.k"])
    async def link(job: baton.Job) -> None:
        return None

    return step


async def _fetch(app: baton.Baton, uuid_: str, limit: int = 10) -> list[baton.Job]:
    return await app.engine.run(transitions.fetch_jobs, "default", "n1", uuid_, limit)


async def _ack(app: baton.Baton, acks: list[Ack], take: list[tuple[str, str, int]]) -> Any:
    async def op(conn: Any) -> Any:
        before = conn.round_trips
        result = await transitions.ack_jobs(conn, acks, "n1", "origin-1", take)
        return result, conn.round_trips - before

    return await app.engine.run_autocommit(op)


def _chain(app: baton.Baton, n: int, context: dict[str, Any] | None = None) -> baton.Workflow:
    wf = baton.Workflow(label="hops", context=context)
    previous: list[str] = []
    for i in range(n):
        wf.add(f"s{i}", app.new("hop.step", {"i": i}), deps=previous)
        previous = [f"s{i}"]
    return wf


@pytest.fixture
def pg_app(app: baton.Baton, engine_name: str) -> baton.Baton:
    if engine_name != "postgres":
        pytest.skip("the one-statement hop is PostgreSQL's (SQLite's statements cost no round trip)")
    return app


async def test_a_step_completion_is_one_statement_that_hands_the_next_step_to_the_producer(pg_app: baton.Baton) -> None:
    app = pg_app
    steps(app)
    wid = await app.insert_workflow(_chain(app, 3, context={"tenant": "t1"}))
    producer = str(uuid.uuid4())
    (first,) = await _fetch(app, producer)
    assert first.step == "s0" and first.context == {"tenant": "t1"}  # the context came with the fetch

    result, trips = await _ack(app, [Ack(first, "completed", result_json='{"i": 0}')], [("default", producer, 1)])
    assert trips == 1
    assert [a.job.id for a in result.acked] == [first.id]
    (second,) = result.taken[producer]
    assert second.step == "s1" and second.attempt == 1 and second.attempted_by == ["n1", producer]
    assert second.upstream_all() == {"s0": {"i": 0}} and second.context == {"tenant": "t1"}
    assert result.effects.released_queues == set()  # nothing left for anyone to fetch
    rows = query(app.engine.url, f"SELECT state, attempt, attempted_by FROM baton_jobs WHERE id = {second.id}")
    assert rows == [("executing", 1, ["n1", producer])]
    stats = query(app.engine.url, f"SELECT state, attempts FROM workflow_step_stats WHERE job_id = {first.id}")
    assert stats == [("completed", 1)]

    # Without a slot on offer the next step is released for any producer to fetch.
    result, _ = await _ack(app, [Ack(second, "completed")], [])
    assert result.taken == {} and result.effects.released_queues == {"default"}
    (third,) = await _fetch(app, producer)
    assert third.step == "s2" and third.upstream_all() == {"s1": None}

    # The last step: the same statement claims the workflow's finished announcement.
    result, trips = await _ack(app, [Ack(third, "completed")], [("default", producer, 1)])
    assert trips == 1 and result.taken == {}
    (finished,) = result.effects.finished
    assert finished == {
        "workflow_id": wid,
        "label": "hops",
        "status": "completed",
        "failed_steps": [],
        "counts": {"completed": 3},
    }
    assert query(app.engine.url, f"SELECT status FROM workflow_completions WHERE workflow_id = '{wid}'") == [
        ("completed",)
    ]


async def test_a_fenced_completion_releases_and_claims_nothing(pg_app: baton.Baton) -> None:
    app = pg_app
    steps(app)
    await app.insert_workflow(_chain(app, 2))
    producer = str(uuid.uuid4())
    (first,) = await _fetch(app, producer)
    first.attempted_by = ["n1", "someone-else"]  # a late ack of an attempt that is not ours
    result, _ = await _ack(app, [Ack(first, "completed")], [("default", producer, 1)])
    assert result.acked == [] and result.taken == {}
    assert [(d.job.id, d.reason) for d in result.dropped] == [(first.id, "rescued")]
    assert query(app.engine.url, "SELECT state FROM baton_jobs ORDER BY id") == [("executing",), ("suspended",)]


async def test_slots_on_offer_bound_what_a_fan_out_hands_over(pg_app: baton.Baton) -> None:
    app = pg_app
    steps(app)
    wf = baton.Workflow()
    wf.add("root", app.new("hop.step", {}))
    for i in range(5):
        wf.add(f"m{i}", app.new("hop.step", {"i": i}), deps=["root"])
    await app.insert_workflow(wf)
    producer = str(uuid.uuid4())
    (root,) = await _fetch(app, producer)
    result, _ = await _ack(app, [Ack(root, "completed")], [("default", producer, 2)])
    assert [j.step for j in result.taken[producer]] == ["m0", "m1"]
    assert sorted(query(app.engine.url, "SELECT state, count(*) FROM baton_jobs GROUP BY state")) == [
        ("available", 3),
        ("completed", 1),
        ("executing", 2),
    ]
    assert result.effects.released_queues == {"default"}


async def test_a_waiting_job_of_higher_priority_goes_first(pg_app: baton.Baton) -> None:
    app = pg_app
    step = steps(app)
    await app.insert_workflow(_chain(app, 2))
    producer = str(uuid.uuid4())
    (first,) = await _fetch(app, producer)
    urgent = await app.insert(step.new({"urgent": True}, priority=0))  # waits behind the next step
    query(app.engine.url, "UPDATE baton_jobs SET priority = 5 WHERE workflow_id IS NOT NULL")
    result, _ = await _ack(app, [Ack(first, "completed")], [("default", producer, 1)])
    assert result.taken == {} and result.effects.released_queues == {"default"}
    fetched = await _fetch(app, producer, 1)
    assert [j.id for j in fetched] == [urgent.id]


async def test_a_released_step_of_higher_priority_takes_the_slot_first(pg_app: baton.Baton) -> None:
    """Of the steps one ack releases, a step of lower priority is not handed over while one of
    higher priority released beside it waits (a fetch would take that one first)."""
    app = pg_app
    steps(app)
    wf = baton.Workflow()
    wf.add("root", app.new("hop.step", {}))
    wf.add("low", app.new("hop.step", {"i": 0}, priority=5), deps=["root"])
    wf.add("high", app.new("hop.step", {"i": 1}, priority=1), deps=["root"])
    await app.insert_workflow(wf)
    producer = str(uuid.uuid4())
    (root,) = await _fetch(app, producer)
    result, _ = await _ack(app, [Ack(root, "completed")], [("default", producer, 1)])
    assert [j.step for j in result.taken[producer]] == ["high"]
    assert result.effects.released_queues == {"default"}
    states = query(app.engine.url, "SELECT priority, state FROM baton_jobs WHERE workflow_id IS NOT NULL ORDER BY id")
    assert states == [(0, "completed"), (5, "available"), (1, "executing")]


@pytest.mark.parametrize("slots", [1, 2])
async def test_a_step_and_a_chain_link_released_by_one_batch_share_the_slots(pg_app: baton.Baton, slots: int) -> None:
    """A step and the next link of a chain released by one batch are handed over in id order
    up to the slots on offer; what is left is released for any producer to fetch."""
    app = pg_app
    steps(app)
    await app.insert_workflow(_chain(app, 2))
    links = await app.insert_all([app.new("hop.link", {"k": "a", "i": i}) for i in range(2)])
    producer = str(uuid.uuid4())
    fetched = await _fetch(app, producer)
    assert len(fetched) == 2 and {j.step for j in fetched} == {"s0", None} and links[0].id in {j.id for j in fetched}
    result, trips = await _ack(app, [Ack(j, "completed") for j in fetched], [("default", producer, slots)])
    assert trips == 1
    taken = result.taken[producer]
    assert [j.step for j in taken if j.step] == ["s1"]
    assert [j.id for j in taken if not j.step] == ([links[1].id] if slots == 2 else [])
    assert result.effects.released_queues == (set() if slots == 2 else {"default"})
    link_state = query(app.engine.url, f"SELECT state FROM baton_jobs WHERE id = {links[1].id}")
    assert link_state == ([("executing",)] if slots == 2 else [("available",)])


async def test_a_chain_link_completion_hands_over_the_next_link(pg_app: baton.Baton) -> None:
    app = pg_app
    steps(app)
    links = await app.insert_all([app.new("hop.link", {"k": "a", "i": i}) for i in range(3)])
    producer = str(uuid.uuid4())
    (first,) = await _fetch(app, producer)
    assert first.id == links[0].id
    result, trips = await _ack(app, [Ack(first, "completed")], [("default", producer, 1)])
    assert trips == 1
    assert [j.id for j in result.taken[producer]] == [links[1].id]
    assert query(app.engine.url, "SELECT state FROM baton_jobs ORDER BY id") == [
        ("completed",),
        ("executing",),
        ("suspended",),
    ]


def test_wake_payloads_name_their_origin_and_plain_ones_stay_plain() -> None:
    assert parse_wake("default") == ("default", None)
    assert parse_wake(wake_payload("emails", "node-a")) == ("emails", "node-a")
    assert parse_wake(wake_payload("odd\x1fname", "node-a")) == ("odd\x1fname", "node-a")


async def test_steps_released_on_one_node_wake_another_that_serves_their_queue(make_app: Any) -> None:
    """The acking node skips its own wake-up notification; a node serving the next step's queue
    must still hear it at once (its polling is 30 s away)."""
    a = make_app(queues={"a": 5}, node="node-a", poll_interval=30)
    b = make_app(queues={"b": 5}, node="node-b", poll_interval=30)
    done: list[str] = []
    for app in (a, b):

        @app.worker(name="hop.a", queue="a")
        async def in_a(job: baton.Job) -> None:
            done.append("a")

        @app.worker(name="hop.b", queue="b")
        async def in_b(job: baton.Job) -> None:
            done.append("b")

    finished = asyncio.get_running_loop().create_future()
    async with a, b:
        a.on_workflow_finished(lambda e: finished.done() or finished.set_result(e))
        for _ in range(3):
            wf = baton.Workflow()
            wf.add("one", a.new("hop.a", {}))
            wf.add("two", a.new("hop.b", {}), deps=["one"])
            wf.add("three", a.new("hop.a", {}), deps=["two"])
            await a.insert_workflow(wf)
        for _ in range(200):
            if len(done) == 9:
                break
            await asyncio.sleep(0.05)
    assert sorted(done) == ["a"] * 6 + ["b"] * 3


async def test_many_small_workflows_finish_exactly_once_each(make_app: Any) -> None:
    """Batches of completions across many workflows (group commit) release, hand over and claim
    each workflow's announcement once, on both engines."""
    app = make_app(queues={"default": 20})
    steps(app)
    announced: list[str] = []
    app.on_workflow_finished(lambda e: announced.append(e["workflow_id"]))
    wids = []
    for w in range(30):
        wf = baton.Workflow()
        wf.add("root", app.new("hop.step", {"w": w}))
        for i in range(4):
            wf.add(f"m{i}", app.new("hop.step", {"i": i}), deps=["root"])
        wf.add("fanin", app.new("hop.step", {}), deps=[f"m{i}" for i in range(4)])
        wids.append(await app.insert_workflow(wf))
    async with app:
        for _ in range(400):
            if len(announced) >= 30:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
    assert sorted(announced) == sorted(wids)
    assert (await app.count_jobs()) == {"completed": 180}
    (fanin,) = query(app.engine.url, "SELECT result FROM workflow_nodes WHERE name = 'fanin' LIMIT 1")
    value = json.loads(fanin[0]) if isinstance(fanin[0], str) else fanin[0]
    assert value == {"i": None, "seen": ["m0", "m1", "m2", "m3"]}


def test_array_literals_read_back_as_the_values_sent(pg_url: str) -> None:
    """The hot-path statements take lists as array literals Baton formats itself."""
    import psycopg

    from baton.engines.postgres.engine import _array_literal

    texts = ["plain", "", "NULL", 'quo"te', "back\\slash", "a,b", "{braces}", " spaced ", "ünï", None]
    ints = [1, -2, 9_223_372_036_854_775_807, None]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT %s::text[], %s::bigint[], %s::text[]",
            (_array_literal(texts), _array_literal(ints), _array_literal([])),
        ).fetchone()
    assert row == (texts, ints, [])
    assert _array_literal([1.5]) == [1.5]  # anything else goes to the driver as it is


async def test_every_hop_sends_each_step_event_once(make_app: Any) -> None:
    """Steps handed over by the ack (no fetch) still announce "executing", and every step,
    the last one included, "completed" — once each."""
    app = make_app(queues={"default": 5})
    steps(app)
    got: list[dict[str, Any]] = []
    finished = asyncio.get_running_loop().create_future()
    app.on_workflow_finished(lambda e: finished.done() or finished.set_result(e))
    async with app:
        await app.pause_queue("default", local=True)
        wid = await app.insert_workflow(_chain(app, 4))
        app.subscribe_workflow(wid, got.append)
        await app.resume_queue("default", local=True)
        await asyncio.wait_for(finished, 20)
        for _ in range(100):
            if len(got) >= 8:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # room for duplicates
    by_step: dict[str, list[str]] = {}
    for e in got:
        by_step.setdefault(e["step"], []).append(e["event"])
    assert by_step == {f"s{i}": ["executing", "completed"] for i in range(4)}


async def test_sync_steps_handed_over_by_the_ack_run_on_the_threads(make_app: Any) -> None:
    """Steps the ack hands over start like fetched ones: a sync worker's on the threads."""
    app = make_app(queues={"default": 3})
    threads: list[str] = []

    @app.worker(name="hop.sync", queue="default")
    def sync_step(job: baton.Job) -> int:
        import threading

        threads.append(threading.current_thread().name)
        return int(job.args["i"])

    wf = baton.Workflow()
    previous: list[str] = []
    for i in range(5):
        wf.add(f"s{i}", app.new("hop.sync", {"i": i}), deps=previous)
        previous = [f"s{i}"]
    finished = asyncio.get_running_loop().create_future()
    app.on_workflow_finished(lambda e: finished.done() or finished.set_result(e))
    async with app:
        await app.insert_workflow(wf)
        event = await asyncio.wait_for(finished, 20)
    assert event["status"] == "completed" and event["counts"] == {"completed": 5}
    assert len(threads) == 5 and "MainThread" not in threads


@pytest.mark.parametrize("prune", [False, True], ids=["jobs-and-steps-agree", "a-job-pruned"])
async def test_the_finishing_hop_counts_what_the_summary_counts(make_app: Any, engine_name: str, prune: bool) -> None:
    """The last step's completion claims the workflow with the payload the general path would
    send: counted from the workflow's jobs when every step has its job, and step by step when one
    was pruned meanwhile (its step counts as what it resolved to). A discarded step is named."""
    app = make_app(queues={"default": 5})
    steps(app)
    gate = asyncio.Event()

    @app.worker(name="hop.fail", queue="default", max_attempts=1)
    async def fail(job: baton.Job) -> None:
        raise RuntimeError("no")

    @app.worker(name="hop.last", queue="default")
    async def last(job: baton.Job) -> None:
        await gate.wait()

    wf = baton.Workflow(label="summary", ignore_discarded=True)
    wf.add("early", app.new("hop.step", {"i": 0}))
    wf.add("broken", app.new("hop.fail", {}))
    wf.add("mid", app.new("hop.step", {"i": 1}), deps=["early"])
    wf.add("last", app.new("hop.last", {}), deps=["mid", "broken"])
    finished = asyncio.get_running_loop().create_future()
    app.on_workflow_finished(lambda e: finished.done() or finished.set_result(e))
    async with app:
        wid = await app.insert_workflow(wf)
        for _ in range(200):
            if (await app.workflow_status(wid)).steps["last"] == "executing":
                break
            await asyncio.sleep(0.05)
        if prune:
            early = (await app.workflow_status(wid)).details["early"].job_id
            query(app.engine.url, "DELETE FROM baton_jobs WHERE id = ?", [early])
        gate.set()
        event = await asyncio.wait_for(finished, 20)
        (expected,) = await app.engine.run(wfstore.summaries, [wid])
    assert event == expected
    assert event == {
        "workflow_id": wid,
        "label": "summary",
        "status": "failed",
        "failed_steps": ["broken"],
        "counts": {"completed": 3, "discarded": 1},
    }


async def test_every_step_event_payload_starts_with_the_prefix_nodes_skip_on(pg_app: baton.Baton) -> None:
    """A node with no step subscriber drops step events by their prefix, unparsed: every writer
    of them (the fetch, the one-statement hop, a cancel) sends them as a batch, a JSON array
    starting with that prefix, and finished events go alone, as objects that do not."""
    import psycopg

    from baton.store.effects import STEP_EVENTS

    app = pg_app
    steps(app)

    @app.worker(name="hop.stuck", queue="default")
    async def stuck(job: baton.Job) -> None:
        await asyncio.sleep(30)

    listener = await psycopg.AsyncConnection.connect(app.engine.url, autocommit=True)
    await listener.execute(f"LISTEN {app.engine.channel('workflow')}")
    finished = asyncio.get_running_loop().create_future()
    app.on_workflow_finished(lambda e: finished.done() or finished.set_result(e))
    wf = _chain(app, 3)
    wf.add("stuck", app.new("hop.stuck", {}))
    try:
        async with app:
            wid = await app.insert_workflow(wf)
            for _ in range(200):
                status = await app.workflow_status(wid)
                if status.steps["s2"] == "completed" and status.steps["stuck"] == "executing":
                    break
                await asyncio.sleep(0.05)
            await app.cancel_job(status.details["stuck"].job_id)
            await asyncio.wait_for(finished, 20)
        payloads: list[str] = []
        async for note in listener.notifies(timeout=0.5):
            payloads.append(note.payload)
    finally:
        await listener.close()
    events = []
    for payload in payloads:
        message = json.loads(payload)
        if payload.startswith(STEP_EVENTS):
            assert isinstance(message, list) and all(e["type"] == "step" for e in message), payload
            events += message
        else:
            assert isinstance(message, dict) and message["type"] == "finished", payload
            events.append(message)
    kinds = {(e["type"], e.get("event")) for e in events}
    assert {("step", "executing"), ("step", "completed"), ("step", "cancelled"), ("finished", None)} <= kinds


@pytest.mark.parametrize("take", [True, False], ids=["handed-over", "released"])
async def test_a_hop_reads_no_backlog_of_other_available_jobs(pg_app: baton.Baton, take: bool) -> None:
    """Releasing the next step, finding it among the available jobs (to hand it over, or to
    wake its queue) and checking the queue's priorities look it up by id or by its queue: the
    hop reads none of a backlog, available or waiting, of another queue."""
    app = pg_app
    steps(app)
    await app.insert_all([app.new("hop.step", {"i": i}, queue="other") for i in range(500)])
    waiting = baton.Workflow()  # and 300 steps waiting for their dependency
    waiting.add("root", app.new("hop.step", {}, queue="other"))
    for i in range(300):
        waiting.add(f"w{i}", app.new("hop.step", {"i": i}, queue="other"), deps=["root"])
    await app.insert_workflow(waiting)
    await app.insert_workflow(_chain(app, 2))
    producer = str(uuid.uuid4())
    (first,) = await _fetch(app, producer)
    offer = [("default", producer, 1)] if take else []

    async def op(conn: Any) -> Any:
        result = await transitions.ack_jobs(conn, [Ack(first, "completed")], "n1", "origin-1", offer)
        cur = await conn._conn.execute(  # the psycopg connection under Baton's
            "SELECT indexrelid::regclass::text, pg_stat_get_xact_tuples_returned(indexrelid) FROM pg_index"
            " WHERE indrelid = 'baton_jobs'::regclass"
        )
        return result, dict(await cur.fetchall())

    result, reads = await app.engine.run(op)  # one transaction: its own index reads are countable
    assert [j.step for j in result.taken.get(producer, [])] == (["s1"] if take else [])
    assert sum(reads.values()) < 100, sorted(reads.items(), key=lambda kv: -kv[1])[:3]


def _events(n: int, pad: int = 0) -> list[str]:
    return [
        json.dumps({"type": "step", "step": f"s{i}" + "x" * (pad * (i % 3)), "job_id": i}, separators=(",", ":"))
        for i in range(n)
    ]


def test_python_step_batches_keep_order_and_stay_under_the_payload_limit() -> None:
    from baton.store.effects import BATCH_BYTES, STEP_EVENTS, step_batches

    events = [*_events(500, pad=900), json.dumps({"type": "step", "step": "y" * 7_000}, separators=(",", ":"))]
    batches = step_batches(events)
    assert 1 < len(batches) < len(events)
    assert all(len(b.encode()) <= BATCH_BYTES and b.startswith(STEP_EVENTS) for b in batches)
    assert [json.dumps(e, separators=(",", ":")) for b in batches for e in json.loads(b)] == events
    assert step_batches([]) == []


async def test_postgres_step_batches_keep_order_and_stay_under_the_payload_limit(pg_app: baton.Baton) -> None:
    """baton_notify_steps packs a statement's step events as Python's step_batches does: in
    order, NULLs skipped, each notification under the limit."""
    import psycopg

    from baton.store.effects import BATCH_BYTES, STEP_EVENTS

    app = pg_app
    await app.migrate()
    events = _events(400, pad=700)
    channel = "baton_test_batches"
    async with await psycopg.AsyncConnection.connect(app.engine.url, autocommit=True) as listener:
        await listener.execute(f"LISTEN {channel}")
        async with await psycopg.AsyncConnection.connect(app.engine.url, autocommit=True) as sender:
            await sender.execute(f"SET search_path = {app.engine.schema}")
            cur = await sender.execute(
                "SELECT baton_notify_steps(%s, %s::text[])", [channel, [*events[:5], None, *events[5:]]]
            )
            row = await cur.fetchone()
        payloads = [n.payload async for n in listener.notifies(timeout=0.5)]
    assert row is not None and row[0] == len(payloads)
    assert 1 < len(payloads) < len(events)
    assert all(len(p.encode()) <= BATCH_BYTES and p.startswith(STEP_EVENTS) for p in payloads)
    assert [json.dumps(e, separators=(",", ":")) for p in payloads for e in json.loads(p)] == events


async def test_a_late_hop_reads_none_of_the_hops_before_it(pg_app: baton.Baton) -> None:
    """The 120th hop of a sequential workflow, planned with statistics that say the table is that
    one workflow (ANALYZE of a young table), while another transaction holds a snapshot from
    before the first hop (so no index entry the earlier hops left behind may be removed or
    marked dead): the ack, the resolution and count-down, the release of the next step and its
    hand-over read baton_jobs and workflow_nodes by key, not through the 119 steps that ran
    before. (A one-key chain's release of its next link still reads the links it ran under such
    statistics: see bench/results/hops-latest.md.)"""
    app = pg_app
    steps(app)
    n = 121
    await app.insert_workflow(_chain(app, n))
    producer = str(uuid.uuid4())
    offer = [("default", producer, 1)]
    (job,) = await _fetch(app, producer)
    with psycopg.connect(app.engine.url) as old:  # a long report, say: its snapshot stays
        old.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        old.execute("SELECT count(*) FROM baton_jobs")
        for _ in range(n - 2):
            result, _ = await _ack(app, [Ack(job, "completed")], offer)
            (job,) = result.taken[producer]
        query(app.engine.url, "ANALYZE baton_jobs, workflow_nodes, baton_workflow_deps")
        result, reads = await app.engine.run(_late_hop, job, offer)
        old.rollback()
    assert len(result.taken[producer]) == 1
    assert sum(reads.values()) < 40, sorted(reads.items(), key=lambda kv: -kv[1])[:3]


async def test_a_batch_with_an_ack_that_does_not_apply_and_a_dependent_acked_with_its_dep(pg_app: baton.Baton) -> None:
    """The hop function keeps exactly the acks that applied: one batch acks a root `a`, its
    dependent `b` (running although `a` was unresolved: started by hand), and a step `c` under
    an attempt it no longer has (fenced). `a` and `b` are completed, resolved, their stats
    written; `b`, resolved by the batch itself, is not counted down; `c` keeps running,
    unresolved, with no stats."""
    app = pg_app
    steps(app)
    wf = baton.Workflow(label="filters")
    wf.add("a", app.new("hop.step", {"i": 0}))
    wf.add("b", app.new("hop.step", {"i": 1}), deps=["a"])
    wf.add("c", app.new("hop.step", {"i": 2}))
    wid = await app.insert_workflow(wf)
    ids = dict(query(app.engine.url, f"SELECT name, job_id FROM workflow_nodes WHERE workflow_id = '{wid}'"))
    query(app.engine.url, f"UPDATE baton_jobs SET state = 'available' WHERE id = {ids['b']}")  # started by hand
    producer = str(uuid.uuid4())
    jobs = {j.id: j for j in await _fetch(app, producer)}
    assert set(jobs) == set(ids.values())
    fenced = jobs[ids["c"]]
    fenced.attempt += 1  # not the attempt that is running: its ack is fenced
    acks = [Ack(jobs[ids["a"]], "completed"), Ack(jobs[ids["b"]], "completed"), Ack(fenced, "completed")]
    result, _ = await _ack(app, acks, [])
    assert sorted(a.job.id for a in result.acked) == sorted([ids["a"], ids["b"]])
    states = dict(query(app.engine.url, "SELECT id, state FROM baton_jobs"))
    assert (states[ids["a"]], states[ids["b"]], states[ids["c"]]) == ("completed", "completed", "executing")
    nodes = {
        name: (resolution, pending)
        for name, resolution, pending in query(
            app.engine.url, f"SELECT name, resolution, pending FROM workflow_nodes WHERE workflow_id = '{wid}'"
        )
    }
    assert nodes == {"a": ("completed", 0), "b": ("completed", 1), "c": (None, 0)}
    stats = {r[0] for r in query(app.engine.url, "SELECT job_id FROM workflow_step_stats")}
    assert stats == {ids["a"], ids["b"]}


async def _late_hop(conn: Any, job: baton.Job, offer: list[tuple[str, str, int]]) -> Any:
    """Ack `job` (taking its successor) in one transaction, with the index rows that read."""

    async def reads() -> dict[str, int]:
        cur = await conn._conn.execute(  # the psycopg connection under Baton's
            "SELECT indexrelid::regclass::text, pg_stat_get_xact_tuples_returned(indexrelid) FROM pg_index"
            " WHERE indrelid IN ('baton_jobs'::regclass, 'workflow_nodes'::regclass)"
        )
        return dict(await cur.fetchall())

    # The counters include what earlier transactions of the connection left unreported; one
    # transaction (engine.run) makes its own index reads countable.
    before = await reads()
    result = await transitions.ack_jobs(conn, [Ack(job, "completed")], "n1", "origin-1", offer)
    after = await reads()
    return result, {k: after[k] - before.get(k, 0) for k in after}


async def test_an_ack_offers_no_slots_while_its_producer_has_jobs_to_fetch(make_app: Any) -> None:
    """Slots set aside for the steps an ack releases would hold back a fetch the producer is
    about to make: a woken producer (an insert, a full batch) offers none until its fetch
    returns, and an idle one offers its free slots."""
    app = make_app(queues={"default": 5}, poll_interval=30)
    steps(app)

    async def offers(expected: int) -> bool:
        for _ in range(200):
            if producer.free_for_offer() == expected:
                return True
            await asyncio.sleep(0.01)
        return False

    async with app:
        assert app._node is not None
        producer = app._node.producers["default"]
        assert await offers(5)  # idle: its last fetch found nothing
        producer.wake()  # as an insert's notification does
        assert producer.free_for_offer() == 0
        assert await offers(5)  # the fetch came back (empty): idle again
