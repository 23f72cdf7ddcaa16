"""A pool of worker processes for CPU-bound sync workers (`executor="process"`).

Not `concurrent.futures.ProcessPoolExecutor`: there one child that dies breaks the whole pool
and a running call can be neither timed out nor cancelled. Here every child serves one job at a
time over its own pipe, so a timeout or a cancellation kills only that job's child, and a child
that dies (kill -9, `os._exit`, a segfault) fails only the job it was running, with a retryable
`WorkerProcessDied`; the next job that needs a child starts a new one.

Children are started with the "spawn" method (forking a process that runs an event loop and
threads is unsafe), lazily, at most `size` at a time. The parent side is blocking code: each job
waits for its reply on one of the node's worker threads (`ProcessPool.run`), never on the loop;
`cancel` may be called from any thread.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import traceback
from multiprocessing.connection import Connection
from typing import Any

from ..job import Cancel, Discard, Job, Snooze
from ..worker import FunctionWorker, Worker, WorkerDef

log = logging.getLogger("baton.processes")

_SPAWN = multiprocessing.get_context("spawn")
_JOB_FIELDS = tuple(f.name for f in dataclasses.fields(Job))
# Per-attempt fields a worker may fill (`job.log` lines, ...): shipped back when they changed.
_PRIVATE_FIELDS = tuple(name for name in _JOB_FIELDS if name.startswith("_"))
_OUTCOMES = (Snooze, Cancel, Discard)


class WorkerProcessDied(RuntimeError):
    """The child process running a job died before it replied (the job is retried)."""


class ProcessTimedOut(Exception):
    """The job ran longer than its worker's timeout; its child process was killed."""


class _Cancelled(Exception):
    """The job was cancelled before or while its child ran it (nobody awaits the outcome)."""


class RemoteTraceback(Exception):
    """Carries the traceback text of an exception raised in a child process (set as the
    `__cause__` of the re-raised exception, so a formatted traceback shows both sides)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


class Unpicklable:
    """Stands for a return value that could not be pickled back from the child."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def target_of(worker: WorkerDef) -> str:
    """The import path a child resolves `worker` by: its function's or class's module and
    qualified name (`@app.worker` replaces the function in its module, so the function itself
    cannot be pickled by reference)."""
    source = worker.source
    code: Any = source.fn if isinstance(source, FunctionWorker) else source
    return f"{code.__module__}.{code.__qualname__}"


# --------------------------------------------------------------------------- parent side


class Ticket:
    """One job's request for a child: `ProcessPool.cancel(ticket)` kills its child (if it has
    one by then) or withdraws the request."""

    __slots__ = ("cancelled", "child")

    def __init__(self) -> None:
        self.cancelled = False
        self.child: _Child | None = None


class _Child:
    __slots__ = ("conn", "process")

    def __init__(self) -> None:
        parent_end, child_end = _SPAWN.Pipe()
        # Daemonic: multiprocessing terminates it at interpreter exit even without a node stop.
        self.process = _SPAWN.Process(target=_serve, args=(child_end,), name="baton-process", daemon=True)
        self.process.start()
        child_end.close()
        self.conn: Connection = parent_end

    def kill(self) -> None:
        try:
            self.process.kill()
        except (OSError, ValueError):  # already gone, or already closed
            pass

    def reap(self, timeout: float | None = 5.0) -> int | None:
        """Wait for the process to end (no zombie left behind); its exit code."""
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.kill()
            self.process.join()
        self.conn.close()
        return self.process.exitcode


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown"
        return f"the process running the job died (signal {-exitcode}, {name})"
    return f"the process running the job died (exit code {exitcode})"


Reply = tuple[str, Any, str, dict[str, Any]]


class ProcessPool:
    """At most `size` child processes, each running one job at a time."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._cond = threading.Condition()
        self._idle: list[_Child] = []
        self._children: set[_Child] = set()
        self._starting = 0
        self._closed = False

    def pids(self) -> list[int]:
        """Process ids of the live children."""
        with self._cond:
            return [c.process.pid for c in self._children if c.process.pid is not None]

    def cancel(self, ticket: Ticket) -> None:
        """Withdraw `ticket`'s request, killing its child if it is running the job."""
        with self._cond:
            ticket.cancelled = True
            child = ticket.child
            self._cond.notify_all()
        if child is not None:
            child.kill()

    def run(self, ticket: Ticket, target: str, job: Job, timeout: float | None) -> Reply:
        """Run `job` with the worker at import path `target` in a child; blocks until it
        replies. Returns `(kind, value, traceback, changed job fields)` with kind "ok" (value is
        the result), "outcome" (a Snooze/Cancel/Discard) or "error" (the exception). Raises
        ProcessTimedOut, WorkerProcessDied, or _Cancelled when `cancel(ticket)` was called."""
        state = _job_state(job)
        while True:
            child = self._acquire(ticket)
            try:
                child.conn.send((target, state))
            except (BrokenPipeError, ConnectionError, EOFError, OSError):
                # It died while idle (the OOM killer, a stray kill): start another one.
                self._discard(ticket, child)
                continue
            break
        try:
            if not child.conn.poll(timeout):
                child.kill()
                self._discard(ticket, child)
                raise ProcessTimedOut
            reply: Reply = child.conn.recv()
        except (EOFError, OSError):
            exitcode = self._discard(ticket, child)
            if ticket.cancelled:
                raise _Cancelled from None
            raise WorkerProcessDied(_death(exitcode)) from None
        except (ProcessTimedOut, _Cancelled):
            raise
        except BaseException:  # a reply that does not unpickle: this child's state is unknown
            child.kill()
            self._discard(ticket, child)
            raise
        with self._cond:
            ticket.child = None
            cancelled = ticket.cancelled
            if not cancelled and not self._closed:
                self._idle.append(child)
                self._cond.notify()
        if cancelled or self._closed:
            # Cancelled just as it replied: `cancel` may have killed it already.
            child.kill()
            self._discard(ticket, child)
        return reply

    def _acquire(self, ticket: Ticket) -> _Child:
        with self._cond:
            while True:
                if ticket.cancelled:
                    raise _Cancelled
                if self._closed:
                    raise RuntimeError("the process pool is closed (the node is stopping)")
                if self._idle:
                    child = self._idle.pop()
                    ticket.child = child
                    return child
                if len(self._children) + self._starting < self.size:
                    self._starting += 1
                    break
                self._cond.wait()
        try:
            child = _Child()  # outside the lock: starting a process takes a while
        except BaseException:
            with self._cond:
                self._starting -= 1
                self._cond.notify()
            raise
        with self._cond:
            self._starting -= 1
            self._children.add(child)
            ticket.child = child
            if ticket.cancelled or self._closed:
                self._idle.append(child)
                self._cond.notify()
                raise _Cancelled if ticket.cancelled else RuntimeError("the process pool is closed")
            return child

    def _discard(self, ticket: Ticket, child: _Child) -> int | None:
        with self._cond:
            if ticket.child is child:
                ticket.child = None
            self._children.discard(child)
            if child in self._idle:
                self._idle.remove(child)
            self._cond.notify()
        return child.reap()

    def close(self, timeout: float = 5.0) -> None:
        """Stop every child: idle ones are asked to exit, busy ones are killed (their jobs were
        cancelled by then). Joins them all, so no zombie is left."""
        with self._cond:
            self._closed = True
            children = list(self._children)
            idle = set(self._idle)
            self._idle.clear()
            self._children.clear()
            self._cond.notify_all()
        for child in children:
            if child in idle:
                try:
                    child.conn.send(None)
                except (OSError, ValueError):
                    child.kill()
            else:
                child.kill()
        for child in children:
            child.reap(timeout)


