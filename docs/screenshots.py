"""Make the dashboard screenshots in docs/images/ (PNG) with headless Chromium.

Seeds a fresh PostgreSQL database with the test suite's demo data (tests/dash_data.py: real
jobs, failures and workflows run by `drain`), adds an hour of generated history for the
throughput chart (bench/dashboard.py's SQL, labelled demo data), starts a node so the nodes
and leader show, and photographs the main pages.

    .venv/bin/python docs/screenshots.py
"""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import psycopg
import uvicorn
from playwright.async_api import async_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench")]
import benchlib  # noqa: E402
from dashboard import ERRORS, FILL, QUEUES, WORKERS  # noqa: E402

import baton  # noqa: E402
import dash_data  # noqa: E402
from baton.dashboard import create_app  # noqa: E402

OUT = ROOT / "docs" / "images"


async def graft_workflow(app: baton.Baton) -> str:
    """A graft that mapped eight LLM calls, each recording its usage, and a summary step."""

    @app.worker(name="llm.summarize")
    def summarize(job: baton.Job) -> str:
        model = "gpt-4.1-mini" if job.args.get("i", 0) % 3 else "gpt-4.1"
        job.record_usage(model=model, input_tokens=12_000 + 700 * job.args.get("i", 0), output_tokens=900)
        return "ok"

    @app.worker(name="llm.fan_out")
    def fan_out(job: baton.Job) -> baton.Graft:
        return baton.Graft.map(summarize, [{"i": i} for i in range(8)])

    wf = baton.Workflow(label="summarize-documents")
    wf.add("list", summarize.new({"i": 0}))
    wf.add_graft("process", fan_out.new({}), deps=["list"])
    wf.add("report", summarize.new({"i": 1}), deps=["process"])
    wid = await app.insert_workflow(wf)
    await app.drain()
    return wid


async def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    async with benchlib.fresh_database(benchlib.default_url()) as url:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(FILL, {"n": 3000, "queues": QUEUES, "workers": WORKERS, "errors": ERRORS})
            # History only: finished jobs (nothing for the node to run or the lifeline to rescue).
            await conn.execute("DELETE FROM baton_jobs WHERE state NOT IN ('completed', 'discarded', 'cancelled')")
        app = baton.Baton(
            url,
            queues={
                "default": {"limit": 10, "global_limit": 20, "rate_limit": {"allowed": 600, "period": 60}},
                "mailers": 5,
                "billing": 4,
            },
            pricing={
                "gpt-4.1": {"input": "2.00", "output": "8.00"},
                "gpt-4.1-mini": {"input": "0.40", "output": "1.60"},
            },
            plugins=[baton.plugins.Lifeline(), baton.plugins.WorkflowHealth()],
            node="web-1",
            log_events=False,
        )
        workers = dash_data.register(app)
        ids = await dash_data.seed(app, workers)
        ids["graft_wf"] = await graft_workflow(app)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(create_app(app), port=port, log_level="warning"))
        serving = asyncio.create_task(server.serve())
        async with app:
            while not server.started:
                await asyncio.sleep(0.05)
            await app.pause_queue("billing")
            await asyncio.sleep(1.5)
            base = f"http://127.0.0.1:{port}"
            card = (await app.list_jobs(worker="shop.charge_card", states=["discarded"]))[0]
            shots = [
                ("overview", "/"),
                ("jobs", "/jobs?queue=default"),
                ("workflow", f"/workflows/{ids['failed_wf']}"),
                ("workflow-graft", f"/workflows/{ids['graft_wf']}"),
                ("job", f"/jobs/{card.id}"),
                ("failures", "/failures"),
                ("health", "/health"),
                ("queues", "/queues"),
            ]
            async with async_playwright() as p:
                browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
                page = await browser.new_page(viewport={"width": 1360, "height": 860})
                for name, path in shots:
                    await page.goto(base + path)
                    await page.wait_for_timeout(6000 if name == "overview" else 300)  # the chart fills in
                    await page.screenshot(path=str(OUT / f"dashboard-{name}.png"), full_page=False)
                    print("wrote", OUT / f"dashboard-{name}.png")
                await browser.close()
        server.should_exit = True
        await serving


if __name__ == "__main__":
    asyncio.run(main())
