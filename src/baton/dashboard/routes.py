"""The dashboard's routes: the JSON API under `/api/`, the pages, and `/events` (live updates).
Actions are POST only, refused in read-only mode (by the guard) and without the CSRF token."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from .. import read
from ..errors import BatonError, ValidationError
from ..read.jobs import JobFilter
from ..store import retry as retrystore
from ..store.jobs import StepBlocked, UniqueHeld
from . import svg
from .app import (
    BULK_CHUNK,
    BULK_MAX,
    JSON,
    WORKFLOW_STATUSES,
    BadRequest,
    Dashboard,
    int_param,
    job_filter,
    queue_rows,
    text_param,
)
from .live import event_stream
from .security import csrf_ok, csrf_token, set_csrf_cookie

if TYPE_CHECKING:
    from ..app import Baton

Handler = Callable[[Request], Awaitable[Response]]
JOB_ACTIONS = ("retry", "cancel", "discard")
QUEUE_ACTIONS = ("pause", "resume", "scale")
DISCARD_REASON = "discarded from the dashboard"


def _error(exc: Exception, status: int = 400) -> JSON:
    """`error` as the library words it (`field: ...`), `field`, and `message`: the text without
    the field's prefix, for people (the dashboard's toasts)."""
    field = getattr(exc, "field", None)
    error = str(exc)
    message = error.removeprefix(f"{field}: ") if field else error
    return JSON({"error": error, "field": field, "message": message}, status_code=status)


def _api(handler: Handler) -> Handler:
    """Turn bad input into 400 with the parameter named, and database trouble into 503."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except ValidationError as exc:
            return _error(exc)
        except BatonError as exc:
            return _error(exc, 503)

    return wrapped


async def _params(request: Request) -> dict[str, Any]:
    """Query parameters, then form fields or a JSON object body (POST)."""
    params: dict[str, Any] = dict(request.query_params)
    if request.method == "POST":
        kind = request.headers.get("content-type", "")
        if kind.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form: FormData = await request.form()
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
        elif kind.startswith("application/json"):
            body = await request.body()
            if body:
                try:
                    data = json.loads(body)
                except ValueError:
                    raise BadRequest("body", "must be a JSON object") from None
                if not isinstance(data, dict):
                    raise BadRequest("body", "must be a JSON object")
                params.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in data.items()})
    return params


def _job_id(request: Request) -> int:
    job_id = int_param(request.path_params, "id", None)
    assert job_id is not None
    return job_id


async def _checked_post(request: Request) -> Response | None:
    """None when the POST carries its CSRF token, else the 403 to answer."""
    if not await csrf_ok(request):
        return JSON(
            {
                "error": "missing or wrong CSRF token: send the baton_csrf cookie's value in the X-CSRF-Token "
                "header (GET /api/csrf gives both)",
                "field": "csrf_token",
            },
            status_code=403,
        )
    return None


def _acted(dash: Dashboard, request: Request, payload: Mapping[str, Any], message: str, warn: bool = False) -> Response:
    """The answer to an action: htmx gets events (refresh, toast), a plain form a redirect back,
    an API client the JSON. A `warn` toast (something was refused) stays until dismissed."""
    dash.invalidate()
    dash.broadcaster.publish()
    if request.headers.get("hx-request"):
        toast = {"message": message, "kind": "warn" if warn else ""}
        trigger = {"baton:changed": True, "baton:toast": toast}
        return HTMLResponse("", headers={"HX-Trigger": json.dumps(trigger)})
    if "text/html" in request.headers.get("accept", ""):  # a plain form submitted by a browser
        back = request.headers.get("referer") or (request.scope.get("root_path", "") + "/")
        return RedirectResponse(back, status_code=303)
    return JSON(payload)


