"""What recording usage costs on the ack path: the time of one `ack_jobs` transaction for a
batch of completed jobs without usage, and for the same batch where every job recorded two
calls (`job.record_usage`), in a fresh database.

    .venv/bin/python bench/usage.py                                   # PostgreSQL at 127.0.0.1:5432
    .venv/bin/python bench/usage.py --url sqlite:////tmp/bench/bench.db --batch 1000 --rounds 20

Plain acks run exactly the statements they ran before usage existed (tests/test_usage.py
counts them); the figure to read is the extra time per batch when every job has usage.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from decimal import Decimal

from benchlib import default_url, engine_of, fresh_database, quiet

import baton
from baton.job import UsageRecord
from baton.store import transitions
from baton.store.jobs import Ack


async def one_round(app: baton.Baton, batch: int, usage: bool) -> float:
    await app.insert_all([app.new("bench.noop", {"i": i}) for i in range(batch)])
    jobs = await app.engine.run(transitions.fetch_jobs, "default", app.node, str(uuid.uuid4()), batch)
    records = [
        UsageRecord("gpt-4.1", 1200, 300, {}, Decimal("0.0048")),
        UsageRecord("local", 50, 20, {"cached": 10}, None),
    ]
    acks = [Ack(j, "completed", usage=list(records) if usage else None) for j in jobs]
    started = time.perf_counter()
    result = await app.engine.run(transitions.ack_jobs, acks, app.node)
    elapsed = time.perf_counter() - started
    assert len(result.acked) == batch
    return elapsed


async def main(url: str, batch: int, rounds: int) -> None:
    quiet()
    async with fresh_database(url) as db:
        app = baton.Baton(db, plugins=[], log_events=False)
        app.worker(name="bench.noop")(lambda job: None)
        try:
            await one_round(app, batch, True)  # warm up both statements
            await one_round(app, batch, False)
            plain, used = [], []
            for _ in range(rounds):  # interleaved, so drift hits both alike
                plain.append(await one_round(app, batch, False))
                used.append(await one_round(app, batch, True))
        finally:
            await app.close()
    p, u = statistics.median(plain), statistics.median(used)
    print(f"engine {engine_of(url)}, batch {batch} completed jobs, median of {rounds} rounds")
    print(f"  ack batch without usage:        {p * 1000:8.2f} ms  ({batch / p:,.0f} acks/s)")
    print(f"  ack batch, 2 usage records/job: {u * 1000:8.2f} ms  ({batch / u:,.0f} acks/s)")
    print(f"  extra per job with usage:       {(u - p) / batch * 1e6:8.2f} µs")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=default_url())
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    asyncio.run(main(args.url, args.batch, args.rounds))
