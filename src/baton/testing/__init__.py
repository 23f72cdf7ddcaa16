"""Testing helpers: run jobs inline or leave them enqueued, assert on what is enqueued, drain
queues in-process, unit-test one worker (`perform_job`), and a pytest plugin (`baton_app`).

    with baton.testing.inline(app):        # jobs (and whole workflows) run at insert time
        job = app.insert_sync(send.new({"to": "a@example.com"}))
    assert job.state == "completed"

    with baton.testing.manual(app):        # jobs stay enqueued
        app.insert_sync(send.new({"to": "a@example.com"}))
        baton.testing.assert_enqueued(app, worker=send, args={"to": "a@example.com"})
        baton.testing.drain(app)

See docs/testing.md."""

from .assertions import ENQUEUED, all_enqueued, assert_enqueued, refute_enqueued
from .drain import DrainError, JobFailed, drain
from .modes import Mode, current_mode, inline, manual
from .perform import PerformResult, perform_job

__all__ = [
    "ENQUEUED",
    "DrainError",
    "JobFailed",
    "Mode",
    "PerformResult",
    "all_enqueued",
    "assert_enqueued",
    "current_mode",
    "drain",
    "inline",
    "manual",
    "perform_job",
    "refute_enqueued",
]
