"""Building workflows (SPEC section 3): every graph error is caught before anything is written,
with a WorkflowError naming the offending step; and the graph can be drawn as Mermaid / DOT."""

from __future__ import annotations

import re
from typing import Any

import pytest

import baton
from baton.job import JobSpec
from wf_nodes import scalar


def _noop(job: baton.Job) -> None:
    return None


@pytest.fixture
def step(app: baton.Baton) -> Any:
    return app.worker(name="build.step")(_noop)


async def _assert_nothing_written(app: baton.Baton) -> None:
    assert await app.count_jobs() == {}
    assert scalar(app.url, "SELECT count(*) FROM baton_workflows") == 0
    assert scalar(app.url, "SELECT count(*) FROM workflow_nodes") == 0
    assert scalar(app.url, "SELECT count(*) FROM baton_workflow_deps") == 0


# --------------------------------------------------------------------------- validation


async def test_duplicate_step_name_is_rejected_naming_the_step(app, step):
    wf = baton.Workflow(label="dup")
    wf.add("fetch", step.new({}))
    with pytest.raises(baton.WorkflowError) as err:
        wf.add("fetch", step.new({"again": True}))
    assert err.value.step == "fetch"
    assert "'fetch'" in str(err.value)
    assert "duplicate" in str(err.value)
    # The first declaration is kept; the workflow is still insertable as declared.
    assert list(wf.steps) == ["fetch"]
    await _assert_nothing_written(app)


async def test_duplicate_name_of_a_sub_workflow_step_is_rejected(app, step):
    wf = baton.Workflow()
    wf.add("a", step.new({}))
    with pytest.raises(baton.WorkflowError) as err:
        wf.add_workflow("a", baton.Workflow().add("x", step.new({})))
    assert err.value.step == "a"


async def test_a_sub_workflow_with_its_own_context_is_refused(app, step):
    """Its steps read the outer workflow's context, so a context of its own would be silently
    ignored: refused as Graft and append_workflow refuse it, naming the step and `context`."""
    wf = baton.Workflow(context={"tenant": "acme"})
    with pytest.raises(baton.WorkflowError) as err:
        wf.add_workflow("sub", baton.Workflow(context={"tenant": "other"}).add("x", step.new({})))
    assert err.value.step == "sub"
    assert err.value.field == "context step 'sub'"
    assert "drop context=" in str(err.value)
    assert list(wf.steps) == []
    await _assert_nothing_written(app)


async def test_unknown_dependency_is_rejected_before_any_write(app, step):
    wf = baton.Workflow(label="unknown-dep")
    wf.add("fetch", step.new({}))
    wf.add("clean", step.new({}), deps=["fetch"])
    wf.add("render", step.new({}), deps=["clean", "stast"])
    with pytest.raises(baton.WorkflowError) as err:
        await app.insert_workflow(wf)
    assert err.value.step == "render"
    assert "'render'" in str(err.value)
    assert "'stast'" in str(err.value)
    assert isinstance(err.value, baton.BatonError)
    await _assert_nothing_written(app)


async def test_unknown_dependency_is_rejected_by_insert_workflow_sync(app, step):
    wf = baton.Workflow()
    wf.add("a", step.new({}), deps=["missing"])
    with pytest.raises(baton.WorkflowError) as err:
        app.insert_workflow_sync(wf)
    assert err.value.step == "a"
    await _assert_nothing_written(app)


async def test_cycle_is_rejected_and_the_message_names_the_cycle_path(app, step):
    wf = baton.Workflow(label="cyclic")
    wf.add("start", step.new({}))
    wf.add("a", step.new({}), deps=["start", "c"])
    wf.add("b", step.new({}), deps=["a"])
    wf.add("c", step.new({}), deps=["b"])
    wf.add("end", step.new({}), deps=["c"])
    with pytest.raises(baton.WorkflowError) as err:
        await app.insert_workflow(wf)
    message = str(err.value)
    assert "cycle" in message
    assert err.value.step in {"a", "b", "c"}
    # The path names every step of the cycle, in dependency order, and closes it.
    path = re.search(r"cycle: (\w+(?: -> \w+)+)", message)
    assert path is not None, message
    hops = [h.strip() for h in path.group(1).split("->")]
    assert hops[0] == hops[-1], message
    assert set(hops) == {"a", "b", "c"}, message
    assert "start" not in hops and "end" not in hops
    ring = hops[:-1]
    for i, name in enumerate(ring):  # each hop is a real edge: the next one depends on it
        nxt = ring[(i + 1) % len(ring)]
        assert name in wf.steps[nxt].deps, f"{name} -> {nxt} is not an edge of the cycle: {message}"
    await _assert_nothing_written(app)


