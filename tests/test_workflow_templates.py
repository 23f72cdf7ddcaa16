"""Workflow templates (SPEC 9.2): `Workflow.from_dict(data, params=, app=)` and `wf.to_dict()`
round trip, `${param}` substitution, every mistake a WorkflowError naming the JSON path and the
fix, the JSON Schema shipped in the package, and `baton workflows start FILE.json --param`."""

from __future__ import annotations

import asyncio
import copy
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import baton
from baton.cli import cli
from baton.workflows import template

SPEC_DATA: dict[str, Any] = {
    "label": "nightly",
    "params": {"day": {"required": True}, "depth": {"default": 2}},
    "context": {"team": "data", "depth": "${depth}"},
    "steps": [
        {"name": "fetch", "worker": "reports.fetch", "args": {"day": "${day}", "note": "day ${day}, depth ${depth}"}},
        {"name": "split", "worker": "reports.split", "graft": True, "deps": ["fetch"]},
        {
            "name": "render",
            "worker": "reports.render",
            "deps": ["split"],
            "queue": "render",
            "max_attempts": 5,
            "priority": 1,
            "ignore_discarded": True,
        },
    ],
}


def _reports(app: baton.Baton) -> None:
    for name in ("reports.fetch", "reports.split", "reports.render"):
        app.worker(name=name)(lambda job: None)


def _substituted() -> dict[str, Any]:
    data = copy.deepcopy(SPEC_DATA)
    del data["params"]
    data["context"]["depth"] = 2
    data["steps"][0]["args"] = {"day": "2026-12-01", "note": "day 2026-12-01, depth 2"}
    return data


def test_from_dict_substitutes_params_and_to_dict_round_trips(app):
    _reports(app)
    wf = baton.Workflow.from_dict(SPEC_DATA, params={"day": "2026-12-01"}, app=app)
    assert wf.label == "nightly" and wf.context == {"team": "data", "depth": 2}
    steps = wf.steps
    assert steps["fetch"].job is not None and steps["fetch"].job.args == {
        "day": "2026-12-01",
        "note": "day 2026-12-01, depth 2",
    }
    assert steps["split"].graft and steps["split"].deps == ("fetch",)
    render = steps["render"].job
    assert render is not None and (render.queue, render.max_attempts, render.priority) == ("render", 5, 1)
    assert steps["render"].ignore_discarded is True
    assert wf.to_dict() == _substituted()
    again = baton.Workflow.from_dict(wf.to_dict(), app=app)
    assert again.to_dict() == wf.to_dict()


def test_a_whole_string_param_keeps_its_json_type_and_dollars_escape():
    data = {
        "params": {"n": {"default": 3}, "ids": {"required": True}},
        "steps": [{"name": "a", "worker": "x.y", "args": {"n": "${n}", "ids": "${ids}", "price": "$$5 for ${n}"}}],
    }
    wf = baton.Workflow.from_dict(data, params={"ids": [1, 2]})
    job = wf.steps["a"].job
    assert job is not None and job.args == {"n": 3, "ids": [1, 2], "price": "$5 for 3"}


def test_a_code_built_workflow_round_trips_through_to_dict(app):
    step = app.worker(name="t.step", queue="q1", max_attempts=3)(lambda job: None)
    sub = baton.Workflow()
    sub.add("x", step.new({"k": 1}))
    sub.add("y", step.new({}), deps=["x"])
    wf = baton.Workflow(label="code", context={"c": [1]}, ignore_cancelled=True)
    wf.add("a", step.new({"a": 1}, priority=2, tags=["t"]))
    wf.add_graft("g", step.new({}), deps=["a"], ignore_deleted=True)
    wf.add_workflow("s", sub, deps=["g"])
    data = wf.to_dict()
    assert data["steps"][0] == {
        "name": "a",
        "worker": "t.step",
        "args": {"a": 1},
        "queue": "q1",
        "priority": 2,
        "max_attempts": 3,
        "tags": ["t"],
    }
    assert data["steps"][2]["workflow"]["steps"][1]["deps"] == ["x"]
    json.dumps(data)  # plain JSON
    back = baton.Workflow.from_dict(data, app=app)
    assert back.to_dict() == data
    assert [p.name for p in back.plan()] == [p.name for p in wf.plan()]
    assert back.steps["g"].graft and back.ignore_cancelled


