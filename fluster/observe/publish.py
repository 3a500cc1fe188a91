"""The loop that publishes a component's metrics snapshot on its metrics subject every few seconds, and at
once when a dashboard asks (``Subjects.metrics_poll``), so a dashboard that just started need not wait.

Core NATS publishes: a snapshot lost on the way is replaced by the next one; nothing is stored.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import anyio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from fluster.observe.registry import Registry
from fluster.protocol.codec import encode
from fluster.protocol.messages import now_ms
from fluster.protocol.subjects import Subjects

log = logging.getLogger(__name__)

PUBLISH_INTERVAL_S = 5.0


async def publish_loop(nc: NATS, subjects: Subjects, registry: Registry, interval: float = PUBLISH_INTERVAL_S) -> None:
    """Publish ``registry``'s snapshot every ``interval`` seconds (and when polled) until cancelled."""
    subject = subjects.metrics(registry.component, registry.source_id)
    wake = asyncio.Event()

    async def polled(_: Msg) -> None:
        wake.set()

    try:
        poll: Any = await nc.subscribe(subjects.metrics_poll, cb=polled)
    except Exception as exc:  # a connection closing as this starts: publish on the interval alone
        log.debug("metrics poll subscribe failed: %r", exc)
        poll = None
    try:
        while True:
            try:
                snapshot = registry.snapshot(now_ms(), int(interval * 1000))
                await nc.publish(subject, encode(snapshot))
            except Exception as exc:  # a connection going away or a gauge that failed: the next round tries again
                log.debug("metrics publish failed subject=%s: %r", subject, exc)
            with anyio.move_on_after(interval):
                await wake.wait()
            wake.clear()
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(1):
            try:
                if poll is not None:
                    await poll.unsubscribe()
            except Exception as exc:  # a closed connection has no subscriptions left
                log.debug("unsubscribe failed: %r", exc)


async def request_snapshots(nc: NATS, subjects: Subjects) -> None:
    """Ask every component of the namespace to publish its snapshot now."""
    await nc.publish(subjects.metrics_poll, b"")
