"""Workers and seed data for the dashboard tests and screenshots: completed, failing,
retryable and scheduled jobs in two queues, a job whose args hold markup, a chain, a workflow
whose failure cascades (with a sub-workflow), one that completes, and one left waiting."""

from __future__ import annotations

from typing import Any

import baton

EVIL = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def register(app: baton.Baton) -> dict[str, Any]:
    """Declare the dashboard test workers on `app`; returns them by short name."""

    @app.worker(name="shop.send_receipt")
    def send_receipt(job: baton.Job) -> dict[str, Any]:
        return {"sent": job.args.get("order")}

    @app.worker(name="shop.charge_card", max_attempts=1)
    def charge_card(job: baton.Job) -> None:
        raise ValueError(f"card declined for order {job.args.get('order')}")

    @app.worker(name="shop.sync_stock", max_attempts=5)
    def sync_stock(job: baton.Job) -> None:
        raise ConnectionError("inventory service timed out")

    @app.worker(name="report.step")
    def step(job: baton.Job) -> dict[str, Any]:
        if job.args.get("fail"):
            raise RuntimeError(f"step {job.args.get('name')} failed: bad input file")
        return {"rows": 42}

    @app.worker(name="shop.ledger", chain_by=["args.account"])
    def ledger(job: baton.Job) -> None:
        return None

    return {
        "send_receipt": send_receipt,
        "charge_card": charge_card,
        "sync_stock": sync_stock,
        "step": step,
        "ledger": ledger,
    }


def report_workflow(w: dict[str, Any], fail: bool, label: str = "nightly-report") -> baton.Workflow:
    """fetch -> clean -> (stats, render) -> publish.{upload, notify}; `clean` fails if asked."""
    step = w["step"]
    wf = baton.Workflow(label=label)
    wf.add("fetch", step.new({"name": "fetch"}))
    wf.add("clean", step.new({"name": "clean", "fail": fail}, max_attempts=1), deps=["fetch"])
    wf.add("stats", step.new({"name": "stats"}), deps=["clean"])
    wf.add("render", step.new({"name": "render"}), deps=["clean", "stats"])
    sub = baton.Workflow()
    sub.add("upload", step.new({"name": "upload"}))
    sub.add("notify", step.new({"name": "notify"}), deps=["upload"])
    wf.add_workflow("publish", sub, deps=["render"])
    wf.add("archive", step.new({"name": "archive"}), deps=["fetch"])
    return wf


async def seed(app: baton.Baton, w: dict[str, Any]) -> dict[str, Any]:
    """Insert and run the seed jobs; returns ids of interest."""
    await app.insert_all([w["send_receipt"].new({"order": i}, queue="mailers") for i in range(1, 25)])
    await app.insert_all([w["charge_card"].new({"order": 100 + i}, tags=["payments"]) for i in range(4)])
    await app.insert_all([w["sync_stock"].new({"sku": f"SKU-{i}"}) for i in range(3)])
    evil = await app.insert(w["send_receipt"].new({"order": 7, "note": EVIL}, queue="mailers", tags=[EVIL[:20]]))
    later = await app.insert(w["send_receipt"].new({"order": 99}, queue="mailers", schedule_in=3600))
    for n in range(3):
        await app.insert(w["ledger"].new({"account": "acme", "entry": n}))
    failed = await app.insert_workflow(report_workflow(w, fail=True))
    done = await app.insert_workflow(report_workflow(w, fail=False, label="weekly-report"))
    await app.drain()
    waiting_wf = baton.Workflow(label="waiting-report")
    waiting_wf.add("first", w["step"].new({"name": "first"}, schedule_in=3600))
    waiting_wf.add("second", w["step"].new({"name": "second"}), deps=["first"])
    waiting = await app.insert_workflow(waiting_wf)
    return {"evil": evil.id, "scheduled": later.id, "failed_wf": failed, "done_wf": done, "waiting_wf": waiting}