async def test_two_step_cycle_is_rejected(app, step):
    wf = baton.Workflow()
    wf.add("a", step.new({}), deps=["b"])
    wf.add("b", step.new({}), deps=["a"])
    with pytest.raises(baton.WorkflowError, match=r"cycle: (a -> b -> a|b -> a -> b)"):
        await app.insert_workflow(wf)
    await _assert_nothing_written(app)


async def test_a_long_chain_added_dependents_first_is_planned_and_inserted(app, step):
    """Far deeper than Python's recursion limit: the cycle check and the ordering are iterative
    (they used to recurse once per step and raise RecursionError)."""
    n = 3_000
    wf = baton.Workflow(label="deep")
    for i in range(n):  # s0 depends on s1, s1 on s2, ...: each step added before its dep
        wf.add(f"s{i}", step.new({}), deps=[f"s{i + 1}"] if i + 1 < n else [])
    assert [p.name for p in wf.plan()] == [f"s{i}" for i in reversed(range(n))]
    wid = await app.insert_workflow(wf)
    status = await app.workflow_status(wid)
    assert status.steps[f"s{n - 1}"] == "available" and status.steps["s0"] == "suspended"
    assert len(status.steps) == n

    # A cycle at the far end of such a chain is still named, hop by hop.
    cyclic = baton.Workflow()
    for i in range(n):
        cyclic.add(f"s{i}", step.new({}), deps=[f"s{i + 1}"] if i + 1 < n else ["s2997"])
    with pytest.raises(baton.WorkflowError, match=r"cycle: s2997 -> s2999 -> s2998 -> s2997; ") as err:
        cyclic.plan()
    assert err.value.step == "s2997"


async def test_empty_workflow_is_rejected(app):
    with pytest.raises(baton.WorkflowError, match="empty"):
        await app.insert_workflow(baton.Workflow(label="nothing"))
    with pytest.raises(baton.WorkflowError, match="empty"):
        app.insert_workflow_sync(baton.Workflow(label="nothing"))
    await _assert_nothing_written(app)


async def test_empty_sub_workflow_is_rejected_naming_the_step(app, step):
    wf = baton.Workflow()
    with pytest.raises(baton.WorkflowError, match="empty") as err:
        wf.add_workflow("inner", baton.Workflow())
    assert err.value.step == "inner"


async def test_self_dependency_is_rejected(app, step):
    wf = baton.Workflow()
    with pytest.raises(baton.WorkflowError, match="itself") as err:
        wf.add("loop", step.new({}), deps=["loop"])
    assert err.value.step == "loop"
    assert len(wf) == 0
    await _assert_nothing_written(app)


async def test_a_workflow_cannot_contain_itself(app, step):
    wf = baton.Workflow()
    wf.add("a", step.new({}))
    with pytest.raises(baton.WorkflowError) as err:
        wf.add_workflow("me", wf)
    assert err.value.step == "me"


async def test_unique_job_cannot_be_a_step(app):
    uniq = app.worker(name="build.unique", unique={"period": 60})(_noop)
    wf = baton.Workflow()
    with pytest.raises(baton.WorkflowError, match="unique") as err:
        wf.add("once", uniq.new({}))
    assert err.value.step == "once"
    # A per-job unique option is refused the same way.
    plain = app.worker(name="build.plain")(_noop)
    with pytest.raises(baton.WorkflowError, match="unique") as err:
        wf.add("once", plain.new({}, unique=True))
    assert err.value.step == "once"
    await _assert_nothing_written(app)


@pytest.mark.parametrize("bad", [None, "build.step", {"worker": "build.step"}, 42])
async def test_step_must_be_a_job_spec(app, step, bad):
    wf = baton.Workflow()
    with pytest.raises(baton.WorkflowError, match=r"worker\.new") as err:
        wf.add("bad", bad)
    assert err.value.step == "bad"
    await _assert_nothing_written(app)


