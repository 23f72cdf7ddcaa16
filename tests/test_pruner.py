"""The Pruner keeps the jobs table small without breaking workflows: it deletes terminal jobs
older than their state's `max_age`, at most `limit` per sweep, never a non-terminal or young
job, and (keep_workflow_deps=True) never a step of a workflow that has not finished."""

from __future__ import annotations

import pytest

import baton
from baton.plugins import Pruner
from heal_nodes import ago_sql, side_sql

STOP = ("baton", "plugin", "stop")
TIME_COLUMN = {"completed": "completed_at", "cancelled": "cancelled_at", "discarded": "discarded_at"}


def age(url: str, job_id: int, seconds: float) -> None:
    """Make a job look `seconds` old: its terminal time (or insert time) moves back."""
    row = side_sql(url, "SELECT state FROM baton_jobs WHERE id = ?", (job_id,))
    column = TIME_COLUMN.get(row[0][0])
    sets = f"inserted_at = {ago_sql(url, seconds + 1)}"
    if column is not None:
        sets += f", {column} = {ago_sql(url, seconds)}"
    side_sql(url, f"UPDATE baton_jobs SET {sets} WHERE id = ?", (job_id,))


def remaining(url: str) -> set[int]:
    return {int(r[0]) for r in side_sql(url, "SELECT id FROM baton_jobs")}


@pytest.fixture
def app(make_app):
    app = make_app()

    @app.worker(name="ok")
    def ok(job: baton.Job) -> int:
        return 1

    @app.worker(name="no")
    def no(job: baton.Job) -> baton.Discard:
        return baton.Discard("not today")

    return app


async def terminal(app: baton.Baton, state: str) -> int:
    """A job that ended in `state` through the normal path."""
    if state == "cancelled":
        job = await app.insert(app.new("ok", {}, queue="parked"))
        assert await app.cancel_all_jobs(ids=[job.id]) == 1
        return job.id
    job = await app.insert(app.new("ok" if state == "completed" else "no", {}, queue="run"))
    await app.drain(queue="run")
    assert (await app.get_job(job.id)).state == state
    return job.id


async def test_deletes_terminal_jobs_older_than_the_max_age_of_their_state(db_url, app, events):
    events.attach(STOP)
    old_completed = await terminal(app, "completed")
    young_completed = await terminal(app, "completed")
    mid_discarded = await terminal(app, "discarded")
    old_discarded = await terminal(app, "discarded")
    old_cancelled = await terminal(app, "cancelled")
    old_available = (await app.insert(app.new("ok", {}, queue="parked"))).id
    old_scheduled = (await app.insert(app.new("ok", {}, queue="parked", schedule_in=3600))).id
    old_retryable = (await app.insert(app.new("ok", {}, queue="parked"))).id
    old_executing = (await app.insert(app.new("ok", {}, queue="parked"))).id
    side_sql(db_url, "UPDATE baton_jobs SET state = 'retryable', attempt = 1 WHERE id = ?", (old_retryable,))
    side_sql(db_url, "UPDATE baton_jobs SET state = 'executing', attempt = 1 WHERE id = ?", (old_executing,))
    for job_id in (old_completed, old_cancelled, old_available, old_scheduled, old_retryable, old_executing):
        age(db_url, job_id, 100_000)
    age(db_url, mid_discarded, 100)
    age(db_url, old_discarded, 1_000)
    everything = remaining(db_url)

    meta = await Pruner(max_age={"completed": 50, "discarded": 500}).sweep(app)
    assert meta["pruned"] == {"completed": 1, "discarded": 1}
    assert meta["pruned_count"] == 2
    assert remaining(db_url) == everything - {old_completed, old_discarded}
    stop = [(m, md) for m, md in events.of(STOP) if md["plugin"] == "pruner"]
    assert len(stop) == 1 and stop[0][1]["pruned_count"] == 2 and stop[0][0]["duration"] >= 0

    # One age for every terminal state: the cancelled and the 100 s discarded go; young and
    # non-terminal jobs stay however old they are.
    meta = await Pruner(max_age=50).sweep(app)
    assert meta["pruned"] == {"cancelled": 1, "discarded": 1}
    assert remaining(db_url) == {young_completed, old_available, old_scheduled, old_retryable, old_executing}
    meta = await Pruner(max_age=50).sweep(app)
    assert meta == {"pruned": {}, "pruned_count": 0}
    assert [md["pruned_count"] for _, md in events.of(STOP) if md["plugin"] == "pruner"] == [2, 2, 0]


