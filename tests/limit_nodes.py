"""A node program for the queue-limit tests with real processes
(tests/test_queue_limits_multinode.py, bench/limits.py):

    python tests/limit_nodes.py URL QUEUES_JSON [--refresh 0.5] [--stale-after 2] [--name NODE]

starts a Baton node whose `queues=` is QUEUES_JSON (e.g. '{"api": {"limit": 4, "global_limit": 5}}'),
with the workers of tests/nodes.py (`nodes.Record` logs each execution in `exec_log`), prints
READY once started and stops gracefully on SIGTERM (printing STOPPED); SIGKILL kills it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import nodes


async def run(url: str, queues: dict[str, object], refresh: float, stale_after: float, name: str | None) -> None:
    app = nodes.app(url, queues=queues, refresh_interval=refresh, stale_after=stale_after, poll_interval=1.0, node=name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with app:
        print("READY", flush=True)
        await stop.wait()
    print("STOPPED", flush=True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="limit_nodes.py")
    parser.add_argument("url")
    parser.add_argument("queues")
    parser.add_argument("--refresh", type=float, default=0.5)
    parser.add_argument("--stale-after", type=float, default=2.0)
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    os.environ["BATON_DATABASE_URL"] = args.url
    asyncio.run(run(args.url, json.loads(args.queues), args.refresh, args.stale_after, args.name))


if __name__ == "__main__":
    main(sys.argv[1:])
