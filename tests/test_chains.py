"""Chains: a worker declared with `chain_by` runs its jobs one at a time per key, in insertion
order — inline (drain), on one node with concurrency, and on several node processes at once —
and a failed link ignores, holds or halts the rest of its chain as configured."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

import baton
import heal_nodes
from baton.plugins import Lifeline
from conftest import wait_for
from heal_nodes import NodeProcess, side_sql


def assert_serial_in_order(runs: list[tuple[Any, int, float, float]]) -> None:
    """Per key: the order by seq is the order by start, and no run overlaps the next."""
    by_key: dict[Any, list[tuple[int, float, float]]] = defaultdict(list)
    for key, seq, started, ended in runs:
        by_key[key].append((seq, started, ended))
    for key, links in by_key.items():
        by_start = sorted(links, key=lambda r: r[1])
        assert [r[0] for r in by_start] == sorted(r[0] for r in links), f"chain {key} ran out of order"
        for before, after in itertools.pairwise(by_start):
            assert before[2] <= after[1], f"chain {key}: link {after[0]} started before link {before[0]} ended"


def interleaved(keys: int, links: int, seed: int = 7) -> list[tuple[int, int]]:
    """(key, seq) pairs in a random interleaving that keeps each key's seq increasing."""
    rng = random.Random(seed)
    pending = {k: 0 for k in range(keys)}
    out = []
    while pending:
        k = rng.choice(sorted(pending))
        out.append((k, pending[k]))
        pending[k] += 1
        if pending[k] == links:
            del pending[k]
    return out


# --------------------------------------------------------------------------- order and exclusion


async def test_links_run_one_at_a_time_in_insertion_order_with_drain(make_app):
    app = make_app()
    runs: list[tuple[Any, int, float, float]] = []

    @app.worker(chain_by=["args.account_id"])
    def post(job: baton.Job) -> None:
        started = time.monotonic()
        runs.append((job.args["account_id"], job.args["seq"], started, time.monotonic()))

    order = interleaved(keys=8, links=6)
    jobs = await app.insert_all([post.new({"account_id": k, "seq": s}) for k, s in order])
    firsts = {k: j for (k, s), j in zip(order, jobs, strict=True) if s == 0}
    for (k, _s), job in zip(order, jobs, strict=True):
        assert job.state == ("available" if job is firsts[k] else "suspended")
    assert await app.drain() == {"completed": len(jobs)}
    assert_serial_in_order(runs)
    assert len(runs) == len(jobs)


async def test_links_run_one_at_a_time_on_a_concurrent_node(make_app):
    app = make_app(queues={"default": 10})
    runs: list[tuple[Any, int, float, float]] = []

    @app.worker(chain_by=["args.account_id"])
    async def post(job: baton.Job) -> None:
        started = time.monotonic()
        await asyncio.sleep(random.uniform(0, 0.01))
        runs.append((job.args["account_id"], job.args["seq"], started, time.monotonic()))

    order = interleaved(keys=10, links=8)
    async with app:
        # Inserted in several calls: later calls queue behind the unfinished links of earlier ones.
        for start in range(0, len(order), 25):
            await app.insert_all([post.new({"account_id": k, "seq": s}) for k, s in order[start : start + 25]])

        async def done() -> bool:
            return (await app.count_jobs()).get("completed", 0) == len(order)

        await wait_for(done, timeout=30)
    assert len(runs) == len(order)
    assert_serial_in_order(runs)


