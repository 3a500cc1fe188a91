"""Pipelined request/reply: one wildcard reply subscription, correlation ids in the reply subject.

nats-py's ``request()`` wraps every call in ``asyncio.wait_for`` (a task per call), which caps it near 12-14k
calls/s. Here a call is one publish plus a future that the reply callback resolves, and a timer handle for the
timeout, so thousands of calls can be in flight from one task.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from fluster.bus.publish import Publisher
from fluster.errors import NobodyListening, ReplyTimeout

__all__ = ["NoResponders", "ReplyMux", "ReplyTimeout"]

log = logging.getLogger(__name__)

NO_RESPONDERS_STATUS = "503"
TIMEOUT_GRANULARITY_S = 0.05  # a call times out up to this much after its timeout


NoResponders = NobodyListening  # nobody was subscribed to the request's subject when it was published


class ReplyMux:
    """Sends requests with ``<inbox>.<n>`` reply subjects and routes each reply to its caller's future."""

    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self._publisher = Publisher(nc)
        self._prefix = nc.new_inbox()
        self._cut = len(self._prefix) + 1
        self._ids = itertools.count(1)
        self._waiting: dict[str, tuple[asyncio.Future[Msg], int | None]] = {}
        # Timeouts go in 50 ms buckets with one timer each, not a timer per call: asyncio's TimerHandle costs
        # more than the rest of a call's client side, and a bucket's timer serves every call in flight.
        self._buckets: dict[int, set[str]] = {}
        self._sub: Subscription | None = None
        self._lock = asyncio.Lock()

    async def request(self, subject: str, payload: bytes, timeout_s: float | None) -> Msg:
        """Publish a request and wait for its reply.

        Raises:
            NoResponders: nobody listens on ``subject``.
            ReplyTimeout: no reply within ``timeout_s`` seconds.
        """
        token, future = await self._publish(subject, payload, timeout_s)
        try:
            return await future
        finally:
            if not future.done():  # cancelled while waiting
                self._forget(token)

    async def send(self, subject: str, payload: bytes, timeout_s: float | None) -> asyncio.Future[Msg]:
        """Publish a request and return the future of its reply (failing as ``request`` raises)."""
        token, future = await self._publish(subject, payload, timeout_s)
        future.add_done_callback(lambda f: self._forget(token) if f.cancelled() else None)
        return future

    @property
    def sends_now(self) -> bool:
        """Whether ``send_now`` would send (a hint: it may still decline)."""
        return self._sub is not None and self._publisher.armed

    def send_now(self, subject: str, payload: bytes, timeout_s: float | None) -> asyncio.Future[Msg] | None:
        """``send`` without awaiting, for callbacks on the loop: the request is on the socket when this returns.
        None (and nothing sent) when that cannot be done now; ``send`` then can."""
        if not self.sends_now:
            return None
        token, future = self._register(timeout_s)
        if not self._publisher.publish_now(subject, payload, f"{self._prefix}.{token}"):
            self._forget(token)
            return None
        future.add_done_callback(lambda f: self._forget(token) if f.cancelled() else None)
        return future

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None and not self._nc.is_closed:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # a closing connection has already dropped the subscription
                log.debug("reply subscription unsubscribe failed: %r", exc)

    async def _publish(self, subject: str, payload: bytes, timeout_s: float | None) -> tuple[str, asyncio.Future[Msg]]:
        if self._sub is None:
            await self._start()
        token, future = self._register(timeout_s)
        try:
            await self._publisher.publish(subject, payload, f"{self._prefix}.{token}")
        except BaseException:
            self._forget(token)
            raise
        return token, future

    def _register(self, timeout_s: float | None) -> tuple[str, asyncio.Future[Msg]]:
        token = str(next(self._ids))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg] = loop.create_future()
        bucket: int | None = None
        if timeout_s is not None:
            bucket = math.ceil((loop.time() + timeout_s) / TIMEOUT_GRANULARITY_S)
            tokens = self._buckets.get(bucket)
            if tokens is None:
                tokens = self._buckets[bucket] = set()
                loop.call_at(bucket * TIMEOUT_GRANULARITY_S, self._expire, bucket)
            tokens.add(token)
        self._waiting[token] = (future, bucket)
        return token, future

    async def _start(self) -> None:
        async with self._lock:
            if self._sub is None:
                # A callback subscription (run by nats-py's own per-subscription task) rather than a loop in a
                # task of ours: a resolver is usable without entering any context, so it owns no task group.
                self._sub = await self._nc.subscribe(f"{self._prefix}.*", cb=self._on_reply)

    async def _on_reply(self, msg: Msg) -> None:
        token = msg.subject[self._cut :]
        waiting = self._waiting.pop(token, None)
        if waiting is None:
            return  # a reply after its timeout, or a duplicate
        future, bucket = waiting
        self._unbucket(token, bucket)
        if future.done():
            return
        headers = msg.headers
        if headers and headers.get("Status") == NO_RESPONDERS_STATUS and not msg.data:
            future.set_exception(NoResponders())
        else:
            future.set_result(msg)

    def _expire(self, bucket: int) -> None:
        for token in self._buckets.pop(bucket, ()):
            waiting = self._waiting.pop(token, None)
            if waiting is not None and not waiting[0].done():
                waiting[0].set_exception(ReplyTimeout())

    def _forget(self, token: str) -> None:
        waiting = self._waiting.pop(token, None)
        if waiting is not None:
            self._unbucket(token, waiting[1])

    def _unbucket(self, token: str, bucket: int | None) -> None:
        tokens = self._buckets.get(bucket) if bucket is not None else None
        if tokens is not None:
            tokens.discard(token)
