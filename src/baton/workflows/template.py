"""Workflow templates: a workflow as JSON data (`Workflow.from_dict`, `Workflow.to_dict`,
`baton workflows start FILE.json`). This module checks the data and substitutes `${param}`s;
every mistake is a `WorkflowError` whose `path` names the JSON path (`steps[2].deps[0]`) and
whose message says the fix. `builder` turns the checked data into a `Workflow`. The format is
described by the JSON Schema shipped as `baton/workflows/schema/workflow.schema.json`."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

from ..errors import WorkerImportError, WorkflowError
from ..job import check_json, storable_text_error

TOP_KEYS = ("$schema", "label", "params", "context", "steps", "ignore_cancelled", "ignore_discarded", "ignore_deleted")
STEP_KEYS = (
    "name", "worker", "args", "deps", "graft", "workflow", "queue", "priority", "max_attempts", "tags", "meta",
    "schedule_in", "ignore_cancelled", "ignore_discarded", "ignore_deleted",
)  # fmt: skip
PARAM_KEYS = ("required", "default", "description")
JOB_OPTIONS = ("queue", "priority", "max_attempts", "tags", "meta", "schedule_in")
IGNORE_KEYS = ("ignore_cancelled", "ignore_discarded", "ignore_deleted")
_PARAM = re.compile(r"\$\$|\$\{([^}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def schema() -> dict[str, Any]:
    """The JSON Schema of the template format (draft 2020-12)."""
    text = resources.files("baton.workflows").joinpath("schema/workflow.schema.json").read_text()
    return json.loads(text)  # type: ignore[no-any-return]


def _error(path: str, message: str) -> WorkflowError:
    return WorkflowError(message, field=path or "workflow", path=path or "$")


def _type_name(value: Any) -> str:
    return (
        "null"
        if value is None
        else {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
            type(value), "number" if isinstance(value, int | float) else type(value).__name__
        )
    )


def _expect(value: Any, kind: type | tuple[type, ...], path: str, what: str) -> None:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):  # true is no number
        raise _error(path, f"must be {what}, got {_type_name(value)} {json.dumps(value, default=str)[:60]}")


# --------------------------------------------------------------------------- params


def resolve_params(declared: Any, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The value of every declared param: given, else its default; unknown or missing ones are errors."""
    if declared is None:
        declared = {}
    _expect(declared, dict, "params", 'an object of params, e.g. {"day": {"required": true}}')
    given = dict(given or {})
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        path = f"params.{name}"
        if not _NAME.fullmatch(name):
            raise _error(path, "param names are letters, digits, _ . - (starting with a letter or _); rename it")
        if spec is None:
            spec = {}
        _expect(spec, dict, path, 'an object like {"required": true} or {"default": 2}')
        for key in spec:
            if key not in PARAM_KEYS:
                raise _error(f"{path}.{key}", f"unknown key {key!r}; a param takes {', '.join(PARAM_KEYS)}")
        required = spec.get("required", False)
        _expect(required, bool, f"{path}.required", "true or false")
        if required and "default" in spec:
            raise _error(path, "a required param has no default; drop one of required and default")
        if name in given:
            values[name] = given.pop(name)
        elif "default" in spec:
            values[name] = spec["default"]
        elif required:
            raise _error(path, f"missing param {name!r}: pass params={{{name!r}: ...}} (CLI: --param {name}=VALUE)")
        else:
            values[name] = None
        try:
            check_json(path, values[name])
        except ValueError as exc:
            raise _error(path, f"the value is not JSON: {exc}") from None
    if given:
        unknown = sorted(given)[0]
        known = ", ".join(sorted(declared)) or "none"
        raise _error(f"params.{unknown}", f"unknown param {unknown!r}; the template declares: {known}")
    return values


