"""The controller's writes to KV: pipelined, coalesced per key, in order per key, and fenced by the lease.

A handler changes the in-memory view at once and hands the new value to ``KvWriter.put``, which returns a
future that completes once JetStream has stored that value (or a later one of the same key, which contains
it: a record is the whole state of its job). Writes leave without waiting for each other: many publishes in
flight, their acknowledgements gathered on one inbox (a put awaited one after another under a lock capped the
controller at a few hundred writes a second; pipelined, the server's disk is the limit). Per key, one write is
in flight at a time and the newest waiting value replaces older waiting ones, so a key's writes land in order.

Before anything is sent, ``fence()`` must say the lease is still held: a controller paused past its lease
sends nothing when it resumes, and every waiting write fails with ``LeadershipLost``.

A value may be given as a function that encodes it, called only when the value is sent: a value superseded
before it leaves (a short job's lazily stored RUNNING, replaced by its SUCCEEDED) is never encoded. Encoding a
job record is most of a commit's cost (~10 µs), and in ``bench/scale.py`` (5,000 workers, 30,000 no-op jobs)
about 19,000 of the 120,000 commits were superseded unsent.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeAlias

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from fluster.bus.retry import backoff
from fluster.errors import LeadershipLost
from fluster.protocol.subjects import KV_OPERATION_HEADER, ROLLUP_HEADER

log = logging.getLogger(__name__)

WINDOW = 4096  # writes in flight at once
LAZY_S = 0.1  # how long a lazy write waits to be superseded
ACK_TIMEOUT_S = 5.0  # a write not acknowledged within this is sent again (a put of the same value is harmless)


Value: TypeAlias = bytes | Callable[[], bytes]  # the bytes, or what makes them when the write is sent


@dataclass
class _Op:
    data: Value
    headers: dict[str, str] | None
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    failures: int = 0


class KvWriter:
    """Writes to one KV bucket for the controller; ``run()`` sends them (start it in the controller's task group)."""

    def __init__(
        self,
        nc: NATS,
        bucket: str,
        fence: Callable[[], bool],
        repair: Callable[[], Awaitable[object]],
    ) -> None:
        self._nc = nc
        self._prefix = f"$KV.{bucket}."
        self._fence = fence
        self._repair = repair
        self._waiting: dict[str, _Op] = {}  # the newest unsent value per key
        self._ready: dict[str, None] = {}  # waiting keys with no write in flight, oldest first (an ordered set)
        self._retrying: dict[str, _Op] = {}  # keys whose failed write waits to be sent again (still in flight)
        self._in_flight: dict[str, _Op] = {}
        self._by_token: dict[str, str] = {}
        # (sent at, token) of writes in flight, oldest first: one sweep every ACK_TIMEOUT_S / 4 finds those not
        # acknowledged in time, where a timer per write (created, then cancelled by its ack) cost ~1.5% of the
        # controller's CPU in bench/scale.py
        self._sent: deque[tuple[float, str]] = deque()
        self._sweep: asyncio.TimerHandle | None = None
        # key -> (when it is due, its value), in the order the keys became lazy, which is the order they fall
        # due (a key put lazily again keeps its place and its time)
        self._lazy: dict[str, tuple[float, Value]] = {}
        self._lazy_timer: asyncio.TimerHandle | None = None
        self._inbox = nc.new_inbox()
        self._tokens = itertools.count(1)
        self._wake = asyncio.Event()
        self._stopped: BaseException | None = None

    # -- the interface --------------------------------------------------------------------------------

    def put(self, key: str, data: Value) -> asyncio.Future[None]:
        return self._enqueue(key, data, None)

    def put_lazily(self, key: str, data: Value) -> None:
        """Write ``data`` ``LAZY_S`` (to a tenth more) after the key's first lazy value, unless a newer value
        of the key comes first (which supersedes it): for changes nobody waits on (an attempt started), so
        that a short job's RUNNING and SUCCEEDED land as one write. Each key waits its own ``LAZY_S``: one
        timer for the whole batch (the first version) gave keys made lazy late in it almost no wait, and at
        1,000 workers x 10,000 jobs of 0-100 ms only 23% of the RUNNING writes were superseded."""
        if self._stopped is not None:
            return
        waiting = self._waiting.get(key)
        if waiting is not None:  # a write of the key is due anyway: this value goes with it
            waiting.data, waiting.headers = data, None
            return
        loop = asyncio.get_running_loop()
        lazy = self._lazy.get(key)
        self._lazy[key] = (loop.time() + LAZY_S if lazy is None else lazy[0], data)
        if self._lazy_timer is None:
            self._lazy_timer = loop.call_later(LAZY_S, self._promote_lazy)

    def written(self, key: str) -> asyncio.Future[None]:
        """A future that completes once what has been put for ``key`` so far is stored (at once when nothing
        of it waits)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._stopped is not None:
            future.set_exception(self._stopped)
            return future
        lazy = self._lazy.pop(key, None)
        if lazy is not None:
            return self._enqueue(key, lazy[1], None)
        pending = self._waiting.get(key) or self._in_flight.get(key) or self._retrying.get(key)
        if pending is None:
            future.set_result(None)
        else:
            pending.waiters.append(future)
        return future

    def delete(self, key: str) -> asyncio.Future[None]:
        return self._enqueue(key, b"", {KV_OPERATION_HEADER: "DEL"})

    def purge(self, key: str) -> asyncio.Future[None]:
        return self._enqueue(key, b"", {KV_OPERATION_HEADER: "PURGE", ROLLUP_HEADER: "sub"})

    @property
    def backlog(self) -> int:
        return len(self._waiting) + len(self._in_flight)

    async def run(self) -> None:
        sub = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_ack)
        try:
            while True:
                if not self._ready or len(self._in_flight) >= WINDOW:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                if not self._fence():
                    self.stop(LeadershipLost("the controller lease lapsed: its writes are not sent"))
                    raise self._stopped or LeadershipLost("lease lapsed")
                await self._send_ready()
        finally:
            self.stop(LeadershipLost("the controller stopped leading"))
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection is closing: nothing to unsubscribe
                log.debug("ack subscription unsubscribe failed: %r", exc)

    def stop(self, error: BaseException) -> None:
        """Fail every write not yet acknowledged with ``error``; later puts fail at once."""
        if self._stopped is None:
            self._stopped = error
        for op in list(self._waiting.values()):
            _fail(op, error)
        self._waiting.clear()
        self._ready.clear()
        self._retrying.clear()
        for op in self._in_flight.values():
            _fail(op, error)
        self._in_flight.clear()
        self._by_token.clear()
        self._sent.clear()
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        self._lazy.clear()
        if self._lazy_timer is not None:
            self._lazy_timer.cancel()
            self._lazy_timer = None

    # -- internals ------------------------------------------------------------------------------------

    def _enqueue(self, key: str, data: Value, headers: dict[str, str] | None) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._stopped is not None:
            future.set_exception(self._stopped)
            return future
        self._lazy.pop(key, None)  # superseded
        previous = self._waiting.pop(key, None)
        op = _Op(data, headers)
        if previous is not None:  # never sent: the new value supersedes it, and answers its waiters
            op.waiters = previous.waiters
        op.waiters.append(future)
        self._waiting[key] = op
        self._mark_ready(key)
        return future

    def _mark_ready(self, key: str) -> None:
        if key not in self._in_flight and key not in self._retrying:
            self._ready[key] = None
            self._wake.set()

    def _promote_lazy(self) -> None:
        """Send the lazy values that are due; O(those), then the timer is set for the next (at most ten
        times per ``LAZY_S``)."""
        self._lazy_timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        lazy = self._lazy
        while lazy:
            key = next(iter(lazy))
            due, data = lazy[key]
            if due > now:
                self._lazy_timer = loop.call_later(max(due - now, LAZY_S / 10), self._promote_lazy)
                return
            del lazy[key]
            if key not in self._waiting:
                self._waiting[key] = _Op(data, None)
                self._mark_ready(key)

    async def _send_ready(self) -> None:
        """Send waiting values of keys with nothing in flight, oldest first, while the window allows: O(what is
        sent), whatever else waits."""
        while self._ready and len(self._in_flight) < WINDOW:
            key = next(iter(self._ready))
            del self._ready[key]
            await self._send(key, self._waiting.pop(key))

    async def _send(self, key: str, op: _Op) -> None:
        token = str(next(self._tokens))
        loop = asyncio.get_running_loop()
        self._sent.append((loop.time(), token))
        if self._sweep is None:
            self._sweep = loop.call_later(ACK_TIMEOUT_S / 4, self._sweep_unacknowledged)
        self._in_flight[key] = op
        self._by_token[token] = key
        if not isinstance(op.data, bytes):
            op.data = op.data()  # encoded once: a retry sends the same bytes
        try:
            await self._nc.publish(self._prefix + key, op.data, reply=f"{self._inbox}.{token}", headers=op.headers)
        except Exception as exc:  # reconnecting with a full buffer, closed: try again later
            log.warning("kv write key=%s not sent: %r", key, exc)
            self._retry(token, key)

    async def _on_ack(self, msg: Msg) -> None:
        token = msg.subject.rsplit(".", 1)[-1]
        key = self._by_token.pop(token, None)
        if key is None:
            return  # a late ack of a write already sent again
        op = self._in_flight.pop(key)
        status = (msg.headers or {}).get("Status") if msg.headers else None
        error = status or (_ack_error(msg.data) if b'"error"' in msg.data else None)
        if error:
            log.warning("kv write key=%s refused (%s); retrying", key, error)
            if status == "503":  # no stream: the bucket is gone; re-create it before writing again
                await self._repair()
            self._resend_later(key, op)
            return
        for waiter in op.waiters:
            if not waiter.done():
                waiter.set_result(None)
        if key in self._waiting:  # a newer value waited for this ack
            self._mark_ready(key)
        self._wake.set()

    def _sweep_unacknowledged(self) -> None:
        """Send again the writes not acknowledged within ``ACK_TIMEOUT_S`` (within a quarter of it more)."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        cutoff = loop.time() - ACK_TIMEOUT_S
        sent = self._sent
        while sent and (sent[0][1] not in self._by_token or sent[0][0] <= cutoff):
            _, token = sent.popleft()
            if token in self._by_token:
                self._timed_out(token)
        if sent:
            self._sweep = loop.call_later(ACK_TIMEOUT_S / 4, self._sweep_unacknowledged)

    def _timed_out(self, token: str) -> None:
        key = self._by_token.pop(token, None)
        if key is not None:
            log.warning("kv write key=%s not acknowledged in %gs; sending it again", key, ACK_TIMEOUT_S)
            self._retry(token, key)

    def _retry(self, token: str, key: str) -> None:
        self._by_token.pop(token, None)
        found = self._in_flight.pop(key, None)
        if found is not None:
            self._resend_later(key, found)

    def _resend_later(self, key: str, op: _Op) -> None:
        self._retrying[key] = op
        op.failures += 1
        asyncio.get_running_loop().call_later(backoff(op.failures, 0.05, 2.0), self._requeue, key, op)

    def _requeue(self, key: str, op: _Op) -> None:
        self._retrying.pop(key, None)
        if self._stopped is not None:
            _fail(op, self._stopped)
            return
        newer = self._waiting.get(key)
        if newer is not None:  # superseded while waiting to be sent again
            newer.waiters[:0] = op.waiters
        else:
            self._waiting[key] = op
        self._mark_ready(key)


def _ack_error(data: bytes) -> str | None:
    try:
        reply = json.loads(data)
    except ValueError:
        return f"unreadable ack {data[:80]!r}"
    error = reply.get("error") if isinstance(reply, dict) else None
    return str(error) if error else None


def _fail(op: _Op, error: BaseException) -> None:
    for waiter in op.waiters:
        if not waiter.done():
            waiter.set_exception(error)
            waiter.exception()  # retrieved: a write nobody awaits must not log "exception never retrieved"