def _rate_limit(params: Mapping[str, Any]) -> dict[str, Any] | None:
    """`rate_limit=ALLOWED/PERIOD` (starts per seconds, as `baton queues scale --rate-limit`)."""
    text = text_param(params, "rate_limit", 40)
    if text is None:
        return None
    allowed, _, period = text.partition("/")
    try:
        n, seconds = int(allowed), float(period)
    except ValueError:
        message = f"must be ALLOWED/PERIOD, e.g. 50/60 (50 starts per 60 s), got {text!r}"
        raise BadRequest("rate_limit", message) from None
    if n < 1 or not 0 < seconds <= 86400 * 365:
        raise BadRequest("rate_limit", f"must be ALLOWED/PERIOD with ALLOWED >= 1 and PERIOD > 0, got {text!r}")
    return {"allowed": n, "period": seconds}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


Refusal = UniqueHeld | StepBlocked
REFUSALS_LISTED = 50  # in the JSON answer; the toast names 3


async def _retry_in_order(app: Baton, ids: list[int], chunk: int | None = None) -> tuple[int, list[Refusal]]:
    """Retry `ids` oldest first, BULK_CHUNK at a time: a workflow's steps are inserted
    dependencies first, so a later chunk finds its failed dependency retried (live), and the
    step waits for it, suspended, instead of being refused. Steps still refused for a
    dependency retried after them (a graft's steps come after the steps that wait for them) are
    tried again while that retries any. `chunk` (default BULK_CHUNK) ids per call. Returns (how
    many were retried, the refused)."""
    todo = sorted(set(ids))
    size = chunk or BULK_CHUNK
    done = 0
    refused: dict[int, Refusal] = {}
    while todo:
        retried = 0
        for i in range(0, len(todo), size):
            jobs, held = await app.engine.run(retrystore.retry_jobs, todo[i : i + size])
            app.wake_producers({j.queue for j in jobs})
            retried += len(jobs)
            refused.update((r.id, r) for r in held)
            for j in jobs:
                refused.pop(j.id, None)
        done += retried
        todo = sorted(i for i, r in refused.items() if isinstance(r, StepBlocked)) if retried else []
    return done, [refused[k] for k in sorted(refused)]


def _refusal_dict(r: Refusal) -> dict[str, Any]:
    if isinstance(r, StepBlocked):
        return {"id": r.id, "reason": "dependency", "step": r.step, "dep": r.dep, "dep_state": r.dep_state}
    return {"id": r.id, "reason": "unique", "holder": r.holder, "holder_state": r.holder_state}


def _refusal_text(r: Refusal) -> str:
    if isinstance(r, StepBlocked):
        if r.dep_state == "deleted":
            return f"job {r.id} (step {r.step!r}): its dependency {r.dep!r} is deleted, it can never run"
        return f"job {r.id} (step {r.step!r}): its dependency {r.dep!r} is {r.dep_state}, retry that first"
    return f"job {r.id}: job {r.holder} ({r.holder_state}) holds its unique key"


def _retry_report(done: int, refused: list[Refusal]) -> tuple[dict[str, Any], str]:
    """The JSON fields and the toast text of a retry of many jobs: how many were retried, how
    many refused and why (the first few named)."""
    payload = {
        "count": done,
        "refused_count": len(refused),
        "refused": [_refusal_dict(r) for r in refused[:REFUSALS_LISTED]],
    }
    message = f"{done} retried, {len(refused)} refused"
    if refused:
        message += ": " + "; ".join(_refusal_text(r) for r in refused[:3])
        if len(refused) > 3:
            message += f"; and {len(refused) - 3} more"
    return payload, message


# --------------------------------------------------------------------------- JSON API