async def test_links_run_one_at_a_time_across_node_processes(db_url, make_app, tmp_path: Path):
    """3 node processes (queue limit 10 each), 20 keys x 15 links; every link records
    (key, seq, start, end, pid)."""
    heal_nodes.create_side_tables(db_url)
    inserter = make_app()
    link = heal_nodes.register(inserter)["heal.link"]
    nodes = [NodeProcess("chain", db_url, node=f"chain-{i}", log_path=tmp_path / f"chain-{i}.log") for i in range(3)]
    try:
        await asyncio.gather(*(n.ready() for n in nodes))
        order = interleaved(keys=20, links=15, seed=11)
        rng = random.Random(3)
        for start in range(0, len(order), 60):
            await inserter.insert_all(
                [
                    link.new({"key": f"k{k}", "seq": s, "sleep": rng.uniform(0.001, 0.01)})
                    for k, s in order[start : start + 60]
                ]
            )

        async def done() -> bool:
            return (await inserter.count_jobs()).get("completed", 0) == len(order)

        await wait_for(done, timeout=60, interval=0.1)
    finally:
        codes = await asyncio.gather(*(n.terminate() for n in nodes))
    assert codes == [0, 0, 0], [n.stderr() for n in nodes]
    runs = side_sql(db_url, "SELECT key, seq, started, ended, pid FROM chain_log")
    assert len(runs) == len(order)
    assert len({(k, s) for k, s, *_ in runs}) == len(order)  # each link ran exactly once
    assert_serial_in_order([(k, s, a, b) for k, s, a, b, _pid in runs])
    pids = {pid for *_, pid in runs}
    assert len(pids) >= 2, "the links were not spread over several processes"


async def test_concurrent_inserts_of_one_chain_leave_exactly_one_runnable_link(make_app):
    apps = [make_app(node=f"web-{i}") for i in range(4)]
    handles = []
    for app in apps:

        @app.worker(name="chained.post", chain_by=["args.account_id"])
        def post(job: baton.Job) -> None:
            return None

        handles.append(post)
    await asyncio.gather(
        *(
            app.insert_all([h.new({"account_id": k, "from": i}) for k in range(5)])
            for i, (app, h) in enumerate(zip(apps, handles, strict=True))
        )
    )
    jobs = await apps[0].list_jobs(limit=1000)
    assert len(jobs) == 20
    for k in range(5):
        mine = sorted((j for j in jobs if j.args["account_id"] == k), key=lambda j: j.id)
        assert [j.state for j in mine] == ["available", "suspended", "suspended", "suspended"], k
    assert await apps[0].drain() == {"completed": 20}


async def test_a_rescued_link_still_holds_back_the_next_one(db_url, make_app):
    app = make_app()
    post, ran = chained(app)
    jobs = await app.insert_all([post.new({"account_id": 1, "seq": i}) for i in range(2)])
    attempted_by = "json_array('ghost', 'dead-producer')" if db_url.startswith("sqlite") else "ARRAY['ghost', 'dead']"
    side_sql(
        db_url,
        f"UPDATE baton_jobs SET state = 'executing', attempt = 1, attempted_by = {attempted_by} WHERE id = ?",
        (jobs[0].id,),
    )
    meta = await Lifeline().sweep(app)
    assert [j["id"] for j in meta["rescued_jobs"]] == [jobs[0].id]
    assert meta["released_links"] == []
    assert await states(app, jobs) == ["available", "suspended"]
    assert await app.drain() == {"completed": 2}
    assert ran == [0, 1]


# --------------------------------------------------------------------------- failed links


def chained(app: baton.Baton, **options: Any) -> tuple[Any, list[int]]:
    """A chained worker whose links fail (Discard) on their first attempt when args.fail."""
    ran: list[int] = []

    @app.worker(chain_by=["args.account_id"], **options)
    def post(job: baton.Job) -> Any:
        if job.args.get("fail") and job.attempt == 1:
            return baton.Discard("card declined")
        ran.append(job.args["seq"])
        return None

    return post, ran


async def states(app: baton.Baton, jobs: list[baton.Job]) -> list[str]:
    return [(await app.get_job(j.id)).state for j in jobs]


async def test_on_discarded_ignore_carries_on(make_app):
    app = make_app()
    post, ran = chained(app)  # "ignore" is the default
    jobs = await app.insert_all([post.new({"account_id": 1, "seq": i, "fail": i == 0}) for i in range(3)])
    assert await app.drain() == {"discarded": 1, "completed": 2}
    assert await states(app, jobs) == ["discarded", "completed", "completed"]
    assert ran == [1, 2]


