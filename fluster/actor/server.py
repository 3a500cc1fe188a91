"""``ActorServer``: serves the public methods of registered objects on their actor subjects.

Each name answers on ``Subjects.actor(name)`` in queue group ``name`` (a load-balanced pool across servers)
and on its endpoint's own subject (direct and broadcast calls). Up to ``max_concurrency`` calls of one actor
run at once; the excess waits in the subscription's queue (``fluster.actor.dispatcher``, one per actor).
Endpoints are recorded in KV by ``registry``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Collection
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup, TaskStatus
from nats.aio.subscription import DEFAULT_SUB_PENDING_MSGS_LIMIT, Subscription

from fluster.actor import registry
from fluster.actor.dispatcher import Dispatcher
from fluster.actor.invoke import Invoker
from fluster.actor.streams import Streams
from fluster.logs import job_log_fields
from fluster.observe.components import ActorMetrics
from fluster.observe.publish import publish_loop
from fluster.protocol.actor_messages import EndpointRecord
from fluster.protocol.ids import EndpointId, new_endpoint_id, validate_name
from fluster.protocol.messages import now_ms

if TYPE_CHECKING:
    from fluster.actor.resolver import ClusterResolver
    from fluster.client.cluster import ClusterClient

log = logging.getLogger(__name__)

STOP_GRACE_S = 2.0


@dataclass(frozen=True)
class ActorContext:
    """Given to methods with a parameter annotated ``ActorContext``: who they are and how to call others."""

    actor: str
    endpoint_id: str
    job_id: str | None
    client: ClusterClient
    resolver: ClusterResolver


@dataclass
class _Registration:
    name: str
    obj: object
    max_concurrency: int
    record: EndpointRecord
    threaded: bool = True
    max_pending: int | None = None
    claim_revision: int | None = None
    control: frozenset[str] = frozenset()


@dataclass
class _Live:
    """What a serving server has set up, so stopping undoes exactly that."""

    registrations: list[_Registration] = field(default_factory=list)
    dispatchers: list[Dispatcher] = field(default_factory=list)
    subscriptions: list[Subscription] = field(default_factory=list)


class ActorServer:
    """Serves registered objects until cancelled: ``await server.serve()`` or ``async with server:``."""

    def __init__(self, client: ClusterClient, resolver: ClusterResolver | None = None) -> None:
        from fluster.actor.resolver import ClusterResolver

        self.client = client
        self.resolver = resolver or ClusterResolver(client)
        self.values = self.resolver.values
        self.streams = Streams()  # the generators its methods returned, pulled by their callers
        self._registrations: dict[str, _Registration] = {}
        self._serving = False
        self._started: tuple[TaskGroup, _Live] | None = None
        self.metrics = ActorMetrics()

    def register(
        self,
        name: str,
        obj: object,
        max_concurrency: int = 1,
        exclusive: bool = False,
        metadata: dict[str, str] | None = None,
        threaded: bool = True,
        max_pending_calls: int | None = None,
        control_methods: Collection[str] = (),
    ) -> EndpointId:
        """Serve ``obj``'s public methods as actor ``name`` once the server runs; returns the endpoint id.

        Sync methods run in worker threads; ``threaded=False`` runs them on the server's event loop instead,
        which saves a thread hand-off per call (~0.1-0.25 ms on a busy machine) but stalls every actor of
        this server, and its heartbeat, while one runs: only for methods that return in microseconds.

        ``exclusive`` makes the server fail to start (``ActorNameTaken``) when another live endpoint serves
        the name, and keeps other servers from joining it while this one lives.

        ``control_methods`` are answered as they arrive, outside ``max_concurrency`` (a method that cancels
        a running call, say): they must return at once.

        ``max_pending_calls`` bounds the calls queued for the actor (beyond those running): past it, NATS
        drops calls (a slow consumer). A plain call that is dropped times out; a tracked one (WorkerPool
        batches, context actor calls) is noticed by its probe and sent again.

        Raises:
            ValueError: a bad name, a name registered twice, or ``max_concurrency`` < 1.
            RuntimeError: the server is already serving.
        """
        validate_name(name, "actor name")
        if self._serving:
            raise RuntimeError("register() every actor before serve() or `async with server`")
        if name in self._registrations:
            raise ValueError(f"actor {name!r} is already registered on this server")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        endpoint_id = new_endpoint_id()
        job = self.client.job
        now = now_ms()
        meta = {"host": socket.gethostname(), "pid": str(os.getpid())}
        meta.update(metadata or {})
        record = EndpointRecord(
            name=name,
            endpoint_id=endpoint_id,
            subject=self.client.subjects.actor_endpoint(name, endpoint_id),
            job_id=job.job_id if job else None,
            worker_id=(job.worker_id or None) if job else None,
            metadata=meta,
            exclusive=exclusive,
            registered_ms=now,
            refreshed_ms=now,
        )
        self._registrations[name] = _Registration(
            name, obj, max_concurrency, record, threaded, max_pending_calls, control=frozenset(control_methods)
        )
        return endpoint_id

    @property
    def endpoints(self) -> list[EndpointRecord]:
        return [r.record for r in self._registrations.values()]

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; reports readiness once every actor is subscribed and recorded in KV.

        Raises:
            ActorNameTaken: an exclusive registration found its name served (or the reverse).
        """
        live = await self._open()
        try:
            async with anyio.create_task_group() as tg:
                self._start_loops(tg, live)
                task_status.started()
        finally:
            await self._close(live)

    async def __aenter__(self) -> ActorServer:
        live = await self._open()
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._started = (tg, live)
        self._start_loops(tg, live)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        tg, live = self._started or (None, None)
        self._started = None
        if tg is None or live is None:
            return None
        tg.cancel_scope.cancel()
        try:
            return await tg.__aexit__(exc_type, exc, tb)
        finally:
            await self._close(live)

    # -- internals --------------------------------------------------------------------------------------

    async def _open(self) -> _Live:
        """Claim, subscribe and publish every registration; on failure, undo what was done and raise."""
        if self._serving:
            raise RuntimeError("this ActorServer is already serving")
        self._serving = True
        self.streams.bind(asyncio.get_running_loop())
        kv = self.client.assets.endpoints
        live = _Live()
        try:
            for reg in self._registrations.values():
                if reg.record.exclusive:
                    reg.claim_revision = await registry.claim(kv, reg.record)
                live.registrations.append(reg)
                invoker = Invoker(self, reg)
                dispatcher = Dispatcher(
                    self.client.nc,
                    invoker,
                    self.values,
                    reg.max_concurrency,
                    self.metrics,
                    job_log_fields(self.client.job),
                )
                live.dispatchers.append(dispatcher)
                pool_subject = self.client.subjects.actor(reg.name)
                for subject, queue in ((pool_subject, reg.name), (reg.record.subject, "")):
                    sub = await self.client.nc.subscribe(
                        subject,
                        queue=queue,
                        cb=dispatcher.dispatch,
                        pending_msgs_limit=reg.max_pending or DEFAULT_SUB_PENDING_MSGS_LIMIT,
                    )
                    live.subscriptions.append(sub)
            await self.client.nc.flush()  # subscribed at the server before any caller can find us
            for reg in live.registrations:
                await registry.publish(kv, reg.record)
                await registry.check_exclusive(kv, reg.record)
                if reg.claim_revision is not None:
                    # Rewrite the claim after the endpoint key, as every refresh does, so that the claim
                    # never expires before the endpoint it protects: once it is gone, the name is free.
                    reg.claim_revision = await registry.refresh_claim(kv, reg.record, reg.claim_revision)
                log.info("actor serving name=%s endpoint=%s", reg.name, reg.record.endpoint_id)
        except BaseException:
            await self._close(live)
            raise
        return live

    def _start_loops(self, tg: TaskGroup, live: _Live) -> None:
        for dispatcher in live.dispatchers:
            tg.start_soon(dispatcher.run)
        tg.start_soon(self._refresh, live.registrations)
        tg.start_soon(publish_loop, self.client.nc, self.client.subjects, self.metrics.registry)

    async def _close(self, live: _Live) -> None:
        with anyio.move_on_after(STOP_GRACE_S, shield=True):
            await self._withdraw(live.registrations, live.subscriptions)
        for dispatcher in live.dispatchers:
            dispatcher.invoker.close()
        self.streams.close_all()
        self._serving = False

    async def _refresh(self, registrations: list[_Registration]) -> None:
        kv = self.client.assets.endpoints
        while True:
            await anyio.sleep(registry.REFRESH_S)
            if self.client.nc.is_closed:  # closed under us: nothing can be refreshed again (the TTL ends them)
                log.warning("actor server's connection is closed: endpoints are no longer refreshed")
                return
            for reg in registrations:
                reg.record = reg.record.model_copy(update={"refreshed_ms": now_ms()})
                try:
                    await registry.publish(kv, reg.record)
                    if reg.claim_revision is not None:
                        reg.claim_revision = await registry.refresh_claim(kv, reg.record, reg.claim_revision)
                        if reg.claim_revision is None:
                            log.error("actor lost its exclusive claim name=%s", reg.name)
                except anyio.get_cancelled_exc_class():
                    raise
                except Exception as exc:  # NATS briefly away, or the bucket lost: the next refresh tries again
                    log.warning("endpoint refresh failed name=%s: %r", reg.name, exc)
                    await self.client.assets.repair()

    async def _withdraw(self, registrations: list[_Registration], subs: list[Subscription]) -> None:
        kv = self.client.assets.endpoints
        for reg in registrations:
            try:
                await registry.withdraw(kv, reg.record)
            except Exception as exc:  # the TTL removes it anyway
                log.warning("cannot withdraw endpoint name=%s: %r", reg.name, exc)
        for sub in subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # a closed connection has no subscriptions left
                log.debug("unsubscribe failed: %r", exc)
