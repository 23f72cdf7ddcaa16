"""Terminal rendering shared by the CLI and the demo: a console that never lets control
characters from job data reach the terminal, state colours and marks, a workflow drawn as a
tree of its steps, counts in state colours, usage tables with their costs, and short forms of
times, errors and JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderableType
from rich.segment import Segment
from rich.table import Table
from rich.text import Span, Text
from rich.tree import Tree

from ._printable import CONTROL, escape, printable
from .job import STATES, Job
from .usage import UsageTotals
from .workflows.status import StepStatus, WorkflowStatus


def printable_text(text: Text) -> Text:
    """`printable` for a `Text`: the same text escaped, its styles kept on the same characters."""
    plain = text.plain
    if not CONTROL.search(plain):
        return text
    offsets = [0]
    pieces: list[str] = []
    for char in plain:
        piece = escape(char) if CONTROL.fullmatch(char) else char
        pieces.append(piece)
        offsets.append(offsets[-1] + len(piece))
    escaped = text.blank_copy("".join(pieces))
    end = len(plain)
    escaped.spans = [Span(offsets[min(s.start, end)], offsets[min(s.end, end)], s.style) for s in text.spans]
    return escaped


def text_lines(text: str) -> Group:
    """A multi-line text (a traceback) printed on its own lines, every other control character
    escaped: one `Text` per line, as the console escapes a newline inside one `Text`."""
    return Group(*(Text(printable(line)) for line in text.split("\n")))


class SafeConsole(Console):
    """A console whose every string and `Text`, at any depth (table cells, tree labels, lines),
    is shown through `printable`, so no command has to remember to escape user data. A line
    break inside one string is shown as `\\n`: print several lines as several renderables
    (`text_lines`). Rich's own output (styles, cursor moves of a live display) comes as
    segments, which are left alone. Build a `Text` holding data from `printable(data)` all the
    same: `Text` itself drops CR, BEL, backspace, VT and FF silently, and a table sizes its
    columns from the `Text` as given."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(printable(text), **kwargs)

    def render(self, renderable: RenderableType, options: ConsoleOptions | None = None) -> Iterable[Segment]:
        if isinstance(renderable, Text):
            renderable = printable_text(renderable)
        return super().render(renderable, options)


STATE_STYLES: dict[str, str] = {
    "available": "cyan",
    "scheduled": "blue",
    "suspended": "bright_black",
    "executing": "bold yellow",
    "retryable": "dark_orange",
    "completed": "green",
    "discarded": "bold red",
    "cancelled": "magenta",
    "deleted": "red",
    "running": "yellow",
    "failed": "bold red",
}
STATE_MARKS: dict[str, str] = {
    "available": "○",
    "scheduled": "◷",
    "suspended": "◌",
    "executing": "▶",
    "retryable": "↻",
    "completed": "✓",
    "discarded": "✗",
    "cancelled": "⊘",
    "deleted": "⌫",
}


def state_text(state: str) -> Text:
    """A job, step or workflow state in its colour."""
    return Text(state, style=STATE_STYLES.get(state, ""))


def when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def first_line(text: str | None, width: int = 100) -> str:
    if not text:
        return ""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def last_error(job: Job) -> str:
    return first_line(str(job.errors[-1].get("error", ""))) if job.errors else ""


def _step_parents(name: str, step: StepStatus, steps: Mapping[str, StepStatus]) -> list[str]:
    """The stored steps `name` waits for. A declared dep naming a sub-workflow stands for the
    sub-workflow's last steps (those no other step inside it depends on); a grafted step
    without deps is drawn under the graft step that grafted it."""
    parents: list[str] = []
    for dep in step.deps:
        if dep in steps:
            parents.append(dep)
            continue
        members = [s for s in steps if s.startswith(dep + ".")]
        inner = {d for m in members for d in steps[m].deps}
        parents.extend(m for m in members if m not in inner)
    if not parents and step.parent is not None:  # a grafted root hangs under its graft step
        parents.append(step.parent)
    return [p for p in dict.fromkeys(parents) if p != name]


