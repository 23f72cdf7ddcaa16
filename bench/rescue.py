"""How long a dead node's jobs take to come back: a worker node (a subprocess) starts jobs that
sleep, gets `kill -9`, and a second node running the Lifeline rescues them. Printed: the time
from the kill to every one of those jobs being `available` again, per run, and the bound the
settings imply (stale_after for the dead node's producer row to go stale, plus up to one
rescue_interval until the next sweep).

Usage:
    .venv/bin/python bench/rescue.py                         # Baton's defaults (stale_after=60, rescue_interval=60)
    .venv/bin/python bench/rescue.py --stale-after 2 --refresh-interval 0.5 --rescue-interval 1 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import baton  # noqa: E402
from baton.plugins import Lifeline  # noqa: E402

NODE = """
import asyncio, sys
sys.path.insert(0, {src!r})
import baton
async def main():
    app = baton.Baton({url!r}, queues={{"rescue": 5}}, plugins=[], log_events=False, **{options!r})
    @app.worker(name="bench.sleeper", queue="rescue")
    async def sleeper(job):
        await asyncio.sleep(3600)
    await app.start()
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def options(args: argparse.Namespace) -> dict[str, float]:
    out = {}
    if args.stale_after is not None:
        out["stale_after"] = args.stale_after
    if args.refresh_interval is not None:
        out["refresh_interval"] = args.refresh_interval
    return out


async def one_run(url: str, args: argparse.Namespace) -> float:
    rescuer = baton.Baton(
        url,
        queues={},
        plugins=[Lifeline(**({"rescue_interval": args.rescue_interval} if args.rescue_interval else {}))],
        log_events=False,
        **options(args),
    )

    @rescuer.worker(name="bench.sleeper", queue="rescue")
    async def sleeper(job: baton.Job) -> None:  # registered only so the name resolves
        await asyncio.sleep(3600)

    await rescuer.migrate()
    await rescuer.start()
    try:
        code = NODE.format(src=str(ROOT / "src"), url=url, options=options(args))
        node = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert node.stdout is not None and node.stdout.readline().strip() == "ready"
        jobs = await rescuer.insert_all([sleeper.new({"i": i}) for i in range(5)])
        ids = [j.id for j in jobs]
        while len(await rescuer.list_jobs(ids=ids, states=["executing"])) < len(ids):
            await asyncio.sleep(0.05)
        os.kill(node.pid, signal.SIGKILL)
        killed = time.monotonic()
        node.wait()
        while len(await rescuer.list_jobs(ids=ids, states=["available"])) < len(ids):
            await asyncio.sleep(0.05)
        return time.monotonic() - killed
    finally:
        await rescuer.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--stale-after", type=float)
    parser.add_argument("--refresh-interval", type=float)
    parser.add_argument("--rescue-interval", type=float)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    probe = baton.Baton(log_events=False, plugins=[], **options(args))
    stale = probe.stale_after
    interval = args.rescue_interval or Lifeline().interval
    times = []
    for run in range(args.runs):
        name = f"baton_rescue_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        url = args.url.rsplit("/", 1)[0] + "/" + name
        try:
            took = await one_run(url, args)
        finally:
            with psycopg.connect(args.url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        times.append(took)
        print(f"[run {run + 1}/{args.runs}] dead node's 5 jobs available again {took:.2f} s after kill -9")
    print(
        f"stale_after={stale:g} s, rescue_interval={interval:g} s: median {statistics.median(times):.2f} s "
        f"(min {min(times):.2f}, max {max(times):.2f}); bound stale_after + rescue_interval = {stale + interval:g} s"
    )


if __name__ == "__main__":
    asyncio.run(main())
