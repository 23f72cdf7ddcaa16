"""Workflow features (SPEC section 3): retry idempotency of recorded results, appending steps
to a running workflow, live step events on every node, workflow_status and list_workflows."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime
from typing import Any

import pytest

import baton
from conftest import wait_for
from wf_nodes import is_postgres, query


@pytest.fixture
def workers(app: baton.Baton) -> Any:
    class W:
        ok = app.worker(name="feat.ok")(lambda job: {"ok": job.step})
        held = app.worker(name="feat.held", queue="held")(lambda job: {"held": job.step})
        discard = app.worker(name="feat.discard")(lambda job: baton.Discard("bad"))

    return W


async def _job_id(app: baton.Baton, wid: str, name: str) -> int:
    return (await app.workflow_status(wid)).details[name].job_id


def _record_result(url: str, job_id: int, result: Any) -> None:
    """Write a recorded result as an earlier attempt would have, before its ack was lost."""
    cast = "?::jsonb" if is_postgres(url) else "?"
    recorded = "true" if is_postgres(url) else "1"
    value = None if result is None else json.dumps(result)
    query(url, f"UPDATE workflow_nodes SET recorded = {recorded}, result = {cast} WHERE job_id = ?", [value, job_id])
    # The earlier attempt was attempt 1; the job is available again (rescued).
    query(url, "UPDATE baton_jobs SET attempt = 1 WHERE id = ?", [job_id])


# --------------------------------------------------------------------------- retry idempotency


async def test_recorded_result_completes_the_retry_without_running_the_body(app):
    calls: list[str] = []
    seen: dict[str, Any] = {}

    @app.worker(name="feat.charge")
    def charge(job: baton.Job) -> Any:
        calls.append(job.step or "")
        return {"charged": "again"}

    @app.worker(name="feat.receipt")
    def receipt(job: baton.Job) -> Any:
        seen["charge"] = job.upstream("charge")
        seen["nothing"] = job.upstream("nothing")
        return {"sent": True}

    wf = baton.Workflow(label="payment")
    wf.add("charge", charge.new({"amount": 10}))
    wf.add("nothing", charge.new({}))
    wf.add("receipt", receipt.new({}), deps=["charge", "nothing"])
    wid = await app.insert_workflow(wf)
    charge_id = await _job_id(app, wid, "charge")
    nothing_id = await _job_id(app, wid, "nothing")
    _record_result(app.url, charge_id, {"charged": 10, "tx": "abc"})
    _record_result(app.url, nothing_id, None)

    job = await app.get_job(charge_id)
    assert job is not None and job.state == "available" and job.attempt == 1
    assert await app.drain() == {"completed": 3}
    assert calls == [], "the body of a step whose result was recorded must not run again"
    assert seen == {"charge": {"charged": 10, "tx": "abc"}, "nothing": None}
    status = await app.workflow_status(wid)
    assert status.steps == {"charge": "completed", "nothing": "completed", "receipt": "completed"}
    assert status.details["charge"].result == {"charged": 10, "tx": "abc"}
    job = await app.get_job(charge_id)
    assert job is not None
    assert job.attempt == 2
    assert job.meta.get("replayed") is True


async def test_unrecorded_step_runs_its_body_on_retry(app):
    calls: list[int] = []

    @app.worker(name="feat.runs")
    def runs(job: baton.Job) -> int:
        calls.append(job.attempt)
        return 5

    wf = baton.Workflow()
    wf.add("s", runs.new({}))
    wid = await app.insert_workflow(wf)
    query(app.url, "UPDATE baton_jobs SET attempt = 1 WHERE id = ?", [await _job_id(app, wid, "s")])
    assert await app.drain() == {"completed": 1}
    assert calls == [2]


# --------------------------------------------------------------------------- recorded results

FLOATS = {
    "big": 1e16,
    "bigger": -2.5e20,
    "huge": 1e308,
    "odd": 1e23,
    "tiny": 5e-324,
    "small": 1e-7,
    "plain": [0.1, 2.5, 1.0, 123456789.125],
    "int": 10**16,
    "text": 'a "1e+16" and 2e+17 in a string \\" 3e+18',
    "nested": [{"k": 3e20, "e+": [1.5e300, -1e16]}],
}


def _typed(value: Any) -> str:
    """The value as JSON with sorted keys: an int where a float was differs (1e16 == 10**16)."""
    return json.dumps(value, sort_keys=True)


async def test_recorded_float_results_read_back_as_the_floats_returned(app):
    """On PostgreSQL jsonb read 1e16 (Python writes 1e+16) back as the integer
    10000000000000000; a step's upstream must equal what its dependency returned, type included."""
    seen: dict[str, Any] = {}

    @app.worker(name="feat.floats")
    def floats(job: baton.Job) -> Any:
        return FLOATS

    @app.worker(name="feat.float_reader")
    def reader(job: baton.Job) -> Any:
        seen["upstream"] = job.upstream("floats")
        return job.upstream("floats")

    wf = baton.Workflow()
    wf.add("floats", floats.new({}))
    wf.add("reader", reader.new({}), deps=["floats"])
    wid = await app.insert_workflow(wf)
    assert await app.drain() == {"completed": 2}
    assert _typed(seen["upstream"]) == _typed(FLOATS)
    assert seen["upstream"] == FLOATS
    status = await app.workflow_status(wid)
    assert _typed(status.details["floats"].result) == _typed(FLOATS)
    assert _typed(status.details["reader"].result) == _typed(FLOATS)


