"""What keeps the dashboard's view current: one KV watch per bucket (jobs, workers, endpoints, usage) and one
subscription to the namespace's metrics snapshots. No polling: after the initial values, work happens only
when something changes.

A watch that breaks (the server restarted, the bucket was re-created) is made anew; after a reconnect every
watch is restarted, and its initial values replace the view's records (keys deleted meanwhile drop out).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskStatus
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.kv import KeyValue
from pydantic import BaseModel

from fluster.bus.assets import Assets
from fluster.dashboard.view import ClusterView
from fluster.errors import ProtocolError
from fluster.observe.publish import request_snapshots
from fluster.protocol.actor_messages import EndpointRecord
from fluster.protocol.codec import decode
from fluster.protocol.messages import JobRecord, WorkerInfo
from fluster.protocol.observe import MetricsSnapshot, UsageRecord
from fluster.protocol.subjects import Subjects

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
_DELETED = ("DEL", "PURGE")
REWATCH_DELAY_S = 1.0


class Feeds:
    """``await tg.start(Feeds(nc, subjects, assets, view).run)``: ready once every bucket's values are in."""

    def __init__(self, nc: NATS, subjects: Subjects, assets: Assets, view: ClusterView) -> None:
        self.nc = nc
        self.subjects = subjects
        self.assets = assets
        self.view = view
        self._scopes: set[anyio.CancelScope] = set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        v = self.view
        buckets: list[tuple[str, KeyValue, type[Any], Callable[[str, Any], None], Callable[[], Iterable[str]]]] = [
            ("jobs", self.assets.jobs, JobRecord, v.put_job, lambda: v.jobs),
            ("workers", self.assets.workers, WorkerInfo, v.put_worker, lambda: v.workers),
            ("endpoints", self.assets.endpoints, EndpointRecord, v.put_endpoint, lambda: v.endpoints),
            ("usage", self.assets.usage, UsageRecord, v.put_usage, lambda: v.usage),
        ]
        metrics = await self.nc.subscribe(self.subjects.metrics_all, cb=self._on_metrics)
        self._chain_reconnect()
        try:
            async with anyio.create_task_group() as tg:
                for name, kv, model, apply, keys in buckets:
                    await tg.start(self._follow, name, kv, model, apply, keys)
                await request_snapshots(self.nc, self.subjects)
                task_status.started()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                try:
                    await metrics.unsubscribe()
                except Exception as exc:  # a closed connection has no subscriptions left
                    log.debug("unsubscribe failed: %r", exc)

    def rewatch(self) -> None:
        """Restart every watch (after a reconnect: a watch's consumer may be gone with a restarted server)."""
        for scope in list(self._scopes):
            scope.cancel()

    async def _follow(
        self,
        name: str,
        kv: KeyValue,
        model: type[M],
        apply: Callable[[str, M | None], None],
        keys: Callable[[], Iterable[str]],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        ready: list[TaskStatus[None]] = [task_status]
        while True:
            failed = True
            with anyio.CancelScope() as scope:
                self._scopes.add(scope)
                try:
                    await self._watch(name, kv, model, apply, keys, ready)
                except Exception as exc:  # the server went away, the bucket was deleted: watch again
                    log.warning("dashboard watch of %s ended: %r; watching again", name, exc)
                finally:
                    self._scopes.discard(scope)
                failed = not scope.cancel_called
            if failed:  # not a restart asked for by a reconnect: pause before watching again
                await anyio.sleep(REWATCH_DELAY_S)

    async def _watch(
        self,
        name: str,
        kv: KeyValue,
        model: type[M],
        apply: Callable[[str, M | None], None],
        keys: Callable[[], Iterable[str]],
        ready: list[TaskStatus[None]],
    ) -> None:
        watcher = await kv.watch(">")
        seen: set[str] | None = set()  # keys of the initial values; None once they are all in
        try:
            async for entry in watcher:
                if entry is None:
                    if seen is not None:
                        for gone in [k for k in keys() if k not in seen]:
                            apply(gone, None)
                        seen = None
                        self.view.loaded.add(name)
                        if ready:
                            ready.pop().started()
                    continue
                if seen is not None:
                    seen.add(entry.key)
                if entry.operation in _DELETED or not entry.value:
                    apply(entry.key, None)
                    continue
                try:
                    apply(entry.key, decode(entry.value, model))
                except ProtocolError as exc:
                    log.error("dashboard: undecodable %s value at key %s: %s", name, entry.key, str(exc)[:200])
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                try:
                    await watcher.stop()  # type: ignore[no-untyped-call]
                except Exception as exc:  # the connection went first: nothing to stop
                    log.debug("watcher stop failed: %r", exc)

    async def _on_metrics(self, msg: Msg) -> None:
        try:
            snapshot = decode(msg.data, MetricsSnapshot)
        except ProtocolError as exc:
            log.warning("dashboard: undecodable metrics snapshot on %s: %s", msg.subject, str(exc)[:200])
            return
        # a source speaks for itself only: its subject names its component and id
        if msg.subject != self.subjects.metrics(snapshot.component, snapshot.source_id):
            log.warning("dashboard: metrics snapshot on %s names another source", msg.subject)
            return
        self.view.put_metrics(snapshot)

    def _chain_reconnect(self) -> None:
        previous = self.nc._reconnected_cb

        async def reconnected() -> None:
            if previous is not None:
                await previous()
            self.rewatch()

        self.nc._reconnected_cb = reconnected
