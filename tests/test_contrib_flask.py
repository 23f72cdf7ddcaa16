"""Flask: `init_app` registers the Baton app and runs every job (sync and async workers, drains
and a started node) inside the Flask app context; views enqueue through the Flask test client."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from flask import Flask, current_app, jsonify, request

import baton
from baton import testing
from baton.contrib.flask import init_app
from conftest import wait_for


def _flask(app: baton.Baton, seen: list[Any]) -> tuple[Flask, Any, Any]:
    web = Flask("shop")
    web.config["GREETING"] = "hello"
    init_app(web, app)

    @app.worker
    def greet(job: baton.Job) -> str:
        seen.append(("sync", current_app.name, current_app.config["GREETING"], job.args["name"]))
        return "ok"

    @app.worker
    async def greet_async(job: baton.Job) -> str:
        await asyncio.sleep(0)
        seen.append(("async", current_app.name, current_app.config["GREETING"], job.args["name"]))
        return "ok"

    @web.post("/signup")
    def signup() -> Any:
        jobs = current_app.extensions["baton"].insert_all_sync(
            [greet.new({"name": request.json["name"]}), greet_async.new({"name": request.json["name"]})]
        )
        return jsonify([{"id": j.id, "state": j.state} for j in jobs])

    return web, greet, greet_async


async def test_jobs_run_inside_the_flask_app_context_when_drained(app: baton.Baton) -> None:
    seen: list[Any] = []
    web, _, _ = _flask(app, seen)
    assert web.extensions["baton"] is app
    response = web.test_client().post("/signup", json={"name": "ada"})
    assert response.status_code == 200 and [j["state"] for j in response.json] == ["available", "available"]
    assert await testing.drain(app) == {"completed": 2}
    assert sorted(seen) == [("async", "shop", "hello", "ada"), ("sync", "shop", "hello", "ada")]


async def test_jobs_run_inside_the_flask_app_context_on_a_started_node(app: baton.Baton) -> None:
    seen: list[Any] = []
    _web, greet, greet_async = _flask(app, seen)
    async with app:
        await app.insert_all([greet.new({"name": "node"}), greet_async.new({"name": "node"})])
        await wait_for(lambda: len(seen) == 2)
    assert sorted(seen) == [("async", "shop", "hello", "node"), ("sync", "shop", "hello", "node")]


async def test_without_init_app_there_is_no_app_context(app: baton.Baton) -> None:
    @app.worker(max_attempts=1)
    def needs_context(job: baton.Job) -> str:
        return str(current_app.name)

    job = await app.insert(needs_context.new({}))
    assert await testing.drain(app) == {"discarded": 1}
    stored = await app.get_job(job.id)
    assert stored is not None and "application context" in stored.errors[-1]["error"]


def test_inline_mode_with_the_flask_test_client(db_url: str) -> None:
    app = baton.Baton(db_url, plugins=[], log_events=False)
    seen: list[Any] = []
    web, _, _ = _flask(app, seen)
    try:
        with testing.inline(app):
            response = web.test_client().post("/signup", json={"name": "inline"})
        assert [j["state"] for j in response.json] == ["completed", "completed"]
        assert len(seen) == 2
    finally:
        asyncio.run(app.close())


def test_after_cancelled_hooks_run_in_the_app_context(db_url: str) -> None:
    app = baton.Baton(db_url, plugins=[], log_events=False)
    web = Flask("hooks")
    init_app(web, app)
    heard: list[Any] = []

    @app.worker(max_attempts=1)
    def fails(job: baton.Job) -> None:
        raise RuntimeError("no")

    @app.worker(after_cancelled=lambda reason, job: heard.append((reason, current_app.name)))
    def later(job: baton.Job) -> None:
        return None

    wf = baton.Workflow(label="hooks")
    wf.add("a", fails.new({}))
    wf.add("b", later.new({}), deps=["a"])
    try:
        with testing.inline(app, raise_errors=False):
            app.insert_workflow_sync(wf)
        asyncio.run(wait_for(lambda: heard))
        assert heard == [("discarded", "hooks")]
    finally:
        asyncio.run(app.close())


def test_init_app_validates_its_arguments(tmp_path: Any) -> None:
    app = baton.Baton(f"sqlite:///{tmp_path}/x.db", log_events=False)
    with pytest.raises(baton.ValidationError, match="flask_app"):
        init_app(object(), app)
    with pytest.raises(baton.ValidationError, match="app"):
        init_app(Flask("x"), "nope")  # type: ignore[arg-type]
