"""`Workflow`: build a DAG of jobs, validated before anything is written."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ValidationError, WorkflowError
from ..job import JobSpec, check_json, storable_text_error
from ..worker import NEW_OPTIONS, unknown_option
from . import render, template
from .render import Graph, GraphStep

IGNORE_FLAGS = ("ignore_cancelled", "ignore_discarded", "ignore_deleted")


def _check_flag(name: str, value: Any, *, step: str | None = None, allow_none: bool = False) -> bool | None:
    """A real bool (None too for a step: the workflow's default); "false" or 0.5 is refused, not coerced."""
    if isinstance(value, bool) or (value is None and allow_none):
        return value
    default = " or None (the workflow's default)" if allow_none else ""
    message = f"{name} must be True or False{default}, got {value!r:.80}"
    raise WorkflowError(message, step=step) if step is not None else WorkflowError(message, field=name)


@dataclass(slots=True)
class Step:
    """One step as declared: a job, or a sub-workflow standing in as one step."""

    name: str
    job: JobSpec | None
    sub: Workflow | None
    deps: tuple[str, ...]
    ignore_cancelled: bool | None
    ignore_discarded: bool | None
    ignore_deleted: bool | None
    graft: bool = False  # added with add_graft: its job returns the steps that come next
    template: dict[str, Any] | None = None  # the step as given to from_dict (to_dict returns it)


@dataclass(slots=True)
class PlannedStep:
    """A flattened step ready to insert: `deps` as declared, `edges` the step names it waits for."""

    name: str
    job: JobSpec
    deps: tuple[str, ...]
    edges: tuple[str, ...]
    ignore_cancelled: bool
    ignore_discarded: bool
    ignore_deleted: bool
    graft: bool = False


class Workflow:
    """A DAG of jobs inserted in one transaction with `app.insert_workflow(wf)`.

    ```python
    wf = baton.Workflow(label="nightly-report")
    wf.add("fetch", fetch.new({"day": d}))
    wf.add("clean", clean.new({}), deps=["fetch"])
    ```
    `ignore_cancelled` / `ignore_discarded` / `ignore_deleted` (workflow-wide defaults, or per
    step) make a cancelled / discarded / deleted dependency count as satisfied instead of
    cancelling its dependents. `context` is a JSON mapping every step reads as `job.context`.
    """

    def __init__(
        self,
        label: str | None = None,
        *,
        context: Mapping[str, Any] | None = None,
        ignore_cancelled: bool = False,
        ignore_discarded: bool = False,
        ignore_deleted: bool = False,
    ) -> None:
        if context is not None:
            if not isinstance(context, Mapping):
                raise WorkflowError(
                    "context must be a dict of JSON values, e.g. context={'tenant': 'acme'}; "
                    f"got {type(context).__name__}",
                    field="context",
                )
            try:
                self.context_json: str | None = check_json("context", dict(context))
            except ValidationError as exc:
                raise WorkflowError(str(exc).removeprefix(f"{exc.field}: "), field=exc.field) from None
        else:
            self.context_json = None
        self.context: dict[str, Any] | None = None if self.context_json is None else json.loads(self.context_json)
        if label is not None and not isinstance(label, str):
            raise WorkflowError(f"label must be a string, got {type(label).__name__}", field="label")
        if label is not None and (problem := storable_text_error(label)) is not None:
            raise WorkflowError(f"the label {problem}", field="label")
        self.label = label
        self.ignore_cancelled = bool(_check_flag("ignore_cancelled", ignore_cancelled))
        self.ignore_discarded = bool(_check_flag("ignore_discarded", ignore_discarded))
        self.ignore_deleted = bool(_check_flag("ignore_deleted", ignore_deleted))
        self._steps: dict[str, Step] = {}
        # from_dict of a template without params: (the data, to_dict() as it was then). While
        # to_dict() is unchanged, it returns the data itself (`$$`, "$schema", defaults and all).
        self._source: tuple[dict[str, Any], dict[str, Any]] | None = None
        # Every step so far is a job step, not a graft step, added after all of its deps (the
        # usual case): then plan() needs no pass over the deps (all known, no cycle).
        self._simple = True

    def __len__(self) -> int:
        return len(self._steps)

    @property
    def steps(self) -> dict[str, Step]:
        """Declared steps by name, in the order they were added."""
        return dict(self._steps)

    def _check_new(self, name: str, deps: Iterable[str]) -> tuple[str, ...]:
        if not isinstance(name, str) or not name.strip():
            raise WorkflowError(f"step names must be non-empty strings, got {name!r:.80}", field="name")
        if (problem := storable_text_error(name)) is not None:
            raise WorkflowError(f"the step name {problem}", step=name, field="name")
        if name in self._steps:
            raise WorkflowError("duplicate step name; every step in a workflow needs its own name", step=name)
        if isinstance(deps, str | bytes | Mapping) or not isinstance(deps, Iterable):
            raise WorkflowError(
                f"deps must be a list of step names, e.g. deps=['fetch'] (leave it out for none), got {deps!r:.80}",
                step=name,
            )
        out = tuple(deps)
        for dep in out:
            if not isinstance(dep, str):
                raise WorkflowError(f"dependency {dep!r:.80} is not a step name", step=name)
            if (problem := storable_text_error(dep)) is not None:
                raise WorkflowError(f"dependency {dep!r:.80} {problem}", step=name)
            if dep == name:
                raise WorkflowError("a step cannot depend on itself", step=name)
        if len(set(out)) != len(out):
            raise WorkflowError(f"lists a dependency twice: {list(out)}", step=name)
        return out

    def add(
        self,
        name: str,
        job: JobSpec,
        deps: Sequence[str] = (),
        *,
        ignore_cancelled: bool | None = None,
        ignore_discarded: bool | None = None,
        ignore_deleted: bool | None = None,
    ) -> Workflow:
        """Add step `name` running `job` once every step in `deps` has completed."""
        return self._add_job(name, job, deps, (ignore_cancelled, ignore_discarded, ignore_deleted), graft=False)

    def add_graft(
        self,
        name: str,
        job: JobSpec,
        deps: Sequence[str] = (),
        *,
        ignore_cancelled: bool | None = None,
        ignore_discarded: bool | None = None,
        ignore_deleted: bool | None = None,
    ) -> Workflow:
        """Add graft step `name`: its job runs after `deps` and returns `baton.Graft(sub)` or
        `baton.Graft.map(worker, items)`, the steps inserted (as `name.<step>`, `name.0`, ...)
        when its attempt is acked. Its dependents wait for every grafted step."""
        return self._add_job(name, job, deps, (ignore_cancelled, ignore_discarded, ignore_deleted), graft=True)

    def _add_job(
        self, name: str, job: JobSpec, deps: Sequence[str], flags: tuple[bool | None, ...], *, graft: bool
    ) -> Workflow:
        ignore_cancelled, ignore_discarded, ignore_deleted = flags
        dep_names = self._check_new(name, deps)
        if not isinstance(job, JobSpec):
            raise WorkflowError(f"needs a job built with worker.new(args), got {type(job).__name__}", step=name)
        for flag, value in zip(IGNORE_FLAGS, (ignore_cancelled, ignore_discarded, ignore_deleted), strict=True):
            _check_flag(flag, value, step=name, allow_none=True)
        if job.unique is not None:
            raise WorkflowError("unique jobs cannot be workflow steps; drop unique= for this step", step=name)
        if self._simple and (graft or not all(d in self._steps for d in dep_names)):
            self._simple = False
        self._steps[name] = Step(
            name, job, None, dep_names, ignore_cancelled, ignore_discarded, ignore_deleted, graft=graft
        )
        return self

    def add_workflow(self, name: str, workflow: Workflow, deps: Sequence[str] = ()) -> Workflow:
        """Add a whole workflow as one step: it starts after `deps`, its dependents wait for all of it."""
        dep_names = self._check_new(name, deps)
        if not isinstance(workflow, Workflow):
            raise WorkflowError(f"add_workflow needs a Workflow, got {type(workflow).__name__}", step=name)
        if workflow is self:
            raise WorkflowError("a workflow cannot contain itself", step=name)
        if not workflow._steps:
            raise WorkflowError("sub-workflow is empty; add steps to it first", step=name)
        if workflow.context is not None:  # as Graft and append_workflow refuse it: it would be ignored
            raise WorkflowError(
                "a sub-workflow's steps share the context of the workflow they are added to; "
                "drop context= from the sub-workflow (or give it to the outer workflow)",
                step=name,
                field="context",
            )
        self._simple = False
        self._steps[name] = Step(name, None, workflow, dep_names, None, None, None)
        return self

    # -- validation and flattening ----------------------------------------------------

    def plan(self, existing: Iterable[str] = ()) -> list[PlannedStep]:
        """Validate and flatten into steps in dependency order.

        `existing` names steps already stored (append_workflow): they may be depended on, as
        may a stored sub-workflow by its name (`report` for `report.x`, `report.y`).
        """
        if not self._steps:
            raise WorkflowError("workflow is empty; add at least one step with wf.add(name, job)")
        known = set(existing)
        if not known:
            flat = self._plan_plain()
            if flat is not None:
                return flat
        if known:
            for step in self._steps.values():
                if step.name in known or any(k.startswith(step.name + ".") for k in known):
                    raise WorkflowError("a step with this name already exists in the workflow", step=step.name)
        self._validate(known, "")
        flat = self._flatten("", (), known)
        _check_unique(flat)
        check_graft_names(flat)
        return flat

    def _plan_plain(self) -> list[PlannedStep] | None:
        """`plan()` of a new workflow without sub-workflows (None if it has one), in one pass
        over its steps: there a step's edges are its deps, its names are unique (dict keys),
        and graft names need checking only if it has a graft step. Raises what `plan()` would,
        for the same step: it checks the deps in the same order as `_validate`. A workflow whose
        steps were each added after their deps, none a graft step (`_simple`), needs no pass."""
        steps = self._steps
        if self._simple:
            return self._planned(steps.values())
        seen: set[str] = set()
        in_order = True
        grafts = False
        for name, step in steps.items():
            if step.sub is not None:
                return None
            for dep in step.deps:
                if dep not in seen:
                    if dep not in steps:
                        raise WorkflowError(f"depends on unknown step {dep!r}; add it first or fix the name", step=name)
                    in_order = False
            seen.add(name)
            grafts = grafts or step.graft
        if not in_order:
            self._check_cycles()
        flat = self._planned(steps.values() if in_order else self._order())
        if grafts:
            check_graft_names(flat)
        return flat

    def _planned(self, order: Iterable[Step]) -> list[PlannedStep]:
        """The PlannedStep of each job step of `order`, at the top level: its edges are its deps."""
        cancelled, discarded, deleted = self.ignore_cancelled, self.ignore_discarded, self.ignore_deleted
        return [
            PlannedStep(
                step.name,
                step.job,  # type: ignore[arg-type]  # not a sub-workflow: a job
                step.deps,
                step.deps,
                cancelled if step.ignore_cancelled is None else step.ignore_cancelled,
                discarded if step.ignore_discarded is None else step.ignore_discarded,
                deleted if step.ignore_deleted is None else step.ignore_deleted,
                step.graft,
            )
            for step in order
        ]

    def _validate(self, outside: set[str], prefix: str) -> None:
        """Deps must name steps of this same workflow (or, at the top level, stored steps);
        then no cycles. Sub-workflows are checked the same way, recursively."""
        steps = self._steps
        for step in steps.values():
            for dep in step.deps:
                if dep in steps:
                    continue
                if dep in outside or any(k.startswith(dep + ".") for k in outside):
                    continue
                raise WorkflowError(
                    f"depends on unknown step {dep!r}; add it first or fix the name", step=prefix + step.name
                )
        if not self._in_order():  # steps that only depend on earlier ones cannot form a cycle
            self._check_cycles()
        for step in steps.values():
            if step.sub is not None:
                step.sub._validate(set(), prefix + step.name + ".")

    def _in_order(self) -> bool:
        """Whether every step was added after the steps of this workflow it depends on (the
        usual case): then that order is already the dependency order and has no cycle."""
        steps = self._steps
        seen: set[str] = set()
        for name, step in steps.items():
            for dep in step.deps:
                if dep not in seen and dep in steps:
                    return False
            seen.add(name)
        return True

    def _check_cycles(self) -> None:
        """Depth first from each step in the order added, deps in order; the first dep that
        closes a cycle is the error, naming the cycle. Iterative (an explicit stack), so a long
        chain added dependents first cannot exhaust Python's recursion limit."""
        steps = self._steps
        state: dict[str, int] = {}  # 1: on the current path, 2: done
        for root in steps:
            if root in state:
                continue
            state[root] = 1
            path = [root]
            pending = [iter(steps[root].deps)]
            while pending:
                for dep in pending[-1]:
                    if dep not in steps:
                        continue
                    if state.get(dep) == 1:
                        cycle = [*path[path.index(dep) :], dep]
                        raise WorkflowError(
                            "cycle: " + " -> ".join(reversed(cycle)) + "; a workflow must be acyclic", step=dep
                        )
                    if dep not in state:
                        state[dep] = 1
                        path.append(dep)
                        pending.append(iter(steps[dep].deps))
                        break
                else:
                    pending.pop()
                    state[path.pop()] = 2

    def _order(self) -> list[Step]:
        """Steps in dependency order: depth first from each step in the order added, deps
        first (for steps added after their deps, the order they were added). Iterative, like
        `_check_cycles`."""
        if self._in_order():
            return list(self._steps.values())
        steps = self._steps
        done: set[str] = set()
        order: list[Step] = []
        for root in steps.values():
            if root.name in done:
                continue
            done.add(root.name)
            pending = [(root, iter(root.deps))]
            while pending:
                step, deps = pending[-1]
                for dep in deps:
                    if dep in steps and dep not in done:
                        done.add(dep)
                        pending.append((steps[dep], iter(steps[dep].deps)))
                        break
                else:
                    pending.pop()
                    order.append(step)
        return order

    def _members(self, prefix: str, name: str) -> tuple[str, ...]:
        """The flattened step names a dependency on `name` waits for."""
        step = self._steps.get(name)
        if step is None or step.sub is None:
            return (prefix + name,)
        sub_prefix = prefix + name + "."
        return tuple(m for s in step.sub._steps for m in step.sub._members(sub_prefix, s))

    def _flatten(self, prefix: str, outer_edges: tuple[str, ...], existing: set[str]) -> list[PlannedStep]:
        # Runs once per step of every workflow inserted (20 000 times for a bulk insert of
        # 2 000 ten-step workflows): plain locals, and no work a plain step does not need.
        out: list[PlannedStep] = []
        steps = self._steps
        cancelled, discarded, deleted = self.ignore_cancelled, self.ignore_discarded, self.ignore_deleted
        for step in self._order():
            deps = step.deps
            edges: list[str] = []
            for dep in deps:
                target = steps.get(dep)
                if target is not None:
                    if target.sub is None:
                        edges.append(prefix + dep)
                    else:
                        edges.extend(self._members(prefix, dep))
                elif dep in existing:
                    edges.append(dep)
                else:  # a stored sub-workflow, by name: wait for all of its steps
                    edges.extend(sorted(k for k in existing if k.startswith(dep + ".")))
            if not deps:
                edges.extend(outer_edges)
            if step.sub is not None:
                out.extend(step.sub._flatten(prefix + step.name + ".", tuple(edges), set()))
                continue
            assert step.job is not None
            out.append(
                PlannedStep(
                    prefix + step.name,
                    step.job,
                    tuple(prefix + d if d in steps else d for d in deps) if prefix else deps,
                    tuple(dict.fromkeys(edges)) if len(edges) > 1 else tuple(edges),
                    cancelled if step.ignore_cancelled is None else step.ignore_cancelled,
                    discarded if step.ignore_discarded is None else step.ignore_discarded,
                    deleted if step.ignore_deleted is None else step.ignore_deleted,
                    step.graft,
                )
            )
        return out

    # -- templates --------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], params: Mapping[str, Any] | None = None, app: Any = None) -> Workflow:
        """Build a workflow from template data (JSON), substituting `${param}`s with `params`.
        With `app` (a `baton.Baton`) workers are resolved by name — an unknown one is an error —
        and each step gets its worker's options. Any mistake is a `WorkflowError` whose `path`
        names the JSON path, e.g. `steps[2].deps[0]`."""
        resolve = None
        if app is not None:
            resolve = getattr(app, "resolve_worker", None)
            if not callable(resolve):
                raise WorkflowError(f"app= must be a baton.Baton, got {type(app).__name__}", field="app")
        concrete = template.check(data, params, resolve)
        flags = {k: concrete[k] for k in IGNORE_FLAGS if k in concrete}
        try:
            wf = cls(label=concrete.get("label"), context=concrete.get("context"), **flags)
        except WorkflowError as exc:
            raise _at(exc.field if exc.field in ("label", "context") else "$", exc) from None
        wf._fill(concrete["steps"], "steps", resolve)
        if not data.get("params"):
            wf._source = (copy.deepcopy(dict(data)), wf._canonical())
        return wf

    def _fill(self, steps: list[dict[str, Any]], path: str, resolve: Any) -> None:
        for i, step in enumerate(steps):
            here = f"{path}[{i}]"
            deps = step.get("deps", [])
            if "workflow" in step:
                inner = step["workflow"]
                sub = Workflow(**{k: inner[k] for k in IGNORE_FLAGS if k in inner})
                sub._fill(inner["steps"], f"{here}.workflow.steps", resolve)
                try:
                    self.add_workflow(step["name"], sub, deps=deps)
                except WorkflowError as exc:
                    raise _at(here, exc) from None
                continue
            options = {k: step[k] for k in template.JOB_OPTIONS if k in step}
            try:
                definition = resolve(step["worker"]) if resolve is not None else None
                if definition is not None:
                    spec = definition.options.new(step.get("args", {}), **options)
                else:
                    spec = JobSpec(worker=step["worker"], args=step.get("args", {}), **options)
            except WorkflowError as exc:
                raise _at(here, exc) from None
            except ValidationError as exc:
                message = str(exc).removeprefix(f"{exc.field}: ")
                raise _at(f"{here}.{exc.field}", WorkflowError(message)) from None
            flags = {k: step[k] for k in IGNORE_FLAGS if k in step}
            try:
                (self.add_graft if step.get("graft") else self.add)(step["name"], spec, deps, **flags)
            except WorkflowError as exc:
                raise _at(here, exc) from None
            self._steps[step["name"]].template = step

    def to_dict(self) -> dict[str, Any]:
        """The workflow as template data: `from_dict(wf.to_dict())` builds the same workflow.
        For a workflow built by `from_dict` from data without params, and not changed since,
        that data (a copy). Otherwise the data in its plain form: params substituted, a literal
        `$` written `$$` where the template syntax would read it (`$${HOME}`), and only what
        differs from the defaults (no `$schema`, null label, false flags, empty args or deps)."""
        out = self._canonical()
        if self._source is not None and out == self._source[1]:
            return copy.deepcopy(self._source[0])
        return out

    def _canonical(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.label is not None:
            out["label"] = self.label
        if self.context is not None:
            out["context"] = template.escape(json.loads(self.context_json or "null"))
        for flag in IGNORE_FLAGS:
            if getattr(self, flag):
                out[flag] = True
        out["steps"] = [self._step_dict(step) for step in self._steps.values()]
        return out

    def _step_dict(self, step: Step) -> dict[str, Any]:
        if step.template is not None:
            data: dict[str, Any] = json.loads(json.dumps(step.template))
            if "args" in data:
                data["args"] = template.escape(data["args"])
            return data
        out: dict[str, Any] = {"name": step.name}
        if step.sub is not None:
            inner = step.sub._canonical()
            out["workflow"] = {k: v for k, v in inner.items() if k in ("steps", *IGNORE_FLAGS)}
        else:
            job = step.job
            assert job is not None
            if job.scheduled_at is not None:
                raise WorkflowError("has scheduled_at, which a template cannot hold; use schedule_in", step=step.name)
            out["worker"] = job.worker
            if job.args:
                out["args"] = template.escape(json.loads(job.args_json))
            if step.graft:
                out["graft"] = True
            defaults = {"queue": "default", "priority": 0, "max_attempts": 20, "tags": [], "meta": {}}
            for key, default in defaults.items():
                value = getattr(job, key)
                if value != default:
                    out[key] = json.loads(job.meta_json) if key == "meta" else value
            if job.schedule_in:
                out["schedule_in"] = job.schedule_in
            for flag in IGNORE_FLAGS:
                if getattr(step, flag) is not None:
                    out[flag] = getattr(step, flag)
        if step.deps:
            out["deps"] = list(step.deps)
        return out

    # -- drawing ----------------------------------------------------------------------

    def graph(self) -> Graph:
        """The workflow as plain data to draw (`baton.workflows.render`)."""
        return Graph(
            self.label,
            {
                name: GraphStep(
                    step.job.worker if step.job is not None else "",
                    step.deps,
                    step.sub.graph() if step.sub is not None else None,
                    graft=step.graft,
                )
                for name, step in self._steps.items()
            },
        )

    def to_mermaid(self) -> str:
        """The graph as a Mermaid flowchart (sub-workflows as subgraphs)."""
        return render.to_mermaid(self.graph())

    def to_dot(self) -> str:
        """The graph in Graphviz DOT (sub-workflows as clusters)."""
        return render.to_dot(self.graph())


def _check_unique(flat: list[PlannedStep]) -> None:
    """Flattened names must be unique: `a.b` may not be both a step and a sub-workflow's step."""
    if len({p.name for p in flat}) == len(flat):
        return
    seen: set[str] = set()
    dupes = {p.name for p in flat if p.name in seen or seen.add(p.name)}  # type: ignore[func-returns-value]
    raise WorkflowError("name collides with a sub-workflow step name", step=sorted(dupes)[0])


def check_graft_names(plan: Iterable[PlannedStep], grafts: Iterable[str] = ()) -> None:
    """Names under a graft step (`process.0`, `process.x`) are its grafted steps': no other
    step may take one. `grafts` names graft steps already stored."""
    steps = list(plan)
    prefixes = sorted({s.name + "." for s in steps if s.graft} | {g + "." for g in grafts})
    if not prefixes:
        return
    for step in steps:
        for prefix in prefixes:
            if step.name.startswith(prefix):
                raise WorkflowError(
                    f"names under graft step {prefix[:-1]!r} are reserved for the steps it grafts; rename this step",
                    step=step.name,
                )


def _at(path: str, exc: WorkflowError) -> WorkflowError:
    """`exc` again, naming the JSON path of the template it came from."""
    message = str(exc).split(": ", 1)[-1]
    return WorkflowError(message, field=path, path=path)


# --------------------------------------------------------------------------- grafts


class Graft:
    """What the worker of a graft step (`wf.add_graft`) returns: the steps that come next.

    ```python
    return baton.Graft.map(resize, [{"file": f} for f in files])  # steps "process.0", "process.1", ...
    sub = baton.Workflow(); sub.add("a", a.new({})); return baton.Graft(sub)  # steps "process.a", ...
    ```
    The steps are inserted in the transaction that acks the graft step's attempt, so they exist
    exactly once; the graft step's dependents wait for every one of them.
    """

    __slots__ = ("_specs", "workflow")

    def __init__(self, workflow: Workflow) -> None:
        if not isinstance(workflow, Workflow):
            raise WorkflowError(
                f"Graft needs a baton.Workflow (or use Graft.map(worker, items)), got {type(workflow).__name__}",
                field="graft",
            )
        if workflow.context is not None:
            raise WorkflowError(
                "a grafted workflow shares the context of the workflow it grows; drop context= from it", field="graft"
            )
        self.workflow = workflow
        self._specs: list[JobSpec] | None = None

    @classmethod
    def map(cls, worker: Any, items: Iterable[Mapping[str, Any]], **job_options: Any) -> Graft:
        """One step per item, named `<graft>.0`, `<graft>.1`, ...: the job `worker.new(item,
        **job_options)` (`worker` is a worker or a registered worker name)."""
        if isinstance(items, str | bytes | Mapping) or not isinstance(items, Iterable):
            raise WorkflowError(f"Graft.map needs a list of args dicts, got {items!r:.80}", field="graft.items")
        unknown = sorted(set(job_options) - set(NEW_OPTIONS))
        if unknown:
            raise unknown_option(unknown[0], NEW_OPTIONS, "option of .new()")
        if isinstance(worker, str):

            def new(args: Mapping[str, Any]) -> JobSpec:
                return JobSpec(worker=worker, args=dict(args), **job_options)

        elif callable(getattr(worker, "new", None)):

            def new(args: Mapping[str, Any]) -> JobSpec:
                return worker.new(args, **job_options)  # type: ignore[no-any-return]

        else:
            raise WorkflowError(
                f"Graft.map needs a worker (or its registered name), got {type(worker).__name__}", field="graft.worker"
            )
        specs: list[JobSpec] = []
        for i, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise WorkflowError(
                    f"item {i} must be a dict of args for the worker, got {type(item).__name__}",
                    field=f"graft.items[{i}]",
                )
            spec = new(item)
            if not isinstance(spec, JobSpec):
                raise WorkflowError(f"{worker!r:.80}.new() did not return a job", field="graft.worker")
            if spec.unique is not None:
                raise WorkflowError("unique jobs cannot be workflow steps; drop unique=", field="graft.unique")
            specs.append(spec)
        graft = cls.__new__(cls)
        graft.workflow = Workflow()
        graft._specs = specs
        return graft

    def __len__(self) -> int:
        return len(self._specs) if self._specs is not None else len(self.workflow)

    def __repr__(self) -> str:
        kind = "map" if self._specs is not None else "workflow"
        return f"<Graft {kind} of {len(self)} steps>"

    def plan(self, graft: str) -> list[PlannedStep]:
        """Validate and flatten into steps named under the graft step `graft`, in dependency
        order; grafted steps keep their own deps (prefixed) and nothing else waits for them here."""
        prefix = graft + "."
        if self._specs is not None:
            return [
                PlannedStep(f"{prefix}{i}", spec, (), (), False, False, False) for i, spec in enumerate(self._specs)
            ]
        sub = self.workflow
        if not sub._steps:
            return []
        sub._validate(set(), prefix)
        flat = sub._flatten(prefix, (), set())
        _check_unique(flat)
        check_graft_names(flat)
        return flat
