"""Thread starts that fail as they do when a process has no memory left for a new thread's
stack (`RuntimeError: can't start new thread`), for the tests of the worker-thread pool."""

from __future__ import annotations

import threading

import pytest


def refuse_thread_starts(monkeypatch: pytest.MonkeyPatch, prefix: str, failures: int, *, allow: int = 0) -> list[str]:
    """Let the first `allow` starts of threads named `prefix`-* through, then make the next
    `failures` of them fail; returns the names of the refused starts as they happen."""
    refused: list[str] = []
    allowed: list[str] = []
    start = threading.Thread.start

    def flaky_start(self: threading.Thread) -> None:
        if self.name.startswith(prefix):
            if len(allowed) < allow:
                allowed.append(self.name)
            elif len(refused) < failures:
                refused.append(self.name)
                raise RuntimeError("can't start new thread")
        start(self)

    monkeypatch.setattr(threading.Thread, "start", flaky_start)
    return refused
