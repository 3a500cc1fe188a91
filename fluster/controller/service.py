"""The controller's NATS shell: leadership (standby until it holds the lease, back to standby when it loses
it), the subscriptions of a term, and the loops that run while it leads.

Decisions live in ``state``, ``book``, ``placement`` and ``scheduler`` (pure); handlers in ``jobs`` and
``workers``; a term's view and writers in ``term``. A term starts by rebuilding its view from KV, so a
restart, a failover or a return from standby loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskStatus
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel

from fluster.bus.assets import Assets, ensure_assets, watch_reconnects
from fluster.bus.rpc import serve_requests
from fluster.controller import credentials, jobs, workers
from fluster.controller.dispatch import Dispatcher
from fluster.controller.heap import keep_collections_cheap
from fluster.controller.leader import LeaderLease, lease_holder_id
from fluster.controller.serving import Handler, Replies, inline
from fluster.controller.settings import ControllerSettings
from fluster.controller.term import Term
from fluster.errors import LeadershipLost
from fluster.logs import bind_context
from fluster.observe.components import ControllerMetrics
from fluster.observe.publish import publish_loop
from fluster.protocol.messages import (
    DeregisterWorker,
    Heartbeat,
    IssueJobIdentity,
    JobRecord,
    JobUpdated,
    KillJob,
    RegisterWorker,
    SubmitJob,
)
from fluster.protocol.subjects import CONTROLLER_QUEUE, Subjects

log = logging.getLogger(__name__)

Req = TypeVar("Req", bound=BaseModel)

__all__ = ["Controller", "ControllerSettings"]


class Controller:
    """``await tg.start(Controller(nc, settings).run)``: serves until cancelled, standing by while another
    controller holds the lease."""

    def __init__(self, nc: NATS, settings: ControllerSettings | None = None) -> None:
        self.nc = nc
        self.settings = settings or ControllerSettings()
        self.subjects = Subjects(self.settings.namespace)
        self.term: Term | None = None  # the current term, while this controller leads
        self.terms = 0  # how many terms it has led
        self._assets: Assets | None = None
        self.metrics = ControllerMetrics(lease_holder_id(), lambda: self.term.book if self.term else None)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Lead whenever this controller holds the lease; report readiness once it leads the first time."""
        bind_context(component="controller")
        self._assets = await ensure_assets(self.nc.jetstream(), self.subjects, self.settings.replicas)
        watch_reconnects(self.nc, self._assets)
        lease = LeaderLease(self._assets.leader, lease_holder_id())
        ready: TaskStatus[None] | None = task_status
        while True:
            await lease.acquire()
            try:
                await self._lead(lease, ready)
            except LeadershipLost as exc:
                log.warning("controller stepping down to standby: %s", exc)
            finally:
                self.term = None
                with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                    if lease.valid():
                        await lease.release()
            ready = None

    @property
    def jobs(self) -> dict[str, JobRecord]:
        """The job records of the current term (empty while standing by)."""
        return self.term.book.jobs if self.term is not None else {}

    @property
    def assets(self) -> Assets:
        assert self._assets is not None, "controller not started"
        return self._assets

    # -- a term ---------------------------------------------------------------------------------------

    async def _lead(self, lease: LeaderLease, ready: TaskStatus[None] | None) -> None:
        term = Term(self.nc, self.settings, self.subjects, self.assets, lease)
        term.metrics = self.metrics
        term.cascade = lambda ids, why: jobs.kill_many(term, ids, why)
        term.stop_attempts = lambda job_id, attempts, why: jobs.stop_attempts(term, job_id, attempts, why)
        dispatcher = Dispatcher(term)
        term.dispatch = dispatcher.after
        replies = Replies(self.nc)
        self.assets.on_recreated(term.rewrite_all)
        subscriptions: list[Subscription] = []
        try:
            async with asyncio.TaskGroup() as tasks:
                term.bind(tasks)
                tasks.create_task(term.jobs_kv.run())
                tasks.create_task(term.workers_kv.run())
                tasks.create_task(replies.run())
                tasks.create_task(dispatcher.run())
                await term.load()
                heartbeats = await self._subscribe_all(term, replies, subscriptions)
                await self.nc.flush()
                tasks.create_task(lease.keep())
                if self.settings.owns_process:
                    tasks.create_task(keep_collections_cheap())
                tasks.create_task(jobs.schedule_loop(term))
                tasks.create_task(workers.liveness_loop(term, heartbeats))
                tasks.create_task(
                    publish_loop(self.nc, self.subjects, self.metrics.registry, self.settings.metrics_interval)
                )
                if self.settings.finished_job_retention:
                    tasks.create_task(jobs.forget_loop(term, self.settings.finished_job_retention))
                self.term = term
                self.terms += 1
                term.wake.set()
                log.info(
                    "controller leading namespace=%s jobs=%d workers=%d",
                    self.subjects.namespace,
                    len(term.book.jobs),
                    len(term.book.workers),
                )
                if ready is not None:
                    ready.started()
        except BaseExceptionGroup as group:
            lost = group.subgroup(LeadershipLost)
            if lost is not None and lost.exceptions:
                raise lost.exceptions[0] from None
            raise
        finally:
            term.bind_ended()
            self.assets._on_recreated.remove(term.rewrite_all)
            with anyio.CancelScope(shield=True):
                for sub in subscriptions:
                    try:
                        await sub.unsubscribe()
                    except Exception as exc:  # a closed connection has no subscriptions left
                        log.debug("unsubscribe failed: %r", exc)

    async def _subscribe_all(self, term: Term, replies: Replies, subscriptions: list[Subscription]) -> Subscription:
        """Subscribe every handler of the term; returns the heartbeat subscription (liveness watches its queue)."""
        s = self.subjects
        leading = partial(_check_leading, term)
        handlers: list[tuple[str, type[Any], Handler]] = [
            (s.submit, SubmitJob, lambda m, _: jobs.on_submit(term, m)),
            (s.from_workers("register"), RegisterWorker, lambda m, w: workers.on_register(term, m, w)),
            (s.from_workers("deregister"), DeregisterWorker, lambda m, w: workers.on_deregister(term, m, w)),
            (s.from_workers("update"), JobUpdated, lambda m, w: jobs.on_update(term, m, w)),
            (s.from_workers("heartbeat"), Heartbeat, lambda m, w: workers.on_heartbeat(term, m, w)),
            (s.from_workers("credentials"), IssueJobIdentity, lambda m, w: credentials.on_issue(term, m, w)),
        ]
        heartbeats: Subscription | None = None
        for subject, model, handler in handlers:
            callback = inline(self.nc, replies, model, handler, leading, memo=model is Heartbeat)
            sub = await self.nc.subscribe(subject, queue=CONTROLLER_QUEUE, cb=callback)
            subscriptions.append(sub)
            if model is Heartbeat:
                heartbeats = sub

        async def kill(msg: Msg) -> None:  # it waits for workers to stop their attempts: a task of its own
            async def serve() -> None:
                await serve_requests(msg, KillJob, lambda m: _killing(term, m), what="kill")

            _start(term, serve())

        subscriptions.append(await self.nc.subscribe(s.kill, queue=CONTROLLER_QUEUE, cb=kill))
        assert heartbeats is not None
        return heartbeats


async def _killing(term: Term, msg: KillJob) -> Any:
    _check_leading(term)
    return await jobs.on_kill(term, msg)


def _check_leading(term: Term) -> None:
    """Nothing is answered (a heartbeat's lease grant least of all) by a controller whose lease has lapsed:
    one resuming from a pause handles what queued up meanwhile only after it has stood down."""
    if not term.lease.valid():
        raise LeadershipLost("this controller's lease lapsed: ask again (another controller takes over)")


def _start(term: Term, coro: Any) -> bool:
    try:
        term.spawn(coro)
        return True
    except LeadershipLost:  # a message that arrived as the term ended: its sender retries with the next one
        return False
