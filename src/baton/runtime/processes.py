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
import copyreg
import dataclasses
import importlib
import io
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import traceback
from collections.abc import Mapping
from multiprocessing.connection import Connection, wait
from types import MappingProxyType
from typing import Any

from ..job import Cancel, Discard, Job, Snooze
from ..worker import FunctionWorker, Worker, WorkerDef

log = logging.getLogger("baton.processes")

_SPAWN = multiprocessing.get_context("spawn")
# The job as the child rebuilds it. Not the app's pricing (`_price`, possibly a lambda or a
# closure over the node's state): usage recorded in the child is priced here (`unpack`).
_JOB_FIELDS = tuple(f.name for f in dataclasses.fields(Job) if f.name != "_price")
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
    __slots__ = ("conn", "lock", "process", "served")

    def __init__(self) -> None:
        parent_end, child_end = _SPAWN.Pipe()
        # Daemonic: multiprocessing terminates it at interpreter exit even without a node stop.
        self.process = _SPAWN.Process(target=_serve, args=(child_end,), name="baton-process", daemon=True)
        self.process.start()
        child_end.close()
        self.conn: Connection = parent_end
        # Every waitpid (exitcode, join) and kill happens under this lock, so a kill never
        # signals a process id that was already reaped (and may belong to someone else now).
        self.lock = threading.Lock()
        self.served = 0  # jobs it replied to

    def kill(self) -> None:
        with self.lock:
            if self.process.exitcode is None:
                self.process.kill()

    def reap(self, timeout: float = 5.0) -> int | None:
        """Wait for the process to end (no zombie left behind); its exit code. Safe to call from
        two threads at once (a stopping pool and the job's own thread, which saw the child die
        when the pool killed it): the pipe is closed once, under the lock — a second close of
        the same descriptor failed with EBADF, or could have closed a file opened meanwhile."""
        if not wait([self.process.sentinel], timeout):
            self.kill()
            wait([self.process.sentinel])
        with self.lock:
            self.process.join()
            if not self.conn.closed:
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
        replies. Returns `(kind, value, traceback, changed job fields)`: kind "ok" (value is the
        result, or a Snooze/Cancel/Discard) or "error" (value is the exception). Raises
        ProcessTimedOut, WorkerProcessDied, or _Cancelled when `cancel(ticket)` was called.
        The timeout counts from when the child starts the worker (as a thread worker's counts
        from when a thread picks it up), not from when the job waited for a child. A child that
        had died between jobs (noticed before it started this one) is replaced, not blamed."""
        message = _message(target, job)
        while True:
            child = self._acquire(ticket)
            try:
                child.conn.send_bytes(message)
                child.conn.recv_bytes()  # "began": the child imported the worker and built the job
                break
            except (EOFError, OSError):
                exitcode = self._discard(ticket, child)
                if ticket.cancelled:
                    raise _Cancelled from None
                if child.served == 0:  # a new child that cannot even start the job
                    log.warning("job %s: %s before it started the job", job.id, _death(exitcode))
                    raise WorkerProcessDied(_death(exitcode) + " before it started the job") from None
                # It died between jobs (the OOM killer, a stray kill), so this job never ran:
                # it gets another child rather than a failed attempt.
        try:
            if not child.conn.poll(timeout):
                child.kill()
                self._discard(ticket, child)
                raise ProcessTimedOut
            reply: Reply = pickle.loads(child.conn.recv_bytes())
        except (EOFError, OSError):
            exitcode = self._discard(ticket, child)
            if ticket.cancelled:
                raise _Cancelled from None
            log.warning("job %s: %s", job.id, _death(exitcode))
            raise WorkerProcessDied(_death(exitcode)) from None
        except ProcessTimedOut:
            raise
        except BaseException:  # a reply that does not unpickle: this child's state is unknown
            child.kill()
            self._discard(ticket, child)
            raise
        child.served += 1
        with self._cond:
            ticket.child = None
            keep = not ticket.cancelled and not self._closed
            if keep:
                self._idle.append(child)
                self._cond.notify()
        if not keep:
            # Cancelled (or closed) just as it replied: it may have been killed already.
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
            closed = self._closed
            if not closed:
                self._children.add(child)
                if not ticket.cancelled:
                    ticket.child = child
                    return child
                self._idle.append(child)  # another job can have it
                self._cond.notify()
        if closed:  # closed while it started: `close` did not see it
            child.kill()
            child.reap()
            raise RuntimeError("the process pool is closed (the node is stopping)")
        raise _Cancelled

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
                    child.conn.send_bytes(b"")
                except (OSError, ValueError):
                    child.kill()
            else:
                child.kill()
        for child in children:
            child.reap(timeout)


def _frozen(mapping: dict[str, Any]) -> Mapping[str, Any]:
    """Rebuild a read-only mapping on the other side of the pipe."""
    return MappingProxyType(mapping)


def _reduce_frozen(mapping: Mapping[str, Any]) -> tuple[Any, tuple[dict[str, Any]]]:
    return _frozen, (dict(mapping),)


# The workflow's context (`job.context`) is frozen: MappingProxyType, which pickle refuses.
# Messages both ways pickle it as what it is, a read-only mapping (nested ones too), without
# registering anything in the process-wide copyreg table.
_DISPATCH = copyreg.dispatch_table.copy()
_DISPATCH[MappingProxyType] = _reduce_frozen


def _dumps(value: Any) -> bytes:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _DISPATCH
    pickler.dump(value)
    return buffer.getvalue()


def _message(target: str, job: Job) -> bytes:
    """The pickled request for a child: every field of the job the worker can read. A field
    that does not pickle is an error naming it (the attempt fails), never left out: the child
    would run the job without it, silently (an empty `job.context`, say)."""
    state = {name: getattr(job, name) for name in _JOB_FIELDS}
    try:
        return _dumps((target, state))
    except Exception as exc:
        for name, value in state.items():
            try:
                _dumps(value)
            except Exception as field_exc:
                raise TypeError(
                    f"job {job.id}: its field {name!r} cannot be sent to a worker process: {field_exc}"
                ) from field_exc
        raise TypeError(f"job {job.id} cannot be sent to a worker process: {exc}") from exc


def unpack(job: Job, reply: Reply, recorded: bool) -> Any:
    """Turn a child's reply into what a thread worker would have done: copy the fields the
    worker filled onto the parent's `job`, return the result or outcome, raise the exception
    (with the child's traceback as its cause). `recorded`: the result is stored, so a value
    that could not come back is an error rather than ignored."""
    kind, value, tb, changed = reply
    for name, field_value in changed.items():
        setattr(job, name, field_value)
    if changed.get("_usage") and job._price is not None:  # the child records calls unpriced
        price = job._price
        job._usage = [
            dataclasses.replace(r, cost=price(r.model, r.input_tokens, r.output_tokens, r.extra))
            for r in job._usage or ()
        ]
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
    """A child's loop: receive a job, run it, send the reply; exit on an empty message or when
    the parent's end of the pipe closes (the parent is gone)."""
    # Ctrl-C reaches the whole process group: the node decides when its jobs stop, not the terminal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    resolved: dict[str, Any] = {}
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if not message:
            return
        try:
            conn.send_bytes(_perform(conn, resolved, message))
        except (EOFError, OSError):
            return


def _resolve(target: str) -> Any:
    """The callable that runs a job for the function or Worker class at `target`."""
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:cut])
        try:
            found: Any = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is not None and not module.startswith(exc.name):
                raise  # the worker's module exists but needs a module that is missing here
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


