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

Shape = tuple[float, int, str, str | None, int]  # cpu, memory, device type, variant (None: any), count


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

    @property
    def shape(self) -> Shape:
        return (self.cpu, self.memory, self.device_type, self.variant, self.count)


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
    """Whether ``job`` fits in ``worker``'s headroom right now."""
    if job.device_type != worker.device_type:
        return False
    if job.variant is not None and job.variant != worker.variant:
        return False
    return (
        worker.used_slots + 1 <= worker.slots
        and job.cpu <= worker.cpu - worker.used_cpu + 1e-9
        and job.memory <= worker.memory - worker.used_memory
        and job.count <= worker.count - worker.used_count
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