# --------------------------------------------------------------------------- append_workflow


async def test_append_to_a_running_workflow(app, workers, events):
    events.attach(("baton", "workflow", "finished"))
    order: list[str] = []

    @app.worker(name="feat.track")
    def track(job: baton.Job) -> Any:
        order.append(job.step or "")
        return {"all": sorted(job.upstream_all())}

    wf = baton.Workflow(label="growing")
    wf.add("a", track.new({}))
    wf.add("b", track.new({}), deps=["a"])
    wid = await app.insert_workflow(wf)

    # Two calls: steps that depend on each other in one append hit a bug (see the xfail below).
    more = baton.Workflow()
    more.add("c", track.new({}), deps=["a"])
    assert await app.append_workflow(wid, more) == ["c"]
    more = baton.Workflow()
    more.add("d", track.new({}), deps=["c", "b"])
    assert await app.append_workflow(wid, more) == ["d"]
    status = await app.workflow_status(wid)
    assert status.steps == {"a": "available", "b": "suspended", "c": "suspended", "d": "suspended"}
    assert status.label == "growing"

    assert await app.drain() == {"completed": 4}
    pos = {n: i for i, n in enumerate(order)}
    assert pos["a"] < pos["b"] < pos["d"] and pos["a"] < pos["c"] < pos["d"]
    status = await app.workflow_status(wid)
    assert status.finished and status.status == "completed"
    assert status.details["d"].result == {"all": ["b", "c"]}
    finished = events.of(("baton", "workflow", "finished"))
    assert len(finished) == 1 and finished[0][0]["total_count"] == 4


async def test_appended_step_after_its_dependency_completed_is_released_in_the_same_call(app, workers):
    wf = baton.Workflow()
    wf.add("a", workers.ok.new({}))
    wf.add("keep_open", workers.held.new({}))
    wid = await app.insert_workflow(wf)
    assert await app.drain(queue="default") == {"completed": 1}

    more = baton.Workflow()
    more.add("late", workers.ok.new({}), deps=["a"])
    more.add("free", workers.ok.new({}))
    await app.append_workflow(wid, more)
    later = baton.Workflow()
    later.add("later", workers.ok.new({}), deps=["late"])
    await app.append_workflow(wid, later)
    status = await app.workflow_status(wid)
    assert status.steps["late"] == "available"  # not waiting for an event that already happened
    assert status.steps["later"] == "suspended"
    assert status.steps["free"] == "available"
    assert await app.drain() == {"completed": 4}
    status = await app.workflow_status(wid)
    assert status.finished and status.counts == {"completed": 5}


