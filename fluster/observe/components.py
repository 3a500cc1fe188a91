"""The metrics each component keeps: one small object per component, holding the series its hot paths update
(looked up once, here) and the gauges read when a snapshot is taken.

Hooks in the components are one line each: ``metrics.submits.value += 1``, ``metrics.dispatch.observe(s)``.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter as Tally
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from fluster.observe import names as n
from fluster.observe.registry import Counter, Labels, Registry, one

if TYPE_CHECKING:
    from fluster.controller.book import Book

T = TypeVar("T")


def source_id(text: str) -> str:
    """``text`` as a subject token (host names carry dots)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", text)[:120] or uuid.uuid4().hex[:8]


class ControllerMetrics:
    """Submits, dispatch latency, queue wait, scheduling passes, heartbeats; jobs and workers by state."""

    def __init__(self, controller_id: str, book: Callable[[], Book | None] = lambda: None) -> None:
        self.registry = r = Registry("controller", source_id(controller_id))
        self.submits = r.counter(n.SUBMITS.name)
        self.heartbeats = r.counter(n.HEARTBEATS.name)
        self.dispatch = r.histogram(n.DISPATCH_LATENCY.name)
        self.queue_wait = r.histogram(n.QUEUE_WAIT.name)
        self.scheduling = r.histogram(n.SCHEDULING_PASS.name)
        self._book = book
        r.gauge(n.CONTROLLER_JOBS.name, self._jobs)
        r.gauge(n.CONTROLLER_WORKERS.name, self._workers)

    def timed_pass(self, schedule: Callable[[T], object], arg: T) -> None:
        """Run one scheduling pass, ``schedule(arg)``, and time it."""
        start = time.perf_counter()
        try:
            schedule(arg)
        finally:
            self.scheduling.observe(time.perf_counter() - start)

    def assigned(self, submitted_at_ms: int, attempt: int, now_ms: int) -> None:
        if attempt == 0:
            self.queue_wait.observe(max(0, now_ms - submitted_at_ms) / 1000)

    def _jobs(self) -> Iterable[tuple[Labels, float]]:
        book = self._book()
        if book is None:
            return []
        return [((("state", state.value),), float(count)) for state, count in book.states.items() if count]

    def _workers(self) -> Iterable[tuple[Labels, float]]:
        book = self._book()
        if book is None:
            return []
        now = time.monotonic()
        states = Tally("backoff" if entry.unhealthy_until > now else "alive" for entry in book.workers.values())
        return [((("state", state),), float(count)) for state, count in states.items()]


class WorkerMetrics:
    def __init__(self, worker_id: str, running: Callable[[], int]) -> None:
        self.registry = r = Registry("worker", source_id(worker_id))
        self.heartbeats = r.counter(n.WORKER_HEARTBEATS.name)
        self.attempts = r.counter(n.WORKER_ATTEMPTS.name)
        self.log_lines = r.counter(n.WORKER_LOG_LINES.name)
        self.answered_at = 0.0
        r.gauge(n.WORKER_RUNNING.name, lambda: one(running()))
        r.gauge(n.WORKER_HEARTBEAT_AT.name, lambda: one(self.answered_at) if self.answered_at else [])

    def heartbeat(self, answered: bool) -> None:
        self.heartbeats.value += 1
        if answered:
            self.answered_at = time.time()


class ActorMetrics:
    """Calls and errors per actor of one ``ActorServer``; each actor's counters are looked up at registration."""

    def __init__(self, server_id: str | None = None) -> None:
        self.registry = Registry("actor", source_id(server_id or uuid.uuid4().hex[:12]))
        self._running: dict[str, Callable[[], int]] = {}
        self.registry.gauge(n.ACTOR_RUNNING.name, self._running_calls)

    def actor(self, name: str, running: Callable[[], int] | None = None) -> tuple[Counter, Counter]:
        """The (calls, errors) counters of actor ``name``."""
        if running is not None:
            self._running[name] = running
        return self.registry.counter(n.ACTOR_CALLS.name, actor=name), self.registry.counter(
            n.ACTOR_ERRORS.name, actor=name
        )

    def _running_calls(self) -> Iterable[tuple[Labels, float]]:
        return [((("actor", name),), float(read())) for name, read in self._running.items()]


class PoolMetrics:
    """A ``WorkerPool``'s figures, read from its ``status()`` when a snapshot is taken (nothing on its hot path)."""

    def __init__(self, pool_id: str, status: Callable[[], Any]) -> None:
        self.registry = r = Registry("pool", source_id(pool_id))
        self._status = status
        pool = (("pool", self.registry.source_id),)
        r.gauge(n.POOL_QUEUED.name, lambda: [(pool, float(self._status().queued))])
        r.gauge(n.POOL_IN_FLIGHT.name, lambda: [(pool, float(self._status().in_flight))])
        r.gauge(n.POOL_EXECUTORS.name, self._executors)
        r.counter_fn(n.POOL_TASKS.name, self._outcomes)  # counts the pool keeps anyway: read, not duplicated

    def _outcomes(self) -> Iterable[tuple[Labels, float]]:
        s = self._status()
        pool = ("pool", self.registry.source_id)
        return [((pool, ("outcome", o)), float(getattr(s, o))) for o in _OUTCOMES]

    def _executors(self) -> Iterable[tuple[Labels, float]]:
        s = self._status()
        pool = ("pool", self.registry.source_id)
        return [
            ((pool, ("state", "ready")), float(s.ready)),
            ((pool, ("state", "busy")), float(s.busy)),
            ((pool, ("state", "starting")), float(s.starting)),
        ]


_OUTCOMES = ("completed", "failed", "retried")