async def test_on_discarded_hold_waits_until_the_failed_link_is_retried_to_completion(make_app):
    app = make_app()
    post, ran = chained(app, on_discarded="hold")
    jobs = await app.insert_all([post.new({"account_id": 1, "seq": i, "fail": i == 0}) for i in range(3)])
    other = await app.insert(post.new({"account_id": 2, "seq": 10}))
    assert await app.drain() == {"discarded": 1, "completed": 1}  # the other chain is not held
    assert await states(app, jobs) == ["discarded", "suspended", "suspended"]
    assert (await app.get_job(other.id)).state == "completed"
    # Later inserts of the held chain wait too.
    late = await app.insert(post.new({"account_id": 1, "seq": 3}))
    assert late.state == "suspended"
    assert (await Lifeline().sweep(app))["released_links"] == []  # holding is not "stuck"

    assert (await app.retry_job(jobs[0].id)).state == "available"
    assert await app.drain() == {"completed": 4}
    assert ran == [10, 0, 1, 2, 3]


async def test_on_discarded_hold_releases_when_the_failed_link_is_deleted(db_url, make_app):
    app = make_app()
    post, ran = chained(app, on_discarded="hold")
    jobs = await app.insert_all([post.new({"account_id": 1, "seq": i, "fail": i == 0}) for i in range(3)])
    assert await app.drain() == {"discarded": 1}
    side_sql(db_url, "DELETE FROM baton_jobs WHERE id = ?", (jobs[0].id,))
    meta = await Lifeline().sweep(app)
    assert meta["released_links"] == [jobs[1].id]
    assert (await app.get_job(jobs[1].id)).meta["repair"] == "missed_release"
    assert await app.drain() == {"completed": 2}
    assert ran == [1, 2]


async def test_on_discarded_halt_cancels_the_rest_of_the_chain(make_app):
    app = make_app()
    post, ran = chained(app, on_discarded="halt")
    jobs = await app.insert_all([post.new({"account_id": 1, "seq": i, "fail": i == 0}) for i in range(3)])
    other = await app.insert(post.new({"account_id": 2, "seq": 10}))
    assert await app.drain() == {"discarded": 1, "completed": 1}
    assert await states(app, jobs) == ["discarded", "cancelled", "cancelled"]
    assert "halts" in (await app.get_job(jobs[1].id)).errors[-1]["error"]
    assert (await app.get_job(other.id)).state == "completed"
    # The chain is not blocked forever: a new link runs.
    assert (await app.insert(post.new({"account_id": 1, "seq": 5}))).state == "available"
    assert await app.drain() == {"completed": 1}
    assert ran == [10, 5]


@pytest.mark.parametrize(
    ("mode", "after_cancel"),
    [("ignore", ["cancelled", "completed", "completed"]), ("hold", None), ("halt", None)],
)
async def test_on_cancelled_modes(make_app, mode, after_cancel):
    app = make_app()
    post, ran = chained(app, on_cancelled=mode)
    jobs = await app.insert_all([post.new({"account_id": 1, "seq": i}) for i in range(3)])
    assert await app.cancel_all_jobs(ids=[jobs[0].id]) == 1
    await app.drain()
    if mode == "ignore":
        assert await states(app, jobs) == after_cancel
        assert ran == [1, 2]
    elif mode == "hold":
        assert await states(app, jobs) == ["cancelled", "suspended", "suspended"]
        assert ran == []
        await app.retry_job(jobs[0].id)
        assert await app.drain() == {"completed": 3}
        assert ran == [0, 1, 2]
    else:
        assert await states(app, jobs) == ["cancelled", "cancelled", "cancelled"]
        assert ran == []


async def test_a_link_that_fails_then_retries_keeps_its_chain_waiting(db_url, make_app):
    """A retryable link is unfinished: the next link waits for its retry to complete."""
    app = make_app()
    attempts: list[int] = []

    @app.worker(chain_by=["args.account_id"], backoff=lambda job: 0)
    def flaky(job: baton.Job) -> None:
        attempts.append(job.args["seq"])
        if job.args["seq"] == 0 and job.attempt == 1:
            raise RuntimeError("try again")

    jobs = await app.insert_all([flaky.new({"account_id": 1, "seq": i}) for i in range(2)])
    assert await app.drain() == {"retryable": 1, "completed": 2}
    assert attempts == [0, 0, 1]
    assert await states(app, jobs) == ["completed", "completed"]


