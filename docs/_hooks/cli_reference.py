"""MkDocs hook: replaces `<!-- baton-cli-reference -->` in a page with the `--help` text of every
`baton` command, taken from the click definitions at build time, so the CLI reference cannot
drift from the code."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import click

MARKER = "<!-- baton-cli-reference -->"
WIDTH = 100


def _commands(command: click.Command, ctx: click.Context) -> Iterator[tuple[str, click.Context]]:
    """Every command under `command`, depth first, in the order `--help` lists them."""
    yield ctx.command_path, ctx
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            yield from _commands(sub, click.Context(sub, info_name=name, parent=ctx, terminal_width=WIDTH))


def reference() -> str:
    """The Markdown for every command: a heading and its help in a text block."""
    from baton.cli import cli

    # The group's context_settings (-h as well as --help, the content width) as `baton` uses them.
    settings = {**cli.context_settings, "terminal_width": WIDTH, "max_content_width": WIDTH}
    root = click.Context(cli, info_name="baton", **settings)
    parts = []
    for path, ctx in _commands(cli, root):
        level = "#" * min(2 + path.count(" "), 4)
        parts.append(f"{level} `{path}`\n\n```text\n{ctx.command.get_help(ctx)}\n```\n")
    return "\n".join(parts)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """MkDocs event: expand the marker on the pages that hold it."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, reference())