async def test_appended_step_after_its_dependency_was_discarded_is_cancelled_in_the_same_call(app, workers):
    wf = baton.Workflow()
    wf.add("bad", workers.discard.new({}))
    wf.add("keep_open", workers.held.new({}))
    wid = await app.insert_workflow(wf)
    assert await app.drain(queue="default") == {"discarded": 1}

    more = baton.Workflow()
    more.add("after_bad", workers.ok.new({}), deps=["bad"])
    more.add("tolerant", workers.ok.new({}), deps=["bad"], ignore_discarded=True)
    await app.append_workflow(wid, more)
    chained = baton.Workflow()
    chained.add("chained", workers.ok.new({}), deps=["after_bad"])
    await app.append_workflow(wid, chained)
    status = await app.workflow_status(wid)
    assert status.steps["after_bad"] == "cancelled"
    assert status.steps["chained"] == "cancelled"
    assert status.steps["tolerant"] == "available"
    assert status.details["after_bad"].reason == "dep_discarded"
    assert status.details["chained"].reason == "dep_cancelled"
    assert not status.finished
    assert await app.drain() == {"completed": 2}
    status = await app.workflow_status(wid)
    assert status.finished and status.status == "failed"


async def test_append_steps_that_depend_on_each_other_in_one_call(app, workers):
    wf = baton.Workflow()
    wf.add("a", workers.ok.new({}))
    wid = await app.insert_workflow(wf)
    more = baton.Workflow()
    more.add("c", workers.ok.new({}), deps=["a"])
    more.add("d", workers.ok.new({}), deps=["c"])
    assert await app.append_workflow(wid, more) == ["c", "d"]
    assert await app.drain() == {"completed": 3}


async def test_append_to_a_finished_workflow_raises(app, workers):
    wf = baton.Workflow()
    wf.add("a", workers.ok.new({}))
    wid = await app.insert_workflow(wf)
    await app.drain()
    assert (await app.workflow_status(wid)).finished
    before = await app.count_jobs()
    more = baton.Workflow()
    more.add("b", workers.ok.new({}), deps=["a"])
    with pytest.raises(baton.WorkflowError, match="finished"):
        await app.append_workflow(wid, more)
    assert await app.count_jobs() == before
    assert list((await app.workflow_status(wid)).steps) == ["a"]


async def test_append_validates_names_deps_and_the_workflow_id(app, workers):
    wf = baton.Workflow()
    wf.add("a", workers.held.new({}))
    wid = await app.insert_workflow(wf)
    before = await app.count_jobs()

    clash = baton.Workflow()
    clash.add("a", workers.ok.new({}))
    with pytest.raises(baton.WorkflowError) as err:
        await app.append_workflow(wid, clash)
    assert err.value.step == "a"

    unknown = baton.Workflow()
    unknown.add("b", workers.ok.new({}), deps=["nope"])
    with pytest.raises(baton.WorkflowError) as err:
        await app.append_workflow(wid, unknown)
    assert err.value.step == "b" and "'nope'" in str(err.value)

    ok = baton.Workflow()
    ok.add("b", workers.ok.new({}), deps=["a"])
    with pytest.raises(baton.WorkflowError, match="no workflow"):
        await app.append_workflow("00000000-0000-0000-0000-000000000000", ok)
    with pytest.raises(baton.ValidationError):
        await app.append_workflow("", ok)
    with pytest.raises(baton.WorkflowError, match="empty"):
        await app.append_workflow(wid, baton.Workflow())
    assert await app.count_jobs() == before


async def test_append_can_depend_on_an_existing_sub_workflow(app, workers):
    report = baton.Workflow()
    report.add("x", workers.ok.new({}))
    report.add("y", workers.ok.new({}), deps=["x"])
    wf = baton.Workflow()
    wf.add_workflow("report", report)
    wf.add("keep_open", workers.held.new({}))
    wid = await app.insert_workflow(wf)
    more = baton.Workflow()
    more.add("publish", workers.ok.new({}), deps=["report"])
    await app.append_workflow(wid, more)
    await app.drain(queue="default")
    assert (await app.workflow_status(wid)).steps["publish"] == "completed"


# --------------------------------------------------------------------------- live step events


