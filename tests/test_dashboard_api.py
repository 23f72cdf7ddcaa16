"""The dashboard's JSON API and pages over HTTP (httpx on the ASGI app), on both engines:
counts, filters and keyset pages, job and workflow detail, actions with CSRF, read-only mode,
authentication, escaping, mounting under a prefix, the health and cron pages, and the live
change feed."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html import unescape as html_unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

import baton
from baton import read
from baton.dashboard import create_app
from baton.plugins.cron import Cron
from baton.store import transitions as store
from conftest import wait_for
from dash_data import EVIL, register, seed


def client_for(asgi: Any, **options: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://dash", **options)


async def token(client: httpx.AsyncClient) -> dict[str, str]:
    """The CSRF header for this client (its cookie is kept by the client)."""
    response = await client.get("/api/csrf")
    assert response.status_code == 200
    return {"X-CSRF-Token": response.json()["token"]}


@pytest.fixture
async def seeded(make_app: Callable[..., baton.Baton]) -> dict[str, Any]:
    app = make_app(queues={"default": 5, "mailers": 3})
    workers = register(app)
    ids = await seed(app, workers)
    return {"app": app, "workers": workers, **ids}


@pytest.fixture
async def api(seeded: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(seeded["app"])) as client:
        yield client


async def all_jobs(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    """Every job matching `params`, following the keyset pages."""
    out: list[dict[str, Any]] = []
    before = None
    while True:
        query = {**params, **({"before": before} if before else {})}
        page = (await client.get("/api/jobs", params=query)).json()
        out.extend(page["jobs"])
        before = page["next_before"]
        if before is None:
            return out


async def test_overview_counts_jobs_by_queue_and_state(api: httpx.AsyncClient, seeded: dict[str, Any]) -> None:
    data = (await api.get("/api/overview")).json()
    queues = {q["queue"]: q["counts"] for q in data["queues"]}
    assert set(queues) == {"default", "mailers"}
    # 4 declined cards + the failed `clean` step; 3 stock syncs waiting for their retry.
    assert queues["default"]["discarded"] == 5
    assert queues["default"]["retryable"] == 3
    assert queues["mailers"]["completed"] == 25
    assert queues["mailers"]["scheduled"] == 1
    jobs = await seeded["app"].count_jobs()
    assert data["totals"] == {**dict.fromkeys(baton.job.STATES, 0), **jobs}
    assert data["estimated"] == [] and data["capped"] == []
    assert len(data["throughput"]) == 60
    assert sum(b["completed"] or 0 for b in data["throughput"]) == jobs["completed"]
    # A cold start counts the newest minutes first; later requests count the rest, once.
    counted = [b for b in data["throughput"] if b["completed"] is not None]
    assert 15 <= len(counted) <= 17 and counted[-1]["minute"] == data["throughput"][-1]["minute"]
    for _ in range(4):
        data = (await api.get("/api/overview")).json()
    assert all(b["completed"] is not None for b in data["throughput"])
    assert sum(b["completed"] for b in data["throughput"]) == jobs["completed"]


async def test_counts_beyond_the_cap_are_marked(seeded: dict[str, Any], engine_name: str) -> None:
    app = seeded["app"]
    counts = await app.engine.run(read.queue_counts, [], 10)
    mailers = next(q for q in counts["queues"] if q["queue"] == "mailers")
    if engine_name == "postgres":
        # The sample covers the whole (small) table, so the estimate is the true count.
        with psycopg.connect(app.url, autocommit=True) as conn:
            conn.execute("ANALYZE baton_jobs")
        counts = await app.engine.run(read.queue_counts, [], 10, 1_000_000)
        mailers = next(q for q in counts["queues"] if q["queue"] == "mailers")
        assert mailers["counts"]["completed"] == 25
        assert mailers["estimated"] == ["completed"]
    else:
        assert mailers["counts"]["completed"] == 10
        assert mailers["capped"] == ["completed"]


async def test_jobs_filters_and_keyset_pages(api: httpx.AsyncClient, seeded: dict[str, Any]) -> None:
    everything = await all_jobs(api, limit=7)
    ids = [j["id"] for j in everything]
    assert ids == sorted(ids, reverse=True) and len(ids) == len(set(ids))
    assert len(ids) == sum((await seeded["app"].count_jobs()).values())

    discarded = await all_jobs(api, state="discarded")
    assert len(discarded) == 5 and {j["state"] for j in discarded} == {"discarded"}
    mailers = await all_jobs(api, queue="mailers", limit=10)
    assert len(mailers) == 26 and {j["queue"] for j in mailers} == {"mailers"}
    cards = await all_jobs(api, worker="shop.charge_card", state="discarded")
    assert len(cards) == 4
    assert all(j["last_error"].startswith("ValueError: card declined") for j in cards)
    tagged = await all_jobs(api, tag="payments")
    assert {j["worker"] for j in tagged} == {"shop.charge_card"} and len(tagged) == 4
    found = await all_jobs(api, q="SKU-1")
    assert [j["worker"] for j in found] == ["shop.sync_stock"]
    assert "SKU-1" in found[0]["args"]
    # Search text is matched literally, LIKE wildcards included.
    assert await all_jobs(api, q="%") == []


async def test_text_search_matches_values_as_written_quotes_and_backslashes_included(
    make_app: Callable[..., baton.Baton],
) -> None:
    """`q` looks for the text of a value, not of its JSON encoding (where `"` is `\\"`)."""
    app = make_app(queues={"default": 1})
    w = register(app)
    quoted = await app.insert(w["send_receipt"].new({"title": 'the "Acme" deal'}))
    path = await app.insert(w["send_receipt"].new({"path": "C:\\data\\in.csv"}))
    html = await app.insert(w["send_receipt"].new({"html": '<a href="x">', "note": "Crème 50%_off\tend"}))
    async with client_for(create_app(app)) as client:

        async def found(q: str) -> list[int]:
            return [j["id"] for j in await all_jobs(client, q=q)]

        assert await found('"Acme"') == [quoted.id]
        assert await found('the "acme" DEAL') == [quoted.id]  # case-insensitive
        assert await found("C:\\data\\") == [path.id]
        assert await found("\\") == [path.id]  # not the jobs whose quotes JSON escapes
        assert await found('href="x"') == [html.id]
        assert await found("Crème 50%_off\tend") == [html.id]
        assert await found("50%") == [html.id] and await found("%_") == [html.id]
        assert await found("0%o") == [] and await found('"') == [html.id, quoted.id]  # newest first
        assert f'href="/jobs/{quoted.id}"' in (await client.get("/jobs", params={"q": '"Acme"'})).text


async def test_bad_parameters_are_400_naming_the_parameter(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/jobs", params={"state": "finished"})
    assert response.status_code == 400 and response.json()["field"] == "state"
    response = await api.get("/api/jobs", params={"limit": "0"})
    assert response.status_code == 400 and response.json()["field"] == "limit"
    response = await api.get("/api/jobs", params={"before": "abc"})
    assert response.status_code == 400 and response.json()["field"] == "before"
    response = await api.get("/api/workflows", params={"status": "stuck"})
    assert response.status_code == 400 and response.json()["field"] == "status"
    # The workflows cursor is checked too (PostgreSQL answered 500, SQLite an empty page).
    cursor = (await api.get("/api/workflows", params={"limit": 1})).json()["next_before"]
    for bad in ("abc", "abc|x", cursor.split("|")[0], "|" + cursor.split("|")[1], "nan|x", "2024-13-01|x"):
        response = await api.get("/api/workflows", params={"before": bad})
        assert response.status_code == 400 and response.json()["field"] == "before", bad
    assert (await api.get("/workflows", params={"before": "abc"})).status_code == 400
    assert (await api.get("/api/jobs/999999")).status_code == 404
    assert (await api.get("/api/workflows/nope")).status_code == 404
    assert (await api.get("/jobs/999999")).status_code == 404
    assert (await api.get("/jobs?state=finished")).status_code == 400


async def test_job_detail_has_its_workflow_step_and_chain(api: httpx.AsyncClient, seeded: dict[str, Any]) -> None:
    steps = await seeded["app"].list_jobs(workflow_id=seeded["failed_wf"])
    clean = next(j for j in steps if j.args.get("name") == "clean")
    detail = (await api.get(f"/api/jobs/{clean.id}")).json()
    assert detail["state"] == "discarded"
    assert detail["step"]["name"] == "clean" and detail["step"]["deps"] == ["fetch"]
    assert detail["step"]["workflow_id"] == seeded["failed_wf"] and detail["step"]["label"] == "nightly-report"
    assert detail["errors"][-1]["error"].startswith("RuntimeError: step clean failed")
    assert "Traceback" in detail["errors"][-1]["traceback"]
    fetch = next(j for j in steps if j.args.get("name") == "fetch")
    assert (await api.get(f"/api/jobs/{fetch.id}")).json()["step"]["result"] == {"rows": 42}

    links = await seeded["app"].list_jobs(worker="shop.ledger")
    middle = sorted(j.id for j in links)[1]
    chain = (await api.get(f"/api/jobs/{middle}")).json()["chain"]
    assert [c["id"] for c in chain] == sorted(j.id for j in links)


async def test_workflows_list_and_detail(api: httpx.AsyncClient, seeded: dict[str, Any]) -> None:
    listed = (await api.get("/api/workflows")).json()["workflows"]
    assert {w["label"]: w["status"] for w in listed} == {
        "nightly-report": "failed",
        "weekly-report": "completed",
        "waiting-report": "running",
    }
    failed = (await api.get("/api/workflows", params={"status": "failed"})).json()["workflows"]
    assert [w["id"] for w in failed] == [seeded["failed_wf"]]
    assert failed[0]["steps"] == 7 and failed[0]["failed"] == 5
    running = (await api.get("/api/workflows", params={"status": "running"})).json()["workflows"]
    assert [w["id"] for w in running] == [seeded["waiting_wf"]]
    labelled = (await api.get("/api/workflows", params={"label": "weekly-report"})).json()["workflows"]
    assert [w["id"] for w in labelled] == [seeded["done_wf"]]
    first = (await api.get("/api/workflows", params={"limit": 2})).json()
    second = (await api.get("/api/workflows", params={"limit": 2, "before": first["next_before"]})).json()
    assert len(first["workflows"]) == 2 and len(second["workflows"]) == 1
    assert second["next_before"] is None
    assert {w["id"] for w in first["workflows"] + second["workflows"]} == {w["id"] for w in listed}

    wf = (await api.get(f"/api/workflows/{seeded['failed_wf']}")).json()
    steps = {s["name"]: s for s in wf["steps"]}
    assert wf["status"] == "failed" and wf["root_failure"] == "clean"
    assert steps["clean"]["state"] == "discarded" and steps["fetch"]["state"] == "completed"
    assert steps["render"]["deps"] == ["clean", "stats"]
    # A sub-workflow's root inherits the dependency of the step it stands for.
    assert steps["publish.upload"]["deps"] == ["render"] and steps["publish.upload"]["group"] == "publish"
    assert steps["stats"]["state"] == "cancelled" and steps["stats"]["reason"] == "dep_discarded"

    waiting = (await api.get(f"/api/workflows/{seeded['waiting_wf']}")).json()
    second_step = next(s for s in waiting["steps"] if s["name"] == "second")
    assert second_step["state"] == "suspended" and second_step["waiting"] == "waiting on first"


async def test_workflow_page_draws_every_step_with_its_state(api: httpx.AsyncClient, seeded: dict[str, Any]) -> None:
    html = (await api.get(f"/workflows/{seeded['failed_wf']}")).text
    assert '<svg class="dag"' in html
    for name, state in [("clean", "discarded"), ("fetch", "completed"), ("publish.notify", "cancelled")]:
        assert f'data-step="{name}"><g class="step state-{state}' in html
    assert 'class="edge hot"' in html  # the failure's path is highlighted
    assert "root-failure" in html


async def test_retry_cancel_and_discard_a_job(api: httpx.AsyncClient, seeded: dict[str, Any]) -> None:
    app = seeded["app"]
    headers = await token(api)
    card = (await app.list_jobs(worker="shop.charge_card"))[0]
    response = await api.post(f"/api/jobs/{card.id}/retry", headers=headers)
    assert response.status_code == 200 and response.json()["changed"] is True
    assert (await app.get_job(card.id)).state == "available"  # type: ignore[union-attr]

    response = await api.post(f"/api/jobs/{card.id}/discard", headers=headers)
    assert response.json()["changed"] is True
    job = await app.get_job(card.id)
    assert job is not None and job.state == "discarded"
    assert job.errors[-1]["error"] == "discarded from the dashboard"

    later = seeded["scheduled"]
    assert (await api.post(f"/api/jobs/{later}/cancel", headers=headers)).json()["job"]["state"] == "cancelled"
    # Not applicable: reported, nothing changes.
    response = await api.post(f"/api/jobs/{later}/discard", headers=headers)
    assert response.status_code == 200 and response.json()["changed"] is False
    assert (await api.post("/api/jobs/999999/retry", headers=headers)).status_code == 404
    assert (await api.post(f"/api/jobs/{later}/explode", headers=headers)).status_code == 404


async def test_retrying_a_step_whose_dependency_failed_is_refused(
    api: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    app = seeded["app"]
    headers = await token(api)
    status = await app.workflow_status(seeded["failed_wf"])
    stats, clean = status.details["stats"].job_id, status.details["clean"].job_id
    response = await api.post(f"/api/jobs/{stats}/retry", headers=headers)
    assert response.status_code == 400
    assert response.json()["field"] == "job_id"
    assert "dependency 'clean' is discarded" in response.json()["error"]
    assert "retry step 'clean' first" in response.json()["error"]
    # `message` is the text for people: without the `job_id: ` the API's `error` starts with.
    assert response.json()["error"] == "job_id: " + response.json()["message"]
    assert response.json()["message"].startswith(f"step 'stats' (job {stats}) was not retried")
    assert (await app.get_job(stats)).state == "cancelled"  # type: ignore[union-attr]
    assert (await api.post(f"/api/jobs/{clean}/retry", headers=headers)).json()["changed"] is True
    response = await api.post(f"/api/jobs/{stats}/retry", headers=headers)
    assert response.status_code == 200 and response.json()["job"]["state"] == "suspended"
    page = (await api.get(f"/api/workflows/{seeded['failed_wf']}")).json()
    assert (page["status"], page["finished"]) == ("running", False)


async def test_discarding_a_waiting_step_cascades(api: httpx.AsyncClient, seeded: dict[str, Any]) -> None:
    app = seeded["app"]
    headers = await token(api)
    steps = {j.args["name"]: j for j in await app.list_jobs(workflow_id=seeded["waiting_wf"])}
    await api.post(f"/api/jobs/{steps['first'].id}/discard", headers=headers)
    status = await app.workflow_status(seeded["waiting_wf"])
    assert status.steps == {"first": "discarded", "second": "cancelled"}
    assert status.finished and status.status == "failed"


async def test_actions_need_post_and_the_csrf_token(api: httpx.AsyncClient, seeded: dict[str, Any]) -> None:
    card = (await seeded["app"].list_jobs(worker="shop.charge_card"))[0]
    assert (await api.get(f"/api/jobs/{card.id}/retry")).status_code == 405
    assert (await api.get("/api/jobs/bulk/retry")).status_code == 405
    assert (await api.get("/api/queues/default/pause")).status_code == 405
    assert (await api.post(f"/api/jobs/{card.id}/retry")).status_code == 403
    await token(api)  # has the cookie now, but sends no header
    assert (await api.post(f"/api/jobs/{card.id}/retry")).status_code == 403
    assert (await api.post(f"/api/jobs/{card.id}/retry", headers={"X-CSRF-Token": "forged"})).status_code == 403
    cookie = api.cookies["baton_csrf"]
    form = await api.post(
        f"/api/jobs/{card.id}/retry", data={"csrf_token": cookie}, headers={"referer": "/jobs", "accept": "text/html"}
    )
    assert form.status_code == 303  # a plain form post goes back to its page
    assert (await seeded["app"].get_job(card.id)).state == "available"  # type: ignore[union-attr]


async def test_bulk_actions_apply_to_everything_matching_the_filter(
    api: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    app = seeded["app"]
    headers = await token(api)
    response = await api.post(
        "/api/jobs/bulk/retry", params={"worker": "shop.charge_card", "state": "discarded"}, headers=headers
    )
    assert response.json() == {"count": 4, "more": False, "refused_count": 0, "refused": []}
    assert {j.state for j in await app.list_jobs(worker="shop.charge_card")} == {"available"}
    response = await api.post("/api/jobs/bulk/discard", params={"q": "SKU"}, headers=headers)
    assert response.json()["count"] == 3
    assert {j.state for j in await app.list_jobs(worker="shop.sync_stock")} == {"discarded"}
    response = await api.post("/api/jobs/bulk/cancel", params={"queue": "mailers"}, headers=headers)
    assert response.json()["count"] == 1  # only the scheduled one was unfinished
    assert (await app.get_job(seeded["scheduled"])).state == "cancelled"  # type: ignore[union-attr]


async def test_failures_grouped_by_worker_and_exception(api: httpx.AsyncClient, seeded: dict[str, Any]) -> None:
    app = seeded["app"]
    groups = {(g["worker"], g["kind"]): g for g in (await api.get("/api/failures")).json()["groups"]}
    assert groups[("shop.charge_card", "ValueError")]["discarded"] == 4
    assert groups[("shop.sync_stock", "ConnectionError")]["retryable"] == 3
    assert groups[("report.step", "RuntimeError")]["discarded"] == 1
    headers = await token(api)
    response = await api.post(
        "/api/failures/discard", data={"worker": "shop.sync_stock", "kind": "ConnectionError"}, headers=headers
    )
    assert response.json()["count"] == 3
    response = await api.post(
        "/api/failures/retry", json={"worker": "shop.charge_card", "kind": "ValueError"}, headers=headers
    )
    assert response.json()["count"] == 4
    assert {j.state for j in await app.list_jobs(worker="shop.charge_card")} == {"available"}
    assert {j.state for j in await app.list_jobs(worker="shop.sync_stock")} == {"discarded"}


async def test_read_only_refuses_every_post_and_hides_actions(seeded: dict[str, Any]) -> None:
    app = seeded["app"]
    card = (await app.list_jobs(worker="shop.charge_card"))[0]
    async with client_for(create_app(app, read_only=True)) as client:
        headers = await token(client)
        for path in (
            f"/api/jobs/{card.id}/retry",
            f"/api/jobs/{card.id}/cancel",
            "/api/jobs/bulk/retry",
            "/api/failures/retry",
            "/api/queues/default/pause",
            "/api/queues/default/scale",
        ):
            assert (await client.post(path, headers=headers)).status_code == 403, path
        assert (await app.get_job(card.id)).state == "discarded"  # type: ignore[union-attr]
        page = (await client.get(f"/jobs/{card.id}")).text
        assert "read-only" in page and "/api/jobs/" not in page
        assert "/api/jobs/bulk" not in (await client.get("/jobs?state=discarded")).text
        assert "/api/queues/" not in (await client.get("/queues")).text
        assert (await client.get("/api/overview")).status_code == 200


async def test_basic_auth_and_user_callable(seeded: dict[str, Any]) -> None:
    app = seeded["app"]
    async with client_for(create_app(app, auth="admin:s3cret")) as client:
        response = await client.get("/")
        assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Basic")
        assert (await client.get("/api/jobs", auth=("admin", "wrong"))).status_code == 401
        assert (await client.get("/api/jobs", auth=("admin", "s3cret"))).status_code == 200
        bad = base64.b64encode(b"\xff\xfe").decode()
        assert (await client.get("/api/jobs", headers={"authorization": f"Basic {bad}"})).status_code == 401
        assert (await client.post("/api/jobs/1/retry")).status_code == 401  # auth before anything else

    async def allow(request: Any) -> bool:
        return request.headers.get("x-user") == "ops"

    async with client_for(create_app(app, auth=allow)) as client:
        assert (await client.get("/jobs")).status_code == 401
        assert (await client.get("/jobs", headers={"x-user": "ops"})).status_code == 200
    with pytest.raises(baton.ValidationError, match="USER:PASS"):
        create_app(app, auth="nopassword")


async def test_user_values_are_escaped(api: httpx.AsyncClient, seeded: dict[str, Any]) -> None:
    for path in (f"/jobs/{seeded['evil']}", "/jobs?queue=mailers", "/jobs?q=script", "/failures"):
        html = (await api.get(path)).text
        assert "<script>window" not in html and 'onerror="window' not in html, path
    html = (await api.get(f"/jobs/{seeded['evil']}")).text
    assert "&lt;script&gt;window.__pwned" in html
    # Filter values echoed back into the page are escaped too.
    html = (await api.get("/jobs", params={"worker": '"><script>alert(1)</script>'})).text
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html
    step_name = "<b>bold</b>"
    app = seeded["app"]
    wf = baton.Workflow(label="<i>label</i>")
    wf.add(step_name, seeded["workers"]["step"].new({"name": "x"}, schedule_in=60))
    wid = await app.insert_workflow(wf)
    html = (await api.get(f"/workflows/{wid}")).text
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    assert "<i>label</i>" not in (await api.get("/workflows")).text
    assert EVIL not in (await api.get("/")).text


async def test_mounted_under_a_prefix(seeded: dict[str, Any]) -> None:
    outer = Starlette(routes=[Mount("/admin/baton", app=create_app(seeded["app"]))])
    async with client_for(outer) as client:
        html = (await client.get("/admin/baton/jobs")).text
        assert 'href="/admin/baton/jobs/' in html and 'src="/admin/baton/static/htmx.min.js"' in html
        assert (await client.get("/admin/baton/static/htmx.min.js")).status_code == 200
        assert (await client.get("/admin/baton/api/overview")).status_code == 200
        token = (await client.get("/admin/baton/api/csrf")).json()["token"]
        card = (await seeded["app"].list_jobs(worker="shop.charge_card"))[0]
        response = await client.post(f"/admin/baton/api/jobs/{card.id}/retry", headers={"X-CSRF-Token": token})
        assert response.status_code == 200 and response.json()["changed"] is True


async def test_every_page_renders(api: httpx.AsyncClient, seeded: dict[str, Any]) -> None:
    job = seeded["evil"]
    paths = ["/", "/jobs", f"/jobs/{job}", "/failures", "/workflows", f"/workflows/{seeded['failed_wf']}"]
    paths += ["/queues", "/cron", "/health", "/jobs?state=retryable&queue=default", "/workflows?status=failed"]
    for path in paths:
        response = await api.get(path)
        assert response.status_code == 200, path
        assert 'id="live"' in response.text


async def test_queue_pause_resume_and_scale_reach_the_nodes(
    seeded: dict[str, Any], make_app: Callable[..., baton.Baton]
) -> None:
    node = make_app(queues={"default": 2}, refresh_interval=0.2, stale_after=5, poll_interval=0.1)
    register(node)
    async with node, client_for(create_app(seeded["app"])) as client:
        headers = await token(client)

        async def default() -> dict[str, Any]:
            queues = (await client.get("/api/queues")).json()["queues"]
            return next(q for q in queues if q["queue"] == "default")

        await wait_for(lambda: _has_producer(default))
        assert (await client.post("/api/queues/default/pause", headers=headers)).status_code == 200
        await wait_for(lambda: node.queue_state()["default"]["paused"])
        await wait_for(lambda: _paused(default))
        await client.post("/api/queues/default/resume", headers=headers)
        await wait_for(lambda: not node.queue_state()["default"]["paused"])
        response = await client.post("/api/queues/default/scale", data={"limit": "7"}, headers=headers)
        assert response.json()["limit"] == 7
        await wait_for(lambda: node.queue_state()["default"]["limit"] == 7)
        response = await client.post("/api/queues/default/scale", data={"limit": "0"}, headers=headers)
        assert response.status_code == 400 and response.json()["field"] == "limit"


async def _has_producer(default: Callable[[], Any]) -> bool:
    return bool((await default())["producers"])


async def _paused(default: Callable[[], Any]) -> bool:
    return bool((await default())["paused"])


ODD_QUEUES = ["tenant/acme", "a/../b", "50% off?x=1&y#z", "ünï cödé", "..", "/"]


async def test_queues_of_a_live_node_are_listed_and_steered_whatever_their_names(
    make_app: Callable[..., baton.Baton],
) -> None:
    """A node's queues show without any job in them (the dashboard's own app declares none, as
    `baton dashboard` builds it), and the page's pause, resume and scale reach queues whose
    names hold `/`, `%`, `?`, `#` or are a dot segment."""
    node = make_app(queues=dict.fromkeys(ODD_QUEUES, 1), refresh_interval=0.2, stale_after=5, poll_interval=0.05)
    register(node)
    async with node, client_for(create_app(make_app())) as client:

        async def listed() -> set[str]:
            return {q["queue"] for q in (await client.get("/api/queues")).json()["queues"]}

        await wait_for(lambda: _has(listed, set(ODD_QUEUES)))
        html = (await client.get("/queues")).text
        assert "No queues yet" not in html
        assert {q["queue"] for q in (await client.get("/api/overview")).json()["queues"]} == set(ODD_QUEUES)
        csrf = {"csrf_token": (await client.get("/api/csrf")).json()["token"]}

        async def submit(action: str) -> None:
            """Post every form of the /queues page that asks for `action`."""
            page = (await client.get("/queues")).text
            forms = [html_unescape(a) for a in re.findall(r'<form method="post"[^>]* action="([^"]*)"', page)]
            posts = [a for a in forms if a.split("?")[0].endswith("/" + action)]
            assert len(posts) == len(ODD_QUEUES), posts
            answered = set()
            for url in posts:
                response = await client.post(url, data={**csrf, "limit": "3"})
                assert response.status_code == 200, (url, response.text)
                answered.add(response.json()["queue"])
            assert answered == set(ODD_QUEUES)

        await submit("pause")
        await wait_for(lambda: all(node.queue_state()[q]["paused"] for q in ODD_QUEUES))
        await wait_for(lambda: _all_paused(client))
        await submit("scale")
        await submit("resume")
        await wait_for(lambda: all(not s["paused"] and s["limit"] == 3 for s in node.queue_state().values()))
        # The API takes the name raw or with "/" as %2F; links to the queue's jobs keep it whole.
        headers = {"X-CSRF-Token": csrf["csrf_token"]}
        for url in ("/api/queues/tenant/acme/pause", "/api/queues/tenant%2Facme/resume"):
            response = await client.post(url, headers=headers)
            assert response.status_code == 200 and response.json()["queue"] == "tenant/acme"
        missing = await client.post("/api/queues/pause", headers=headers)
        assert missing.status_code == 400 and missing.json()["field"] == "queue"
        links = {html_unescape(h) for h in re.findall(r'href="([^"]*/jobs\?queue=[^"]*)"', html)}
        assert {parse_qs(urlsplit(h).query)["queue"][0] for h in links} == set(ODD_QUEUES)


async def _has(listed: Callable[[], Any], want: set[str]) -> bool:
    return want <= await listed()


async def _all_paused(client: httpx.AsyncClient) -> bool:
    return all(q["paused"] for q in (await client.get("/api/queues")).json()["queues"] if q["producers"])


async def test_health_shows_the_orphan_backlog_and_the_rescue(
    make_app: Callable[..., baton.Baton],
) -> None:
    app = make_app(queues={"default": 2})
    workers = register(app)
    job = await app.insert(workers["send_receipt"].new({"order": 1}))
    # A node that fetched the job and died: its producer row does not exist.
    await app.engine.run(store.fetch_jobs, "default", "ghost-node", str(uuid.uuid4()), 10)
    async with client_for(create_app(app)) as client:
        health = (await client.get("/api/health")).json()
        assert health["orphans"]["count"] == 1 and health["repairs"] == []
        await baton.plugins.Lifeline().sweep(app)
        health = (await client.get("/api/health")).json()
        assert health["orphans"]["count"] == 0
        [repair] = health["repairs"]
        assert repair["id"] == job.id and repair["reason"] == "orphaned" and repair["rescued"] == 1
        assert "ghost-node" in repair["last_error"]
        assert health["reasons"] == {"orphaned": 1}
        assert "orphaned" in (await client.get("/health")).text


async def test_cron_entries_with_last_next_and_missed_slots(make_app: Callable[..., baton.Baton]) -> None:
    plugin = Cron(crontab=[("*/5 * * * *", "shop.send_receipt", {"order": 1}), ("* * * * *", "shop.sync_stock")])
    app = make_app(queues={"default": 1}, plugins=[plugin])
    register(app)
    now = datetime(2026, 12, 4, 12, 7, 30, tzinfo=UTC)
    every5, minutely = plugin.entries
    slots = {every5.name: {"last_slot": datetime(2026, 12, 4, 11, 55, tzinfo=UTC)}}
    entries = {e["name"]: e for e in read.cron_entries(plugin, slots, now)}
    assert entries[every5.name]["previous_due"] == datetime(2026, 12, 4, 12, 5, tzinfo=UTC)
    assert entries[every5.name]["next_slot"] == datetime(2026, 12, 4, 12, 10, tzinfo=UTC)
    assert entries[every5.name]["missed"] is True  # 12:00 and 12:05 never ran
    assert entries[minutely.name]["missed"] is True and entries[minutely.name]["last_slot"] is None
    assert entries[minutely.name]["previous_due"] == datetime(2026, 12, 4, 12, 7, tzinfo=UTC)
    slots[every5.name]["last_slot"] = datetime(2026, 12, 4, 12, 5, tzinfo=UTC)
    assert read.cron_entries(plugin, slots, now)[0]["missed"] is False

    await plugin.sweep(app)  # claims the current slots
    async with client_for(create_app(app)) as client:
        data = (await client.get("/api/cron")).json()
        assert data["configured"] is True
        entries = {e["worker"]: e for e in data["entries"]}
        # The minutely slot was just claimed; the */5 one is flagged unless its slot is recent.
        assert entries["shop.sync_stock"]["missed"] is False and entries["shop.sync_stock"]["last_slot"]
        assert entries["shop.send_receipt"]["next_slot"] > entries["shop.send_receipt"]["previous_due"]
        assert "*/5 * * * *" in (await client.get("/cron")).text


async def test_one_poller_tells_every_browser_about_changes(seeded: dict[str, Any]) -> None:
    dashboard = create_app(seeded["app"], poll_interval=0.05).dashboard
    broadcaster = dashboard.broadcaster
    try:
        async with broadcaster.subscribe() as first, broadcaster.subscribe() as second:
            assert broadcaster.subscribers == 2
            await wait_for(lambda: broadcaster.polls >= 2)
            polls = broadcaster.polls
            await seeded["app"].insert(seeded["workers"]["send_receipt"].new({"order": 1000}))
            assert await asyncio.wait_for(first.get(), 10) == "change"
            assert await asyncio.wait_for(second.get(), 10) == "change"
            assert broadcaster.polls > polls
        await wait_for(lambda: broadcaster._task is None)  # nobody watches: polling stops
    finally:
        await broadcaster.close()


def test_the_cli_serves_it_with_auth_from_the_environment_and_read_only(db_url: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "BATON_DASHBOARD_AUTH": "ops:pw"}
    command = [sys.executable, "-m", "baton.cli", "dashboard", "--url", db_url, "--port", str(port), "--read-only"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"{base}/api/overview", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the dashboard did not start"
                time.sleep(0.1)
        assert response.status_code == 401
        assert httpx.get(f"{base}/api/overview", auth=("ops", "pw")).status_code == 200
        assert httpx.get(f"{base}/", auth=("ops", "pw")).text.count("read-only") >= 1
        assert httpx.post(f"{base}/api/queues/default/pause", auth=("ops", "pw")).status_code == 403
        # A second dashboard on the same port: one line naming the port and the fix, exit 1
        # (as `baton --help` documents), and no banner claiming it serves.
        busy = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
        assert busy.returncode == 1, busy.stderr
        assert busy.stderr.strip().splitlines() == [
            f"Error: cannot serve the dashboard on 127.0.0.1:{port}: another program listens there; "
            "pick a free port with --port"
        ], busy.stderr
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert "Baton dashboard for" in err and "read-only, basic auth" in err


# --------------------------------------------------------------------------- round 2: usage, limits, grafts


async def test_workflow_usage_and_cost_by_model_in_the_api_and_pages(make_app: Callable[..., baton.Baton]) -> None:
    app = make_app(queues={"default": 2}, pricing={"gpt-4.1": {"input": "2.00", "output": "8.00"}})

    @app.worker(name="llm.ask")
    def ask(job: baton.Job) -> None:
        job.record_usage(model=job.args["model"], input_tokens=1_000_000, output_tokens=job.args["out"])

    wf = baton.Workflow(label="costly")
    wf.add("draft", ask.new({"model": "gpt-4.1", "out": 500_000}))
    wf.add("review", ask.new({"model": EVIL, "out": 10}), deps=["draft"])
    wid = await app.insert_workflow(wf)
    plain_wf = baton.Workflow(label="free")
    plain_wf.add("only", ask.new({"model": "gpt-4.1", "out": 0}, schedule_in=3600))
    free = await app.insert_workflow(plain_wf)
    await app.drain()
    async with client_for(create_app(app)) as client:
        usage = (await client.get(f"/api/workflows/{wid}")).json()["usage"]
        # 1M input tokens at 2.00 and 0.5M output tokens at 8.00 per million; the unpriced model is left out.
        assert Decimal(usage["total_cost"]) == Decimal("6") == (await app.workflow_usage(wid)).total_cost
        assert usage["input_tokens"] == 2_000_000 and usage["output_tokens"] == 500_010
        assert usage["by_step"]["draft"]["cost"] == str((await app.workflow_usage(wid)).by_step["draft"].cost)
        assert usage["by_step"]["review"]["cost"] is None and usage["unpriced_models"] == [EVIL]
        assert (await client.get(f"/api/workflows/{free}")).json()["usage"] is None

        page = (await client.get(f"/workflows/{wid}")).text
        assert "Usage and cost" in page and str((await app.workflow_usage(wid)).total_cost) in page
        assert EVIL not in page and "&lt;script&gt;window.__pwned" in page
        assert "Usage and cost" not in (await client.get(f"/workflows/{free}")).text

        by_model = (await client.get("/api/overview")).json()["usage_by_model"]
        expected = await app.usage_by_model(since=timedelta(hours=1))
        assert set(by_model) == {"gpt-4.1", EVIL}
        assert by_model["gpt-4.1"]["cost"] == str(expected["gpt-4.1"]["cost"])
        assert by_model[EVIL]["cost"] is None and by_model[EVIL]["unpriced_calls"] == 1
        overview = (await client.get("/")).text
        assert "Usage by model" in overview and EVIL not in overview


async def test_the_overview_hides_usage_when_none_was_recorded(api: httpx.AsyncClient) -> None:
    assert (await api.get("/api/overview")).json()["usage_by_model"] == {}
    assert "Usage by model" not in (await api.get("/")).text


async def test_queues_show_usage_against_the_limits_across_nodes(make_app: Callable[..., baton.Baton]) -> None:
    queues = {
        "api": {"limit": 5, "global_limit": 5, "rate_limit": {"allowed": 50, "period": 60}},
        "tenants": {"limit": 5, "global_limit": {"allowed": 2, "partition": {"fields": ["args"], "keys": ["t"]}}},
    }
    node = make_app(queues=queues, refresh_interval=0.2, stale_after=5, poll_interval=0.05)
    release = asyncio.Event()

    @node.worker(name="slow.call")
    async def call(job: baton.Job) -> None:
        await release.wait()

    await node.insert_all([call.new({"n": i}, queue="api") for i in range(4)])
    await node.insert_all([call.new({"t": "acme", "n": i}, queue="tenants") for i in range(3)])
    await node.insert(call.new({"t": "other"}, queue="tenants"))
    async with node, client_for(create_app(node)) as client:
        try:

            async def lines() -> dict[str, list[str]]:
                rows = (await client.get("/api/queues")).json()["queues"]
                return {q["queue"]: q["limit_lines"] for q in rows}

            # The 4 api jobs run (limit 5); of the tenants, 2 of acme's 3 (limit 2 each) and other's 1.
            want = {
                "api": ["4 / 5 executing across nodes", "4 / 50 starts per 60 s"],
                "tenants": ['busiest ["acme"]: 2 / 2 executing per args t (3 in all)'],
            }
            await wait_for(lambda: _lines_are(lines, want))
            page = (await client.get("/queues")).text
            assert "4 / 5 executing across nodes" in page and "4 / 50 starts per 60 s" in page
            assert "busiest [&#34;acme&#34;]: 2 / 2 executing" in page
            assert "4 / 5 executing across nodes" in (await client.get("/")).text

            headers = await token(client)
            response = await client.post(
                "/api/queues/api/scale", data={"global_limit": "9", "rate_limit": "120/30"}, headers=headers
            )
            assert response.status_code == 200
            assert response.json()["global_limit"] == 9 and response.json()["rate_limit"]["allowed"] == 120
            await wait_for(lambda: node.queue_state()["api"]["global_limit"] == {"allowed": 9})
            scaled = {"api": ["4 / 9 executing across nodes", "4 / 120 starts per 30 s"]}
            await wait_for(lambda: _lines_are(lines, scaled))
            bad = await client.post("/api/queues/api/scale", data={"rate_limit": "fast"}, headers=headers)
            assert bad.status_code == 400 and bad.json()["field"] == "rate_limit"
            refused = await client.post("/api/queues/api/scale", data={"global_limit": "3"})
            assert refused.status_code == 403
        finally:
            release.set()


async def _lines_are(lines: Callable[[], Any], want: dict[str, list[str]]) -> bool:
    got = await lines()
    return all(got.get(q) == v for q, v in want.items())


def graft_app(make_app: Callable[..., baton.Baton], n: int) -> tuple[baton.Baton, baton.Workflow]:
    """A workflow list -> process (a graft of `n` steps) -> report."""
    app = make_app(queues={"default": 5})

    @app.worker(name="g.item")
    def item(job: baton.Job) -> int:
        return int(job.args["i"])

    @app.worker(name="g.expand")
    def expand(job: baton.Job) -> baton.Graft:
        return baton.Graft.map(item, [{"i": i} for i in range(n)])

    wf = baton.Workflow(label="fan-out")
    wf.add("list", item.new({"i": -1}))
    wf.add_graft("process", expand.new({}), deps=["list"])
    wf.add("report", item.new({"i": -2}), deps=["process"])
    return app, wf


async def test_a_grafts_steps_are_grouped_under_it(make_app: Callable[..., baton.Baton]) -> None:
    app, wf = graft_app(make_app, 3)
    wid = await app.insert_workflow(wf)
    await app.drain()
    status = await app.workflow_status(wid)
    assert sorted(status.grafted("process")) == ["process.0", "process.1", "process.2"]
    async with client_for(create_app(app)) as client:
        detail = (await client.get(f"/api/workflows/{wid}")).json()
        steps = {s["name"]: s for s in detail["steps"]}
        assert steps["process"]["graft"] is True and steps["process.1"]["parent"] == "process"
        assert steps["process.1"]["group"] == "process"
        assert detail["grafts"] == [{"name": "process", "steps": 3, "counts": detail["grafts"][0]["counts"]}]
        assert sum(detail["grafts"][0]["counts"].values()) == 3
        page = (await client.get(f"/workflows/{wid}")).text
        assert "process (grafted, 3 steps)" in page
        for name in ("process.0", "process.1", "process.2", "report"):
            assert f'data-step="{name}"' in page
        assert "grafted steps" not in page  # not collapsed


async def test_a_big_map_is_collapsed_into_one_box(make_app: Callable[..., baton.Baton]) -> None:
    app, wf = graft_app(make_app, 2_000)
    wid = await app.insert_workflow(wf)
    await app.drain()
    status = await app.workflow_status(wid)
    assert len(status.grafted("process")) == 2_000
    async with client_for(create_app(app)) as client:
        detail = (await client.get(f"/api/workflows/{wid}")).json()
        assert detail["grafts"][0]["steps"] == 2_000 and len(detail["steps"]) == 2_003
        page = (await client.get(f"/workflows/{wid}")).text
        assert 'data-step="process.*"' in page and "2\u202f000 grafted steps" in page
        assert 'data-step="process.17"' not in page
        assert f"/jobs?workflow={wid}" in page
        assert '<svg class="dag"' in page  # drawn: 4 boxes, not 2 003
        counts = detail["grafts"][0]["counts"]
        for state, n in counts.items():
            assert f"{state} {n:,}".replace(",", "\u202f") in page
        jobs = (await client.get("/api/jobs", params={"workflow": wid, "limit": 500})).json()
        assert len(jobs["jobs"]) == 500 and {j["workflow_id"] for j in jobs["jobs"]} == {wid}
        assert (await client.get(f"/jobs?workflow={wid}")).status_code == 200


def test_graph_layers_of_a_long_chain_listed_dependents_first() -> None:
    """The workflow graph's layering walks with its own stack: a 5 000-step chain listed
    dependents first (deeper than Python's recursion limit) gets one layer per step, and a
    cycle or a pruned dependency cannot make it loop."""
    from baton.dashboard.svg import layers

    chain = [{"name": f"s{i}", "deps": [f"s{i + 1}"] if i < 4_999 else []} for i in range(5_000)]
    assert layers(chain) == {f"s{i}": 4_999 - i for i in range(5_000)}
    looped = [{"name": "a", "deps": ["b", "gone"]}, {"name": "b", "deps": ["a"]}, {"name": "c", "deps": ["a"]}]
    assert layers(looped) == {"b": 0, "a": 1, "c": 2}


async def test_bulk_retry_of_a_big_failed_workflow_retries_dependencies_before_dependents(
    api: httpx.AsyncClient, seeded: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Chunks of 2 stand for the 1 000 of a workflow of more than 1 000 steps: newest first, the
    # first chunks held only dependents of the failed `clean`, refused while it was discarded.
    from baton.dashboard import routes

    monkeypatch.setattr(routes, "BULK_CHUNK", 2)
    app, wf = seeded["app"], seeded["failed_wf"]
    headers = await token(api)
    response = await api.post("/api/jobs/bulk/retry", params={"workflow": wf}, headers=headers)
    status = await app.workflow_status(wf)
    assert not any(s in ("cancelled", "discarded") for s in status.steps.values()), status.steps
    assert status.status == "running"
    assert response.json()["count"] == len(status.steps) and response.json()["refused"] == []


async def test_bulk_retry_reports_the_refused_steps_and_why(api: httpx.AsyncClient, seeded: dict[str, Any]) -> None:
    app, wf = seeded["app"], seeded["failed_wf"]
    headers = await token(api)
    stats = (await app.workflow_status(wf)).details["stats"].job_id
    params = {"workflow": wf, "state": "cancelled"}  # the dependents, not the failed `clean`
    response = await api.post("/api/jobs/bulk/retry", params=params, headers={**headers, "HX-Request": "true"})
    toast = json.loads(response.headers["HX-Trigger"])["baton:toast"]
    assert toast["kind"] == "warn"
    assert toast["message"].startswith("0 retried, 4 refused: ")
    assert f"job {stats} (step 'stats'): its dependency 'clean' is discarded, retry that first" in toast["message"]
    response = await api.post("/api/jobs/bulk/retry", params=params, headers=headers)
    data = response.json()
    assert (data["count"], data["refused_count"]) == (0, 4)
    assert {"id": stats, "reason": "dependency", "step": "stats", "dep": "clean", "dep_state": "discarded"} in (
        data["refused"]
    )
    response = await api.post(
        "/api/failures/retry", json={"worker": "report.step", "kind": "RuntimeError"}, headers=headers
    )
    assert (response.json()["count"], response.json()["refused_count"]) == (1, 0)


async def test_a_reopened_and_refinished_workflow_shows_when_its_last_step_ended(
    api: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    app, wf = seeded["app"], seeded["failed_wf"]
    failed_at = (await app.workflow_status(wf)).announced_at
    assert failed_at is not None
    ids = [j.id for j in await app.list_jobs(workflow_id=wf) if j.state in ("discarded", "cancelled")]
    await app.retry_all_jobs(ids)
    running = (await api.get(f"/api/workflows/{wf}")).json()
    assert (running["status"], running["finished_at"]) == ("running", None)
    await app.drain()
    status = await app.workflow_status(wf)
    jobs = await app.list_jobs(workflow_id=wf)
    ended = max(t for j in jobs for t in (j.completed_at, j.discarded_at, j.cancelled_at) if t is not None)
    assert status.finished and ended > failed_at  # `clean` failed again: the workflow failed again
    assert status.announced_at == failed_at  # the claim keeps the first outcome's time
    assert status.finished_at == ended
    detail = (await api.get(f"/api/workflows/{wf}")).json()
    listed = next(w for w in (await api.get("/api/workflows")).json()["workflows"] if w["id"] == wf)
    assert datetime.fromisoformat(listed["finished_at"].replace("Z", "+00:00")) == ended
    assert datetime.fromisoformat(detail["finished_at"].replace("Z", "+00:00")) == ended
    # A workflow never reopened still shows the claim's time.
    done = await app.workflow_status(seeded["done_wf"])
    assert done.finished_at == done.announced_at


async def test_retry_a_failed_workflows_failed_steps_from_its_page(
    api: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    app, wf = seeded["app"], seeded["failed_wf"]
    page = (await api.get(f"/workflows/{wf}")).text
    assert f'action="/api/workflows/{wf}/retry"' in page and "Retry failed steps" in page
    assert f'href="/jobs?workflow={wf}"' in page
    assert "Retry failed steps" not in (await api.get(f"/workflows/{seeded['done_wf']}")).text
    headers = await token(api)
    assert (await api.post(f"/api/workflows/{wf}/retry")).status_code == 403  # no CSRF token
    failed = [n for n, s in (await app.workflow_status(wf)).steps.items() if s in ("discarded", "cancelled")]
    response = await api.post(f"/api/workflows/{wf}/retry", headers={**headers, "HX-Request": "true"})
    toast = json.loads(response.headers["HX-Trigger"])["baton:toast"]
    assert toast["message"] == f"{len(failed)} retried, 0 refused"
    status = await app.workflow_status(wf)
    assert status.status == "running"
    assert status.steps["clean"] == "available"
    assert all(status.steps[n] == "suspended" for n in failed if n != "clean")  # waiting for `clean`
    response = await api.post(f"/api/workflows/{wf}/retry", headers=headers)
    assert response.json()["count"] == 0  # nothing failed any more
    assert (await api.post("/api/workflows/nope/retry", headers=headers)).status_code == 404


async def test_read_only_has_no_workflow_retry(seeded: dict[str, Any]) -> None:
    async with client_for(create_app(seeded["app"], read_only=True)) as client:
        page = (await client.get(f"/workflows/{seeded['failed_wf']}")).text
        assert "Retry failed steps" not in page and f"/jobs?workflow={seeded['failed_wf']}" in page
        headers = await token(client)
        assert (await client.post(f"/api/workflows/{seeded['failed_wf']}/retry", headers=headers)).status_code == 403


async def test_bidi_controls_are_isolated_and_control_characters_shown_escaped(
    make_app: Callable[..., baton.Baton],
) -> None:
    app = make_app()

    @app.worker(name="odd.\u202eworker", max_attempts=1)
    def odd(job: baton.Job) -> None:
        raise ValueError("bad \x1b[31mred\x07 \u202eesrever")

    wf = baton.Workflow(label="nightly \u202etroper\x1b]0;pwned\x07")
    wf.add("step\u202e1", odd.new({}))
    wid = await app.insert_workflow(wf)
    await app.drain()
    job_id = (await app.list_jobs(workflow_id=wid))[0].id
    async with client_for(create_app(app)) as client:
        for path in ("/workflows", f"/workflows/{wid}", f"/jobs/{job_id}", "/jobs", "/failures"):
            page = (await client.get(path)).text
            assert "\x1b" not in page and "\x07" not in page, path
            # Every U+202E sits in an isolate (FSI ... PDI) that ends before the markup after it.
            for m in re.finditer("\u202e", page):
                before, after = page[: m.start()], page[m.end() :]
                assert before.rfind("\u2068") > before.rfind("<"), (path, page[m.start() - 40 : m.end() + 40])
                assert -1 < after.find("\u2069") < after.find("<"), (path, page[m.start() - 40 : m.end() + 40])
        page = (await client.get(f"/workflows/{wid}")).text
        assert "nightly \u202etroper\\x1b]0;pwned\\x07\u2069" in page
        page = (await client.get(f"/jobs/{job_id}")).text
        assert "\\x1b[31mred\\x07" in page
        # The JSON API gives the values as they are.
        detail = (await client.get(f"/api/workflows/{wid}")).json()
        assert detail["label"] == "nightly \u202etroper\x1b]0;pwned\x07"


async def test_a_failure_group_retry_with_refusals_gives_a_toast_that_stays(
    api: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    """The failures page's "Retry group" warns (a toast that stays) when it refused some: here
    a discarded unique job whose key a newer job holds."""
    app = seeded["app"]

    @app.worker(name="shop.once", unique=True, max_attempts=1, queue="once")
    def once(job: baton.Job) -> None:
        raise ValueError("no")

    first = await app.insert(once.new({"k": 1}))
    assert await app.drain("once") == {"discarded": 1}
    holder = await app.insert(once.new({"k": 1}))
    assert holder.id != first.id and holder.state == "available"
    headers = {**await token(api), "HX-Request": "true"}
    response = await api.post(
        "/api/failures/retry", json={"worker": "shop.once", "kind": "ValueError"}, headers=headers
    )
    toast = json.loads(response.headers["HX-Trigger"])["baton:toast"]
    assert toast["kind"] == "warn"
    refusal = f"job {first.id}: job {holder.id} (available) holds its unique key"
    assert toast["message"] == f"shop.once / ValueError: 0 retried, 1 refused: {refusal}"