def test_literal_dollars_round_trip_through_to_dict():
    """A literal `${...}` or `$$` in args or context is written escaped, so from_dict reads it
    back as it was (it used to be written bare and read back as a param reference)."""
    wf = baton.Workflow(label="code", context={"fmt": "${x}", "nested": ["$$", {"k": "a $ b ${y"}]})
    wf.add("run", baton.JobSpec(worker="t.shell", args={"cmd": "echo ${HOME}", "price": "$5", "both": "$${z}$"}))
    data = wf.to_dict()
    assert data["context"] == {"fmt": "$${x}", "nested": ["$$$", {"k": "a $ b $${y"}]}
    assert data["steps"][0]["args"] == {"cmd": "echo $${HOME}", "price": "$5", "both": "$$$${z}$"}
    back = baton.Workflow.from_dict(data)
    assert back.context == wf.context
    job = back.steps["run"].job
    assert job is not None and job.args == {"cmd": "echo ${HOME}", "price": "$5", "both": "$${z}$"}
    assert back.to_dict() == data

    # A template's own `$$` (and a param whose value holds `${...}`) survive a round trip too.
    templated = baton.Workflow.from_dict(
        {
            "params": {"p": {"default": "${not_a_param}"}},
            "context": {"home": "$${HOME}"},
            "steps": [{"name": "a", "worker": "t.shell", "args": {"cmd": "echo $${HOME} ${p}"}}],
        }
    )
    out = templated.to_dict()
    assert out["context"] == {"home": "$${HOME}"}
    assert out["steps"][0]["args"] == {"cmd": "echo $${HOME} $${not_a_param}"}
    again = baton.Workflow.from_dict(out)
    assert again.context == {"home": "${HOME}"}
    assert again.steps["a"].job.args == {"cmd": "echo ${HOME} ${not_a_param}"}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "data",
    [
        {"$schema": "https://example.com/workflow.schema.json", "steps": [{"name": "a", "worker": "w.a"}]},
        {"steps": [{"name": "a", "worker": "w.a", "args": {}, "deps": [], "graft": False}]},
        {"label": None, "ignore_cancelled": False, "params": {}, "steps": [{"name": "a", "worker": "w.a"}]},
        {"context": {"price": "$$5", "lone": "$5"}, "steps": [{"name": "a", "worker": "w.a", "args": {"p": "$$5"}}]},
        {"steps": [{"name": "s", "workflow": {"steps": [{"name": "x", "worker": "w.a", "deps": []}]}}]},
    ],
    ids=["schema", "defaults-written", "null-and-false", "dollars", "sub-workflow"],
)
def test_to_dict_of_a_template_without_params_is_the_data(data):
    wf = baton.Workflow.from_dict(data)
    assert wf.to_dict() == data
    assert wf.to_dict() is not wf.to_dict()  # a copy each time
    assert baton.Workflow.from_dict(wf.to_dict()).to_dict() == data
    # Changed after from_dict: the plain form, which round-trips as well.
    wf.add("late", baton.JobSpec(worker="w.b"), deps=[wf.to_dict()["steps"][0]["name"]])
    plain = wf.to_dict()
    assert "$schema" not in plain and "params" not in plain and plain != data
    assert plain["steps"][-1] == {"name": "late", "worker": "w.b", "deps": [data["steps"][0]["name"]]}
    assert baton.Workflow.from_dict(plain).to_dict() == plain