async def test_bad_step_names_and_deps_are_rejected(app, step):
    wf = baton.Workflow()
    with pytest.raises(baton.WorkflowError):
        wf.add("", step.new({}))
    with pytest.raises(baton.WorkflowError):
        wf.add(3, step.new({}))  # type: ignore[arg-type]
    with pytest.raises(baton.WorkflowError, match="list") as err:
        wf.add("x", step.new({}), deps="fetch")  # a string, not a list
    assert err.value.step == "x"
    with pytest.raises(baton.WorkflowError, match="twice"):
        wf.add("y", step.new({}), deps=["a", "a"])
    with pytest.raises(baton.ValidationError, match="Workflow"):
        await app.insert_workflow("not a workflow")  # type: ignore[arg-type]
    await _assert_nothing_written(app)


async def test_unknown_worker_in_a_step_is_rejected_before_any_write(app, step):
    wf = baton.Workflow()
    wf.add("a", step.new({}))
    wf.add("b", JobSpec(worker="no.such.worker_anywhere"), deps=["a"])
    with pytest.raises(baton.ValidationError, match=r"no\.such\.worker_anywhere"):
        await app.insert_workflow(wf)
    await _assert_nothing_written(app)


async def test_unknown_dependency_inside_a_sub_workflow_is_rejected_naming_the_step(app, step):
    inner = baton.Workflow()
    inner.add("x", step.new({}), deps=["nope"])
    wf = baton.Workflow()
    wf.add("a", step.new({}))
    wf.add_workflow("sub", inner, deps=["a"])
    with pytest.raises(baton.WorkflowError) as err:
        await app.insert_workflow(wf)
    assert err.value.step in {"x", "sub.x"}
    await _assert_nothing_written(app)


async def test_cycle_inside_a_sub_workflow_is_rejected(app, step):
    inner = baton.Workflow()
    inner.add("x", step.new({}), deps=["y"])
    inner.add("y", step.new({}), deps=["x"])
    wf = baton.Workflow()
    wf.add("a", step.new({}))
    wf.add_workflow("sub", inner, deps=["a"])
    with pytest.raises(baton.WorkflowError, match="cycle"):
        await app.insert_workflow(wf)
    await _assert_nothing_written(app)


async def test_valid_workflow_inserts_after_a_rejected_one(app, step):
    bad = baton.Workflow()
    bad.add("a", step.new({}), deps=["b"])
    bad.add("b", step.new({}), deps=["a"])
    with pytest.raises(baton.WorkflowError):
        await app.insert_workflow(bad)
    good = baton.Workflow(label="good")
    good.add("a", step.new({}))
    good.add("b", step.new({}), deps=["a"])
    wid = await app.insert_workflow(good)
    assert isinstance(wid, str) and wid
    assert await app.count_jobs() == {"available": 1, "suspended": 1}


def test_plan_of_a_plain_workflow_is_its_general_flattening(step):
    """plan() takes shortcuts for a new workflow without sub-workflows (steps added after their
    deps: no pass at all; otherwise one pass): the same steps, deps, edges and flags, in the
    same order, as the general flattening (as `existing` names for append_workflow take it)."""

    def fields(plan: list[Any]) -> list[tuple[Any, ...]]:
        return [(p.name, p.job, p.deps, p.edges, p.ignore_cancelled, p.ignore_discarded, p.ignore_deleted, p.graft)
                for p in plan]  # fmt: skip

    def general(wf: baton.Workflow) -> list[Any]:
        wf._validate(set(), "")
        return wf._flatten("", (), set())

    in_order = baton.Workflow(ignore_deleted=True)
    in_order.add("a", step.new({}))
    in_order.add("b", step.new({}), deps=["a"], ignore_cancelled=True)
    in_order.add("c", step.new({}), deps=["a", "b"], ignore_deleted=False)
    assert in_order._simple
    forward = baton.Workflow()
    forward.add("c", step.new({}), deps=["a", "b"])
    forward.add("a", step.new({}))
    forward.add_graft("b", step.new({}), deps=["a"])
    assert not forward._simple
    for wf in (in_order, forward):
        assert fields(wf.plan()) == fields(general(wf))
    assert [p.name for p in forward.plan()] == ["a", "b", "c"]


