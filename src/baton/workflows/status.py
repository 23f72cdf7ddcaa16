"""`WorkflowStatus`: what `app.workflow_status(wid)` returns — the label, each step's state
and why it waits or was repaired, counts by state, and whether the workflow finished."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..job import FAILED_STATES, TERMINAL_STATES, to_datetime
from . import render
from .render import Graph, GraphStep


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


@dataclass(slots=True)
class StepStatus:
    """One step: its job, state (`deleted` when the job row is gone) and diagnostics."""

    name: str
    job_id: int
    state: str
    deps: list[str]
    queue: str | None = None
    worker: str | None = None
    attempt: int = 0
    max_attempts: int = 0
    pending: int = 0
    reason: str | None = None
    last_error: str | None = None
    queued_ms: int | None = None
    run_ms: int | None = None
    result: Any = None
    recorded: bool = False
    graft: bool = False  # a graft step (wf.add_graft)
    parent: str | None = None  # the graft step that grafted this step


def outcome(claimed: str | None, steps: list[tuple[str, str | None]]) -> tuple[str, bool]:
    """(status, finished) of a workflow from its completion claim's status (`claimed`, None when
    unclaimed) and each step's (state, resolution). Any live step: running, not finished — also
    in a finished workflow a retry reopened, whose finished event was sent once and is not sent
    again. Every step terminal: failed when one ended cancelled or discarded (a step whose job
    row is gone, `deleted`, by its resolution), else completed; finished once claimed. A
    workflow without steps left (pruned) keeps its claim's status."""
    if not steps:
        return claimed or "running", claimed is not None
    if any(state not in TERMINAL_STATES and state != "deleted" for state, _ in steps):
        return "running", False
    failed = any(
        state in FAILED_STATES or (state == "deleted" and resolution in FAILED_STATES) for state, resolution in steps
    )
    return ("failed" if failed else "completed"), claimed is not None


