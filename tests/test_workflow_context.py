"""`baton.Workflow(context={...})` (SPEC 9.1): stored once with the workflow, read by every step
as the read-only `job.context` — grafted and appended steps included. Both engines."""

from __future__ import annotations

from typing import Any

import pytest

import baton


async def test_every_step_reads_the_context_grafted_and_appended_ones_included(app):
    seen: dict[str, Any] = {}

    @app.worker(name="ctx.step")
    def step(job: baton.Job) -> Any:
        seen[job.step or ""] = job.context
        return None

    @app.worker(name="ctx.expand")
    def expand(job: baton.Job) -> Any:
        seen[job.step or ""] = job.context
        return baton.Graft.map(step, [{}, {}])

    context = {"tenant": "acme", "limits": {"max": 3}, "tags": ["a", "b"]}
    wf = baton.Workflow(label="ctx", context=context)
    wf.add("first", step.new({}))
    wf.add_graft("process", expand.new({}), deps=["first"])
    wf.add("last", step.new({}), deps=["process"])
    wid = await app.insert_workflow(wf)
    more = baton.Workflow()
    more.add("appended", step.new({}))
    await app.append_workflow(wid, more)
    await app.drain()

    assert set(seen) == {"first", "process", "process.0", "process.1", "last", "appended"}
    for name, ctx in seen.items():
        assert dict(ctx) == {"tenant": "acme", "limits": {"max": 3}, "tags": ("a", "b")}, name
    status = await app.workflow_status(wid)
    assert status.context == context and status.status == "completed"


async def test_the_context_is_read_only(app):
    errors: list[str] = []

    @app.worker(name="ctx.write")
    def write(job: baton.Job) -> Any:
        for attempt in (
            lambda: job.context.__setitem__("tenant", "evil"),  # type: ignore[index]
            lambda: job.context["limits"].__setitem__("max", 99),
            lambda: job.context["tags"].append("c"),
        ):
            try:
                attempt()
            except (TypeError, AttributeError) as exc:
                errors.append(type(exc).__name__)
        return dict(job.context)["tenant"]

    wf = baton.Workflow(context={"tenant": "acme", "limits": {"max": 3}, "tags": ["a"]})
    wf.add("w", write.new({}))
    wid = await app.insert_workflow(wf)
    await app.drain()
    assert len(errors) == 3
    status = await app.workflow_status(wid)
    assert status.details["w"].result == "acme"


async def test_context_values_are_json_in_results_args_and_new_jobs(app):
    """The read-only copies job.context hands out (MappingProxyType, tuples) are JSON objects
    and arrays wherever Baton writes JSON: a step's result, a grafted job's args, the args and
    meta of a job inserted from a step, a recorded plain job's result."""
    inserted: list[int] = []

    @app.worker(name="ctx.returns", max_attempts=1)
    def returns(job: baton.Job) -> Any:
        return {"limits": job.context["limits"], "tags": job.context["tags"], "all": job.context}

    @app.worker(name="ctx.item", max_attempts=1)
    def item(job: baton.Job) -> Any:
        return job.args

    @app.worker(name="ctx.expand", max_attempts=1)
    def expand(job: baton.Job) -> Any:
        return baton.Graft.map(item, [{"i": i, "limits": job.context["limits"]} for i in range(2)])

    @app.worker(name="ctx.plain", record=True, max_attempts=1)
    def plain(job: baton.Job) -> Any:
        return job.args["limits"]

    @app.worker(name="ctx.enqueues", max_attempts=1)
    def enqueues(job: baton.Job) -> Any:
        limits = job.context["limits"]
        inserted.append(app.insert_sync(plain.new({"limits": limits}, meta={"from": job.context["tags"]})).id)

    context = {"tenant": "acme", "limits": {"max": 3, "per": {"day": 10}}, "tags": ["a", "b"]}
    wf = baton.Workflow(label="ctx-json", context=context)
    wf.add("a", returns.new({}))
    wf.add_graft("process", expand.new({}))
    wf.add("enqueue", enqueues.new({}))
    wid = await app.insert_workflow(wf)
    await app.drain()
    status = await app.workflow_status(wid)
    assert status.status == "completed", {n: d.last_error for n, d in status.details.items()}
    assert status.details["a"].result == {"limits": context["limits"], "tags": ["a", "b"], "all": context}
    assert status.details["process.1"].result == {"i": 1, "limits": context["limits"]}
    job = await app.get_job(inserted[0])
    assert (job.state, job.args) == ("completed", {"limits": context["limits"]})
    assert job.meta == {"from": ["a", "b"], "result": context["limits"]}


async def test_no_context_is_an_empty_mapping_in_steps_and_plain_jobs(app):
    seen: list[Any] = []
    step = app.worker(name="ctx.none")(lambda job: seen.append(dict(job.context)))
    wf = baton.Workflow()
    wf.add("s", step.new({}))
    await app.insert_workflow(wf)
    await app.insert(step.new({}))
    await app.drain()
    assert seen == [{}, {}]


@pytest.mark.parametrize(
    ("context", "message"),
    [
        (["not", "a", "dict"], "context must be a dict of JSON values"),
        ({"when": object()}, "context"),
        ("tenant=acme", "context must be a dict"),
    ],
)
def test_a_bad_context_is_a_workflow_error(context, message):
    with pytest.raises(baton.WorkflowError, match=message) as info:
        baton.Workflow(context=context)
    assert info.value.field == "context"


def test_a_context_key_that_is_not_a_string_is_a_workflow_error_naming_it():
    with pytest.raises(baton.WorkflowError, match=r"^context\['limits'\]\[1\]: is a key of type int") as info:
        baton.Workflow(context={"limits": {1: "x"}})
    assert info.value.field == "context['limits'][1]"


def test_a_grafted_workflow_cannot_bring_its_own_context():
    sub = baton.Workflow(context={"x": 1})
    with pytest.raises(baton.WorkflowError, match="shares the context"):
        baton.Graft(sub)


async def test_an_appended_workflow_cannot_bring_its_own_context(app):
    """It used to be accepted and its context silently ignored (the steps saw the original)."""
    step = app.worker(name="ctx.appended")(lambda job: dict(job.context))
    wf = baton.Workflow(label="base", context={"tenant": "acme"})
    wf.add("first", step.new({}))
    wid = await app.insert_workflow(wf)
    more = baton.Workflow(context={"tenant": "other"})
    more.add("late", step.new({}))
    with pytest.raises(baton.WorkflowError, match="drop context= from the appended workflow") as info:
        await app.append_workflow(wid, more)
    assert info.value.field == "context"
    assert (await app.workflow_status(wid)).steps == {"first": "available"}  # nothing appended