# --------------------------------------------------------------------------- drawing


def _fan_graph(step: Any) -> baton.Workflow:
    """fetch -> (a, b, report[x -> y]) -> merge"""
    report = baton.Workflow(label="report")
    report.add("x", step.new({}))
    report.add("y", step.new({}), deps=["x"])
    wf = baton.Workflow(label="fan")
    wf.add("fetch", step.new({}))
    wf.add("a", step.new({}), deps=["fetch"])
    wf.add("b", step.new({}), deps=["fetch"])
    wf.add_workflow("report", report, deps=["fetch"])
    wf.add("merge", step.new({}), deps=["a", "b", "report"])
    return wf


def _edges(text: str, arrow: str) -> set[tuple[str, str]]:
    pattern = re.compile(rf"^\s*(\w+)\s*{re.escape(arrow)}\s*(\w+)\s*;?\s*$", re.MULTILINE)
    return {(m.group(1), m.group(2)) for m in pattern.finditer(text)}


EXPECTED_EDGES = {
    ("n_fetch", "n_a"),
    ("n_fetch", "n_b"),
    ("n_fetch", "n_report_x"),  # into the sub-workflow's root
    ("n_report_x", "n_report_y"),  # inside the sub-workflow
    ("n_a", "n_merge"),
    ("n_b", "n_merge"),
    ("n_report_y", "n_merge"),  # out of the sub-workflow's sink
}


def test_to_mermaid_draws_fan_out_fan_in_and_the_sub_workflow_as_a_subgraph(step):
    text = _fan_graph(step).to_mermaid()
    lines = text.splitlines()
    assert lines[0].strip().startswith("flowchart")
    assert _edges(text, "-->") == EXPECTED_EDGES
    # Every step is a labelled node; the sub-workflow is a subgraph holding its steps.
    for node, label in [("n_fetch", "fetch"), ("n_a", "a"), ("n_merge", "merge"), ("n_report_x", "x")]:
        assert re.search(rf'^\s*{node}\["{label}\b', text, re.MULTILINE), f"{node} missing:\n{text}"
    start = next(i for i, ln in enumerate(lines) if ln.strip().startswith("subgraph") and "report" in ln)
    end = next(i for i in range(start, len(lines)) if lines[i].strip() == "end")
    inside = "\n".join(lines[start:end])
    assert "n_report_x[" in inside and "n_report_y[" in inside
    assert "n_fetch[" not in inside and "n_merge[" not in inside
    assert "subgraph" not in "\n".join(lines[end:])


def test_to_dot_draws_fan_out_fan_in_and_the_sub_workflow_as_a_cluster(step):
    text = _fan_graph(step).to_dot()
    assert text.startswith('digraph "fan" {')
    assert text.rstrip().endswith("}")
    assert _edges(text, "->") == EXPECTED_EDGES
    assert 'n_fetch [label="fetch"];' in text
    assert 'n_merge [label="merge"];' in text
    cluster = re.search(r"subgraph cluster_(\w+) \{(.*?)\n\s*\}", text, re.DOTALL)
    assert cluster is not None, text
    assert "report" in cluster.group(1)
    body = cluster.group(2)
    assert 'label="report";' in body
    assert 'n_report_x [label="x"];' in body and 'n_report_y [label="y"];' in body
    assert "n_fetch" not in body and "n_merge" not in body
    # Braces balance, so Graphviz can parse it.
    assert text.count("{") == text.count("}")


def test_drawings_escape_quotes_in_labels(step):
    wf = baton.Workflow(label='say "hi"')
    wf.add('quote"d', step.new({}))
    dot = wf.to_dot()
    mermaid = wf.to_mermaid()
    assert dot.count('"') % 2 == 0
    assert 'label="quote\'d"' in dot
    assert "quote'd" in mermaid


def test_drawing_node_ids_are_distinct_for_every_step(step):
    wf = _fan_graph(step)
    wf.add("report_x", step.new({}), deps=["merge"])
    text = wf.to_mermaid()
    ids = re.findall(r"^\s*(\w+)\[", text, re.MULTILINE)
    assert len(ids) == len(set(ids)) == 7, text
