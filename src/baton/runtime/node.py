"""A node: one running Baton instance. It owns the producers, the acker, the notification
listener, the heartbeat (producer rows and the leader lease) and the plugin loops, and stops
gracefully: stop fetching, wait `shutdown_grace` for running jobs, hand the rest back."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from typing import TYPE_CHECKING, Any

from ..store import jobs as store
from ..store import transitions
from ..store.jobs import Ack
from .acks import Acker
from .executor import Executor
from .leader import Leadership
from .producer import Producer
from .threads import DaemonThreadPool

if TYPE_CHECKING:
    from ..engines.base import Listener
    from ..host import Host
    from ..plugins.base import Plugin

log = logging.getLogger("baton.node")


class Node:
    """The runtime of one started `Baton` app."""

    def __init__(self, app: Host) -> None:
        self.app = app
        self.engine = app.engine
        self.name = app.node
        self.instance = app.instance
        limits = sum(q["limit"] for q in app.queues.values())
        self.threads = DaemonThreadPool(max(4, limits + 2))
        self.executor = Executor(app.resolve_worker, self.threads, self.name, app.pricing)
        self.acker = Acker(self)
        self.producers: dict[str, Producer] = {}
        self.leadership = Leadership(self, ttl=max(2 * app.refresh_interval, 1.0))
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: Listener | None = None
        self._elect_soon = asyncio.Event()
        self._hurry = asyncio.Event()

    def hurry(self) -> None:
        """Cut a graceful stop short: stop waiting for running jobs and hand them back now."""
        self._hurry.set()

    # -- start ------------------------------------------------------------------------

    async def start(self) -> None:
        for queue, opts in self.app.queues.items():
            self.producers[queue] = Producer(self, queue, opts["limit"], opts["paused"])
        await self.engine.run(store.upsert_producers, [p.row() for p in self.producers.values()])
        self._listener = await self.engine.listen(self.on_notification, on_reconnect=self.wake_all)
        self.acker.start()
        for producer in self.producers.values():
            producer.start()
            producer.emit("start")
        await self.leadership.tick()
        self._tasks.append(asyncio.create_task(self._heartbeat(), name="baton-heartbeat"))
        for plugin in self.app.plugins:
            self._tasks.append(asyncio.create_task(self._plugin_loop(plugin), name=f"baton-plugin-{plugin.name}"))
        log.info(
            "node %s started: queues %s, plugins %s, database %s",
            self.name,
            {q: p.limit for q, p in self.producers.items()},
            [p.name for p in self.app.plugins],
            self.engine.display_url,
        )

    async def _heartbeat(self) -> None:
        interval = self.app.refresh_interval
        while True:
            try:
                await asyncio.wait_for(self._elect_soon.wait(), timeout=interval)
                # Another node resigned: wait a moment (jittered) so nodes do not stampede.
                await asyncio.sleep(random.uniform(0, 0.05))
            except TimeoutError:
                try:
                    await self.engine.run_autocommit(store.upsert_producers, [p.row() for p in self.producers.values()])
                    pending = self.acker.pending_ids()
                    for producer in self.producers.values():
                        await producer.reconcile(pending)
                except Exception as exc:
                    log.warning("producer heartbeat failed (%s)", exc)
            self._elect_soon.clear()
            await self.leadership.tick()

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
            producer = self.producers.get(payload)
            if producer is not None:
                producer.wake()
            return
        try:
            message = json.loads(payload)
        except ValueError:
            log.warning("ignoring malformed %s notification: %.200s", channel, payload)
            return
        if channel == "signal":
            self.on_signal(message)
        elif channel == "workflow":
            self.app.deliver_workflow_event(message)
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
            producer.scale(int(message["limit"]))
        log.info("queue %s on node %s: %s %s", producer.queue, self.name, action, message.get("limit", ""))

    # -- acks -------------------------------------------------------------------------

    async def flush_acks(self, batch: list[Ack]) -> None:
        # Acks of plain jobs are one fenced UPDATE: no transaction needed (and a retry after an
        # ambiguous failure is harmless, the fence drops it). Workflow steps, chain links and
        # debug logs and usage records need their follow-up writes in the same transaction.
        plain = all(
            a.job.workflow_id is None and a.job.chain_key is None and not a.job._logs and a.usage is None for a in batch
        )
        run = self.engine.run_autocommit if plain else self.engine.run
        result = await run(transitions.ack_jobs, batch, self.name, self.instance)
        await self.app.after_ack(result)

    # -- stop -------------------------------------------------------------------------

    async def stop(self, grace: float | None = None) -> None:
        """Stop fetching, wait up to `grace` (default: the app's shutdown_grace) for running
        jobs, hand the unfinished ones back to `available`, and leave nothing behind."""
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
        for producer in self.producers.values():
            unfinished = list(producer.running)
            if not unfinished:
                continue
            for task in producer.running.values():
                task.cancel()
            try:
                released = await self.engine.run(store.release_on_shutdown, unfinished, producer.uuid, self.name)
                log.warning(
                    "node %s: %d jobs of queue %s did not finish within %gs and were handed back: %s",
                    self.name,
                    len(released),
                    producer.queue,
                    grace,
                    [j.id for j in released][:20],
                )
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
        log.info("node %s stopped", self.name)
