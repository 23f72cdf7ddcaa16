"""ASGI lifespan: a node runs inside FastAPI's / Starlette's lifespan and stops gracefully at
shutdown, through asgi-lifespan + httpx and through a real uvicorn server, on both engines."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from asgi_lifespan import LifespanManager
from fastapi import FastAPI, Request
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse
from starlette.routing import Route

import baton
from baton.contrib.asgi import lifespan
from baton.store.jobs import get_job
from conftest import wait_for


def _api(app: baton.Baton, **options: Any) -> FastAPI:
    @app.worker
    async def greet(job: baton.Job) -> None:
        await asyncio.sleep(job.args.get("sleep", 0))

    api = FastAPI(lifespan=lifespan(app, **options))

    @api.post("/greet")
    async def post(request: Request) -> dict[str, Any]:
        body = await request.json()
        job = await request.state.baton.insert(greet.new(body))
        return {"id": job.id, "running": request.state.baton.running}

    return api


async def test_fastapi_lifespan_runs_the_node_and_stops_it(app: baton.Baton) -> None:
    api = _api(app)
    async with (
        LifespanManager(api) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://t") as client,
    ):
        assert app.running
        response = await client.post("/greet", json={"name": "ada"})
        assert response.status_code == 200 and response.json()["running"] is True
        job_id = response.json()["id"]
        await wait_for(lambda: _state(app, job_id, "completed"))
    assert not app.running


async def test_shutdown_lets_running_jobs_finish_within_the_grace(app: baton.Baton) -> None:
    api = _api(app, grace=10)
    async with (
        LifespanManager(api) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://t") as client,
    ):
        job_id = (await client.post("/greet", json={"sleep": 0.5})).json()["id"]
        await wait_for(lambda: _state(app, job_id, "executing"))
    # The server stopped while the job ran: the graceful stop waited for it.
    assert (await app.get_job(job_id)).state == "completed"  # type: ignore[union-attr]


async def test_starlette_lifespan_with_an_inner_lifespan_and_migrate(make_app: Any) -> None:
    app = make_app(queues={"default": 2})
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def mine(asgi_app: Any) -> AsyncIterator[dict[str, Any]]:
        events.append(f"start running={app.running}")
        yield {"greeting": "hi"}
        events.append(f"stop running={app.running}")

    @app.worker
    def noop(job: baton.Job) -> None:
        return None

    async def endpoint(request: StarletteRequest) -> JSONResponse:
        job = await request.state.baton.insert(noop.new({}))
        return JSONResponse({"id": job.id, "greeting": request.state.greeting})

    web = Starlette(routes=[Route("/", endpoint, methods=["POST"])], lifespan=lifespan(app, migrate=True, inner=mine))
    async with (
        LifespanManager(web) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://t") as client,
    ):
        body = (await client.post("/")).json()
        assert body["greeting"] == "hi"
        await wait_for(lambda: _state(app, body["id"], "completed"))
    assert events == ["start running=True", "stop running=True"]
    assert not app.running


async def test_under_a_real_uvicorn_server(app: baton.Baton) -> None:
    api = _api(app)
    config = uvicorn.Config(api, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        await wait_for(lambda: server.started, timeout=20)
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            response = await client.post("/greet", json={"name": "uvicorn"})
        job_id = response.json()["id"]
        # The node's connections belong to the server's loop: read through the sync path.
        await wait_for(lambda: app.engine.run_sync(get_job, job_id).state == "completed", timeout=20)
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 30)
    assert not thread.is_alive()
    assert not app.running


def test_lifespan_validates_its_options(tmp_path: Any) -> None:
    with pytest.raises(baton.ValidationError, match="app"):
        lifespan("nope")  # type: ignore[arg-type]
    with pytest.raises(baton.ValidationError, match="grace"):
        lifespan(baton.Baton(f"sqlite:///{tmp_path}/x.db", log_events=False), grace=-1)


async def _state(app: baton.Baton, job_id: int, state: str) -> bool:
    job = await app.get_job(job_id)
    return job is not None and job.state == state