def _job_state(job: Job) -> dict[str, Any]:
    """The job's fields to send to a child; a field that does not pickle (a lock, an event
    added by the runtime) is left out and takes its default there."""
    state = {name: getattr(job, name) for name in _JOB_FIELDS}
    try:
        pickle.dumps(state, pickle.HIGHEST_PROTOCOL)
    except Exception:
        for name, value in list(state.items()):
            try:
                pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
            except Exception:
                del state[name]
    return state


def unpack(job: Job, reply: Reply, recorded: bool) -> Any:
    """Turn a child's reply into what a thread worker would have done: copy the fields the
    worker filled onto the parent's `job`, return the result or outcome, raise the exception
    (with the child's traceback as its cause). `recorded`: the result is stored, so a value
    that could not come back is an error rather than ignored."""
    kind, value, tb, changed = reply
    for name, field_value in changed.items():
        setattr(job, name, field_value)
    if kind == "error":
        value.__cause__ = RemoteTraceback(tb)
        raise value
    if isinstance(value, Unpicklable):
        if recorded:
            raise TypeError(f"the worker returned a value that cannot be sent back from its process: {value.text}")
        return None
    return value


# --------------------------------------------------------------------------- child side


def _serve(conn: Connection) -> None:
    """A child's loop: receive `(target, job state)`, run it, send the reply; exit on None or
    when the parent's end of the pipe closes."""
    # Ctrl-C reaches the whole process group: the node decides when its jobs stop, not the terminal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    resolved: dict[str, Any] = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        target, state = message
        reply = _perform(resolved, target, state)
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return
        except Exception as exc:  # the changed fields did not pickle
            conn.send(("error", RuntimeError(f"could not send the job's logs back: {exc!r}"), reply[2], {}))


def _resolve(target: str) -> Any:
    """The callable that runs a job for the function or Worker class at `target`."""
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            found = getattr(found, attr, None)
        if isinstance(found, FunctionWorker):
            return found.fn
        if isinstance(found, type) and issubclass(found, Worker):
            worker_cls = found
            return lambda job: worker_cls().perform(job)
        if callable(found):
            return found
        break
    raise LookupError(f"worker {target!r} cannot be imported in the worker process ({os.getpid()})")


def _perform(resolved: dict[str, Any], target: str, state: dict[str, Any]) -> Reply:
    job: Job | None = None
    before: dict[str, Any] = {}
    try:
        fn = resolved.get(target)
        if fn is None:
            fn = resolved[target] = _resolve(target)
        job = Job(**state)
        before = {name: copy.copy(getattr(job, name)) for name in _PRIVATE_FIELDS}
        result = fn(job)
        reply: Reply = ("ok", result, "", {})
    except _OUTCOMES as outcome:
        reply = ("ok", outcome, "", {})
    except BaseException as exc:  # like a thread worker: sys.exit() fails the job, not the child
        tb = traceback.format_exc()
        if not isinstance(exc, Exception | SystemExit):  # KeyboardInterrupt must not reach the node
            exc = RuntimeError(f"{type(exc).__name__}: {exc}")
        try:
            pickle.loads(pickle.dumps(exc, pickle.HIGHEST_PROTOCOL))
        except Exception:
            exc = RuntimeError(f"{type(exc).__name__}: {exc!r} (the exception could not be pickled back)")
        reply = ("error", exc, tb, {})
    if reply[0] == "ok":
        try:
            pickle.dumps(reply[1], pickle.HIGHEST_PROTOCOL)
        except Exception:
            reply = ("ok", Unpicklable(f"{type(reply[1]).__name__}: {reply[1]!r:.200}"), "", {})
    if job is not None:
        reply[3].update({name: value for name in _PRIVATE_FIELDS if (value := getattr(job, name)) != before.get(name)})
    return reply