async def test_states_limits_what_is_pruned(db_url, app):
    done = await terminal(app, "completed")
    dropped = await terminal(app, "discarded")
    for job_id in (done, dropped):
        age(db_url, job_id, 1_000)
    meta = await Pruner(max_age=10, states=["discarded"]).sweep(app)
    assert meta["pruned"] == {"discarded": 1}
    assert remaining(db_url) == {done}


async def test_prunes_at_most_limit_jobs_per_sweep(db_url, app):
    jobs = await app.insert_all([app.new("ok", {"n": i}, queue="run") for i in range(5)])
    await app.drain(queue="run")
    for job in jobs:
        age(db_url, job.id, 1_000)
    pruner = Pruner(max_age=10, limit=2)
    counts = [(await pruner.sweep(app))["pruned_count"] for _ in range(4)]
    assert counts == [2, 2, 1, 0]
    assert remaining(db_url) == set()


async def test_keeps_every_step_of_an_unfinished_workflow(db_url, app):
    def two_steps(label: str, second_queue: str) -> baton.Workflow:
        wf = baton.Workflow(label=label)
        wf.add("a", app.new("ok", {}, queue="run"))
        wf.add("b", app.new("ok", {}, queue=second_queue), deps=["a"])
        return wf

    running = await app.insert_workflow(two_steps("running", "later"))
    done = await app.insert_workflow(two_steps("done", "run"))
    plain = (await app.insert(app.new("ok", {}, queue="run"))).id
    await app.drain(queue="run")
    assert (await app.workflow_status(done)).finished
    status = await app.workflow_status(running)
    assert not status.finished and status.steps == {"a": "completed", "b": "available"}
    a_running = status.details["a"].job_id
    done_steps = {s.job_id for s in (await app.workflow_status(done)).details.values()}
    for job_id in {a_running, plain} | done_steps:
        age(db_url, job_id, 1_000)

    meta = await Pruner(max_age=10).sweep(app)
    assert meta["pruned_count"] == 3  # the plain job and both steps of the finished workflow
    left = remaining(db_url)
    assert a_running in left and plain not in left and not (done_steps & left)
    assert (await Pruner(max_age=10).sweep(app))["pruned_count"] == 0

    # Once the workflow finishes, its steps may go.
    await app.drain(queue="later")
    assert (await app.workflow_status(running)).finished
    assert (await Pruner(max_age=10).sweep(app))["pruned_count"] == 1
    assert a_running not in remaining(db_url)


async def test_keep_workflow_deps_false_prunes_steps_of_unfinished_workflows(db_url, app):
    wf = baton.Workflow(label="running")
    wf.add("a", app.new("ok", {}, queue="run"))
    wf.add("b", app.new("ok", {}, queue="later"), deps=["a"])
    wid = await app.insert_workflow(wf)
    await app.drain(queue="run")
    a = (await app.workflow_status(wid)).details["a"].job_id
    age(db_url, a, 1_000)
    meta = await Pruner(max_age=10, keep_workflow_deps=False).sweep(app)
    assert meta["pruned"] == {"completed": 1}
    assert a not in remaining(db_url)
    # b was released before its dependency was pruned: the workflow still finishes.
    assert await app.drain(queue="later") == {"completed": 1}
    status = await app.workflow_status(wid)
    assert status.finished and status.status == "completed"
    assert status.steps["b"] == "completed"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_age": 0}, "max_age"),
        ({"max_age": {"available": 10}}, "max_age"),
        ({"max_age": {"completed": -1}}, "max_age.completed"),
        ({"limit": 0}, "limit"),
        ({"states": ["executing"]}, "states"),
        ({"states": "completed"}, "states"),
        ({"interval": 0}, "interval"),
    ],
)
def test_bad_options_are_rejected_naming_the_field(options, field):
    with pytest.raises(baton.ValidationError) as err:
        Pruner(**options)
    assert err.value.field == field
