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
