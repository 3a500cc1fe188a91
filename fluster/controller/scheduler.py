"""The scheduler: a pure function from pending jobs and workers (plain data) to assignments and timeouts.

FIFO over pending jobs; a job that fits no worker is skipped, so a big job never blocks smaller ones behind
it. A job fits a worker when CPU, memory, device type (exact), device variant (``auto`` matches any) and
device count fit the worker's headroom; headroom is what the worker offers minus the jobs assigned to it,
including those assigned earlier in the same pass.

Speed: capacity only shrinks during a pass, so a worker that cannot take a job of some shape cannot take a
later job of the same shape either. Each shape keeps a cursor into the worker list that only moves forward,
which makes a pass O(shapes × workers + jobs) instead of O(jobs × workers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

ConstraintKey = tuple[str, str, tuple[str, ...]]  # label, op (eq, in, not_in, exists), values
# cpu, memory, device type, variant (None: any), device count, constraints, gang size, group_by label
Shape = tuple[float, int, str, str | None, int, tuple[ConstraintKey, ...], int, str | None]
# what decides whether a worker could ever take a job: device type, variant, constraints
SuitKey = tuple[str, str | None, tuple[ConstraintKey, ...]]


def suit_key(shape: Shape) -> SuitKey:
    return (shape[2], shape[3], shape[5])


@dataclass(frozen=True, slots=True)
class JobDemand:
    job_id: str
    cpu: float
    memory: int
    device_type: str = "cpu"
    variant: str | None = None  # None: any variant ("auto")
    count: int = 0
    queued_at_ms: int = 0
    timeout_ms: int | None = None  # None or 0: wait forever
    constraints: tuple[ConstraintKey, ...] = ()
    gang: int = 1  # tasks placed at once, each with these resources
    group_by: str | None = None  # a gang's tasks all on workers with one value of this label

    @property
    def shape(self) -> Shape:
        return (
            self.cpu,
            self.memory,
            self.device_type,
            self.variant,
            self.count,
            self.constraints,
            self.gang,
            self.group_by,
        )


@dataclass(slots=True)
class WorkerSupply:
    worker_id: str
    cpu: float
    memory: int
    device_type: str = "cpu"
    variant: str = "auto"
    count: int = 0
    slots: int = 1 << 30  # max concurrent jobs
    used_cpu: float = 0.0
    used_memory: int = 0
    used_count: int = 0
    used_slots: int = 0
    healthy: bool = True
    labels: dict[str, str] = field(default_factory=dict)

    def commit(self, job: JobDemand) -> None:
        self.used_cpu += job.cpu
        self.used_memory += job.memory
        self.used_count += job.count
        self.used_slots += 1

    def release(self, job: JobDemand) -> None:
        self.used_cpu = max(0.0, self.used_cpu - job.cpu)
        self.used_memory -= job.memory
        self.used_count -= job.count
        self.used_slots -= 1


@dataclass
class ScheduleResult:
    assignments: list[tuple[str, str]] = field(default_factory=list)  # (job_id, worker_id)
    timed_out: list[str] = field(default_factory=list)


def fits(job: JobDemand, worker: WorkerSupply) -> bool:
    """Whether one task of ``job`` fits in ``worker``'s headroom right now."""
    return how_many(job, worker) >= 1


def suits(job: JobDemand, worker: WorkerSupply) -> bool:
    """Whether ``worker`` could ever take ``job`` (device and labels), whatever runs on it now."""
    return suits_key((job.device_type, job.variant, job.constraints), worker)


def suits_key(key: SuitKey, worker: WorkerSupply) -> bool:
    device_type, variant, constraints = key
    if device_type != worker.device_type:
        return False
    if variant is not None and variant != worker.variant:
        return False
    return matches(constraints, worker.labels)


def matches(constraints: tuple[ConstraintKey, ...], labels: dict[str, str]) -> bool:
    for label, op, values in constraints:
        value = labels.get(label)
        if op == "exists":
            if value is None:
                return False
        elif op == "not_in":
            if value in values:
                return False
        elif value not in values:  # eq, in
            return False
    return True


def how_many(job: JobDemand, worker: WorkerSupply, limit: int = 1) -> int:
    """How many tasks of ``job`` fit in ``worker``'s headroom now (at most ``limit``)."""
    if not suits(job, worker):
        return 0
    return headroom(job, worker, limit)


def headroom(job: JobDemand, worker: WorkerSupply, limit: int = 1) -> int:
    """``how_many`` for a worker already known to suit ``job`` (placement's memos hold only such workers:
    skipping the check there took ~8% off the gang pass of bench/jobs.py, 6 paired runs: 273 vs 298 ms)."""
    room = worker.slots - worker.used_slots
    if job.cpu > 0:
        room = min(room, int((worker.cpu - worker.used_cpu + 1e-9) // job.cpu))
    if job.memory > 0:
        room = min(room, (worker.memory - worker.used_memory) // job.memory)
    if job.count > 0:
        room = min(room, (worker.count - worker.used_count) // job.count)
    return max(0, min(limit, room))


# The least free (cpu plus 1e-9, memory, device count) a worker needs for one task, as ``headroom`` tests
# them; -inf for a resource not asked for (not tested)
Floor = tuple[float, float, float]
_NEVER = float("-inf")


def floor_of(shape: Shape) -> Floor:
    """What a worker must have free for one task of ``shape``."""
    cpu, memory, count = shape[0], shape[1], shape[4]
    return (cpu if cpu > 0 else _NEVER, memory if memory > 0 else _NEVER, count if count > 0 else _NEVER)


def takes_none(worker: WorkerSupply, floor: Floor) -> bool:
    """Whether not one task needing ``floor`` fits ``worker`` now (``headroom`` is 0): the common answer at a
    pass's end, found without ``headroom``'s divisions."""
    cpu, memory, count = floor
    return (
        worker.cpu - worker.used_cpu + 1e-9 < cpu
        or worker.memory - worker.used_memory < memory
        or worker.count - worker.used_count < count
        or worker.used_slots >= worker.slots
    )


def is_timed_out(job: JobDemand, now_ms: int) -> bool:
    return bool(job.timeout_ms) and now_ms - job.queued_at_ms >= (job.timeout_ms or 0)


def find_assignments(pending: Sequence[JobDemand], workers: Sequence[WorkerSupply], now_ms: int) -> ScheduleResult:
    """Assign pending jobs (in FIFO order) to workers; report the jobs whose scheduling timeout has passed.

    ``workers`` carry their current usage, which this function updates as it assigns.
    """
    result = ScheduleResult()
    healthy = [w for w in workers if w.healthy]
    cursors: dict[Shape, int] = {}
    for job in pending:
        if is_timed_out(job, now_ms):
            result.timed_out.append(job.job_id)
            continue
        shape = job.shape
        index = cursors.get(shape, 0)
        while index < len(healthy) and not fits(job, healthy[index]):
            index += 1
        cursors[shape] = index
        if index < len(healthy):
            worker = healthy[index]
            worker.commit(job)
            result.assignments.append((job.job_id, worker.worker_id))
    return result
