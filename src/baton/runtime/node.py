"""A node: one running Baton instance. It owns the producers, the acker, the notification
listener, the heartbeat (producer rows and the leader lease), the lease watchdog (a node that
cannot renew its rows gives its jobs up before the Lifeline rescues them: docs/lease.md) and
the plugin loops, and stops gracefully: stop fetching, wait `shutdown_grace` for running
jobs, hand the rest back."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid as uuidlib
from collections import defaultdict
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from .. import telemetry
from .._tasks import watch
from ..limits import QueueLimits, effective, parse_global_limit, parse_rate_limit
from ..store import jobs as store
from ..store import transitions
from ..store.effects import STEP_EVENTS, parse_wake
from ..store.jobs import Ack
from .acks import Acker
from .executor import Executor
from .leader import Leadership
from .lease import Lease
from .producer import Producer
from .threads import DaemonThreadPool

if TYPE_CHECKING:
    from ..engines.base import Listener
    from ..host import Host
    from ..plugins.base import Plugin

log = logging.getLogger("baton.node")

T = TypeVar("T")
LEASE_LOST = telemetry.events.LEASE_LOST
LEASE_REGAINED = telemetry.events.LEASE_REGAINED
# How long a stop waits for the attempts it took away (cancelled, or flagged: job.cancelled())
# to end before it writes their hand-back (at most its grace; not when hurried).
HAND_BACK_WAIT = 1.0


class Node:
    """The runtime of one started `Baton` app."""

    def __init__(self, app: Host) -> None:
        self.app = app
        self.engine = app.engine
        self.name = app.node
        self.instance = app.instance
        limits = sum(q["limit"] for q in app.queues.values())
        self.threads = DaemonThreadPool(max(4, limits + 2))
        self.executor = Executor(
            app.resolve_worker, self.threads, self.name, app.pricing, process_pool_size=app.process_pool_size
        )
        self.acker = Acker(self)
        self.producers: dict[str, Producer] = {}
        self.leadership = Leadership(self, ttl=max(2 * app.refresh_interval, 1.0))
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: Listener | None = None
        self._elect_soon = asyncio.Event()
        self._hurry = asyncio.Event()
        self.lease = Lease(app.refresh_interval, app.stale_after)
        self._regained = asyncio.Event()
        self._regained.set()
        # Heartbeat calls given up on (no answer in time), still being cancelled in the
        # background; while one is, no new one starts, so a hung database does not pile them up.
        self._abandoned: set[asyncio.Future[Any]] = set()

    def hurry(self) -> None:
        """Cut a graceful stop short: stop waiting for running jobs and hand them back now."""
        self._hurry.set()

    # -- start ------------------------------------------------------------------------

    async def start(self) -> None:
        declared_at = time.time()
        for queue, opts in self.app.queues.items():
            declared: QueueLimits | None = opts.get("limits")
            if declared is not None:
                declared = QueueLimits(declared.global_limit, declared.rate_limit, set_at=declared_at)
            self.producers[queue] = Producer(self, queue, opts["limit"], opts["paused"], declared)
        started = time.monotonic()
        # LISTEN connects while the producers register; it is up before the first fetch, so no
        # insert between the two goes unheard.
        listening = asyncio.ensure_future(self.engine.listen(self.on_notification, on_reconnect=self.wake_all))
        try:
            await self.engine.run(store.upsert_producers, [p.row() for p in self.producers.values()])
            self.lease.renewed(started)
            await self.follow_limits()
        except BaseException:
            listener = await listening
            await listener.close()
            raise
        self._listener = await listening
        self.acker.start()
        for producer in self.producers.values():
            producer.start()
            producer.emit("start")
        await self.leadership.tick()
        self._tasks.append(watch(asyncio.create_task(self._heartbeat(), name="baton-heartbeat")))
        if self.app.lease_guard:
            self._tasks.append(watch(asyncio.create_task(self._watchdog(), name="baton-lease-watchdog")))
        for plugin in self.app.plugins:
            self._tasks.append(
                watch(asyncio.create_task(self._plugin_loop(plugin), name=f"baton-plugin-{plugin.name}"))
            )
        log.info(
            "node %s started: queues %s, plugins %s, database %s",
            self.name,
            {q: p.limit for q, p in self.producers.items()},
            [p.name for p in self.app.plugins],
            self.engine.display_url,
        )

    # -- heartbeat and lease ------------------------------------------------------------

    async def _heartbeat(self) -> None:
        """Renew the producer rows every `refresh_interval` (start to start; sooner after a
        failure), each call bounded so a hung database cannot hold the loop; then the leader
        lease. While the node's lease is lost, a renewal is a re-registration (`_regain`)."""
        interval = self.app.refresh_interval
        due = time.monotonic() + interval
        failures = 0
        while True:
            try:
                await asyncio.wait_for(self._elect_soon.wait(), timeout=max(0.0, due - time.monotonic()))
                # Another node resigned: wait a moment (jittered) so nodes do not stampede.
                await asyncio.sleep(random.uniform(0, 0.05))
            except TimeoutError:
                started = time.monotonic()
                was_lost = self.lease.lost
                error = await self._beat(started)
                if error is None:
                    if failures:
                        log.info("producer heartbeat succeeded again after %d failed attempts", failures)
                    failures = 0
                    # Renewed, but the lease was lost meanwhile: re-register at once.
                    due = started if self.lease.lost and not was_lost else started + interval
                else:
                    failures += 1
                    level = logging.WARNING if failures == 1 else logging.DEBUG
                    log.log(level, "producer heartbeat failed (%s); retrying", error)
                    due = started + min(interval, 1.0)
            self._elect_soon.clear()
            self.threads.restaff()  # work queued while no worker thread could be started
            if not self.lease.lost:
                done, _ = await self._bounded(self.leadership.tick(), self.lease.span)
                if not done:
                    self.leadership.forfeit("the leader lease could not be renewed in time")

    async def _bounded(self, call: Coroutine[Any, Any, T], timeout: float) -> tuple[bool, T | None]:
        """Run `call` for at most `timeout` seconds: (True, its result) or (False, None). One
        that does not answer in time is cancelled in the background, not awaited: cancelling a
        query on a hung connection can itself hang."""
        task = asyncio.ensure_future(call)
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if done:
            return True, task.result()
        task.cancel()
        self._abandoned.add(task)
        task.add_done_callback(self._forget_abandoned)
        return False, None

    def _forget_abandoned(self, task: asyncio.Future[Any]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: it was logged as a timeout already

    async def follow_limits(self) -> None:
        """Make every producer obey the newest limits any live node declares for its queue
        (nodes configured differently, a node that declares none, a missed scale signal)."""
        rows = await self.engine.run(store.list_producers)
        by_queue: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            meta = row["meta"]
            by_queue[row["queue"]].append({**row, "meta": json.loads(meta) if isinstance(meta, str) else meta})
        for queue, producer in self.producers.items():
            newest = effective(by_queue.get(queue, []))
            declared = producer.declared
            if declared is not None and newest not in (declared, producer.limits):
                log.warning(
                    "queue %s: this node declares limits %s but a newer declaration %s holds across nodes",
                    queue,
                    declared.meta(),
                    newest.meta(),
                )
            producer.follow(newest)

    async def _beat(self, started: float) -> str | None:
        """One renewal started at `started`; None if it committed, else why not."""
        if self._abandoned:
            return "the previous heartbeat is still waiting for the database"
        try:
            done, _ = await self._bounded(self._renew(started), self.lease.span)
        except Exception as exc:
            return str(exc) or type(exc).__name__
        return None if done else f"no answer from the database within {self.lease.span:g}s"

    async def _renew(self, started: float) -> None:
        if self.lease.lost:
            await self._regain(started)
            return
        await self.engine.run_autocommit(store.upsert_producers, [p.row() for p in self.producers.values()])
        self.lease.renewed(started)  # counts from its start, once it committed
        await self.follow_limits()
        pending = self.acker.pending_ids()
        for producer in self.producers.values():
            await producer.reconcile(pending)

    async def _watchdog(self) -> None:
        """Give the jobs up once the lease's deadline passes without a renewal: a timer on
        this node's monotonic clock, independent of any database call."""
        while True:
            await self._regained.wait()
            delay = self.lease.deadline - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            self._lose_lease()

    def _lose_lease(self) -> None:
        now = time.monotonic()
        self.lease.lost_at = now
        self._regained.clear()
        since = now - self.lease.renewed_at
        reason = f"node {self.name} lost its lease (no heartbeat committed for {since:.1f}s)"
        cancelled: list[int] = []
        flagged: list[int] = []
        for producer in self.producers.values():
            c, f = producer.lose_lease(reason)
            cancelled += c
            flagged += f
        self.leadership.forfeit("its node lost its lease")
        log.warning(
            "node %s lost its lease: no producer heartbeat committed for %.1fs (stale_after %gs, margin %gs), so "
            "the Lifeline may rescue its jobs; it stopped fetching, cancelled %d running async jobs %s and flagged "
            "%d sync jobs %s (job.cancelled()); their outcomes will not be written. It registers again as new "
            "producers once the database answers.",
            self.name,
            since,
            self.app.stale_after,
            self.lease.margin,
            len(cancelled),
            cancelled[:20],
            len(flagged),
            flagged[:20],
        )
        event = {"node": self.name, "instance": self.instance, "cancelled": cancelled, "flagged": flagged}
        telemetry.emit(LEASE_LOST, {"since_renewal": since}, event)
        self.app.lease_lost({**event, "since_renewal": since})

    async def _regain(self, started: float) -> None:
        """Register again under new producer uuids (late acks of the old attempts are fenced),
        hand back what is still executing under the old ones, and fetch again."""
        fresh = {queue: str(uuidlib.uuid4()) for queue in self.producers}
        rows = [p.row(fresh[q]) for q, p in self.producers.items()]
        old = [p.uuid for p in self.producers.values()]
        released = await self.engine.run(store.reregister_producers, rows, old, self.name)
        now = time.monotonic()
        lost_at = self.lease.lost_at if self.lease.lost_at is not None else now
        cut_off = now - self.lease.renewed_at
        self.lease.renewed(started)
        self.lease.lost_at = None
        for queue, producer in self.producers.items():
            producer.regain_lease(fresh[queue])
            producer.emit("start")
        self._regained.set()
        ids = [j.id for j in released]
        log.warning(
            "node %s regained its lease after %.1fs without one (%.1fs since its last renewal): registered again as "
            "new producers and handed back %d jobs it had given up: %s",
            self.name,
            now - lost_at,
            cut_off,
            len(ids),
            ids[:20],
        )
        telemetry.emit(
            LEASE_REGAINED,
            {"cut_off": cut_off, "lost_for": now - lost_at},
            {"node": self.name, "instance": self.instance, "released": ids},
        )

    async def _plugin_loop(self, plugin: Plugin) -> None:
        # Stagger the first sweep so plugins of one leader do not all hit the database at once.
        await asyncio.sleep(min(plugin.interval, 1.0) * random.uniform(0.1, 1.0))
        while True:
            if self.leadership.is_leader:
                try:
                    await plugin.sweep(self.app)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    pass  # the plugin already logged and emitted its exception event
            await asyncio.sleep(plugin.interval)

    # -- notifications ----------------------------------------------------------------

    def wake_all(self) -> None:
        """Fetch on every queue (after a reconnect notifications may have been missed)."""
        for producer in self.producers.values():
            producer.wake()

    def wake(self, queues: set[str] | list[str]) -> None:
        for queue in queues:
            producer = self.producers.get(queue)
            if producer is not None:
                producer.wake()

    def cancel_local(self, ids: set[int]) -> int:
        return sum(p.cancel_local(ids) for p in self.producers.values())

    def on_notification(self, channel: str, payload: str) -> None:
        if channel == "insert":
            queue, origin = parse_wake(payload)
            if origin == self.instance:
                return  # our own ack released these jobs: its commit already woke the producer
            producer = self.producers.get(queue)
            if producer is not None:
                producer.wake()
            return
        if channel == "workflow" and payload.startswith(STEP_EVENTS) and not self.app.wants_step_events():
            return  # batches of step events nobody here listens to: not worth parsing
        try:
            message = json.loads(payload)
        except ValueError:
            log.warning("ignoring malformed %s notification: %.200s", channel, payload)
            return
        if channel == "signal":
            self.on_signal(message)
        elif channel == "workflow":
            # A batch of step events (a JSON array, in order) or one finished event.
            for event in message if isinstance(message, list) else [message]:
                if isinstance(event, dict):
                    self.app.deliver_workflow_event(event)
        elif channel == "leader" and message.get("action") == "resigned" and message.get("instance") != self.instance:
            self._elect_soon.set()

    def on_signal(self, message: dict[str, Any]) -> None:
        action = message.get("action")
        if action == "cancel":
            self.cancel_local({int(i) for i in message.get("ids", [])})
            return
        target = message.get("node")
        if target is not None and target != self.name:
            return
        producer = self.producers.get(message.get("queue", ""))
        if producer is None:
            return
        if action == "pause":
            producer.pause()
        elif action == "resume":
            producer.resume()
        elif action == "scale":
            if message.get("limit") is not None:
                producer.scale(int(message["limit"]))
            if "global_limit" in message or "rate_limit" in message:
                self._declare(producer, message)
        log.info("queue %s on node %s: %s %s", producer.queue, self.name, action, message.get("limit", ""))

    # -- acks -------------------------------------------------------------------------

    def _declare(self, producer: Producer, message: dict[str, Any]) -> None:
        current = producer.limits
        try:
            g = message.get("global_limit", current.global_limit and current.global_limit.to_dict())
            r = message.get("rate_limit", current.rate_limit and current.rate_limit.to_dict())
            # A new limit that names no partition keeps the current one.
            for new, old in ((g, current.global_limit), (r, current.rate_limit)):
                if isinstance(new, dict) and "partition" not in new and old is not None and old.partition:
                    new["partition"] = old.partition.to_dict()
            limits = QueueLimits(
                None if g is None else parse_global_limit("global_limit", g),
                None if r is None else parse_rate_limit("rate_limit", r),
                set_at=float(message.get("limits_set_at") or time.time()),
            )
        except Exception as exc:
            log.warning("ignoring a scale signal with bad limits for queue %s: %s", producer.queue, exc)
            return
        producer.declare(limits)

    async def flush_acks(self, batch: list[Ack]) -> None:
        # A batch that ack_jobs writes in one statement (plain jobs; on PostgreSQL plain
        # completions of workflow steps too) needs no transaction: the statement is atomic, and
        # a retry after an ambiguous failure is harmless, the fence drops it. Other outcomes of
        # steps, chain links, debug logs and usage need their follow-up writes in one transaction.
        one = transitions.one_statement(batch, self.engine.dialect)
        run = self.engine.run_autocommit if one else self.engine.run
        # Steps this batch releases may start here at once, without a fetch (ack_jobs's
        # `take`): each producer of the batch's queues sets slots aside for them meanwhile.
        offers = self._offer_slots(batch) if one and self.engine.dialect == "postgres" else {}
        try:
            take = [(p.queue, p.uuid, n) for p, n in offers.items()]
            result = await run(transitions.ack_jobs, batch, self.name, self.instance, take)
        finally:
            for producer, n in offers.items():
                producer.unreserve(n)
        for producer in offers:
            jobs = result.taken.pop(producer.uuid, None)
            if jobs:
                await producer.adopt(jobs)
        for queue in {a.job.queue for a in batch}:
            freed = self.producers.get(queue)
            if freed is not None:
                freed.slots_freed()
        await self.app.after_ack(result)

    def _offer_slots(self, batch: list[Ack]) -> dict[Producer, int]:
        """Free slots of the batch's queues' producers set aside for the steps and chain links
        the batch releases (at most one per ack, the usual next hop). A limited queue offers none: its
        starts go through the limited fetch."""
        offers: dict[Producer, int] = {}
        wanted: dict[str, int] = {}
        for a in batch:
            if a.job.workflow_id is not None or a.job.chain_key is not None:
                wanted[a.job.queue] = wanted.get(a.job.queue, 0) + 1
        for queue, n in wanted.items():
            producer = self.producers.get(queue)
            if producer is None:
                continue
            n = min(n, producer.free_for_offer())
            if n > 0:
                producer.reserve(n)
                offers[producer] = n
        return offers

    # -- stop -------------------------------------------------------------------------

    async def stop(self, grace: float | None = None) -> None:
        """Stop fetching, wait up to `grace` (default: the app's shutdown_grace) for running
        jobs, take the unfinished ones away (async cancelled, sync flagged: job.cancelled()),
        hand them back to `available` with the usage they recorded, and leave nothing behind."""
        for producer in self.producers.values():
            await producer.stop_fetching()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()
        for abandoned in list(self._abandoned):
            abandoned.cancel()
        running: list[asyncio.Future[Any]] = [t for p in self.producers.values() for t in p.running.values()]
        grace = self.app.shutdown_grace if grace is None else grace
        if running and grace > 0 and not self._hurry.is_set():
            log.info("node %s stopping: waiting up to %gs for %d running jobs", self.name, grace, len(running))
            hurry = asyncio.ensure_future(self._hurry.wait())
            everything = asyncio.ensure_future(asyncio.wait(running))
            await asyncio.wait([hurry, everything], timeout=grace, return_when=asyncio.FIRST_COMPLETED)
            hurry.cancel()
            everything.cancel()
        await self.acker.drain(timeout=max(1.0, min(grace, 5.0)))
        # Take every unfinished attempt away first, in one step on the loop, as a lost lease
        # does (docs/lease.md): async ones cancelled, process ones' children killed, sync ones
        # flagged (job.cancelled()); then give them a moment to end, so one that polls stops
        # before its job is available to another node, and write the hand-back.
        reason = f"node {self.name} shut down before the job finished; it was handed back"
        taken = {p: p.take_away(reason) for p in self.producers.values() if p.running}
        handles = [h for _, _, hs in taken.values() for h in hs]
        settle = 0.0 if self._hurry.is_set() else min(grace, HAND_BACK_WAIT)
        if handles and settle > 0:
            await asyncio.wait(handles, timeout=settle)
        for producer, (jobs, flagged, _) in taken.items():
            used = producer.hand_over(jobs)
            try:
                released, stored = await self.engine.run(
                    transitions.hand_back, [j.id for j in jobs], producer.uuid, self.name, used
                )
                log.warning(
                    "node %s: %d jobs of queue %s did not finish within %gs and were handed back: %s "
                    "(%d sync ones flagged, job.cancelled(): %s)",
                    self.name,
                    len(released),
                    producer.queue,
                    grace,
                    [j.id for j in released][:20],
                    len(flagged),
                    flagged[:20],
                )
                self.app.report_usage(stored)
            except Exception as exc:
                log.error("could not hand back unfinished jobs (%s); the lifeline will rescue them", exc)
        await self.acker.drain(timeout=1.0)
        await self.acker.close()
        try:
            await self.engine.run(store.delete_producers, [p.uuid for p in self.producers.values()])
        except Exception as exc:
            log.warning("could not delete producer rows (%s); the lifeline will", exc)
        await self.leadership.resign()
        if self._listener is not None:
            await self._listener.close()
        for producer in self.producers.values():
            producer.emit("stop")
        self.threads.shutdown(wait=False, cancel_futures=True)
        if self.executor.processes is not None:  # worker processes: their jobs were handed back above
            await asyncio.to_thread(self.executor.close)
        log.info("node %s stopped", self.name)