def _step_workers(app: baton.Baton) -> dict[str, Any]:
    attempts: dict[str, int] = {}

    @app.worker(name="feat.ev_flaky", max_attempts=3, backoff=lambda job: 0)
    def flaky(job: baton.Job) -> int:
        if job.attempt == 1:
            raise RuntimeError("first try fails")
        return 1

    @app.worker(name="feat.ev_snoozy")
    def snoozy(job: baton.Job) -> Any:
        attempts["snoozy"] = attempts.get("snoozy", 0) + 1
        return baton.Snooze(0) if attempts["snoozy"] == 1 else 2

    return {
        "ok": app.worker(name="feat.ev_ok")(lambda job: 0),
        "flaky": flaky,
        "snoozy": snoozy,
        "discard": app.worker(name="feat.ev_discard")(lambda job: baton.Discard("no")),
        "cancel": app.worker(name="feat.ev_cancel")(lambda job: baton.Cancel("stop")),
    }


def _events_by_step(events: list[dict[str, Any]], wid: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in events:
        if e["workflow_id"] == wid:
            out.setdefault(e["step"], []).append(e["event"])
    return out


EXPECTED_STEP_EVENTS = {
    "ok": ["executing", "completed"],
    "flaky": ["executing", "retryable", "executing", "completed"],
    "snoozy": ["executing", "snoozed", "executing", "completed"],
    "discards": ["executing", "discarded"],
    "cancels": ["executing", "cancelled"],
    "after": ["executing", "completed"],
}


async def test_subscribe_workflow_receives_step_events_on_every_started_node(make_app):
    runner = make_app(
        queues={"default": 5}, node="runner", plugins=[baton.plugins.Stager(interval=0.1)], poll_interval=0.2
    )
    other = make_app(queues={"elsewhere": 1}, node="other", poll_interval=0.2)
    w = _step_workers(runner)
    other.register(*w.values())
    one: list[dict[str, Any]] = []
    everything: list[dict[str, Any]] = []
    on_other: list[dict[str, Any]] = []
    other_all: list[dict[str, Any]] = []
    finished = asyncio.Event()
    runner.on_workflow_finished(lambda e: finished.set())

    async with runner, other:
        wf = baton.Workflow(label="live")
        wf.add("ok", w["ok"].new({}))
        wf.add("flaky", w["flaky"].new({}))
        wf.add("snoozy", w["snoozy"].new({}))
        wf.add("discards", w["discard"].new({}))
        wf.add("cancels", w["cancel"].new({}))
        wf.add("after", w["ok"].new({}), deps=["ok", "flaky", "snoozy"])
        noise = baton.Workflow(label="noise")
        noise.add("n", w["ok"].new({}))
        # Subscribe before inserting: the id is known only after insert, so hold the jobs first.
        await runner.pause_queue("default", local=True)
        wid = await runner.insert_workflow(wf)
        noise_wid = await runner.insert_workflow(noise)
        runner.subscribe_workflow(wid, one.append)
        runner.subscribe_workflow(None, everything.append)
        other.subscribe_workflow(wid, on_other.append)
        other.subscribe_workflow(None, other_all.append)
        await runner.resume_queue("default", local=True)
        await asyncio.wait_for(finished.wait(), 20)

        def complete(got: list[dict[str, Any]], target: str = wid) -> bool:
            return _events_by_step(got, target) == EXPECTED_STEP_EVENTS

        await wait_for(lambda: complete(one) and complete(on_other) and complete(other_all), timeout=10)
        await wait_for(lambda: _events_by_step(everything, noise_wid) == {"n": ["executing", "completed"]}, timeout=10)
        await asyncio.sleep(0.5)  # room for duplicates

    for got in (one, on_other):
        assert _events_by_step(got, wid) == EXPECTED_STEP_EVENTS
        assert {e["workflow_id"] for e in got} == {wid}, "a per-workflow subscription sees only its workflow"
    for got in (everything, other_all):
        assert _events_by_step(got, wid) == EXPECTED_STEP_EVENTS
        assert _events_by_step(got, noise_wid) == {"n": ["executing", "completed"]}
    status = await runner.workflow_status(wid)
    for e in one:
        assert set(e) == {"workflow_id", "step", "job_id", "event"}
        assert e["job_id"] == status.details[e["step"]].job_id


async def test_subscribe_workflow_sees_cascade_cancelled_steps(make_app):
    app = make_app(queues={"default": 5}, poll_interval=0.2)
    w = _step_workers(app)
    got: list[dict[str, Any]] = []
    finished = asyncio.Event()
    app.on_workflow_finished(lambda e: finished.set())
    async with app:
        app.subscribe_workflow(None, got.append)
        await app.pause_queue("default", local=True)
        wf = baton.Workflow()
        wf.add("discards", w["discard"].new({}))
        wf.add("dependent", w["ok"].new({}), deps=["discards"])
        wid = await app.insert_workflow(wf)
        await app.resume_queue("default", local=True)
        await asyncio.wait_for(finished.wait(), 10)
        await asyncio.sleep(1.0)
    assert _events_by_step(got, wid).get("dependent") == ["cancelled"]


async def test_unsubscribe_stops_step_events(make_app):
    app = make_app(queues={"default": 5}, poll_interval=0.2)
    ok = app.worker(name="feat.unsub")(lambda job: 0)
    got: list[dict[str, Any]] = []
    async with app:
        stop = app.subscribe_workflow(None, got.append)
        wf = baton.Workflow()
        wf.add("a", ok.new({}))
        wid = await app.insert_workflow(wf)
        await wait_for(lambda: any(e["event"] == "completed" for e in got), timeout=10)
        stop()
        n = len(got)
        wf2 = baton.Workflow()
        wf2.add("a", ok.new({}))
        wid2 = await app.insert_workflow(wf2)
        await wait_for(lambda: app.workflow_status(wid2), timeout=5)

        async def done() -> bool:
            return (await app.workflow_status(wid2)).finished

        await wait_for(done, timeout=10)
        await asyncio.sleep(0.5)
    assert len(got) == n
    assert {e["workflow_id"] for e in got} == {wid}
    with pytest.raises(baton.ValidationError):
        app.subscribe_workflow(wid, None)  # type: ignore[arg-type]


async def test_subscribe_workflow_validates_the_workflow_id_and_callback(app):
    """A job id (int) was accepted and never fired; a list raised a bare TypeError."""
    for bad in (123, [str(uuid.uuid4())], b"abc", "", "a\x00b"):
        with pytest.raises(baton.ValidationError, match="workflow_id") as info:
            app.subscribe_workflow(bad, lambda event: None)
        assert info.value.field == "workflow_id"
    with pytest.raises(baton.ValidationError, match="callback"):
        app.subscribe_workflow(str(uuid.uuid4()), "not callable")  # type: ignore[arg-type]
    assert not app.wants_step_events(), "a refused subscription registers nothing"
    app.subscribe_workflow(None, lambda event: None)()  # every workflow, then unsubscribed


# --------------------------------------------------------------------------- status and listing


async def test_workflow_status_describes_a_workflow_as_it_runs(app, workers):
    wf = baton.Workflow(label="status-demo")
    wf.add("a", workers.ok.new({}))
    wf.add("b", workers.ok.new({}), deps=["a"])
    wf.add("c", workers.ok.new({}), deps=["a", "b"])
    wf.add("h", workers.held.new({}))
    wid = await app.insert_workflow(wf)

    status = await app.workflow_status(wid)
    assert isinstance(status, baton.WorkflowStatus)
    assert status.workflow_id == wid
    assert status.label == "status-demo"
    assert status.steps == {"a": "available", "b": "suspended", "c": "suspended", "h": "available"}
    assert status.counts == {"available": 2, "suspended": 2}
    assert status.finished is False and status.status == "running"
    assert status.inserted_at is not None
    assert status.waiting["a"] == "available"
    assert "waiting on a" in status.waiting["b"]
    assert "a" in status.waiting["c"] and "b" in status.waiting["c"]
    assert status.details["c"].deps == ["a", "b"]
    assert status.details["c"].pending == 2
    assert status.details["b"].worker == "feat.ok" and status.details["b"].queue == "default"

    await app.drain(queue="default")
    status = await app.workflow_status(wid)
    assert status.steps == {"a": "completed", "b": "completed", "c": "completed", "h": "available"}
    assert status.counts == {"completed": 3, "available": 1}
    assert status.waiting == {"h": "available"}
    assert status.status == "running" and not status.finished
    assert status.details["b"].result == {"ok": "b"}
    assert status.details["b"].attempt == 1

    await app.drain(queue="held")
    status = await app.workflow_status(wid)
    assert status.finished and status.status == "completed"
    assert status.waiting == {}
    assert status.failed_steps == []

    failing = baton.Workflow(label="status-failing")
    failing.add("x", workers.discard.new({}))
    failing.add("y", workers.ok.new({}), deps=["x"])
    fid = await app.insert_workflow(failing)
    await app.drain()
    status = await app.workflow_status(fid)
    assert status.finished and status.status == "failed"
    assert status.counts == {"discarded": 1, "cancelled": 1}
    assert status.failed_steps == ["x", "y"]

    with pytest.raises(baton.ValidationError, match="no workflow"):
        await app.workflow_status("does-not-exist")


async def test_workflow_status_explains_a_missed_release(app, workers):
    wf = baton.Workflow()
    wf.add("a", workers.ok.new({}))
    wf.add("b", workers.ok.new({}), deps=["a"])
    wid = await app.insert_workflow(wf)
    await app.drain()
    # Simulate a lost release: the step is back to suspended with nothing pending.
    b = (await app.workflow_status(wid)).details["b"].job_id
    query(app.url, "DELETE FROM workflow_completions WHERE workflow_id = ?", [wid])
    query(app.url, "UPDATE baton_jobs SET state = 'suspended', attempt = 0 WHERE id = ?", [b])
    query(app.url, "UPDATE workflow_nodes SET resolution = NULL, resolved_at = NULL WHERE job_id = ?", [b])
    status = await app.workflow_status(wid)
    assert "missed_release" in status.waiting["b"]
    result = await baton.plugins.Lifeline().sweep(app)
    assert b in result["released_steps"]
    job = await app.get_job(b)
    assert job is not None and job.state == "available" and job.meta["repair"] == "missed_release"
    assert (await app.workflow_status(wid)).details["b"].reason == "missed_release"
    assert await app.drain() == {"completed": 1}
    assert (await app.workflow_status(wid)).finished


async def test_list_workflows(app, workers):
    wids = []
    for i in range(3):
        wf = baton.Workflow(label="nightly" if i < 2 else "weekly")
        wf.add("a", workers.ok.new({}))
        wf.add("b", workers.ok.new({}), deps=["a"])
        wids.append(await app.insert_workflow(wf))
        await asyncio.sleep(0.01)
    # Finish the first one only.
    first_a = await _job_id(app, wids[0], "a")
    await app.cancel_all_jobs(ids=[first_a])

    listed = await app.list_workflows()
    assert [w["id"] for w in listed] == list(reversed(wids)), "newest first"
    by_id = {w["id"]: w for w in listed}
    assert by_id[wids[0]]["label"] == "nightly"
    assert by_id[wids[2]]["label"] == "weekly"
    assert by_id[wids[0]]["steps"] == 2
    assert by_id[wids[0]]["resolved"] == 2
    assert by_id[wids[0]]["completion_status"] == "failed"
    assert by_id[wids[1]]["resolved"] == 0
    assert by_id[wids[1]]["completion_status"] is None

    nightly = await app.list_workflows(label="nightly")
    assert [w["id"] for w in nightly] == [wids[1], wids[0]]
    assert [w["id"] for w in await app.list_workflows(limit=1)] == [wids[2]]
    assert await app.list_workflows(label="nope") == []


async def test_list_workflows_gives_aware_datetimes_on_every_engine(app, workers):
    """Timestamps as workflow_status gives them: aware datetimes, not SQLite's float seconds."""
    wf = baton.Workflow(label="times")
    wf.add("a", workers.ok.new({}))
    wid = await app.insert_workflow(wf)
    await app.drain()
    (row,) = await app.list_workflows()
    status = await app.workflow_status(wid)
    for key in ("inserted_at", "announced_at"):
        assert isinstance(row[key], datetime), (key, row[key])
        assert row[key].utcoffset() is not None, key
    assert row["inserted_at"] == status.inserted_at
    assert row["announced_at"] == status.announced_at
    assert (row["steps"], row["resolved"]) == (1, 1)