async def test_a_meta_key_named_chain_is_the_callers_and_does_not_turn_hold_off(make_app):
    """The policy lives under Baton's own meta key: a caller's meta "chain" (here any value)
    neither replaces it nor is replaced. Every reader of the policy is exercised: the failing
    link's ack holds, an insert behind it waits, the Lifeline does not call the chain stuck,
    and a release the cancel of a later link asks for leaves the next link waiting."""
    app = make_app()
    post, ran = chained(app, on_discarded="hold")
    meta = {"chain": "ethereum"}
    jobs = await app.insert_all([post.new({"account_id": 1, "seq": i, "fail": i == 0}, meta=meta) for i in range(4)])
    assert await app.drain() == {"discarded": 1}
    assert await states(app, jobs) == ["discarded", "suspended", "suspended", "suspended"]
    stored = await app.get_job(jobs[0].id)
    assert stored.meta["chain"] == "ethereum"
    assert stored.meta["baton_chain"] == {"on_discarded": "hold", "on_cancelled": "ignore"}
    assert (await app.insert(post.new({"account_id": 1, "seq": 4}, meta=meta))).state == "suspended"
    assert (await Lifeline().sweep(app))["released_links"] == []
    assert await app.cancel_all_jobs(ids=[jobs[1].id]) == 1  # "ignore": asks for the next link
    assert await states(app, jobs) == ["discarded", "cancelled", "suspended", "suspended"]
    assert await app.drain() == {}
    assert (await app.retry_job(jobs[0].id)).state == "available"
    assert await app.drain() == {"completed": 4}
    assert ran == [0, 2, 3, 4]


async def test_chain_by_a_meta_key_named_chain_halts(make_app):
    app = make_app()

    @app.worker(chain_by=["meta.chain"], on_discarded="halt")
    def by_network(job: baton.Job) -> Any:
        return baton.Discard("node down") if job.args["n"] == 0 else None

    jobs = await app.insert_all([by_network.new({"n": n}, meta={"chain": "ethereum"}) for n in range(3)])
    other = await app.insert(by_network.new({"n": 5}, meta={"chain": "bitcoin"}))
    assert await app.drain() == {"discarded": 1, "completed": 1}
    assert await states(app, jobs) == ["discarded", "cancelled", "cancelled"]
    assert (await app.get_job(other.id)).state == "completed"


def test_the_chain_policy_is_the_workers_whatever_the_callers_meta_holds(tmp_path: Path):
    app = baton.Baton(f"sqlite:///{tmp_path}/unused.db", plugins=[], log_events=False)
    post, _ = chained(app, on_discarded="halt", on_cancelled="hold")
    policy = {"on_discarded": "halt", "on_cancelled": "hold"}
    spec = post.new({"account_id": 1}, meta={"baton_chain": {"on_discarded": "ignore"}, "chain": [1]})
    assert spec.meta == {"baton_chain": policy, "chain": [1]}
    # Without a "chain" of the caller's, the policy is there too, for nodes of releases before
    # 0.2 while a deploy rolls (they read it nowhere else).
    assert post.new({"account_id": 1}).meta == {"baton_chain": policy, "chain": policy}


async def test_links_inserted_before_0_2_keep_their_policy_under_meta_chain(make_app):
    """Links stored by 0.1 carry the policy in meta["chain"] only: they still hold."""
    app = make_app()
    post, ran = chained(app, on_discarded="hold")
    key = post.new({"account_id": 1}).chain_key
    old = {"on_discarded": "hold", "on_cancelled": "ignore"}
    jobs = await app.insert_all(
        [
            baton.JobSpec(post.name, {"account_id": 1, "seq": i, "fail": i == 0}, meta={"chain": old}, chain_key=key)
            for i in range(3)
        ]
    )
    assert await app.drain() == {"discarded": 1}
    assert await states(app, jobs) == ["discarded", "suspended", "suspended"]
    late = await app.insert(post.new({"account_id": 1, "seq": 3}))
    assert late.state == "suspended"
    assert (await Lifeline().sweep(app))["released_links"] == []
    assert await app.cancel_all_jobs(ids=[jobs[1].id]) == 1
    assert await states(app, [*jobs, late]) == ["discarded", "cancelled", "suspended", "suspended"]
    assert (await app.retry_job(jobs[0].id)).state == "available"
    assert await app.drain() == {"completed": 3}
    assert ran == [0, 2, 3]


