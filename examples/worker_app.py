"""A Baton app to run with the `baton` command line.

    cd examples
    baton migrate                                         # creates ./baton.db (or use --url / BATON_DATABASE_URL)
    baton worker --app worker_app:app --queues default:4,mailers:2 &
    python worker_app.py                                  # enqueue a welcome workflow for three users
    baton workflows list
    baton workflows show <id>                             # the DAG as a tree, each step with its state
    baton jobs list --state completed
    kill %1                                               # SIGTERM: the worker stops gracefully, exit 0

The app is built with `baton.Baton()` and no URL, so `baton --url ... worker` and
$BATON_DATABASE_URL decide where the jobs live.
"""

from __future__ import annotations

import asyncio
import sys

import baton

app = baton.Baton(queues={"default": 4, "mailers": 2})


# Explicit names: run as a script this module is `__main__`, imported by the worker it is
# `worker_app`; the default name (module.function) would differ between the two.
@app.worker(name="welcome.create_account", max_attempts=5)
def create_account(job: baton.Job) -> dict[str, str]:
    """Pretend to create an account; the result is recorded for the steps that follow."""
    return {"user": job.args["user"], "account": f"acct-{job.args['user']}"}


@app.worker(name="welcome.send_welcome", queue="mailers", max_attempts=10)
async def send_welcome(job: baton.Job) -> dict[str, str]:
    """Send the welcome mail to the account created upstream."""
    (created,) = job.upstream_all().values()  # its one dependency: this user's create_account step
    await asyncio.sleep(0.1)
    return {"sent_to": created["account"]}


@app.worker(name="welcome.audit")
def audit(job: baton.Job) -> int:
    """Fan-in: runs once every user's mail went out."""
    return len(job.upstream_all())


def welcome_workflow(users: list[str]) -> baton.Workflow:
    """create_account -> send_welcome for each user, then one audit step after all of them."""
    wf = baton.Workflow(label="welcome")
    mails = []
    for user in users:
        wf.add(f"create_account_{user}", create_account.new({"user": user}))
        wf.add(f"send_welcome_{user}", send_welcome.new({}), deps=[f"create_account_{user}"])
        mails.append(f"send_welcome_{user}")
    wf.add("audit", audit.new({}), deps=mails)
    return wf


async def main(users: list[str]) -> None:
    """Insert the workflow and print how to watch it."""
    wid = await app.insert_workflow(welcome_workflow(users))
    await app.close()
    print(f"inserted workflow {wid}: watch it with  baton workflows show {wid}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:] or ["ada", "grace", "linus"]))