def step_label(status: WorkflowStatus, name: str) -> Text:
    """One step as a tree line: mark, name, coloured state, and what explains it."""
    step = status.details[name]
    style = STATE_STYLES.get(step.state, "")
    text = Text.assemble(
        (STATE_MARKS.get(step.state, "·") + " ", style), (printable(name), "bold"), "  ", (step.state, style)
    )
    extras: list[str] = []
    if step.queue:
        extras.append(step.queue)
    if step.attempt > 1 or step.state == "retryable":
        extras.append(f"attempt {step.attempt}/{step.max_attempts}")
    if step.state == "completed" and step.run_ms is not None:
        extras.append(f"{step.run_ms} ms")
    waiting = status.waiting.get(name)
    if step.state == "suspended" and waiting:
        extras.append(waiting)
    if step.reason:
        extras.append(f"reason: {step.reason}")
    if step.last_error and (step.state != "completed" or step.attempt > 1):
        extras.append(("last error: " if step.state == "completed" else "error: ") + first_line(step.last_error, 80))
    if extras:
        text.append(printable("  · " + " · ".join(extras)), style="dim")
    return text


def workflow_tree(status: WorkflowStatus) -> Tree:
    """Draw a stored workflow's DAG as a tree: roots are steps without dependencies, children
    their dependents. A step with several dependencies is drawn in full under the first and
    as a `↑ see above` reference under the others, so the tree stays finite."""
    title = Text.assemble(
        ("workflow ", "bold"),
        (printable(status.label or "(no label)"), "bold"),
        f"  {status.workflow_id}  ",
        (status.status, STATE_STYLES.get(status.status, "")),
    )
    tree = Tree(title, guide_style="bright_black")
    steps = status.details
    children: dict[str, list[str]] = {name: [] for name in steps}
    roots: list[str] = []
    for name, step in steps.items():
        parents = _step_parents(name, step, steps)
        if not parents:
            roots.append(name)
        for parent in parents:
            children[parent].append(name)
    drawn: set[str] = set()

    def draw(branch: Tree, name: str) -> None:
        if name in drawn:
            state = steps[name].state
            branch.add(
                Text.assemble(
                    (printable(name), "bold dim"),
                    "  ",
                    (state, STATE_STYLES.get(state, "") + " dim"),
                    ("  ↑ see above", "dim"),
                )
            )
            return
        drawn.add(name)
        node = branch.add(step_label(status, name))
        for child in children[name]:
            draw(node, child)

    for name in roots:
        draw(tree, name)
    # Steps whose dependencies are not stored steps (e.g. inside a sub-workflow whose outer
    # deps are not recorded per step) would otherwise vanish from the drawing.
    for name in steps:
        if name not in drawn:
            draw(tree, name)
    return tree


def counts_text(counts: Mapping[str, int]) -> Text:
    """`completed 5 · executing 1` in state colours, in lifecycle order."""
    order = [*STATES, "deleted"]
    text = Text()
    for state in sorted(counts, key=lambda s: order.index(s) if s in order else len(order)):
        if text:
            text.append(" · ", style="dim")
        text.append(f"{state} {counts[state]}", style=STATE_STYLES.get(state, ""))
    return text


# --------------------------------------------------------------------------- usage


def cost_text(cost: Decimal | None, unpriced_calls: int = 0) -> str:
    """A cost exactly as summed (`0.00481`), `-` when nothing was priced, and how many calls
    it leaves out (`0.0048 + 1 unpriced`)."""
    if cost is None:
        return f"- ({unpriced_calls} unpriced)" if unpriced_calls else "-"
    shown = format(cost.normalize(), "f") if cost else "0"
    return f"{shown} + {unpriced_calls} unpriced" if unpriced_calls else shown


def usage_table(first: str, rows: Mapping[str, UsageTotals], total: UsageTotals | None = None) -> Table:
    """One line of calls, tokens and cost per key (step or model), and a total line."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column(first, overflow="fold")
    for name in ("CALLS", "INPUT TOKENS", "OUTPUT TOKENS", "COST"):
        table.add_column(name, justify="right", no_wrap=True)
    for key, u in rows.items():
        cost = cost_text(u.cost, u.unpriced_calls)
        table.add_row(Text(printable(key)), str(u.calls), f"{u.input_tokens:,}", f"{u.output_tokens:,}", cost)
    if total is not None:
        table.add_row(
            Text("total", style="bold"),
            str(total.calls),
            f"{total.input_tokens:,}",
            f"{total.output_tokens:,}",
            Text(cost_text(total.cost, total.unpriced_calls), style="bold"),
        )
    return table