def test_a_long_chain_listed_dependents_first_builds():
    """Far deeper than Python's recursion limit (the cycle check used to recurse per step)."""
    n = 3_000
    steps = [{"name": f"s{i}", "worker": "w", **({"deps": [f"s{i + 1}"]} if i + 1 < n else {})} for i in range(n)]
    wf = baton.Workflow.from_dict({"steps": steps})
    assert [p.name for p in wf.plan()] == [f"s{i}" for i in reversed(range(n))]
    steps[-1]["deps"] = ["s2997"]  # a cycle at the far end is still named, with its JSON path
    path, message = _path_of({"steps": steps})
    assert path == "steps[2999].deps[0]"
    assert "cycle: 's2997' depends on 's2998' depends on 's2999' depends on 's2997'" in message


def _path_of(data: Any, params: dict[str, Any] | None = None, app: Any = None) -> tuple[str, str]:
    with pytest.raises(baton.WorkflowError) as info:
        baton.Workflow.from_dict(data, params=params, app=app)
    assert info.value.path is not None
    return info.value.path, str(info.value)


def _step(**fields: Any) -> dict[str, Any]:
    return {"name": "a", "worker": "reports.fetch", **fields}


@pytest.mark.parametrize(
    ("data", "params", "path", "needle"),
    [
        (["steps"], None, "$", "must be a workflow object"),
        ({"steps": [_step()], "stepz": []}, None, "stepz", "unknown key 'stepz'"),
        ({}, None, "steps", "is missing"),
        ({"steps": []}, None, "steps", "is empty"),
        ({"steps": "a"}, None, "steps", "must be an array"),
        ({"label": 3, "steps": [_step()]}, None, "label", "must be a string"),
        ({"context": [1], "steps": [_step()]}, None, "context", "must be an object"),
        ({"steps": [3]}, None, "steps[0]", "must be a step object"),
        ({"steps": [{"worker": "w"}]}, None, "steps[0].name", "is missing"),
        ({"steps": [_step(), _step()]}, None, "steps[1].name", "duplicate step name 'a'"),
        ({"steps": [{"name": "a"}]}, None, "steps[0].worker", "is missing"),
        ({"steps": [_step(worker=7)]}, None, "steps[0].worker", "must be a worker name"),
        ({"steps": [_step(args=[1])]}, None, "steps[0].args", "must be an object"),
        ({"steps": [_step(colour="red")]}, None, "steps[0].colour", "unknown key 'colour'"),
        ({"steps": [_step(deps="b")]}, None, "steps[0].deps", "must be an array of step names"),
        ({"steps": [_step(deps=[1])]}, None, "steps[0].deps[0]", "must be a step name"),
        ({"steps": [_step(deps=["a"])]}, None, "steps[0].deps[0]", "cannot depend on itself"),
        ({"steps": [_step(), {"name": "b", "worker": "w", "deps": ["a", "zz"]}]}, None, "steps[1].deps[1]", "'zz'"),
        (
            {"steps": [_step(deps=["b"]), {"name": "b", "worker": "w", "deps": ["a"]}]},
            None,
            "steps[1].deps[0]",
            "cycle: 'a' depends on 'b' depends on 'a'",
        ),
        ({"steps": [_step(priority="high")]}, None, "steps[0].priority", "must be an integer from 0 to 9"),
        ({"steps": [_step(priority=12)]}, None, "steps[0].priority", "from 0 to 9, got 12"),
        ({"steps": [_step(max_attempts=0)]}, None, "steps[0].max_attempts", ">= 1"),
        ({"steps": [_step(queue=True)]}, None, "steps[0].queue", "must be a queue name"),
        ({"steps": [_step(graft="yes")]}, None, "steps[0].graft", "true or false"),
        ({"steps": [_step(ignore_deleted=1)]}, None, "steps[0].ignore_deleted", "true or false"),
        ({"steps": [_step(tags=["a", 2])]}, None, "steps[0].tags[1]", "must be a string"),
        ({"steps": [_step(schedule_in=-1)]}, None, "steps[0].schedule_in", ">= 0"),
        ({"steps": [_step(queue="")]}, None, "steps[0].queue", "non-empty"),
        ({"params": {"day": {"required": True}}, "steps": [_step()]}, None, "params.day", "missing param 'day'"),
        ({"steps": [_step()]}, {"day": 1}, "params.day", "unknown param 'day'"),
        ({"params": {"d": {"requird": True}}, "steps": [_step()]}, None, "params.d.requird", "unknown key"),
        ({"params": [1], "steps": [_step()]}, None, "params", "must be an object of params"),
        ({"steps": [_step(args={"x": ["${nope}"]})]}, None, "steps[0].args.x[0]", "${nope} names no declared param"),
        ({"context": {"a": "${nope}"}, "steps": [_step()]}, None, "context.a", "names no declared param"),
        (
            {"steps": [{"name": "s", "workflow": {"steps": [_step(deps=["q"])]}}]},
            None,
            "steps[0].workflow.steps[0].deps[0]",
            "names no step",
        ),
        ({"steps": [{"name": "s", "worker": "w", "workflow": {"steps": []}}]}, None, "steps[0].workflow", "not both"),
        # Names that collide once sub-workflows are flattened, or that sit under a graft step.
        (
            {"steps": [{"name": "c", "workflow": {"steps": [_step(name="x")]}}, _step(name="c.x")]},
            None,
            "steps[1].name",
            "'c.x' is also the name of the step at steps[0].workflow.steps[0]",
        ),
        (
            {"steps": [_step(name="c.x"), {"name": "c", "workflow": {"steps": [_step(name="x")]}}]},
            None,
            "steps[1].workflow.steps[0].name",
            "'c.x' is also the name of the step at steps[0] (",
        ),
        (
            {"steps": [_step(name="g", graft=True), _step(name="g.0")]},
            None,
            "steps[1].name",
            "names under graft step 'g' (steps[0]) are reserved for the steps it grafts",
        ),
        (
            {
                "steps": [
                    {"name": "s", "workflow": {"steps": [_step(name="g", graft=True)]}},
                    {"name": "s.g", "workflow": {"steps": [_step(name="x")]}},
                ]
            },
            None,
            "steps[1].workflow.steps[0].name",
            "names under graft step 's.g' (steps[0].workflow.steps[0]) are reserved",
        ),
    ],
)
def test_every_mistake_names_its_json_path_and_the_fix(data, params, path, needle):
    found, message = _path_of(data, params)
    assert found == path, message
    assert needle in message, message
    assert message.startswith(f"{path}: ") or path == "$", message


