"""PostgreSQL restarted mid-run (SPEC sections 2 and 7): three nodes process a mixed workload
while the server is restarted twice (`pg_ctlcluster restart`, then a stop, a 3 s outage and a
start). The nodes reconnect with backoff, say so in their logs, and carry on; an inserter
process inserting through every path during the outages records each call's outcome: every
call that returned ids inserted them (they exist and ran), every call that failed raised a
`BatonError` (`DatabaseUnavailable`), never another exception type and never silently. And
once the server is back, the very next insert works: connections the restart killed are not
handed to callers.

The server is shared: the test first waits (polling every 30 s, up to 10 minutes) until no
benchmark and no other pytest session is running, and skips if they never stop.
"""

from __future__ import annotations

import asyncio
import re

import fault_node
import pytest
from harness import (
    ChaosConfig,
    assert_no_violations,
    postgres_cluster,
    restart_postgres,
    run_scenario,
    server_port,
    wait_until_quiet,
)

import baton
import pg

pytestmark = pytest.mark.faults


@pytest.fixture
async def restartable_postgres() -> tuple[str, str]:
    """The pg_ctlcluster cluster of the test server, once nobody else is using the server."""
    cluster = postgres_cluster(server_port(pg.server_url()))
    if cluster is None:
        pytest.skip("the test PostgreSQL is not a pg_ctlcluster-managed cluster; it cannot be restarted")
    if not await wait_until_quiet(timeout=600, poll=30):
        pytest.skip("a benchmark or another test session kept using PostgreSQL; not restarting it under them")
    return cluster


async def test_nodes_and_inserters_ride_out_postgresql_restarts(restartable_postgres, fault_db, tmp_path):
    db = await fault_db("postgres")
    config = ChaosConfig(
        jobs=2_000,
        workflows=24,
        feed_seconds=16,
        kill_interval=None,
        pg_restarts=(0.0, 3.0),
        inserter=True,
        inserter_lanes=4,
    )
    result = await run_scenario(db, config, tmp_path)

    assert_no_violations(result)
    if len(result.restarts) < len(config.pg_restarts):
        pytest.skip(f"restarts were skipped: {result.notes}")
    figures = result.figures
    assert figures["PostgreSQL restarts"] == 2
    assert figures["lost"] == 0
    assert figures["duplicated completions"] == 0
    assert figures["duplicated announcements"] == 0
    assert figures["insert calls under way during an outage"] > 0, "the inserter ran into the outages"
    assert figures["  of which not a BatonError"] == 0
    for record in result.restarts:
        assert record.first_fetch is not None
        assert record.first_fetch - record.up < 10, "nodes fetched again within seconds of the server coming back"

    # The nodes said what happened, and went on working after the last restart.
    last_up = result.restarts[-1].up
    for name, text in result.logs.items():
        assert re.search(r"listener lost its connection", text), f"node {name} did not log the lost connection"
        assert re.search(r"listener reconnected", text), f"node {name} did not log its reconnection"
    ran_after = {node for (node,) in db.side("SELECT DISTINCT node FROM chaos_exec WHERE at > ?", (last_up,))}
    assert ran_after == set(result.logs), f"only {sorted(ran_after)} ran jobs after the last restart"


@pytest.mark.parametrize("path", ["insert_sync", "insert"])
async def test_the_first_insert_after_postgresql_is_back_succeeds(restartable_postgres, fault_db, path):
    """Pooled connections the restart killed must be noticed and replaced, not handed to the
    caller: once the server accepts connections again, inserting works at the first try."""
    db = await fault_db("postgres")
    app = baton.Baton(db.url, plugins=[], log_events=False, pool_size=8)
    work = fault_node.register(app)["chaos.work"]
    try:
        # Warm the pools up: several connections opened and idle, as in any busy process.
        if path == "insert_sync":
            await asyncio.gather(*(asyncio.to_thread(app.insert_all_sync, [work.new({})] * 300) for _ in range(4)))
        else:
            await asyncio.gather(*(app.insert_all([work.new({})] * 300) for _ in range(8)))
        await restart_postgres(restartable_postgres, db.url, outage=0)

        spec = work.new({"after": "restart"})
        try:
            job = app.insert_sync(spec) if path == "insert_sync" else await app.insert(spec)
        except baton.DatabaseUnavailable as exc:
            pytest.fail(f"{path} right after PostgreSQL came back failed on a dead pooled connection: {exc}")
        assert db.query("SELECT count(*) FROM baton_jobs WHERE id = ?", (job.id,)) == [(1,)]
    finally:
        await app.close()
