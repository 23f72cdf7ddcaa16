"""The dashboard in a real headless Chromium (Debian's /usr/bin/chromium driven by the
`playwright` package), served by uvicorn in a thread: the overview, filtering jobs, a workflow's
graph (a graft's steps grouped), retrying a discarded job and seeing its state change without a reload, a change made
elsewhere arriving live, markup in args staying inert, and read-only mode."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.async_api import Browser, Page, async_playwright, expect

import baton
from baton.dashboard import create_app
from dash_data import register, seed

CHROMIUM = Path("/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DashboardServer:
    """uvicorn serving a dashboard of the database at `url`, on its own loop in a thread."""

    def __init__(self, url: str, **options: Any) -> None:
        self.url, self.options = url, options
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        app = baton.Baton(self.url, plugins=[], log_events=False, queues={"default": 1, "mailers": 1})
        register(app)
        asgi = create_app(app, poll_interval=0.2, **self.options)
        config = uvicorn.Config(
            asgi, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on", timeout_graceful_shutdown=0.5
        )
        self._server = uvicorn.Server(config)
        try:
            await self._server.serve()
        finally:
            await app.close()

    def __enter__(self) -> DashboardServer:
        self._thread.start()
        for _ in range(200):
            if self._server is not None and self._server.started:
                return self
            self._thread.join(0.05)
        raise RuntimeError("the dashboard server did not start")

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(10)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"the browser tests need Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        await launched.close()


@pytest.fixture
async def seeded(make_app: Callable[..., baton.Baton]) -> dict[str, Any]:
    app = make_app(queues={"default": 5, "mailers": 3})
    workers = register(app)
    return {"app": app, "workers": workers, **await seed(app, workers)}


@pytest.fixture
def server(seeded: dict[str, Any], db_url: str) -> Iterator[DashboardServer]:
    with DashboardServer(db_url) as running:
        yield running


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    yield opened
    await context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


async def test_overview_shows_counts_queues_and_throughput(
    page: Page, server: DashboardServer, seeded: dict[str, Any]
) -> None:
    counts = await seeded["app"].count_jobs()
    await page.goto(server.base + "/")
    await expect(page.locator(".stat.s-discarded .stat-value")).to_have_text("5")
    await expect(page.locator(".stat.s-completed .stat-value")).to_have_text(str(counts["completed"]))
    queues = page.locator("section.card", has=page.locator("h2", has_text="Queues"))
    await expect(queues.locator("tbody tr")).to_have_count(2)
    await expect(queues.locator("tbody")).to_contain_text("mailers")
    # The chart counts its newest minutes first and fills the rest in over quick refreshes.
    await expect(page.locator("svg.chart rect.bar")).to_have_count(60, timeout=15_000)
    await expect(page.locator("svg.chart rect.pending")).to_have_count(0)
    await expect(page.locator("#live-toggle")).to_contain_text("live")


async def test_filter_jobs_by_state_and_args(page: Page, server: DashboardServer) -> None:
    await page.goto(server.base + "/jobs")
    await page.select_option("select[name=state]", "discarded")  # submits on change
    await page.wait_for_url("**/jobs?*state=discarded*")
    rows = page.locator("table.jobs tbody tr")
    await expect(rows).to_have_count(5)
    await expect(rows.locator(".badge.s-discarded")).to_have_count(5)

    await page.select_option("select[name=state]", "")
    await page.wait_for_url("**/jobs?*")
    await page.fill("input[name=q]", "SKU-1")
    await page.click("button:has-text('Filter')")
    await page.wait_for_url("**q=SKU-1*")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("shop.sync_stock")
    await expect(rows.first.locator(".badge")).to_have_text("retryable")


async def test_workflow_graph_draws_steps_with_their_states(page: Page, server: DashboardServer) -> None:
    await page.goto(server.base + "/workflows")
    await page.click("text=nightly-report")
    await page.wait_for_url("**/workflows/*")
    graph = page.locator("svg.dag")
    await expect(graph).to_be_visible()
    await expect(graph.locator("g.step")).to_have_count(7)
    await expect(graph.locator("[data-step=clean] g.step")).to_have_class("step state-discarded root-failure")
    await expect(graph.locator("[data-step=fetch] g.step")).to_have_class("step state-completed")
    await expect(graph.locator("[data-step='publish.notify'] g.step")).to_have_class("step state-cancelled")
    assert await graph.locator("path.edge.hot").count() >= 4
    assert await graph.locator("g.group").count() == 1  # the sub-workflow's steps, boxed together
    # Clicking a step opens its job.
    await graph.locator("[data-step=clean]").click()
    await page.wait_for_url("**/jobs/*")
    await expect(page.locator("h1")).to_contain_text("report.step")


async def test_a_graft_workflow_draws_its_grafted_steps_in_a_group(
    page: Page, server: DashboardServer, seeded: dict[str, Any]
) -> None:
    app = seeded["app"]

    @app.worker(name="g.item")
    def item(job: baton.Job) -> int:
        return int(job.args["i"])

    @app.worker(name="g.expand")
    def expand(job: baton.Job) -> baton.Graft:
        return baton.Graft.map(item, [{"i": i} for i in range(3)])

    wf = baton.Workflow(label="fan-out")
    wf.add("list", item.new({"i": -1}))
    wf.add_graft("process", expand.new({}), deps=["list"])
    wf.add("report", item.new({"i": -2}), deps=["process"])
    wid = await app.insert_workflow(wf)
    await app.drain()
    await page.goto(f"{server.base}/workflows/{wid}")
    graph = page.locator("svg.dag")
    await expect(graph.locator("g.step")).to_have_count(6)
    group = graph.locator("g.group", has_text="process (grafted, 3 steps)")
    await expect(group).to_have_count(1)
    box = await group.locator("rect").bounding_box()
    assert box is not None
    for name in ("process.0", "process.1", "process.2"):
        step = await graph.locator(f"[data-step='{name}'] rect").first.bounding_box()
        assert step is not None
        assert box["x"] <= step["x"] and step["x"] + step["width"] <= box["x"] + box["width"]
        assert box["y"] <= step["y"] and step["y"] + step["height"] <= box["y"] + box["height"]
    for name in ("list", "process", "report"):  # the graft step and the others stay outside
        step = await graph.locator(f"[data-step='{name}'] rect").first.bounding_box()
        assert step is not None and not (box["x"] <= step["x"] <= box["x"] + box["width"])


async def test_retry_a_discarded_job_and_see_it_change_without_a_reload(
    page: Page, server: DashboardServer, seeded: dict[str, Any]
) -> None:
    app: baton.Baton = seeded["app"]
    card = (await app.list_jobs(worker="shop.charge_card"))[0]
    await page.goto(f"{server.base}/jobs/{card.id}")
    await expect(page.locator("h1 .badge")).to_have_text("discarded")
    await page.evaluate("window.__same_page = true")
    await page.click("#job-actions button:has-text('Retry')")
    await expect(page.locator("h1 .badge")).to_have_text("available")
    await expect(page.locator("#toasts")).to_contain_text("discarded → available")
    assert await page.evaluate("window.__same_page") is True
    job = await app.get_job(card.id)
    assert job is not None and job.state == "available"

    # A change made elsewhere (another process, a worker) arrives over the live feed.
    await app.cancel_job(card.id)
    await expect(page.locator("h1 .badge")).to_have_text("cancelled", timeout=10_000)
    assert await page.evaluate("window.__same_page") is True


async def test_markup_in_args_never_runs(page: Page, server: DashboardServer, seeded: dict[str, Any]) -> None:
    await page.goto(f"{server.base}/jobs/{seeded['evil']}")
    await expect(page.locator("pre.json").first).to_contain_text("<script>window.__pwned = 1</script>")
    await page.goto(f"{server.base}/jobs?queue=mailers")
    await page.wait_for_timeout(300)
    assert await page.evaluate("window.__pwned === undefined")


async def test_read_only_hides_and_refuses_actions(
    page: Page, seeded: dict[str, Any], db_url: str, browser: Browser
) -> None:
    app: baton.Baton = seeded["app"]
    card = (await app.list_jobs(worker="shop.charge_card"))[0]
    with DashboardServer(db_url, read_only=True) as server:
        await page.goto(f"{server.base}/jobs/{card.id}")
        await expect(page.locator(".pill-ro")).to_have_text("read-only")
        await expect(page.locator("h1 .badge")).to_have_text("discarded")
        assert await page.locator("button:has-text('Retry')").count() == 0
        await page.goto(f"{server.base}/queues")
        assert await page.locator("button:has-text('Pause')").count() == 0
        status = await page.evaluate(
            """async (id) => {
                const token = document.querySelector('meta[name=csrf-token]').content;
                const r = await fetch(`/api/jobs/${id}/retry`, {method: 'POST', headers: {'X-CSRF-Token': token}});
                return r.status;
            }""",
            card.id,
        )
        assert status == 403
    job = await app.get_job(card.id)
    assert job is not None and job.state == "discarded"


INSIDE = """(sel) => Array.from(document.querySelectorAll(sel)).map((el) => {
  const card = el.closest('.card').getBoundingClientRect(), r = el.getBoundingClientRect();
  return {text: el.textContent.trim().slice(0, 20), inside: r.left >= card.left - 1 && r.right <= card.right + 1
          && r.right <= window.innerWidth};
}).filter((x) => !x.inside)"""


@pytest.mark.parametrize("width", [1400, 1280])
async def test_long_unbroken_names_wrap_and_keep_columns_and_buttons_on_the_card(
    browser: Browser, server: DashboardServer, seeded: dict[str, Any], width: int
) -> None:
    app: baton.Baton = seeded["app"]
    long = "very_long_" * 30  # 300 characters, no space

    @app.worker(name=f"odd.{long}", max_attempts=1)
    def odd(job: baton.Job) -> None:
        raise ValueError("no")

    wf = baton.Workflow(label=f"label_{long}")
    wf.add(f"step_{long}", odd.new({}))
    wf.add("s3://bucket/" + "x" * 40 + "/exports/" + "y" * 40 + ".csv", odd.new({}))  # a 100-char path
    wid = await app.insert_workflow(wf)
    await app.drain()
    context = await browser.new_context(viewport={"width": width, "height": 900})
    page = await context.new_page()
    try:
        for path in ("/failures", "/jobs", "/workflows", f"/workflows/{wid}"):
            await page.goto(server.base + path)
            await expect(page.locator("section.card table").first).to_be_visible()
            assert await page.evaluate("document.documentElement.scrollWidth") <= width, path
            assert await page.evaluate(INSIDE, "section.card thead th") == [], path
            assert await page.evaluate(INSIDE, "section.card button") == [], path
        await page.goto(server.base + "/failures")
        assert await page.locator("section.card button:has-text('Retry group')").count() >= 3
    finally:
        await context.close()


async def test_a_refused_retry_shows_an_error_toast_that_stays_until_dismissed(
    page: Page, server: DashboardServer, seeded: dict[str, Any]
) -> None:
    app: baton.Baton = seeded["app"]
    stats = (await app.workflow_status(seeded["failed_wf"])).details["stats"].job_id
    await page.clock.install()
    await page.goto(f"{server.base}/jobs/{stats}")
    await page.click("#job-actions button:has-text('Retry')")
    toast = page.locator("#toasts .toast.bad")
    await expect(toast).to_contain_text("its dependency 'clean' is discarded")
    assert not (await toast.inner_text()).startswith("job_id")  # the API's field, not for people
    await page.clock.fast_forward(60_000)  # far past the 4 s an information toast stays
    await expect(toast).to_be_visible()
    close = toast.locator("button[aria-label='Dismiss']")
    await close.focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#toasts .toast")).to_have_count(0)

    # A bulk retry that refuses steps says how many and why, in a toast that stays as well.
    await page.goto(f"{server.base}/jobs?workflow={seeded['failed_wf']}&state=cancelled")
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.click("button:has-text('Retry all')")
    warn = page.locator("#toasts .toast.warn")
    await expect(warn).to_contain_text("0 retried, 4 refused")
    await expect(warn).to_contain_text("dependency 'clean' is discarded, retry that first")
    await page.clock.fast_forward(60_000)
    await expect(warn).to_be_visible()