def test_with_an_app_an_unknown_worker_is_an_error_naming_the_path(app):
    _reports(app)
    data = copy.deepcopy(SPEC_DATA)
    data["steps"][2]["worker"] = "reports.rendr"
    path, message = _path_of(data, {"day": "x"}, app=app)
    assert path == "steps[2].worker" and "unknown worker 'reports.rendr'" in message
    # Without app= any name is accepted (resolved when the job runs).
    assert baton.Workflow.from_dict(data, params={"day": "x"}).steps["render"].job is not None


def test_with_an_app_a_worker_whose_module_fails_at_import_is_an_error_naming_the_path(app, tmp_path, monkeypatch):
    _reports(app)
    module = f"tpl_broken_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text('raise RuntimeError("DATABASE_PASSWORD is not set")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    data = copy.deepcopy(SPEC_DATA)
    data["steps"][2]["worker"] = f"{module}.render"
    path, message = _path_of(data, {"day": "x"}, app=app)
    assert path == "steps[2].worker", message
    assert message == (
        f"steps[2].worker: '{module}.render' cannot be imported: its module '{module}' raised RuntimeError: "
        "DATABASE_PASSWORD is not set"
    )


def test_the_schema_ships_with_the_package_and_accepts_the_spec_example():
    schema = template.schema()
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert set(schema["properties"]) >= {"label", "params", "context", "steps"}
    step_keys = set(schema["$defs"]["step"]["oneOf"][0]["properties"])
    assert step_keys == set(template.STEP_KEYS) - {"workflow"}
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(SPEC_DATA, schema)
    jsonschema.validate(baton.Workflow.from_dict(SPEC_DATA, params={"day": "d"}).to_dict(), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"steps": [{"name": "a", "worker": "w", "priority": 12}]}, schema)