def test_the_unique_key_of_a_chained_job_is_that_of_its_0_1_twin(tmp_path: Path):
    """Unique by meta hashes the caller's meta, not Baton's policy key: a job inserted by 0.1
    (policy under "chain") and its twin from this release conflict."""
    app = baton.Baton(f"sqlite:///{tmp_path}/unused.db", plugins=[], log_events=False)
    post, _ = chained(app, unique={"fields": ["worker", "meta"], "period": None})
    spec = post.new({"account_id": 1}, meta={"tenant": "acme"})
    policy = {"on_discarded": "ignore", "on_cancelled": "ignore"}
    twin = baton.JobSpec(post.name, {"account_id": 1}, meta={"tenant": "acme", "chain": policy}, unique=spec.unique)
    assert spec.unique_key() == twin.unique_key()
    # On a worker that is not chained, "baton_chain" is a key of the caller's like any other.
    plain = app.worker(name="chains.plain", unique={"fields": ["worker", "meta"], "period": None})(lambda job: None)
    assert plain.new({}, meta={"baton_chain": 1}).unique_key() != plain.new({}, meta={"baton_chain": 2}).unique_key()


# --------------------------------------------------------------------------- keys


async def test_chain_by_meta_keys(make_app):
    app = make_app()
    runs: list[tuple[Any, int, float, float]] = []

    @app.worker(chain_by=["meta.tenant"])
    def sync_tenant(job: baton.Job) -> None:
        now = time.monotonic()
        runs.append((job.meta["tenant"], job.args["seq"], now, now))

    jobs = await app.insert_all(
        [sync_tenant.new({"seq": i}, meta={"tenant": t}) for i in range(3) for t in ("acme", "globex")]
    )
    assert [j.state for j in jobs] == ["available", "available"] + ["suspended"] * 4
    assert jobs[0].chain_key != jobs[1].chain_key
    assert await app.drain() == {"completed": 6}
    assert_serial_in_order(runs)


async def test_chain_by_several_keys(make_app):
    app = make_app()

    @app.worker(chain_by=["args.account_id", "meta.region"])
    def post(job: baton.Job) -> None:
        return None

    a = await app.insert(post.new({"account_id": 1}, meta={"region": "eu"}))
    b = await app.insert(post.new({"account_id": 1}, meta={"region": "us"}))
    c = await app.insert(post.new({"account_id": 1}, meta={"region": "eu"}))
    assert (a.state, b.state, c.state) == ("available", "available", "suspended")


async def test_a_missing_chain_key_is_a_validation_error_naming_it(make_app):
    app = make_app()

    @app.worker(chain_by=["args.account_id"])
    def post(job: baton.Job) -> None:
        return None

    @app.worker(chain_by=["meta.tenant"])
    def per_tenant(job: baton.Job) -> None:
        return None

    with pytest.raises(baton.ValidationError) as err:
        post.new({"account": 1})
    assert err.value.field == "args.account_id"
    assert "account_id" in str(err.value)
    with pytest.raises(baton.ValidationError) as err:
        per_tenant.new({"tenant": "acme"})
    assert err.value.field == "meta.tenant"
    assert await app.count_jobs() == {}


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"chain_by": "args.account_id"}, "chain_by"),
        ({"chain_by": []}, "chain_by"),
        ({"chain_by": ["account_id"]}, "chain_by"),
        ({"chain_by": ["args.a"], "on_discarded": "skip"}, "on_discarded"),
        ({"chain_by": ["args.a"], "on_cancelled": "pause"}, "on_cancelled"),
    ],
)
def test_bad_chain_options_name_the_field(options, field, tmp_path: Path):
    app = baton.Baton(f"sqlite:///{tmp_path}/unused.db", plugins=[], log_events=False)
    with pytest.raises(baton.ValidationError) as err:
        app.worker(**options)(lambda job: None)
    assert err.value.field == field
