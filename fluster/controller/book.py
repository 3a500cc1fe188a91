"""The controller's in-memory view of jobs and workers, indexed so that each event costs O(what changed).

Pure: no NATS, no clocks (times are passed in). ``Book.put(record)`` is the only way a job changes; it keeps
every index in step with the records:

- ``placed``: the active attempts by worker, keyed by (job id, task) (a heartbeat, a worker's death and a
  re-registration look only at that worker's jobs);
- each worker's committed resources as running sums (``WorkerEntry.supply``), changed on assign and release;
- the pending units by shape (``pending``, and a FIFO heap per shape for the scheduler), with each job's
  resources parsed once (``demands``); a unit is a gang (all of a job's tasks at once: unit 0) or one
  independent task (unit = its index);
- the workers' label values (for the scheduler's explanations);
- the notes the scheduler reads at its next pass (workers whose headroom grew, shapes that appeared), the
  scheduling deadlines, and the finished jobs in the order retention forgets them (what is kept of a finished
  job, and when it is forgotten: ``fluster.controller.finished``).

``recompute()`` builds the same indexes from the records alone; tests replay random event sequences and check
that the incremental view equals it.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from fluster.controller import finished
from fluster.controller import records as st
from fluster.controller.scheduler import JobDemand, Shape, WorkerSupply
from fluster.protocol.messages import AttemptRecord, EnvironmentSpec, JobRecord, JobState, SubmitJob, WorkerInfo, evolve
from fluster.protocol.resources import ResourceSpec, device_count

SHARED_SHAPES = 1024  # distinct resource requests held once each
Unit = tuple[str, int]  # (job id, task): a gang is unit 0 of its job
_EMPTY_ENVIRONMENT = EnvironmentSpec()


@dataclass(slots=True)
class Placement:
    """An active attempt on a worker, as the indexes see it."""

    attempt: int
    incarnation: str
    assigned_at_ms: int
    demand: JobDemand
    counted: bool = False  # its resources are in its worker's supply (same incarnation)


@dataclass
class WorkerEntry:
    info: WorkerInfo
    last_seen: float  # monotonic seconds
    supply: WorkerSupply
    unhealthy_until: float = 0.0

    reserved_for: Unit | None = None  # a starving unit this worker's capacity is kept for
    gone: bool = False  # removed (or replaced by a re-registration): an entry a memo still holds is stale

    @classmethod
    def new(cls, info: WorkerInfo, last_seen: float) -> WorkerEntry:
        res = info.resources
        supply = WorkerSupply(
            worker_id=info.worker_id,
            cpu=res.cpu,
            memory=res.memory_bytes,
            device_type=res.device.type,
            variant=res.device.variant,
            count=device_count(res.device),
            slots=res.max_concurrent_jobs,
            labels=dict(info.labels),
        )
        return cls(info=info, last_seen=last_seen, supply=supply)


@dataclass
class Book:
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    children: dict[str, set[str]] = field(default_factory=dict)
    workers: dict[str, WorkerEntry] = field(default_factory=dict)
    placed: dict[str, dict[Unit, Placement]] = field(default_factory=dict)  # worker -> (job id, task) -> placement
    pending: dict[Shape, dict[Unit, int]] = field(default_factory=dict)  # shape -> unit -> seq
    queues: dict[Shape, list[tuple[int, int, str]]] = field(default_factory=dict)  # FIFO heaps (seq, unit, job)
    demands: dict[str, JobDemand] = field(default_factory=dict)
    states: Counter[JobState] = field(default_factory=Counter)
    deadlines: list[tuple[int, str, int, int]] = field(default_factory=list)  # (deadline, job, unit, queued at)
    labels: dict[str, Counter[str]] = field(default_factory=dict)  # label -> value -> workers with it
    finished: list[tuple[int, str]] = field(default_factory=list)  # (when to look, job id): retention's queue
    # notes for the next scheduling pass
    freed: dict[str, None] = field(default_factory=dict)  # (a dict: memos take them back in this order)
    new_shapes: set[Shape] = field(default_factory=set)
    _resources: dict[ResourceSpec, ResourceSpec] = field(default_factory=dict, repr=False)
    # job id -> (its active attempts, its pending units) as last indexed, for the job's next ``_unindex``
    # (held only while either is non-empty): recomputing them from the old record was ~1/4 of ``put``
    _indexed: dict[str, tuple[list[AttemptRecord], list[int]]] = field(default_factory=dict, repr=False)

    # -- jobs -----------------------------------------------------------------------------------------

    def shared(self, submit: SubmitJob) -> SubmitJob:
        """``submit`` with its request's resources and environment replaced by equal ones already held: most
        jobs ask for the same few, and holding one copy of each keeps a queued job's memory small."""
        request = submit.request
        resources = self._resources.get(request.resources)
        if resources is None:
            resources = request.resources
            if len(self._resources) < SHARED_SHAPES:
                self._resources[resources] = resources
        environment = _EMPTY_ENVIRONMENT if request.environment == _EMPTY_ENVIRONMENT else request.environment
        if resources is request.resources and environment is request.environment:
            return submit
        return evolve(submit, request=evolve(request, resources=resources, environment=environment))

    def put(self, record: JobRecord) -> JobRecord | None:
        """Make ``record`` the job's current record; returns the one it replaced (None for a new job).

        A finished job is held in compact form (``compact``): KV has the whole record."""
        if record.state.is_terminal:
            record = finished.compact(record)
        job_id = record.job_id
        old = self.jobs.get(job_id)
        if old is not None:
            self._unindex(old)
        else:
            parent = record.request.parent_id
            if parent:
                self.children.setdefault(parent, set()).add(job_id)
        self.jobs[job_id] = record
        self._index(record)
        return old

    def remove(self, job_id: str) -> JobRecord | None:
        """Forget a job (retention); its record leaves every index."""
        record = self.jobs.pop(job_id, None)
        if record is None:
            return None
        self._unindex(record)
        self.demands.pop(job_id, None)
        self.children.pop(job_id, None)
        parent = record.request.parent_id
        if parent is not None and parent in self.children:
            self.children[parent].discard(job_id)
            if not self.children[parent] and parent not in self.jobs:
                del self.children[parent]
        return record

    def active_on(self, worker_id: str) -> dict[Unit, Placement]:
        """The active attempts placed on ``worker_id`` (of any incarnation), by (job id, task)."""
        return self.placed.get(worker_id, {})

    def descendants(self, job_id: str) -> list[str]:
        """Every known descendant of ``job_id``; a visited set keeps a corrupt family from looping forever."""
        found: list[str] = []
        seen = {job_id}
        stack = [job_id]
        while stack:
            for child in self.children.get(stack.pop(), ()):
                if child not in seen:
                    seen.add(child)
                    found.append(child)
                    stack.append(child)
        return found

    def is_pending(self, job_id: str, unit: int | None = None) -> bool:
        demand = self.demands.get(job_id)
        if demand is None:
            return False
        pending = self.pending.get(demand.shape, {})
        if unit is not None:
            return (job_id, unit) in pending
        record = self.jobs.get(job_id)
        return record is not None and any((job_id, u) in pending for u in st.pending_units(record))

    def pending_count(self) -> int:
        return sum(len(jobs) for jobs in self.pending.values())

    # -- workers --------------------------------------------------------------------------------------

    def add_worker(self, info: WorkerInfo, now: float) -> WorkerEntry:
        """Register (or re-register) a worker; attempts already placed on its incarnation count against it."""
        self.remove_worker(info.worker_id)
        entry = WorkerEntry.new(info, now)
        self.workers[info.worker_id] = entry
        for label, value in info.labels.items():
            self.labels.setdefault(label, Counter())[value] += 1
        for placement in self.placed.get(info.worker_id, {}).values():
            if placement.incarnation == info.incarnation:
                entry.supply.commit(placement.demand)
                placement.counted = True
        self.freed[info.worker_id] = None
        return entry

    def remove_worker(self, worker_id: str) -> WorkerEntry | None:
        entry = self.workers.pop(worker_id, None)
        if entry is not None:
            entry.gone = True
        for placement in self.placed.get(worker_id, {}).values():
            placement.counted = False
        if entry is not None:
            for label, value in entry.info.labels.items():
                values = self.labels[label]
                values[value] -= 1
                if values[value] <= 0:
                    del values[value]
        return entry

    # -- the scheduler's queues -----------------------------------------------------------------------

    def head(self, shape: Shape) -> tuple[int, Unit] | None:
        """The oldest pending unit of ``shape`` (seq, (job id, unit)), skipping stale heap entries."""
        queue = self.queues.get(shape)
        units = self.pending.get(shape)
        while queue:
            seq, unit, job_id = queue[0]
            if units is not None and units.get((job_id, unit)) == seq:
                return seq, (job_id, unit)
            heapq.heappop(queue)
        return None

    def due_deadlines(self, now_ms: int) -> Iterator[str]:
        """Jobs with a unit whose scheduling timeout has passed (each once)."""
        while self.deadlines and self.deadlines[0][0] <= now_ms:
            _, job_id, unit, queued_at = heapq.heappop(self.deadlines)
            record = self.jobs.get(job_id)
            if record is not None and self.is_pending(job_id, unit) and st.queued_at_ms(record, unit) == queued_at:
                yield job_id

    def next_deadline_ms(self) -> int | None:
        return self.deadlines[0][0] if self.deadlines else None

    # -- retention ------------------------------------------------------------------------------------

    def expired(self, now_ms: int, retention_ms: int) -> list[str]:
        """Jobs finished more than ``retention_ms`` ago whose known descendants all are too
        (``fluster.controller.finished.expired``)."""
        return finished.expired(self, now_ms, retention_ms)

    # -- the oracle -----------------------------------------------------------------------------------

    def recompute(self) -> Book:
        """A fresh Book built from this one's records and workers (what the indexes must equal)."""
        fresh = Book()
        for wid, entry in self.workers.items():
            fresh.add_worker(entry.info, entry.last_seen)
            fresh.workers[wid].unhealthy_until = entry.unhealthy_until
        for record in sorted(self.jobs.values(), key=lambda r: r.seq):
            fresh.put(record)
        return fresh

    def indexes(self) -> dict[str, object]:
        """The indexes as plain data, for comparing two Books."""
        return {
            "placed": {
                w: {j: (p.attempt, p.incarnation, p.counted) for j, p in jobs.items()}
                for w, jobs in self.placed.items()
                if jobs
            },
            "usage": {
                w: (round(e.supply.used_cpu, 6), e.supply.used_memory, e.supply.used_count, e.supply.used_slots)
                for w, e in self.workers.items()
            },
            "pending": {s: dict(jobs) for s, jobs in self.pending.items() if jobs},
            "children": {p: set(c) for p, c in self.children.items() if c},
            "states": {s: n for s, n in self.states.items() if n},
        }

    # -- internals ------------------------------------------------------------------------------------

    def _demand(self, record: JobRecord) -> JobDemand:
        demand = self.demands.get(record.job_id)
        if demand is None:
            demand = self.demands[record.job_id] = st.demand(record)
        return demand

    def _index(self, record: JobRecord) -> None:
        job_id = record.job_id
        self.states[record.state] += 1
        demand = self._demand(record)
        active = st.active_attempts(record)
        units = st.pending_units(record)
        if active or units:
            self._indexed[job_id] = (active, units)
        for current in active:
            placement = Placement(current.attempt, current.incarnation, current.assigned_at_ms, demand)
            self.placed.setdefault(current.worker_id, {})[(job_id, current.task)] = placement
            entry = self.workers.get(current.worker_id)
            if entry is not None and entry.info.incarnation == current.incarnation:
                entry.supply.commit(demand)
                placement.counted = True
        if units:
            shape = demand.shape
            pending = self.pending.get(shape)
            if pending is None:
                pending = self.pending[shape] = {}
                self.new_shapes.add(shape)
            queue = self.queues.setdefault(shape, [])
            timeout = record.request.scheduling_timeout_ms
            for unit in units:
                pending[(job_id, unit)] = record.seq
                heapq.heappush(queue, (record.seq, unit, job_id))
                if timeout:
                    queued = st.queued_at_ms(record, unit)
                    heapq.heappush(self.deadlines, (queued + timeout, job_id, unit, queued))
        if record.state.is_terminal and record.finished_at_ms is not None:
            heapq.heappush(self.finished, (record.finished_at_ms, job_id))

    def _unindex(self, record: JobRecord) -> None:
        job_id = record.job_id
        self.states[record.state] -= 1
        demand = self.demands.get(job_id)
        active, units = self._indexed.pop(job_id, ([], []))
        for current in active:
            on_worker = self.placed.get(current.worker_id)
            placement = on_worker.pop((job_id, current.task), None) if on_worker is not None else None
            if on_worker is not None and not on_worker:
                del self.placed[current.worker_id]
            entry = self.workers.get(current.worker_id)
            if placement is not None and placement.counted and entry is not None:
                entry.supply.release(placement.demand)
                self.freed[current.worker_id] = None
        if demand is not None:
            pending = self.pending.get(demand.shape)
            if pending is not None:
                for unit in units:
                    pending.pop((job_id, unit), None)
                if not pending:
                    del self.pending[demand.shape]
                    self.queues.pop(demand.shape, None)