async def test_a_template_runs_grafts_and_all(app):
    @app.worker(name="tpl.fetch")
    def fetch(job: baton.Job) -> Any:
        return [job.args["day"]] * job.context["copies"]

    @app.worker(name="tpl.each")
    def each(job: baton.Job) -> Any:
        return job.args["day"]

    @app.worker(name="tpl.split")
    def split(job: baton.Job) -> Any:
        return baton.Graft.map(each, [{"day": d} for d in job.upstream("fetch")])

    app.worker(name="tpl.report")(lambda job: sorted(job.upstream("split")))
    data = {
        "params": {"day": {"required": True}, "copies": {"default": 2}},
        "context": {"copies": "${copies}"},
        "steps": [
            {"name": "fetch", "worker": "tpl.fetch", "args": {"day": "${day}"}},
            {"name": "split", "worker": "tpl.split", "graft": True, "deps": ["fetch"]},
            {"name": "report", "worker": "tpl.report", "deps": ["split"]},
        ],
    }
    wid = await app.insert_workflow(baton.Workflow.from_dict(data, params={"day": "d1"}, app=app))
    await app.drain()
    status = await app.workflow_status(wid)
    assert status.status == "completed"
    assert status.details["report"].result == ["split.0", "split.1"]


def test_cli_start_inserts_the_template_with_params_and_prints_the_id(db_url, tmp_path: Path, monkeypatch):
    # cli_app builds its app from BATON_DATABASE_URL when imported: import it afresh for this engine.
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    monkeypatch.delitem(sys.modules, "cli_app", raising=False)
    monkeypatch.setenv("BATON_DATABASE_URL", db_url)
    runner = CliRunner()
    assert runner.invoke(cli, ["--url", db_url, "migrate"]).exit_code == 0
    template_file = tmp_path / "wf.json"
    template_file.write_text(
        json.dumps(
            {
                "label": "from-cli",
                "params": {"n": {"required": True}, "who": {"default": "x"}},
                "steps": [
                    {"name": "a", "worker": "cli_app.echo", "args": {"n": "${n}", "who": "${who}"}},
                    {"name": "b", "worker": "cli_app.echo", "deps": ["a"]},
                ],
            }
        )
    )
    result = runner.invoke(
        cli,
        ["workflows", "start", str(template_file), "--param", "n=3", "-p", "who=2026-12-01", "--app", "cli_app:app"],
        env={"COLUMNS": "200", "BATON_DATABASE_URL": db_url},
    )
    assert result.exit_code == 0, result.output
    wid = result.output.strip()
    shown = runner.invoke(cli, ["--url", db_url, "workflows", "show", wid], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and "from-cli" in shown.output and "suspended" in shown.output
    drawn = runner.invoke(cli, ["--url", db_url, "workflows", "show", wid, "--format", "mermaid"])
    assert drawn.exit_code == 0 and drawn.output.startswith("flowchart TD") and "n_a --> n_b" in drawn.output
    dot = runner.invoke(cli, ["--url", db_url, "workflows", "show", wid, "--format", "dot"])
    assert dot.exit_code == 0 and "n_a -> n_b;" in dot.output

    async def args() -> Any:
        app = baton.Baton(db_url, plugins=[], log_events=False)
        try:
            return {j.worker: j.args for j in await app.list_jobs(workflow_id=wid) if j.state == "available"}
        finally:
            await app.close()

    assert asyncio.run(args()) == {"cli_app.echo": {"n": 3, "who": "2026-12-01"}}

    missing = runner.invoke(cli, ["--url", db_url, "workflows", "start", str(template_file), "--app", "cli_app:app"])
    assert missing.exit_code != 0 and "params.n: missing param 'n'" in missing.output
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    broken = runner.invoke(cli, ["--url", db_url, "workflows", "start", str(bad)])
    assert broken.exit_code != 0 and "is not JSON" in broken.output
