"""Cron inserts exactly one job per slot: across sweeps, across nodes sweeping at once, and
across a leader change; expressions, aliases, time zones and catch-up behave as documented,
and bad input fails with a ValidationError naming it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

import baton
from baton.plugins import Cron
from conftest import wait_for
from heal_nodes import side_sql


def with_tick(app: baton.Baton) -> baton.Baton:
    @app.worker(name="tick")
    def tick(job: baton.Job) -> None:
        return None

    return app


@pytest.fixture
def app(make_app):
    return with_tick(make_app())


async def mid_minute() -> None:
    """Wait out the last seconds of a minute, so the sweeps of a test share one slot."""
    now = datetime.now(UTC)
    if now.second >= 55:
        await asyncio.sleep(60 - now.second - now.microsecond / 1e6 + 0.2)


async def cron_jobs(app: baton.Baton) -> list[baton.Job]:
    return await app.list_jobs(worker="tick")


# --------------------------------------------------------------------------- one job per slot


async def test_two_sweeps_of_one_slot_insert_one_job(app):
    await mid_minute()
    cron = Cron(crontab=[("* * * * *", "tick", {"n": 1})])
    first = await cron.sweep(app)
    second = await cron.sweep(app)
    assert first["inserted_count"] == 1 and second["inserted_count"] == 0
    [job] = await cron_jobs(app)
    assert job.args == {"n": 1}
    assert job.state == "available"
    assert job.meta["cron"] == "* * * * *"
    slot = datetime.fromisoformat(job.meta["cron_slot"])
    assert slot.second == 0 and slot.microsecond == 0
    assert timedelta(0) <= datetime.now(UTC) - slot < timedelta(minutes=1)
    assert first["inserted"] == [{"id": job.id, "worker": "tick", "slot": job.meta["cron_slot"]}]


async def test_two_nodes_sweeping_the_same_minute_insert_one_job(make_app, app):
    other = with_tick(make_app(node="other"))
    await mid_minute()
    results = await asyncio.gather(
        Cron(crontab=[("* * * * *", "tick", {"n": 1})]).sweep(app),
        Cron(crontab=[("* * * * *", "tick", {"n": 1})]).sweep(other),
    )
    assert sorted(r["inserted_count"] for r in results) == [0, 1]
    assert len(await cron_jobs(app)) == 1


async def test_a_leader_change_mid_minute_inserts_no_second_job(make_app, app):
    await mid_minute()
    assert (await Cron(crontab=[("* * * * *", "tick")]).sweep(app))["inserted_count"] == 1
    # The leader dies; a new leader starts with a fresh Cron that remembers nothing.
    new_leader = with_tick(make_app(node="new-leader"))
    assert (await Cron(crontab=[("* * * * *", "tick")]).sweep(new_leader))["inserted_count"] == 0
    assert len(await cron_jobs(app)) == 1


async def test_a_slot_claimed_in_baton_cron_is_not_inserted_again(db_url, engine_name, app):
    await mid_minute()
    cron = Cron(crontab=[("* * * * *", "tick")])
    entry = cron.entries[0]
    slot = cron.slot(entry, datetime.now(UTC))

    def claim(at: datetime) -> None:
        value = at.timestamp() if engine_name == "sqlite" else at
        side_sql(db_url, "DELETE FROM baton_cron")
        side_sql(db_url, "INSERT INTO baton_cron (name, last_slot) VALUES (?, ?)", (entry.name, value))

    claim(slot)  # another node claimed this slot already
    assert (await cron.sweep(app))["inserted_count"] == 0
    claim(slot - timedelta(minutes=1))  # only the previous slot was claimed
    assert (await Cron(crontab=[("* * * * *", "tick")]).sweep(app))["inserted_count"] == 1
    last = side_sql(db_url, "SELECT last_slot FROM baton_cron WHERE name = ?", (entry.name,))[0][0]
    last = datetime.fromtimestamp(last, UTC) if engine_name == "sqlite" else last
    assert last == slot


async def test_entries_are_claimed_independently_and_carry_their_job_options(app):
    await mid_minute()

    @app.worker(name="tock")
    def tock(job: baton.Job) -> None:
        return None

    cron = Cron(
        crontab=[
            ("* * * * *", "tick", {"n": 1}),
            ("* * * * *", "tick", {"n": 2}),
            (
                "* * * * *",
                tock,
                {},
                {"queue": "reports", "priority": 3, "max_attempts": 2, "tags": ["t"], "meta": {"team": "ops"}},
            ),
        ]
    )
    assert (await cron.sweep(app))["inserted_count"] == 3
    assert sorted(j.args["n"] for j in await cron_jobs(app)) == [1, 2]
    [job] = await app.list_jobs(worker="tock")
    assert (job.queue, job.priority, job.max_attempts, job.tags) == ("reports", 3, 2, ["t"])
    assert job.meta["team"] == "ops" and job.meta["cron"] == "* * * * *"


async def test_a_started_leader_runs_cron(make_app):
    app = with_tick(make_app(plugins=[Cron(crontab=[("* * * * *", "tick")], interval=0.2)]))
    await mid_minute()
    async with app:
        await wait_for(lambda: app.list_jobs(worker="tick"), timeout=10)
        await asyncio.sleep(0.6)  # several more sweeps of the same minute
    jobs = await app.list_jobs(worker="tick")
    slots = [j.meta["cron_slot"] for j in jobs]
    assert len(slots) == len(set(slots)) and len(slots) == 1


# --------------------------------------------------------------------------- expressions, zones, catch-up


NOW = datetime(2024, 5, 15, 10, 37, 12, tzinfo=UTC)  # a Wednesday


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("@hourly", datetime(2024, 5, 15, 10, 0, tzinfo=UTC)),
        ("@daily", datetime(2024, 5, 15, tzinfo=UTC)),
        ("@midnight", datetime(2024, 5, 15, tzinfo=UTC)),
        ("@weekly", datetime(2024, 5, 12, tzinfo=UTC)),
        ("@monthly", datetime(2024, 5, 1, tzinfo=UTC)),
        ("@yearly", datetime(2024, 1, 1, tzinfo=UTC)),
        ("*/5 * * * *", datetime(2024, 5, 15, 10, 35, tzinfo=UTC)),
        ("37 10 * * *", datetime(2024, 5, 15, 10, 37, tzinfo=UTC)),
        ("38 10 * * *", datetime(2024, 5, 14, 10, 38, tzinfo=UTC)),
    ],
)
def test_slots_of_expressions_and_aliases(expression, expected):
    cron = Cron(crontab=[(expression, "tick")])
    assert cron.slot(cron.entries[0], NOW) == expected


def test_a_slot_at_its_exact_time_is_that_slot():
    cron = Cron(crontab=[("@hourly", "tick")])
    top = datetime(2024, 5, 15, 10, 0, tzinfo=UTC)
    assert cron.slot(cron.entries[0], top) == top
    assert cron.slot(cron.entries[0], top - timedelta(microseconds=1)) == top - timedelta(hours=1)


@pytest.mark.parametrize(
    ("now", "expected_utc"),
    [
        (datetime(2024, 1, 15, 15, 0, tzinfo=UTC), datetime(2024, 1, 15, 14, 0, tzinfo=UTC)),  # EST
        (datetime(2024, 7, 15, 15, 0, tzinfo=UTC), datetime(2024, 7, 15, 13, 0, tzinfo=UTC)),  # EDT
        (datetime(2024, 1, 15, 13, 0, tzinfo=UTC), datetime(2024, 1, 14, 14, 0, tzinfo=UTC)),  # 08:00 local
    ],
)
def test_expressions_are_read_in_the_plugin_time_zone(now, expected_utc):
    cron = Cron(crontab=[("0 9 * * *", "tick")], timezone="America/New_York")
    slot = cron.slot(cron.entries[0], now)
    assert slot == expected_utc
    assert slot.astimezone(ZoneInfo("America/New_York")).hour == 9


async def test_a_sweep_in_a_half_hour_time_zone(app):
    await mid_minute()
    cron = Cron(crontab=[("* * * * *", "tick")], timezone="Asia/Kolkata")
    assert (await cron.sweep(app))["inserted_count"] == 1
    [job] = await cron_jobs(app)
    assert job.meta["cron_slot"].endswith("+05:30")
    hourly = Cron(crontab=[("0 * * * *", "tick")], timezone="Asia/Kolkata")
    assert hourly.slot(hourly.entries[0], datetime(2024, 5, 15, 10, 45, tzinfo=UTC)) == datetime(
        2024, 5, 15, 10, 30, tzinfo=UTC
    )


async def test_a_slot_older_than_catch_up_is_skipped(app):
    await mid_minute()
    minute = (datetime.now(UTC).minute - 5) % 60  # this entry's last slot was ~5 minutes ago
    expression = f"{minute} * * * *"
    skipped = Cron(crontab=[(expression, "tick")], catch_up=60)
    assert (await skipped.sweep(app))["inserted_count"] == 0
    assert (await skipped.sweep(app))["inserted_count"] == 0
    assert await cron_jobs(app) == []
    late = Cron(crontab=[(expression, "tick")], catch_up=600)
    assert (await late.sweep(app))["inserted_count"] == 1
    assert (await late.sweep(app))["inserted_count"] == 0
    assert len(await cron_jobs(app)) == 1


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("expression", ["61 * * * *", "* * * *", "every minute", "@fortnightly", "", 5])
def test_a_bad_expression_is_rejected_at_construction_naming_it(expression):
    with pytest.raises(baton.ValidationError) as err:
        Cron(crontab=[("* * * * *", "tick"), (expression, "tick")])
    assert err.value.field == "crontab[1]"
    assert repr(expression) in str(err.value)


@pytest.mark.parametrize(
    "entry",
    [("* * * * *",), ("* * * * *", "tick", [1]), ("* * * * *", "tick", {}, {"bogus": 1}), "* * * * * tick"],
)
def test_malformed_entries_are_rejected(entry):
    with pytest.raises(baton.ValidationError) as err:
        Cron(crontab=[entry])
    assert err.value.field == "crontab[0]"


@pytest.mark.parametrize("timezone", ["Mars/Olympus_Mons", "", "UTC+25"])
def test_a_bad_timezone_is_rejected(timezone):
    with pytest.raises(baton.ValidationError) as err:
        Cron(crontab=[("* * * * *", "tick")], timezone=timezone)
    assert err.value.field == "timezone"
    assert repr(timezone) in str(err.value)


async def test_an_unknown_worker_is_rejected_at_validate_and_start(make_app, app):
    cron = Cron(crontab=[("* * * * *", "nowhere.no_such_worker")])  # a name: checked against an app
    with pytest.raises(baton.ValidationError) as err:
        cron.validate(app)
    assert "nowhere.no_such_worker" in str(err.value)
    node = make_app(plugins=[cron])
    with pytest.raises(baton.ValidationError) as err:
        await node.start()
    assert "nowhere.no_such_worker" in str(err.value)
    assert not node.running
    Cron(crontab=[("* * * * *", "tick")]).validate(app)  # a known name is fine
