"""Server time of every dashboard page and API call with a large jobs table.

Fills a fresh PostgreSQL database with `--jobs` (default 1 000 000) jobs in five queues and
every state, plus workflows, failures and repaired jobs, generated in SQL
(`INSERT ... SELECT generate_series`), then requests each page in-process (httpx on the ASGI
app, so the figure is the server's time: queries and rendering, no network) and prints the
median and slowest of `--runs` requests per page. The database is dropped at the end.

    .venv/bin/python bench/dashboard.py                      # 1 000 000 jobs, PostgreSQL
    .venv/bin/python bench/dashboard.py --jobs 100000 --runs 5 --out ''

Writes bench/results/dashboard-latest.md unless `--out ''`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).parent))
import benchlib

import baton
from baton.dashboard import create_app

QUEUES = ["default", "mailers", "reports", "billing", "media"]
WORKERS = [
    "shop.send_receipt", "shop.charge_card", "shop.sync_stock", "report.render", "report.fetch",
    "media.resize", "media.transcode", "billing.invoice", "billing.refund", "crm.sync", "crm.enrich", "ops.cleanup",
]  # fmt: skip
ERRORS = ["ValueError: bad input", "ConnectionError: upstream timed out", "KeyError: 'customer'", "RuntimeError: quota"]

FILL = """
INSERT INTO baton_jobs (state, queue, worker, args, meta, tags, errors, attempt, max_attempts, priority,
                        inserted_at, scheduled_at, attempted_at, completed_at, cancelled_at, discarded_at)
SELECT s.state,
       (%(queues)s::text[])[1 + (CASE WHEN i %% 100 < 40 THEN 0 WHEN i %% 100 < 65 THEN 1 WHEN i %% 100 < 80 THEN 2
                                      WHEN i %% 100 < 92 THEN 3 ELSE 4 END)],
       (%(workers)s::text[])[1 + (i * 7) %% 12],
       jsonb_build_object('order', i, 'customer', 'cust-' || (i %% 50000), 'amount', (i %% 997) * 1.5),
       CASE WHEN i %% 1000 = 0 THEN '{"rescued": 1}'::jsonb WHEN i %% 1000 = 500 AND s.state = 'discarded'
            THEN '{"repair": "exhausted"}'::jsonb ELSE '{}'::jsonb END,
       CASE WHEN i %% 10 = 0 THEN ARRAY['payments'] ELSE '{}'::text[] END,
       CASE WHEN s.state IN ('discarded', 'retryable') THEN jsonb_build_array(jsonb_build_object(
            'at', now(), 'attempt', 1, 'error', (%(errors)s::text[])[1 + i %% 4] || ' (job ' || i || ')',
            'traceback', 'Traceback (most recent call last):' || chr(10) || '  File "app.py", line 1' || chr(10)))
            ELSE '[]'::jsonb END,
       CASE WHEN s.state IN ('available', 'scheduled', 'suspended') THEN 0 ELSE 1 END, 20, i %% 4,
       now() - make_interval(secs => (%(n)s - i) * 7200.0 / %(n)s),
       now() - make_interval(secs => (%(n)s - i) * 7200.0 / %(n)s) + CASE WHEN s.state = 'scheduled'
            THEN interval '1 hour' ELSE interval '0' END,
       CASE WHEN s.state IN ('available', 'scheduled', 'suspended') THEN NULL
            ELSE now() - make_interval(secs => (i %% 3600)) END,
       CASE WHEN s.state = 'completed' THEN now() - make_interval(secs => (i %% 3600)) END,
       CASE WHEN s.state = 'cancelled' THEN now() - make_interval(secs => (i %% 3600)) END,
       CASE WHEN s.state = 'discarded' THEN now() - make_interval(secs => (i %% 3600)) END
FROM generate_series(1, %(n)s) AS i
CROSS JOIN LATERAL (SELECT CASE WHEN i %% 200 < 170 THEN 'completed' WHEN i %% 200 < 176 THEN 'discarded'
                                WHEN i %% 200 < 178 THEN 'cancelled' WHEN i %% 200 < 180 THEN 'retryable'
                                WHEN i %% 200 < 190 THEN 'available' WHEN i %% 200 < 196 THEN 'scheduled'
                                WHEN i %% 200 < 197 THEN 'executing' ELSE 'suspended' END AS state) s
"""

# Workflows of 4 steps (a -> b -> c -> d) over the first jobs, with their completions.
WORKFLOWS = """
INSERT INTO baton_workflows (id, label, inserted_at)
SELECT 'wf-' || w, (ARRAY['nightly-report', 'ingest', 'billing-run'])[1 + w %% 3],
       now() - make_interval(secs => %(w)s - w)
FROM generate_series(1, %(w)s) AS w;
INSERT INTO workflow_nodes (workflow_id, name, job_id, deps, pending, resolution)
SELECT 'wf-' || w, (ARRAY['a', 'b', 'c', 'd'])[k], (w - 1) * 4 + k,
       CASE WHEN k = 1 THEN '{}'::text[] ELSE ARRAY[(ARRAY['a', 'b', 'c'])[k - 1]] END, 0,
       CASE WHEN w %% 10 = 0 THEN NULL WHEN w %% 10 = 1 AND k > 1 THEN 'cancelled' ELSE 'completed' END
