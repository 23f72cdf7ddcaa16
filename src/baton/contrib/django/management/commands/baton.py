"""`manage.py baton migrate` (create Baton's tables) and `manage.py baton worker` (run a node
for a Django Tasks backend until SIGTERM/Ctrl-C, stopping gracefully)."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from baton.errors import BatonError


def _queues(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, limit = part.partition(":")
        try:
            out[name.strip()] = int(limit) if limit else 10
        except ValueError:
            raise CommandError(f"--queues: {part!r} is not name:concurrency, e.g. default:10,emails:5") from None
    return out


class Command(BaseCommand):
    help = "Baton: `migrate` creates its tables; `worker` runs the jobs of a Django Tasks backend."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        for name, text in (("migrate", "create or upgrade Baton's tables"), ("worker", "run a worker node")):
            action = sub.add_parser(name, help=text)
            action.add_argument("--backend", default="default", help="the TASKS alias (default: default)")
            if name == "worker":
                action.add_argument("--queues", type=_queues, default=None, help="e.g. default:10,emails:5")
                action.add_argument("--node", default=None, help="this node's name")
                action.add_argument("--shutdown-grace", type=float, default=None, help="seconds")

    def handle(self, *args: Any, **options: Any) -> None:
        from baton.contrib.django.backend import get_app

        try:
            app = get_app(options["backend"])
        except Exception as exc:
            raise CommandError(str(exc)) from None
        if options["action"] == "migrate":
            try:
                applied = asyncio.run(app.migrate())
            except BatonError as exc:
                raise CommandError(str(exc)) from None
            finally:
                asyncio.run(app.close())
            self.stdout.write(f"Baton migrations applied: {applied}" if applied else "Baton tables are up to date")
            return
        from baton.cli.nodes import serve

        if options["queues"]:
            # --queues sets concurrency here; limits across nodes the app declares still hold.
            app.queues = {
                name: {"limit": limit, "paused": False}
                | ({"limits": app.queues[name]["limits"]} if "limits" in app.queues.get(name, {}) else {})
                for name, limit in options["queues"].items()
            }
        if options["node"]:
            app.node = options["node"]
        if options["shutdown_grace"] is not None:
            app.shutdown_grace = options["shutdown_grace"]
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
        connections.close_all()  # the worker threads open their own
        self.stderr.write(f"Baton worker {app.node}: queues {sorted(app.queues)} on {app.engine.display_url}")
        try:
            code = asyncio.run(serve(app))
        except BatonError as exc:
            raise CommandError(str(exc)) from None
        finally:
            connections.close_all()
        if code:
            sys.exit(code)