def substitute(value: Any, params: Mapping[str, Any], path: str) -> Any:
    """`value` with every `${name}` in its strings replaced (a whole-string `${name}` keeps the
    param's JSON type; `$$` is a literal `$`)."""
    if isinstance(value, str):
        whole = _PARAM.fullmatch(value)
        if whole is not None and whole.group(1) is not None:
            return _param(whole.group(1), params, path)

        def one(match: re.Match[str]) -> str:
            if match.group(1) is None:
                return "$"
            found = _param(match.group(1), params, path)
            return found if isinstance(found, str) else json.dumps(found)

        return _PARAM.sub(one, value) if "$" in value else value
    if isinstance(value, dict):
        return {k: substitute(v, params, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, params, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


_SPECIAL = re.compile(r"\$(?=[${])")


def escape(value: Any) -> Any:
    """`value` with its strings written so that `substitute` reads them back unchanged: each `$`
    that starts `$$` or `${` doubled (`${HOME}` -> `$${HOME}`, `$$` -> `$$$`), a lone `$` kept."""
    if isinstance(value, str):
        return _SPECIAL.sub("$$", value) if "$" in value else value
    if isinstance(value, dict):
        return {k: escape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [escape(v) for v in value]
    return value


def _param(name: str, params: Mapping[str, Any], path: str) -> Any:
    if name not in params:
        known = ", ".join(sorted(params)) or "none"
        raise _error(path, f"${{{name}}} names no declared param (declared: {known}); declare it under params")
    return params[name]


# --------------------------------------------------------------------------- the data


def check(data: Any, params: Mapping[str, Any] | None, resolve: Any) -> dict[str, Any]:
    """Validate template `data`, substitute its params, and return the concrete workflow data
    (no `params`, no `$schema`). `resolve(name)` finds a worker (None: unknown) or is None."""
    _expect(data, dict, "", 'a workflow object like {"steps": [...]}')
    for key in data:
        if key not in TOP_KEYS:
            raise _error(str(key), f"unknown key {key!r}; a workflow takes {', '.join(TOP_KEYS)}")
    if params is not None and not isinstance(params, Mapping):
        raise _error("params", f"params= must be a dict of values, got {_type_name(params)}")
    values = resolve_params(data.get("params"), params)
    out: dict[str, Any] = {}
    if "label" in data and data["label"] is not None:
        _expect(data["label"], str, "label", "a string")
        out["label"] = data["label"]
    if "context" in data and data["context"] is not None:
        _expect(data["context"], dict, "context", "an object of JSON values")
        out["context"] = substitute(data["context"], values, "context")
    for key in IGNORE_KEYS:
        if key in data:
            _expect(data[key], bool, key, "true or false")
            out[key] = data[key]
    out["steps"] = _steps(data.get("steps"), "steps", values, resolve)
    _check_names(out["steps"])
    return out


def _check_names(steps: list[dict[str, Any]]) -> None:
    """The names the steps get once sub-workflows are flattened (`sub.step`) must be unique,
    and names under a graft step (`process.0`, `process.x`) are reserved for the steps it
    grafts — what `Workflow.plan` checks at insert, here with the JSON path of the step."""
    flat: list[tuple[str, str, bool]] = []  # (flattened name, JSON path of the step, graft)

    def collect(steps: list[dict[str, Any]], path: str, prefix: str) -> None:  # as deep as the nesting
        for i, step in enumerate(steps):
            if "workflow" in step:
                collect(step["workflow"]["steps"], f"{path}[{i}].workflow.steps", f"{prefix}{step['name']}.")
            else:
                flat.append((prefix + step["name"], f"{path}[{i}]", bool(step.get("graft"))))

    collect(steps, "steps", "")
    seen: dict[str, str] = {}
    for name, here, _ in flat:
        if name in seen:
            raise _error(
                f"{here}.name",
                f"{name!r} is also the name of the step at {seen[name]} (a sub-workflow's steps are named "
                "<sub-workflow>.<step>); rename one",
            )
        seen[name] = here
    grafts = {name: here for name, here, graft in flat if graft}
    if not grafts:
        return
    for name, here, _ in flat:
        parts = name.split(".")
        for k in range(1, len(parts)):
            graft = ".".join(parts[:k])
            if graft in grafts:
                raise _error(
                    f"{here}.name",
                    f"names under graft step {graft!r} ({grafts[graft]}) are reserved for the steps it grafts; "
                    "rename this step",
                )


def _steps(steps: Any, path: str, values: Mapping[str, Any], resolve: Any) -> list[dict[str, Any]]:
    if steps is None:
        raise _error(path, 'is missing; list the steps, e.g. "steps": [{"name": "a", "worker": "app.tasks.a"}]')
    _expect(steps, list, path, "an array of steps")
    if not steps:
        raise _error(path, "is empty; add at least one step")
    out: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    for i, step in enumerate(steps):
        here = f"{path}[{i}]"
        _expect(step, dict, here, 'a step object like {"name": "a", "worker": "app.tasks.a"}')
        for key in step:
            if key not in STEP_KEYS:
                raise _error(f"{here}.{key}", f"unknown key {key!r}; a step takes {', '.join(STEP_KEYS)}")
        name = step.get("name")
        if name is None:
            raise _error(f"{here}.name", "is missing; every step needs a name")
        _expect(name, str, f"{here}.name", "a non-empty string")
        if not name.strip():
            raise _error(f"{here}.name", "must be a non-empty string")
        if (problem := storable_text_error(name)) is not None:
            raise _error(f"{here}.name", problem)
        if name in index:
            raise _error(f"{here}.name", f"duplicate step name {name!r} (also steps[{index[name]}]); rename one")
        index[name] = i
        out.append(_step(step, here, values, resolve))
    for i, step in enumerate(out):
        for j, dep in enumerate(step.get("deps", [])):
            if dep not in index:
                known = ", ".join(index)
                raise _error(f"{path}[{i}].deps[{j}]", f"names no step of this workflow: {dep!r} (steps: {known})")
    _check_cycles(out, index, path)
    return out


def _step(step: dict[str, Any], here: str, values: Mapping[str, Any], resolve: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": step["name"]}
    graft = step.get("graft", False)
    _expect(graft, bool, f"{here}.graft", "true or false")
    if "workflow" in step:
        if "worker" in step or graft:
            raise _error(f"{here}.workflow", "a step is a job (worker) or a sub-workflow (workflow), not both")
        for key in step:
            if key not in ("name", "workflow", "deps"):
                raise _error(f"{here}.{key}", "a sub-workflow step takes only name, workflow and deps")
        sub = step["workflow"]
        _expect(sub, dict, f"{here}.workflow", 'an object like {"steps": [...]}')
        for key in sub:
            if key not in ("steps", *IGNORE_KEYS):
                raise _error(f"{here}.workflow.{key}", f"unknown key {key!r}; a sub-workflow takes steps and ignore_*")
        inner: dict[str, Any] = {}
        for key in IGNORE_KEYS:
            if key in sub:
                _expect(sub[key], bool, f"{here}.workflow.{key}", "true or false")
                inner[key] = sub[key]
        inner["steps"] = _steps(sub.get("steps"), f"{here}.workflow.steps", values, resolve)
        out["workflow"] = inner
    else:
        worker = step.get("worker")
        if worker is None:
            raise _error(f"{here}.worker", "is missing; name the step's worker by its registered name")
        _expect(worker, str, f"{here}.worker", "a worker name")
        try:
            found = resolve(worker) if resolve is not None else True
        except WorkerImportError as exc:  # its module exists but raises at import
            raise _error(f"{here}.worker", str(exc).removeprefix(f"{exc.field}: ")) from exc
        if found is None:
            raise _error(
                f"{here}.worker",
                f"unknown worker {worker!r}: register it with @app.worker (or a baton.Worker subclass), "
                "or fix the name",
            )
        out["worker"] = worker
        if "args" in step:
            _expect(step["args"], dict, f"{here}.args", "an object of JSON values")
            if step["args"]:
                out["args"] = substitute(step["args"], values, f"{here}.args")
        if graft:
            out["graft"] = True
        for key in JOB_OPTIONS:
            if key in step:
                out[key] = _option(key, step[key], f"{here}.{key}")
        for key in IGNORE_KEYS:
            if key in step:
                _expect(step[key], bool, f"{here}.{key}", "true or false")
                out[key] = step[key]
    deps = step.get("deps", [])
    _expect(deps, list, f"{here}.deps", 'an array of step names, e.g. ["fetch"]')
    for j, dep in enumerate(deps):
        _expect(dep, str, f"{here}.deps[{j}]", "a step name")
        if dep == step["name"]:
            raise _error(f"{here}.deps[{j}]", "a step cannot depend on itself; remove it")
        if dep in deps[:j]:
            raise _error(f"{here}.deps[{j}]", f"{dep!r} is listed twice; remove one")
    if deps:
        out["deps"] = list(deps)
    return out


def _option(key: str, value: Any, path: str) -> Any:
    if key == "queue":
        _expect(value, str, path, "a queue name")
    elif key == "priority":
        _expect(value, int, path, "an integer from 0 to 9")
        if not 0 <= value <= 9:
            raise _error(path, f"must be an integer from 0 to 9, got {value}")
    elif key == "max_attempts":
        _expect(value, int, path, "an integer >= 1")
        if value < 1:
            raise _error(path, f"must be an integer >= 1, got {value}")
    elif key == "tags":
        _expect(value, list, path, "an array of strings")
        for i, tag in enumerate(value):
            _expect(tag, str, f"{path}[{i}]", "a string")
    elif key == "meta":
        _expect(value, dict, path, "an object of JSON values")
    elif key == "schedule_in":
        _expect(value, (int, float), path, "a number of seconds >= 0")
        if not (isinstance(value, int) or math.isfinite(value)) or value < 0:
            raise _error(path, f"must be a number of seconds >= 0, got {value}")
    return value


def _check_cycles(steps: list[dict[str, Any]], index: dict[str, int], path: str) -> None:
    """Depth first from each step in order, deps in order; the first dep that closes a cycle is
    the error. Iterative (an explicit stack), so a long chain listed dependents first cannot
    exhaust Python's recursion limit."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in steps:
        if root["name"] in state:
            continue
        state[root["name"]] = 1
        path_names = [root["name"]]
        pending = [iter(enumerate(root.get("deps", [])))]
        while pending:
            name = path_names[-1]
            for j, dep in pending[-1]:
                if state.get(dep) == 1:
                    cycle = [*path_names[path_names.index(dep) :], dep]
                    raise _error(
                        f"{path}[{index[name]}].deps[{j}]",
                        "cycle: " + " depends on ".join(repr(c) for c in cycle) + "; a workflow must be acyclic, "
                        "remove one of these deps",
                    )
                if dep not in state:
                    state[dep] = 1
                    path_names.append(dep)
                    pending.append(iter(enumerate(steps[index[dep]].get("deps", []))))
                    break
            else:
                pending.pop()
                path_names.pop()
                state[name] = 2