def _perform(conn: Connection, resolved: dict[str, Any], message: bytes) -> bytes:
    """Run one job; the pickled reply (never raises but for a broken pipe). Sends "began" (an
    empty message) first, once the worker is imported, so the parent starts the job's timeout
    then and knows the job started."""
    job: Job | None = None
    before: dict[str, Any] = {}
    began = False
    try:
        target, state = pickle.loads(message)
        fn = resolved.get(target)
        if fn is None:
            fn = resolved[target] = _resolve(target)
        job = Job(**state)
        # Copies of what a worker may change in place (its logs, usage); the rest as it is (a
        # frozen context does not copy).
        before = {name: _snapshot(getattr(job, name)) for name in _PRIVATE_FIELDS}
        began = True
        conn.send_bytes(b"")
        reply: Reply = ("ok", fn(job), "", {})
    except _OUTCOMES as outcome:
        reply = ("ok", outcome, "", {})
    except BaseException as exc:  # like a thread worker: sys.exit() fails the job, not the child
        reply = _error(exc, traceback.format_exc())
    if not began:  # failed before the worker started: the parent still waits for "began"
        conn.send_bytes(b"")
    if job is not None:
        for name in _PRIVATE_FIELDS:
            value = getattr(job, name)
            if value != before.get(name):
                reply[3][name] = value
    try:
        return _dumps(reply)
    except Exception:
        pass
    kind, value, tb, changed = reply
    if kind == "ok":
        try:
            _dumps(value)
        except Exception:
            value = Unpicklable(f"{type(value).__name__}: {value!r:.200}")
    else:
        value = _error(value, tb)[1]
    try:
        _dumps(changed)
    except Exception as exc:
        kind, value, tb = "error", RuntimeError(f"the job's logs could not be sent back: {exc!r:.200}"), tb
        changed = {}
    return _dumps((kind, value, tb, changed))


def _snapshot(value: Any) -> Any:
    return copy.copy(value) if isinstance(value, list | dict | set) else value


def _error(exc: BaseException, tb: str) -> Reply:
    """An error reply whose exception survives the trip back to the parent."""
    if not isinstance(exc, Exception | SystemExit):  # KeyboardInterrupt must not reach the node
        exc = RuntimeError(f"{type(exc).__name__}: {exc}")
    try:
        pickle.loads(_dumps(exc))
    except Exception:
        exc = RuntimeError(f"{type(exc).__name__}: {exc!r:.500} (the exception could not be pickled back)")
    return ("error", exc, tb, {})