@dataclass(slots=True)
class WorkflowStatus:
    """A workflow as stored now."""

    workflow_id: str
    label: str | None
    finished: bool
    status: str  # running | completed | failed
    steps: dict[str, str]
    counts: dict[str, int]
    details: dict[str, StepStatus] = field(default_factory=dict)
    inserted_at: datetime | None = None
    announced_at: datetime | None = None
    announced_by: str | None = None
    context: dict[str, Any] | None = None
    finished_at: datetime | None = None
    """When it finished: the completion claim's `announced_at`, or, for a finished workflow a
    retry reopened (a step ended after the claim), when its last step ended; None while running."""

    def grafted(self, graft: str) -> list[str]:
        """The steps graft step `graft` grafted, those of graft steps under it included."""
        prefix = graft + "."
        return [n for n, s in self.details.items() if s.parent is not None and n.startswith(prefix)]

    @property
    def failed_steps(self) -> list[str]:
        """Steps that ended cancelled or discarded."""
        return sorted(n for n, s in self.steps.items() if s in FAILED_STATES)

    @property
    def waiting(self) -> dict[str, str]:
        """Why each unfinished step is not running yet ("why is this workflow stuck?")."""
        out = {}
        for name, step in self.details.items():
            if step.state in TERMINAL_STATES or step.state == "deleted":
                continue
            if step.state == "suspended":
                gone = [d for d in step.deps if self.steps.get(d) == "deleted"]
                if gone:
                    out[name] = f"dependency {gone[0]!r} was deleted before completing (dep_deleted)"
                elif step.pending <= 0:
                    out[name] = "all dependencies satisfied but not released (missed_release)"
                else:
                    waiting_on = []
                    for d in step.deps:
                        grafted = self.grafted(d) if d in self.details and self.details[d].graft else []
                        running = [
                            g for g in grafted if self.steps[g] not in TERMINAL_STATES and self.steps[g] != "deleted"
                        ]
                        if running:
                            waiting_on.append(f"{d} ({len(running)} grafted steps)")
                        elif self.steps.get(d) not in ("completed", None):
                            waiting_on.append(d)
                    out[name] = f"waiting on {', '.join(waiting_on) or str(step.pending) + ' dependencies'}"
            else:
                out[name] = step.state
        return out

    @classmethod
    def from_rows(cls, wf: dict[str, Any], rows: list[dict[str, Any]]) -> WorkflowStatus:
        """Build from `workflow_row` and `workflow_steps` query rows."""
        steps: dict[str, str] = {}
        counts: dict[str, int] = {}
        details: dict[str, StepStatus] = {}
        for r in rows:
            state = r["state"] or "deleted"  # a step whose job row is gone counts as terminal, `deleted`
            steps[r["name"]] = state
            counts[state] = counts.get(state, 0) + 1
            error = _loads(r["last_error"]) if r["last_error"] is not None else None
            details[r["name"]] = StepStatus(
                name=r["name"],
                job_id=r["job_id"],
                state=state,
                deps=list(_loads(r["deps"]) or []),
                queue=r["queue"],
                worker=r["worker"],
                attempt=r["attempt"] or 0,
                max_attempts=r["max_attempts"] or 0,
                pending=r["pending"],
                reason=r["reason"],
                last_error=error.get("error") if isinstance(error, dict) else None,
                queued_ms=r["queued_ms"],
                run_ms=r["run_ms"],
                result=_loads(r["result"]) if r["recorded"] else None,
                recorded=bool(r["recorded"]),
                graft=bool(r.get("graft")),
                parent=r.get("parent"),
            )
        claimed = wf["completion_status"]
        status, finished = outcome(claimed, [(details[r["name"]].state, r["resolution"]) for r in rows])
        announced_at = to_datetime(wf["announced_at"])
        ended = [t for r in rows if (t := to_datetime(r.get("ended_at"))) is not None]
        finished_at = max([announced_at, *ended]) if finished and announced_at is not None else None
        return cls(
            workflow_id=wf["id"],
            label=wf["label"],
            finished=finished,
            status=status,
            steps=steps,
            counts=counts,
            details=details,
            inserted_at=to_datetime(wf["inserted_at"]),
            announced_at=announced_at,
            announced_by=wf["announced_by"],
            context=_loads(wf.get("context")),
            finished_at=finished_at,
        )

    # -- drawing ----------------------------------------------------------------------

    def graph(self) -> Graph:
        """The stored workflow as plain data to draw: steps a graft step grafted are drawn
        inside it (`baton.workflows.render`)."""
        by_parent: dict[str | None, list[str]] = {}
        for name, step in self.details.items():
            by_parent.setdefault(step.parent, []).append(name)

        def level(parent: str | None) -> Graph:
            names = by_parent.get(parent, [])
            prefix = "" if parent is None else parent + "."
            here = set(names)
            steps: dict[str, GraphStep] = {}
            for name in names:
                step = self.details[name]
                deps = tuple(d[len(prefix) :] for d in self._parents(name, step) if d in here)
                grafted = level(name) if step.graft and name in by_parent else None
                steps[name[len(prefix) :]] = GraphStep(step.worker or "", deps, None, graft=step.graft, grafted=grafted)
            return Graph(self.label if parent is None else None, steps)

        return level(None)

    def _parents(self, name: str, step: StepStatus) -> list[str]:
        # A declared dep naming a sub-workflow (add_workflow) stands for its stored steps.
        out: list[str] = []
        for dep in step.deps:
            if dep in self.details:
                out.append(dep)
            else:
                out.extend(n for n in self.details if n.startswith(dep + ".") and self.details[n].parent is None)
        return out

    def to_mermaid(self) -> str:
        """The stored workflow as a Mermaid flowchart, grafted steps inside their graft."""
        return render.to_mermaid(self.graph())

    def to_dot(self) -> str:
        """The stored workflow in Graphviz DOT, grafted steps in a cluster under their graft."""
        return render.to_dot(self.graph())
