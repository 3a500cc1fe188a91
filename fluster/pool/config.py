"""What a ``WorkerPool`` is asked for (``WorkerPoolConfig``) and what it reports (``PoolStatus``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fluster.protocol.ids import validate_name
from fluster.protocol.resources import ResourceSpec
from fluster.types import Environment


@dataclass(frozen=True)
class WorkerPoolConfig:
    """How many executor jobs, what each gets, and how often a task lost to a dead executor is retried."""

    num_workers: int
    resources: ResourceSpec = field(default_factory=ResourceSpec)
    environment: Environment | None = None
    max_retries: int = 3
    slots: int = 1  # tasks (batches) one executor runs at once
    name_prefix: str = "pool"
    startup_timeout: float | None = 120.0  # entering the pool waits this long for its first executor
    store_results_over: int | None = None  # results whose pickle is larger go to the value store (a ValueRef)
    # a batch with no reply for this long is probed (a lost request is sent again, a lost reply fetched)
    probe_interval: float = 5.0
    # an executor that answers neither a batch nor its probes for this long is killed, its tasks retried
    unreachable_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {self.num_workers}")
        if self.slots < 1:
            raise ValueError(f"slots must be at least 1, got {self.slots}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must not be negative, got {self.max_retries}")
        validate_name(self.name_prefix, "pool name prefix")


@dataclass(frozen=True)
class PoolStatus:
    """A snapshot of a pool: executors by state and tasks by stage."""

    pool_id: str
    num_workers: int
    ready: int
    busy: int
    starting: int
    queued: int
    in_flight: int
    completed: int
    failed: int
    retried: int
    replaced: int
    job_ids: tuple[str, ...]