def api_routes(dash: Dashboard) -> list[Route]:
    """The JSON API."""
    app = dash.app

    async def csrf(request: Request) -> Response:
        response = JSON({"token": csrf_token(request), "header": "X-CSRF-Token", "cookie": "baton_csrf"})
        set_csrf_cookie(request, response)
        return response

    async def overview(request: Request) -> Response:
        data = await dash.overview()
        data["queues"] = queue_rows(data)
        return JSON(data)

    async def jobs(request: Request) -> Response:
        f = job_filter(request.query_params)
        before = int_param(request.query_params, "before", None)
        limit = int_param(request.query_params, "limit", 50, 1, 500)
        return JSON(await dash.read(read.jobs_page, f, before, limit))

    async def job(request: Request) -> Response:
        detail = await dash.read(read.job_detail, _job_id(request))
        if detail is None:
            return JSON({"error": f"no job with id {request.path_params['id']}"}, status_code=404)
        return JSON(detail)

    async def job_action(request: Request) -> Response:
        if (refused := await _checked_post(request)) is not None:
            return refused
        job_id = _job_id(request)
        action = request.path_params["action"]
        if action not in JOB_ACTIONS:
            return JSON({"error": f"unknown action {action!r}; use {', '.join(JOB_ACTIONS)}"}, status_code=404)
        before = await app.get_job(job_id)
        if before is None:
            return JSON({"error": f"no job with id {job_id}"}, status_code=404)
        if action == "retry":
            changed = await app.retry_job(job_id) is not None
        elif action == "cancel":
            changed = await app.cancel_job(job_id) is not None
        else:
            changed = await app.discard_all_jobs([job_id], reason=DISCARD_REASON) == 1
        detail = await dash.read(read.job_detail, job_id)
        state = detail["state"] if detail else "gone"
        message = (
            f"job {job_id}: {before.state} → {state}" if changed else f"job {job_id} is {before.state}: not {action}ed"
        )
        return _acted(dash, request, {"changed": changed, "job": detail}, message)

    async def bulk(request: Request) -> Response:
        if (refused := await _checked_post(request)) is not None:
            return refused
        action = request.path_params["action"]
        if action not in JOB_ACTIONS:
            return JSON({"error": f"unknown action {action!r}; use {', '.join(JOB_ACTIONS)}"}, status_code=404)
        f = job_filter(await _params(request))
        ids: list[int] = []
        before, more = None, True
        while more and len(ids) < BULK_MAX:
            chunk, before = await dash.read(read.job_ids, f, before, BULK_CHUNK)
            more = before is not None
            ids.extend(chunk)
        if action == "retry":
            done, turned_down = await _retry_in_order(app, ids)
            payload, message = _retry_report(done, turned_down)
            return _acted(dash, request, {**payload, "more": more}, message, bool(turned_down))
        done = 0
        for i in range(0, len(ids), BULK_CHUNK):
            if action == "cancel":
                done += await app.cancel_all_jobs(ids=ids[i : i + BULK_CHUNK])
            else:
                done += await app.discard_all_jobs(ids[i : i + BULK_CHUNK], reason=DISCARD_REASON)
        return _acted(dash, request, {"count": done, "more": more}, f"{action}: {_plural(done, 'job')}")

    async def failures(request: Request) -> Response:
        return JSON(await dash.read(read.failure_groups))

    async def failure_action(request: Request) -> Response:
        if (refused := await _checked_post(request)) is not None:
            return refused
        action = request.path_params["action"]
        if action not in ("retry", "discard"):
            return JSON({"error": f"unknown action {action!r}; use retry or discard"}, status_code=404)
        params = await _params(request)
        worker = text_param(params, "worker")
        kind = params.get("kind", "")
        if worker is None or not isinstance(kind, str):
            raise BadRequest("worker", "give the group's worker and kind (exception type)")
        states = ["retryable", "discarded"] if action == "retry" else ["retryable"]
        ids: list[int] = []
        before = None
        while len(ids) < BULK_MAX:
            chunk = await dash.read(read.failure_group_ids, worker, kind, states, before, BULK_CHUNK)
            if not chunk:
                break
            before = chunk[-1]
            ids.extend(chunk)
        if action == "retry":
            done, turned_down = await _retry_in_order(app, ids)
            payload, message = _retry_report(done, turned_down)
            return _acted(dash, request, payload, f"{worker} / {kind}: {message}", bool(turned_down))
        done = 0
        for i in range(0, len(ids), BULK_CHUNK):
            done += await app.discard_all_jobs(ids[i : i + BULK_CHUNK], reason=DISCARD_REASON)
        return _acted(dash, request, {"count": done}, f"{action}: {_plural(done, 'job')} of {worker} / {kind}")

    async def workflows(request: Request) -> Response:
        params = request.query_params
        status = text_param(params, "status")
        if status is not None and status not in WORKFLOW_STATUSES:
            raise BadRequest("status", f"must be one of {', '.join(WORKFLOW_STATUSES)}")
        limit = int_param(params, "limit", 50, 1, 500)
        label, before = text_param(params, "label"), text_param(params, "before")
        return JSON(await dash.read(read.workflows_page, status, label, before, limit))

    async def workflow(request: Request) -> Response:
        detail = await dash.read(read.workflow_detail, request.path_params["id"])
        if detail is None:
            return JSON({"error": f"no workflow with id {request.path_params['id']!r}"}, status_code=404)
        detail["usage"] = await dash.workflow_usage(detail["workflow_id"])
        return JSON(detail)

    async def workflow_retry(request: Request) -> Response:
        """Retry the workflow's discarded and cancelled steps in one call, oldest first: the
        cascaded dependents wait, suspended, for their retried dependency."""
        if (refused := await _checked_post(request)) is not None:
            return refused
        detail = await dash.read(read.workflow_detail, request.path_params["id"])
        if detail is None:
            return JSON({"error": f"no workflow with id {request.path_params['id']!r}"}, status_code=404)
        ids = [s["job_id"] for s in detail["steps"] if s["state"] in ("discarded", "cancelled") and s["job_id"]]
        done, turned_down = await _retry_in_order(app, ids, chunk=max(1, len(ids)))
        payload, message = _retry_report(done, turned_down)
        return _acted(dash, request, payload, message, bool(turned_down))

    async def queues(request: Request) -> Response:
        data = {**await dash.counts(), **await dash.cluster(), "queue_usage": await dash.queue_usage()}
        return JSON({"queues": queue_rows(data)})

    async def queue_action(request: Request) -> Response:
        if (refused := await _checked_post(request)) is not None:
            return refused
        action = request.path_params["action"]
        if "name" in request.path_params:
            name = request.path_params["name"]
        else:  # /api/queues/ACTION?queue=NAME: for "." and "..", which no URL path can hold
            name = text_param(request.query_params, "queue", 128)
            if name is None:
                raise BadRequest("queue", "give the queue's name: /api/queues/NAME/ACTION or ?queue=NAME")
        if action not in QUEUE_ACTIONS:
            return JSON({"error": f"unknown action {action!r}; use {', '.join(QUEUE_ACTIONS)}"}, status_code=404)
        if action == "pause":
            await app.pause_queue(name)
        elif action == "resume":
            await app.resume_queue(name)
        else:
            params = await _params(request)
            limit = int_param(params, "limit", None, 1, 2**31 - 1)
            global_limit = int_param(params, "global_limit", None, 1, 2**31 - 1)
            rate_limit = _rate_limit(params)
            if limit is None and global_limit is None and rate_limit is None:
                raise BadRequest("limit", "give the new concurrency limit, e.g. limit=20")
            await app.scale_queue(name, limit, global_limit=global_limit, rate_limit=rate_limit)
            changed = {"limit": limit, "global_limit": global_limit, "rate_limit": rate_limit}
            text = ", ".join(
                f"{k.replace('_', ' ')} " + (f"{v['allowed']}/{v['period']:g}s" if isinstance(v, dict) else str(v))
                for k, v in changed.items()
                if v is not None
            )
            return _acted(dash, request, {"queue": name, "action": action, **changed}, f"queue {name}: {text}")
        return _acted(dash, request, {"queue": name, "action": action}, f"queue {name}: {action} sent to every node")

    async def cron(request: Request) -> Response:
        return JSON(await dash.cron())

    async def health(request: Request) -> Response:
        before = int_param(request.query_params, "before", None)
        return JSON(await dash.read(read.health, dash.app.stale_after, before))

    async def events(request: Request) -> Response:
        return StreamingResponse(
            event_stream(dash.broadcaster),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    get, post = ["GET"], ["POST"]
    return [
        Route("/api/csrf", _api(csrf), methods=get),
        Route("/api/overview", _api(overview), methods=get),
        Route("/api/jobs", _api(jobs), methods=get),
        Route("/api/jobs/bulk/{action}", _api(bulk), methods=post),
        Route("/api/jobs/{id:int}", _api(job), methods=get),
        Route("/api/jobs/{id:int}/{action}", _api(job_action), methods=post),
        Route("/api/failures", _api(failures), methods=get),
        Route("/api/failures/{action}", _api(failure_action), methods=post),
        Route("/api/workflows", _api(workflows), methods=get),
        Route("/api/workflows/{id}", _api(workflow), methods=get),
        Route("/api/workflows/{id}/retry", _api(workflow_retry), methods=post),
        Route("/api/queues", _api(queues), methods=get),
        # A queue name may hold "/" (raw or %2F): the action is the last segment.
        Route("/api/queues/{name:path}/{action}", _api(queue_action), methods=post),
        Route("/api/queues/{action}", _api(queue_action), methods=post),
        Route("/api/cron", _api(cron), methods=get),
        Route("/api/health", _api(health), methods=get),
        Route("/events", events, methods=get),
    ]


# --------------------------------------------------------------------------- pages


def _page(dash: Dashboard, handler: Callable[[Request], Awaitable[Response]]) -> Handler:
    """Bad parameters render the page's error box (400) instead of a traceback."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except ValidationError as exc:
            return dash.render(request, "error.html", http_status=400, nav="", message=str(exc))
        except BatonError as exc:
            return dash.render(request, "error.html", http_status=503, nav="", message=str(exc))

    return wrapped


def not_found(dash: Dashboard) -> Callable[[Request, Exception], Awaitable[Response]]:
    """404 as a page (or JSON under /api/)."""

    async def handler(request: Request, exc: Exception) -> Response:
        detail = exc.detail if isinstance(exc, HTTPException) else "not found"
        if request.url.path.startswith(request.scope.get("root_path", "") + "/api/"):
            return JSON({"error": detail}, status_code=404)
        return dash.render(request, "error.html", http_status=404, nav="", message="There is nothing at this address.")

    return handler


def _url(base: str, path: str, params: Mapping[str, Any]) -> str:
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return f"{base}{path}" + (f"?{query}" if query else "")


def page_routes(dash: Dashboard) -> list[Route]:
    """The HTML pages."""

    async def overview(request: Request) -> Response:
        data = await dash.overview()
        chart = svg.throughput_chart([(b["minute"], b["completed"]) for b in data["throughput"]])
        last_hour = sum(b["completed"] or 0 for b in data["throughput"])
        pending = any(b["completed"] is None for b in data["throughput"])
        return dash.render(
            request,
            "overview.html",
            nav="overview",
            o=data,
            queues=queue_rows(data),
            chart=chart,
            last_hour=last_hour,
            pending=pending,
        )

    async def jobs(request: Request) -> Response:
        f = job_filter(request.query_params)
        before = int_param(request.query_params, "before", None)
        limit = int_param(request.query_params, "limit", 50, 1, 500)
        page = await dash.read(read.jobs_page, f, before, limit)
        data = await dash.counts()
        base = request.scope.get("root_path", "").rstrip("/")
        older = _url(base, "/jobs", {**f.query(), "before": page["next_before"]}) if page["next_before"] else None
        return dash.render(
            request,
            "jobs.html",
            nav="jobs",
            f=f,
            page=page,
            older=older,
            first=_url(base, "/jobs", f.query()) if before else None,
            totals=data["totals"],
            estimated=data["estimated"],
            queue_names=[q["queue"] for q in data["queues"]],
            filter_query=urlencode(f.query()),
            tab_url=lambda state: _url(base, "/jobs", {**f.query(), "state": state}),
        )

    async def job(request: Request) -> Response:
        detail = await dash.read(read.job_detail, _job_id(request))
        if detail is None:
            message = "There is no job with this id."
            return dash.render(request, "error.html", http_status=404, nav="jobs", message=message)
        return dash.render(request, "job.html", nav="jobs", job=detail)

    async def failures(request: Request) -> Response:
        data = await dash.read(read.failure_groups)
        return dash.render(request, "failures.html", nav="failures", data=data)

    async def workflows(request: Request) -> Response:
        params = request.query_params
        status = text_param(params, "status")
        if status is not None and status not in WORKFLOW_STATUSES:
            raise BadRequest("status", f"must be one of {', '.join(WORKFLOW_STATUSES)}")
        label = text_param(params, "label")
        before = text_param(params, "before")
        page = await dash.read(read.workflows_page, status, label, before, 50)
        base = request.scope.get("root_path", "").rstrip("/")
        older = (
            _url(base, "/workflows", {"status": status, "label": label, "before": page["next_before"]})
            if page["next_before"]
            else None
        )
        return dash.render(
            request,
            "workflows.html",
            nav="workflows",
            page=page,
            status=status,
            label=label,
            older=older,
            statuses=WORKFLOW_STATUSES,
            tab_url=lambda s: _url(base, "/workflows", {"status": s, "label": label}),
        )

    async def workflow(request: Request) -> Response:
        detail = await dash.read(read.workflow_detail, request.path_params["id"])
        if detail is None:
            return dash.render(
                request, "error.html", http_status=404, nav="workflows", message="There is no workflow with this id."
            )
        base = request.scope.get("root_path", "").rstrip("/")
        steps = read.collapsed(detail)
        graph = svg.dag(steps, base, detail["root_failure"], detail["workflow_id"])
        usage = await dash.workflow_usage(detail["workflow_id"])
        return dash.render(request, "workflow.html", nav="workflows", wf=detail, steps=steps, graph=graph, usage=usage)

    async def queues(request: Request) -> Response:
        data = {**await dash.counts(), **await dash.cluster(), "queue_usage": await dash.queue_usage()}
        return dash.render(request, "queues.html", nav="queues", queues=queue_rows(data), o=data)

    async def cron(request: Request) -> Response:
        return dash.render(request, "cron.html", nav="cron", c=await dash.cron())

    async def health(request: Request) -> Response:
        before = int_param(request.query_params, "before", None)
        data = await dash.read(read.health, dash.app.stale_after, before)
        o = await dash.cluster()
        base = request.scope.get("root_path", "").rstrip("/")
        older = _url(base, "/health", {"before": data["next_before"]}) if data["next_before"] else None
        return dash.render(request, "health.html", nav="health", h=data, o=o, older=older)

    get = ["GET"]
    return [
        Route("/", _page(dash, overview), methods=get, name="overview"),
        Route("/jobs", _page(dash, jobs), methods=get, name="jobs"),
        Route("/jobs/{id:int}", _page(dash, job), methods=get, name="job"),
        Route("/failures", _page(dash, failures), methods=get, name="failures"),
        Route("/workflows", _page(dash, workflows), methods=get, name="workflows"),
        Route("/workflows/{id}", _page(dash, workflow), methods=get, name="workflow"),
        Route("/queues", _page(dash, queues), methods=get, name="queues"),
        Route("/cron", _page(dash, cron), methods=get, name="cron"),
        Route("/health", _page(dash, health), methods=get, name="health"),
    ]


__all__ = ["JobFilter", "api_routes", "page_routes"]
