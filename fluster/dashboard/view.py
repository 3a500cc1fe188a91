"""The dashboard's view of a namespace: every record of the jobs, workers, endpoints and usage buckets, and
the latest metrics snapshot of each component, kept current one event at a time.

Pure: no NATS (``feeds`` applies the events), clocks passed in. Each event costs O(1) (a dict update and the
indexes: state counts, children, jobs by worker); a page reads only what it shows. Readers wait for changes
by topic (``jobs``, ``workers``, ``actors``, ``usage``, ``metrics``) through ``Changes``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from fluster.protocol.actor_messages import EndpointRecord
from fluster.protocol.messages import JobRecord, JobState, WorkerInfo
from fluster.protocol.observe import MetricsSnapshot, UsageRecord

TOPICS = ("jobs", "workers", "actors", "usage", "metrics")
HOLDING = (JobState.BUILDING, JobState.RUNNING)  # states in which an attempt holds its worker's resources
SOURCE_GRACE_S = 10.0  # a component silent for three intervals plus this is forgotten
HEARTBEAT_SILENT_S = 15.0  # a worker not answered by a controller for this long shows as silent


class Changes:
    """A version per topic; ``wait(seen)`` returns once any topic is newer than ``seen``."""

    def __init__(self) -> None:
        self.version = 0
        self.topics: dict[str, int] = dict.fromkeys(TOPICS, 0)
        self.closed = False
        self._event = asyncio.Event()

    def close(self) -> None:
        """Wake every waiter for good (the dashboard is stopping)."""
        self.closed = True
        self._event.set()

    def mark(self, topic: str) -> None:
        self.version += 1
        self.topics[topic] = self.version
        self._event.set()

    async def wait(self, seen: int) -> int:
        while self.version <= seen and not self.closed:
            self._event.clear()
            await self._event.wait()
        return self.version

    def since(self, seen: int) -> list[str]:
        return [topic for topic, version in self.topics.items() if version > seen]


@dataclass
class Source:
    snapshot: MetricsSnapshot
    received: float  # monotonic seconds


@dataclass
class ClusterView:
    namespace: str
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    workers: dict[str, WorkerInfo] = field(default_factory=dict)
    endpoints: dict[str, EndpointRecord] = field(default_factory=dict)  # endpoint key -> record
    usage: dict[str, UsageRecord] = field(default_factory=dict)  # job id -> its latest attempt's usage
    sources: dict[tuple[str, str], Source] = field(default_factory=dict)  # (component, source id) -> snapshot
    children: dict[str, set[str]] = field(default_factory=dict)
    states: Counter[JobState] = field(default_factory=Counter)
    by_state: dict[JobState, set[str]] = field(default_factory=dict)
    on_worker: dict[str, set[str]] = field(default_factory=dict)  # worker id -> job ids holding it
    loaded: set[str] = field(default_factory=set)  # buckets whose initial values are all in
    changes: Changes = field(default_factory=Changes)
    _order: list[str] = field(default_factory=list)  # job ids by submission (seq), rebuilt when jobs come or go
    _order_stale: bool = False
    _roots: list[str] = field(default_factory=list)

    # -- events ---------------------------------------------------------------------------------------

    def put_job(self, job_id: str, record: JobRecord | None) -> None:
        old = self.jobs.pop(job_id, None)
        if old is not None:
            self.states[old.state] -= 1
            self.by_state[old.state].discard(job_id)
            self._unplace(old)
            if record is None:
                parent = old.request.parent_id
                if parent is not None:
                    self.children.get(parent, set()).discard(job_id)
        if record is not None:
            self.jobs[job_id] = record
            self.states[record.state] += 1
            self.by_state.setdefault(record.state, set()).add(job_id)
            self._place(record)
            parent = record.request.parent_id
            if parent is not None:
                self.children.setdefault(parent, set()).add(job_id)
        if (old is None) != (record is None) or (old is not None and record is not None and old.seq != record.seq):
            self._order_stale = True
        self.changes.mark("jobs")

    def put_worker(self, worker_id: str, info: WorkerInfo | None) -> None:
        if info is None:
            self.workers.pop(worker_id, None)
        else:
            self.workers[worker_id] = info
        self.changes.mark("workers")

    def put_endpoint(self, key: str, record: EndpointRecord | None) -> None:
        if "." not in key:
            return  # an exclusive claim of a name, not an endpoint
        old = self.endpoints.pop(key, None) if record is None else self.endpoints.get(key)
        if record is not None:
            self.endpoints[key] = record
        # a refresh (every few seconds per endpoint) changes nothing a page shows
        if old is None or record is None or old.model_copy(update={"refreshed_ms": record.refreshed_ms}) != record:
            self.changes.mark("actors")

    def put_usage(self, job_id: str, record: UsageRecord | None) -> None:
        if record is None:
            self.usage.pop(job_id, None)
        else:
            self.usage[job_id] = record
        self.changes.mark("usage")

    def put_metrics(self, snapshot: MetricsSnapshot, now: float | None = None) -> None:
        key = (snapshot.component, snapshot.source_id)
        self.sources[key] = Source(snapshot, time.monotonic() if now is None else now)
        self.changes.mark("metrics")

    # -- reads ----------------------------------------------------------------------------------------

    def ordered_jobs(self) -> list[str]:
        """Job ids in submission order."""
        if self._order_stale:
            self._order = sorted(self.jobs, key=lambda j: self.jobs[j].seq)
            self._roots = [j for j in self._order if self.jobs[j].request.parent_id not in self.jobs]
            self._order_stale = False
        return self._order

    def roots(self) -> list[str]:
        """Jobs without a parent in the bucket, in submission order."""
        self.ordered_jobs()
        return self._roots

    def in_state(self, *states: JobState) -> list[str]:
        """Job ids in any of ``states``, in submission order (O(those jobs))."""
        found = [j for s in states for j in self.by_state.get(s, ())]
        return sorted(found, key=lambda j: self.jobs[j].seq)

    def children_of(self, job_id: str) -> list[str]:
        return sorted(self.children.get(job_id, ()), key=lambda j: self.jobs[j].seq if j in self.jobs else 0)

    def live_sources(self, component: str, now: float | None = None) -> Iterator[MetricsSnapshot]:
        """The latest snapshot of each live source of ``component`` (silent ones are forgotten)."""
        now = time.monotonic() if now is None else now
        for key, source in list(self.sources.items()):
            if key[0] != component:
                continue
            if now - source.received > 3 * source.snapshot.interval_ms / 1000 + SOURCE_GRACE_S:
                del self.sources[key]
                continue
            yield source.snapshot

    def worker_snapshot(self, worker_id: str) -> MetricsSnapshot | None:
        from fluster.observe.components import source_id

        source = self.sources.get(("worker", source_id(worker_id)))
        return source.snapshot if source is not None else None

    def heartbeat_at(self, worker_id: str) -> float | None:
        """When a controller last answered the worker's heartbeat (unix seconds), as the worker reported it."""
        snapshot = self.worker_snapshot(worker_id)
        if snapshot is None:
            return None
        from fluster.observe import names

        for gauge in snapshot.gauges:
            if gauge.name == names.WORKER_HEARTBEAT_AT.name:
                return gauge.value
        return None

    def worker_state(self, worker_id: str, now: float | None = None) -> str:
        """``alive`` (answered recently), ``silent`` (not answered for a while) or ``unknown`` (no figures yet)."""
        at = self.heartbeat_at(worker_id)
        if at is None:
            return "unknown"
        now = time.time() if now is None else now
        return "alive" if now - at < HEARTBEAT_SILENT_S else "silent"

    def used(self, worker_id: str) -> tuple[float, int, int]:
        """(CPU, memory bytes, devices) that the jobs holding the worker asked for."""
        cpu, memory, devices = 0.0, 0, 0
        for job_id in self.on_worker.get(worker_id, ()):
            resources = self.jobs[job_id].request.resources
            cpu += resources.cpu
            memory += resources.memory_bytes
            devices += resources.device.count
        return cpu, memory, devices

    # -- indexes --------------------------------------------------------------------------------------

    def _place(self, record: JobRecord) -> None:
        current = record.current
        if record.state in HOLDING and current is not None:
            self.on_worker.setdefault(current.worker_id, set()).add(record.job_id)

    def _unplace(self, record: JobRecord) -> None:
        current = record.current
        if current is not None:
            held = self.on_worker.get(current.worker_id)
            if held is not None:
                held.discard(record.job_id)
                if not held:
                    del self.on_worker[current.worker_id]