FROM generate_series(1, %(w)s) AS w, generate_series(1, 4) AS k;
INSERT INTO baton_workflow_deps (dep_job_id, job_id, workflow_id)
SELECT (w - 1) * 4 + k - 1, (w - 1) * 4 + k, 'wf-' || w FROM generate_series(1, %(w)s) AS w, generate_series(2, 4) AS k;
UPDATE baton_jobs SET workflow_id = 'wf-' || ((id - 1) / 4 + 1) WHERE id <= %(w)s * 4;
INSERT INTO workflow_completions (workflow_id, status, announced_by, emitted_at)
SELECT 'wf-' || w, CASE WHEN w %% 10 = 1 THEN 'failed' ELSE 'completed' END, 'bench', now()
FROM generate_series(1, %(w)s) AS w WHERE w %% 10 <> 0;
"""


def pages(job_id: int, workflow_id: str) -> list[tuple[str, str]]:
    """(label, path) of every page and API call measured."""
    return [
        ("overview /", "/"),
        ("API overview", "/api/overview"),
        ("jobs, newest", "/jobs"),
        ("jobs, state=completed", "/jobs?state=completed"),
        ("jobs, state=discarded", "/jobs?state=discarded"),
        ("jobs, queue=media & state=retryable", "/jobs?queue=media&state=retryable"),
        ("jobs, worker=crm.enrich", "/jobs?worker=crm.enrich"),
        ("jobs, page 2000 (keyset before=)", "/jobs?before=500000"),
        ("jobs, text in args (one window)", "/jobs?q=cust-4242"),
        ("jobs, tag=payments", "/jobs?tag=payments"),
        ("API jobs, state=available", "/api/jobs?state=available&limit=100"),
        ("job detail", f"/jobs/{job_id}"),
        ("failures (grouped)", "/failures"),
        ("workflows", "/workflows"),
        ("workflows, status=failed", "/workflows?status=failed"),
        ("workflow detail (DAG)", f"/workflows/{workflow_id}"),
        ("queues", "/queues"),
        ("cron", "/cron"),
        ("health", "/health"),
    ]


async def fill(url: str, jobs: int, workflows: int) -> float:
    started = time.perf_counter()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(FILL, {"n": jobs, "queues": QUEUES, "workers": WORKERS, "errors": ERRORS})
        async with conn.transaction():
            for statement in WORKFLOWS.strip().split(";\n"):
                await conn.execute(statement, {"w": workflows})
        await conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


async def measure(url: str, runs: int) -> list[tuple[str, str, list[float], int]]:
    app = baton.Baton(url, plugins=[], log_events=False, queues={q: 10 for q in QUEUES})
    asgi = create_app(app)
    dash = asgi.dashboard
    out = []
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://bench") as client:
            failed = (await client.get("/api/jobs", params={"state": "discarded", "limit": 1})).json()["jobs"][0]["id"]
            # First overview: the throughput chart counts its newest 15 minutes (the rest over the
            # next refreshes; each minute is counted once and cached).
            dash.invalidate()
            t = time.perf_counter()
            first = await client.get("/")
            out.append(
                ("overview / (first request: 15 minutes counted)", "/", [time.perf_counter() - t], first.status_code)
            )
            for _ in range(4):  # the rest of the hour
                await client.get("/")
            for label, path in pages(failed, "wf-11"):
                times = []
                status = 0
                for _ in range(runs):
                    dash.invalidate()  # no 1 s overview cache: measure the queries every time
                    t = time.perf_counter()
                    response = await client.get(path)
                    times.append(time.perf_counter() - t)
                    status = response.status_code
                out.append((label, path, times, status))
    finally:
        await app.close()
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=benchlib.default_url(), help="PostgreSQL server (a fresh database is used)")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--workflows", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "dashboard-latest.md"))
    args = parser.parse_args()
    if benchlib.engine_of(args.url) != "postgres":
        raise SystemExit("bench/dashboard.py measures PostgreSQL; give a postgresql:// URL")
    benchlib.quiet()
    async with benchlib.fresh_database(args.url) as url:
        info = await benchlib.describe(url)
        print(f"filling {args.jobs:,} jobs and {args.workflows:,} workflows ...", flush=True)
        took = await fill(url, args.jobs, args.workflows)
        print(f"filled in {took:.1f} s (with VACUUM ANALYZE)", flush=True)
        results = await measure(url, args.runs)
    rows = []
    for label, path, times, status in results:
        rows.append(
            [label, f"`{path}`", str(status), f"{statistics.median(times) * 1000:.1f}", f"{max(times) * 1000:.1f}"]
        )
    table = benchlib.markdown_table(["page", "path", "status", "median ms", "max ms"], rows)
    worst = max(statistics.median(t) for label, _, t, _ in results if "first request" not in label)
    lines = [
        "# Dashboard server time at scale",
        "",
        f"{args.jobs:,} jobs (5 queues, every state: 85% completed, 3% discarded, 5% available, ...), "
        f"{args.workflows:,} workflows of 4 steps, in PostgreSQL. Each page requested {args.runs} times in-process "
        "(httpx on the ASGI app: queries plus rendering, no network), with the dashboard's 1 s overview cache "
        "cleared before every request. Slowest median: "
        f"**{worst * 1000:.0f} ms**.",
        "",
        f"Command: `.venv/bin/python bench/dashboard.py --jobs {args.jobs} --workflows {args.workflows} "
        f"--runs {args.runs}`",
        "",
        table,
        "",
        "## Environment",
        *[f"- {k}: {v}" for k, v in info.items()],
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
