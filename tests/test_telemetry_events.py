"""Telemetry events: attach/detach semantics, the failing-handler rule, and the measurements and
metadata of the events Baton emits today, produced by real jobs on both engines."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import baton
from baton import telemetry
from baton.store import transitions as jobs_store
from conftest import WORKFLOW_TABLES

START = ("baton", "job", "start")
STOP = ("baton", "job", "stop")
EXCEPTION = ("baton", "job", "exception")


def _noop(event: Any, measurements: Any, metadata: Any) -> None:
    return None


# --------------------------------------------------------------------------- attach / detach


def test_attach_rejects_a_duplicate_id_and_detach_returns_whether_it_was_attached() -> None:
    telemetry.attach("dup-test", STOP, _noop)
    try:
        with pytest.raises(ValueError, match="already attached"):
            telemetry.attach("dup-test", EXCEPTION, _noop)
        # The failed attach must not have replaced the original's events.
        assert telemetry.list_handlers()["dup-test"] == (STOP,)
    finally:
        assert telemetry.detach("dup-test") is True
    assert telemetry.detach("dup-test") is False
    assert "dup-test" not in telemetry.list_handlers()
    assert not telemetry.has_handlers(STOP) or all(hid != "dup-test" for hid, _ in telemetry.handlers(STOP))


def test_attach_validates_the_event_and_the_handler() -> None:
    with pytest.raises(ValueError, match="tuple of strings"):
        telemetry.attach("bad-event", (), _noop)
    with pytest.raises(ValueError, match="tuple of strings"):
        telemetry.attach("bad-event", ("baton", 1), _noop)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="callable"):
        telemetry.attach("bad-fn", STOP, "not a function")  # type: ignore[arg-type]
    assert "bad-event" not in telemetry.list_handlers()
    assert "bad-fn" not in telemetry.list_handlers()


def test_attach_refuses_a_string_or_none_event_and_attach_many_a_single_event() -> None:
    """A string is not an event (it was split into characters and accepted: the handler never
    fired); attach_many given one event tuple took its strings as events; None was a TypeError."""
    with pytest.raises(ValueError, match=r"not the string 'baton.job.stop': write \('baton', 'job', 'stop'\)"):
        telemetry.attach("str-event", "baton.job.stop", _noop)
    with pytest.raises(ValueError, match=r"tuple of strings.*got NoneType None"):
        telemetry.attach("none-event", None, _noop)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"takes a list of events, got one event \('baton', 'job', 'stop'\)"):
        telemetry.attach_many("one-event", STOP, _noop)
    with pytest.raises(ValueError, match="takes a list of events"):
        telemetry.attach_many("str-events", "baton.job.stop", _noop)
    with pytest.raises(ValueError, match=r"takes a list of events.*got NoneType None"):
        telemetry.attach_many("none-events", None, _noop)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"not the string 'baton\.job\.stop'"):
        telemetry.attach_many("str-in-list", [STOP, "baton.job.stop"], _noop)
    for hid in ("str-event", "none-event", "one-event", "str-events", "none-events", "str-in-list"):
        assert hid not in telemetry.list_handlers()
    # A list of strings is still an event, and any iterable of events will do for attach_many.
    telemetry.attach("list-event", ["baton", "custom", "list"], _noop)
    telemetry.attach_many("gen-events", (e for e in [STOP, ("baton", "custom", "gen")]), _noop)
    try:
        assert telemetry.list_handlers()["list-event"] == (("baton", "custom", "list"),)
        assert telemetry.list_handlers()["gen-events"] == (STOP, ("baton", "custom", "gen"))
    finally:
        telemetry.detach("list-event")
        telemetry.detach("gen-events")


def test_attach_many_listens_to_every_event_under_one_id() -> None:
    seen: list[tuple[str, ...]] = []
    telemetry.attach_many("many-test", [STOP, ("baton", "custom", "thing")], lambda e, m, md: seen.append(e))
    try:
        assert telemetry.has_handlers(STOP)
        assert telemetry.has_handlers(("baton", "custom", "thing"))
        telemetry.emit(("baton", "custom", "thing"), {}, {})
        telemetry.emit(("baton", "custom", "other"), {}, {})
        assert seen == [("baton", "custom", "thing")]
    finally:
        telemetry.detach("many-test")
    assert not telemetry.has_handlers(("baton", "custom", "thing"))


# --------------------------------------------------------------------------- failing handlers


async def test_a_raising_handler_is_detached_and_logged_and_the_job_still_completes(
    make_app: Callable[..., baton.Baton], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(queues={"default": 2})
    calls: list[int] = []

    @app.worker(name="ok")
    def ok(job: baton.Job) -> int:
        return 1

    def broken(event: Any, measurements: Any, metadata: Any) -> None:
        calls.append(metadata["job"].id)
        raise RuntimeError("handler bug")

    telemetry.attach("broken-handler", STOP, broken)
    try:
        first = await app.insert(ok.new({}))
        with caplog.at_level(logging.ERROR, logger="baton.telemetry"):
            assert await app.drain() == {"completed": 1}
        assert (await app.get_job(first.id)).state == "completed"
        assert "broken-handler" not in telemetry.list_handlers()
        records = [r for r in caplog.records if r.name == "baton.telemetry"]
        assert len(records) == 1
        assert "'broken-handler'" in records[0].getMessage()
        assert "detached" in records[0].getMessage()
        assert records[0].exc_info is not None and "handler bug" in str(records[0].exc_info[1])

        # Detached for good: the next job runs without calling it.
        second = await app.insert(ok.new({}))
        assert await app.drain() == {"completed": 1}
        assert (await app.get_job(second.id)).state == "completed"
        assert calls == [first.id]
    finally:
        telemetry.detach("broken-handler")


async def test_a_raising_handler_does_not_stop_the_other_handlers(
    make_app: Callable[..., baton.Baton], events: Any
) -> None:
    app = make_app(queues={"default": 2})

    @app.worker(name="ok")
    def ok(job: baton.Job) -> int:
        return 1

    def broken(event: Any, measurements: Any, metadata: Any) -> None:
        raise RuntimeError("handler bug")

    telemetry.attach("broken-first", STOP, broken)
    events.attach(STOP)
    try:
        await app.insert(ok.new({}))
        assert await app.drain() == {"completed": 1}
    finally:
        telemetry.detach("broken-first")
    assert len(events.of(STOP)) == 1


# --------------------------------------------------------------------------- job events


async def test_job_start_stop_and_exception_carry_duration_queue_time_job_and_state(
    make_app: Callable[..., baton.Baton], events: Any
) -> None:
    app = make_app(queues={"default": 5})

    @app.worker(name="ok")
    def ok(job: baton.Job) -> int:
        return job.args["n"]

    @app.worker(name="boom", max_attempts=1)
    def boom(job: baton.Job) -> None:
        raise RuntimeError("nope")

    @app.worker(name="flaky", max_attempts=3)
    async def flaky(job: baton.Job) -> None:
        raise ValueError("try again")

    events.attach(START, STOP, EXCEPTION)
    good = await app.insert(ok.new({"n": 1}))
    bad = await app.insert(boom.new({}))
    retry = await app.insert(flaky.new({}))
    counts = await app.drain()
    assert counts == {"completed": 1, "discarded": 1, "retryable": 1}

    starts = events.of(START)
    assert sorted(md["job"].id for _, md in starts) == sorted([good.id, bad.id, retry.id])
    for measurements, metadata in starts:
        assert set(measurements) == {"queue_time"}
        assert measurements["queue_time"] >= 0
        assert isinstance(metadata["job"], baton.Job)
        assert metadata["worker"] == metadata["job"].worker
        assert metadata["node"] == app.node

    ((stop_m, stop_md),) = events.of(STOP)
    assert stop_md["job"].id == good.id
    assert stop_md["state"] == "completed"
    assert stop_md["worker"] == "ok"
    assert stop_md["job"].queue == "default"
    assert stop_md["job"].attempt == 1
    assert isinstance(stop_m["duration"], float) and stop_m["duration"] >= 0
    assert stop_m["queue_time"] >= 0
    assert "error" not in stop_md

    failures = {md["job"].id: (m, md) for m, md in events.of(EXCEPTION)}
    assert set(failures) == {bad.id, retry.id}
    bad_m, bad_md = failures[bad.id]
    assert bad_md["state"] == "discarded"
    assert bad_md["error"] == "RuntimeError: nope"
    assert "raise RuntimeError" in bad_md["traceback"]
    assert bad_m["duration"] >= 0 and bad_m["queue_time"] >= 0
    retry_m, retry_md = failures[retry.id]
    assert retry_md["state"] == "retryable"
    assert retry_md["error"] == "ValueError: try again"
    assert retry_m["duration"] >= 0


async def test_duration_measures_the_attempt_and_queue_time_the_wait_after_due(
    make_app: Callable[..., baton.Baton], events: Any
) -> None:
    app = make_app(queues={"default": 2})

    @app.worker(name="slow")
    async def slow(job: baton.Job) -> None:
        await asyncio.sleep(0.1)

    events.attach(STOP)
    await app.insert(slow.new({}, schedule_in=0.05))
    await asyncio.sleep(0.4)  # due after 0.05 s, picked up ~0.35 s later
    assert await app.drain() == {"completed": 1}
    ((measurements, _),) = events.of(STOP)
    assert measurements["duration"] >= 90  # milliseconds
    assert measurements["queue_time"] >= 200


async def test_cancel_and_discard_results_are_stop_events_with_their_state(
    make_app: Callable[..., baton.Baton], events: Any
) -> None:
    app = make_app(queues={"default": 2})

    @app.worker(name="cancels")
    def cancels(job: baton.Job) -> baton.Cancel:
        return baton.Cancel("not needed")

    @app.worker(name="discards")
    def discards(job: baton.Job) -> None:
        raise baton.Discard("bad input")

    events.attach(STOP, EXCEPTION)
    await app.insert(cancels.new({}))
    await app.insert(discards.new({}))
    await app.drain()
    assert sorted(md["state"] for _, md in events.of(STOP)) == ["cancelled", "discarded"]
    assert events.of(EXCEPTION) == []


async def test_a_late_ack_for_a_cancelled_job_emits_fenced(make_app: Callable[..., baton.Baton], events: Any) -> None:
    app = make_app(queues={"default": 2})

    @app.worker(name="self_cancel")
    async def self_cancel(job: baton.Job) -> int:
        # Cancelled while running: its completion arrives late and must be dropped.
        await app.cancel_all_jobs(ids=[job.id])
        return 1

    events.attach(("baton", "job", "fenced"))
    job = await app.insert(self_cancel.new({}))
    await app.drain()
    ((measurements, metadata),) = events.of(("baton", "job", "fenced"))
    assert measurements == {"count": 1}
    assert metadata["job_id"] == job.id
    assert metadata["job"].id == job.id
    assert metadata["reason"] == "cancelled"
    assert metadata["state"] == "cancelled"
    assert metadata["node"] == app.node
    assert (await app.get_job(job.id)).state == "cancelled"


# --------------------------------------------------------------------------- workflows


async def test_workflow_finished_is_emitted_once_with_counts_and_status(
    make_app: Callable[..., baton.Baton], events: Any
) -> None:
    app = make_app(queues={"default": 5})

    @app.worker(name="ok")
    def ok(job: baton.Job) -> int:
        return 1

    @app.worker(name="boom", max_attempts=1)
    def boom(job: baton.Job) -> None:
        raise RuntimeError("nope")

    events.attach(("baton", "workflow", "finished"))
    good = baton.Workflow(label="good")
    good.add("a", ok.new({})).add("b", ok.new({}), deps=["a"])
    bad = baton.Workflow(label="bad")
    bad.add("a", ok.new({})).add("b", boom.new({}), deps=["a"]).add("c", ok.new({}), deps=["b"])
    good_id = await app.insert_workflow(good)
    bad_id = await app.insert_workflow(bad)
    await app.drain()

    finished = {md["workflow_id"]: (m, md) for m, md in events.of(("baton", "workflow", "finished"))}
    assert len(events.of(("baton", "workflow", "finished"))) == 2
    good_m, good_md = finished[good_id]
    assert good_m.pop("lag") >= 0  # ms from the last step's end to the event
    assert good_m == {"total_count": 2, "failed_count": 0}
    assert good_md["status"] == "completed"
    assert good_md["label"] == "good"
    assert good_md["failed_steps"] == []
    assert good_md["counts"] == {"completed": 2}
    bad_m, bad_md = finished[bad_id]
    assert bad_m.pop("lag") >= 0  # ms from the last step's end to the event
    assert bad_m == {"total_count": 3, "failed_count": 2}
    assert bad_md["status"] == "failed"
    assert bad_md["failed_steps"] == ["b", "c"]
    assert bad_md["counts"] == {"completed": 1, "discarded": 1, "cancelled": 1}
    assert bad_md["node"] == app.node


# --------------------------------------------------------------------------- plugins


async def test_a_stager_sweep_emits_plugin_start_and_stop(make_app: Callable[..., baton.Baton], events: Any) -> None:
    app = make_app(queues={"default": 2})

    @app.worker(name="ok")
    def ok(job: baton.Job) -> int:
        return 1

    events.attach(("baton", "plugin", "start"), ("baton", "plugin", "stop"), ("baton", "plugin", "exception"))
    await app.insert_all([ok.new({"n": i}, schedule_in=0.05) for i in range(3)])
    await asyncio.sleep(0.2)
    result = await baton.plugins.Stager().sweep(app)
    assert result == {"staged": {"default": 3}, "staged_count": 3}

    ((start_m, start_md),) = events.of(("baton", "plugin", "start"))
    assert start_md == {"plugin": "stager", "node": app.node}
    assert isinstance(start_m["system_time"], float)
    ((stop_m, stop_md),) = events.of(("baton", "plugin", "stop"))
    assert stop_m["duration"] >= 0
    assert stop_md == {"plugin": "stager", "node": app.node, "staged": {"default": 3}, "staged_count": 3}
    assert events.of(("baton", "plugin", "exception")) == []


async def test_a_failing_sweep_emits_plugin_exception_and_raises(
    make_app: Callable[..., baton.Baton], events: Any, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(baton.plugins.Plugin):
        name = "broken"

        async def _sweep(self, app: baton.Baton) -> dict[str, Any]:
            raise RuntimeError("sweep failed")

    app = make_app(queues={"default": 1})
    events.attach(("baton", "plugin", "stop"), ("baton", "plugin", "exception"))
    plugin = Broken()
    with caplog.at_level(logging.ERROR, logger="baton.plugins"), pytest.raises(RuntimeError, match="sweep failed"):
        await plugin.sweep(app)
    ((measurements, metadata),) = events.of(("baton", "plugin", "exception"))
    assert measurements["duration"] >= 0
    assert metadata == {"plugin": "broken", "node": app.node, "error": "RuntimeError: sweep failed"}
    assert events.of(("baton", "plugin", "stop")) == []
    assert plugin.last_error == "RuntimeError: sweep failed"


def delete_job_by_hand(db_url: str, job_id: int) -> None:
    """Delete a job row behind Baton's back, as an operator's manual cleanup would."""
    if db_url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(db_url.removeprefix("sqlite:///"))) as conn:
            conn.execute("DELETE FROM baton_jobs WHERE id = ?", (job_id,))
            conn.commit()
    else:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("DELETE FROM baton_jobs WHERE id = %s", (job_id,))


async def test_self_healing_sweeps_emit_rescued_failed_pruned_and_lifeline_jobs(
    make_app: Callable[..., baton.Baton], db_url: str, events: Any
) -> None:
    app = make_app(queues={"default": 2})

    @app.worker(name="ok")
    def ok(job: baton.Job) -> int:
        return 1

    @app.worker(name="boom", max_attempts=1)
    def boom(job: baton.Job) -> None:
        raise RuntimeError("nope")

    events.attach(
        ("baton", "plugin", "rescued"),
        ("baton", "plugin", "pruned"),
        ("baton", "plugin", "stop"),
        ("baton", "workflow", "failed"),
    )
    orphaned = baton.Workflow(label="orphaned")
    orphaned.add("a", ok.new({})).add("b", ok.new({}), deps=["a"])
    orphaned_id = await app.insert_workflow(orphaned)
    bad = baton.Workflow(label="bad")
    bad.add("x", boom.new({})).add("y", ok.new({}), deps=["x"])
    bad_id = await app.insert_workflow(bad)
    step_b = (await app.workflow_status(orphaned_id)).details["b"].job_id
    delete_job_by_hand(db_url, (await app.workflow_status(orphaned_id)).details["a"].job_id)
    # Two jobs held by a producer that never heartbeated: a node that died mid-attempt.
    lost = await app.insert_all([ok.new({"n": 1}, queue="lost"), ok.new({"n": 2}, queue="lost", max_attempts=1)])
    await app.engine.run(jobs_store.fetch_jobs, "lost", "dead-node", str(uuid.uuid4()), 10)
    await app.drain(queue="default")

    await baton.plugins.WorkflowHealth(prune=True).sweep(app)
    ((rescued_m, rescued_md),) = events.of(("baton", "plugin", "rescued"))
    assert rescued_m == {"count": 1}
    assert rescued_md == {"job_ids": [step_b], "plugin": "workflow_health"}

    failed = {md["workflow_id"]: (m, md) for m, md in events.of(("baton", "workflow", "failed"))}
    assert set(failed) == {orphaned_id, bad_id}
    bad_m, bad_md = failed[bad_id]
    assert bad_m == {"failed_count": 2, "total_count": 2}
    assert bad_md["workflow_label"] == "bad"
    assert bad_md["root_step"] == "x"
    assert bad_md["error"] == "RuntimeError: nope"
    assert bad_md["cancelled_steps"] == ["y"]
    assert bad_md["discarded_steps"] == ["x"]

    ((pruned_m, pruned_md),) = events.of(("baton", "plugin", "pruned"))
    assert pruned_m["count"] == sum(pruned_md.values()) >= 1
    assert set(pruned_md) <= set(WORKFLOW_TABLES)

    await baton.plugins.Lifeline().sweep(app)
    stops = {md["plugin"]: md for _, md in events.of(("baton", "plugin", "stop"))}
    assert stops["workflow_health"]["rescued"] == [step_b]
    assert sorted(stops["workflow_health"]["failed_reported"]) == sorted([orphaned_id, bad_id])
    lifeline = stops["lifeline"]
    assert lifeline["rescued_jobs"] == [{"id": lost[0].id, "queue": "lost", "state": "available"}]
    assert lifeline["discarded_jobs"] == [{"id": lost[1].id, "queue": "lost", "state": "discarded"}]
    assert lifeline["repairs"] == {"orphaned": 1, "exhausted": 1}


# --------------------------------------------------------------------------- nodes


async def test_a_started_node_emits_producer_and_leader_events(
    make_app: Callable[..., baton.Baton], events: Any
) -> None:
    app = make_app(queues={"default": 3, "mailers": 1}, node="events-node")
    events.attach(
        ("baton", "producer", "start"),
        ("baton", "producer", "stop"),
        ("baton", "leader", "elected"),
        ("baton", "leader", "resigned"),
    )
    async with app:
        assert {md["queue"]: m["limit"] for m, md in events.of(("baton", "producer", "start"))} == {
            "default": 3,
            "mailers": 1,
        }
        ((elected_m, elected_md),) = events.of(("baton", "leader", "elected"))
        assert elected_m == {}
        assert elected_md["node"] == "events-node"
        assert elected_md["instance"] == app.instance
    stops = events.of(("baton", "producer", "stop"))
    assert sorted(md["queue"] for _, md in stops) == ["default", "mailers"]
    assert all(md["node"] == "events-node" and md["uuid"] for _, md in stops)
    ((_, resigned_md),) = events.of(("baton", "leader", "resigned"))
    assert resigned_md == {"node": "events-node", "instance": app.instance}
