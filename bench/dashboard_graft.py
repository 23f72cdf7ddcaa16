"""Server time of a workflow page whose graft mapped `--steps` (default 10 000) steps.

Inserts list -> process (Graft.map of N steps) -> report on a fresh database (SQLite file by
default, or `--url`), runs it, then requests `/workflows/{id}` and `/api/workflows/{id}`
in-process (httpx on the ASGI app: queries and rendering, no network) and prints the median
and slowest of `--runs` requests. The big graft is drawn collapsed into one box.

    .venv/bin/python bench/dashboard_graft.py
    .venv/bin/python bench/dashboard_graft.py --url postgresql://postgres@127.0.0.1/baton_bench --steps 10000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

import baton
from baton.dashboard import create_app


async def main(url: str, steps: int, runs: int) -> None:
    app = baton.Baton(url, queues={"default": 20}, log_events=False)
    await app.migrate()

    @app.worker(name="g.item")
    def item(job: baton.Job) -> int:
        return int(job.args["i"])

    @app.worker(name="g.expand")
    def expand(job: baton.Job) -> baton.Graft:
        return baton.Graft.map(item, [{"i": i} for i in range(steps)])

    wf = baton.Workflow(label="big-map")
    wf.add("list", item.new({"i": -1}))
    wf.add_graft("process", expand.new({}), deps=["list"])
    wf.add("report", item.new({"i": -2}), deps=["process"])
    wid = await app.insert_workflow(wf)
    started = time.perf_counter()
    await app.drain(batch=500)
    print(f"ran {steps + 3} steps in {time.perf_counter() - started:.1f} s")
    transport = httpx.ASGITransport(app=create_app(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://dash") as client:
        for path in (f"/workflows/{wid}", f"/api/workflows/{wid}"):
            times = []
            for _ in range(runs):
                t = time.perf_counter()
                response = await client.get(path)
                times.append(time.perf_counter() - t)
                assert response.status_code == 200, response.text[:200]
            print(
                f"{path.replace(wid, '{id}'):24} median {statistics.median(times) * 1000:7.0f} ms  "
                f"slowest {max(times) * 1000:7.0f} ms  {len(response.content) / 1024:7.0f} KiB"
            )
    await app.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=None, help="database URL (default: a temporary SQLite file)")
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(args.url or f"sqlite:///{Path(tmp) / 'bench.db'}", args.steps, args.runs))
