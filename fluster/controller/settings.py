"""The controller's settings (one frozen object, passed in explicitly)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fluster.security.issuer import JobIssuer


@dataclass(frozen=True)
class ControllerSettings:
    namespace: str = "default"
    worker_timeout: float = 10.0  # a worker silent this long is dead
    # What a heartbeat reply grants: the worker's attempts may run this long after the heartbeat was sent
    # without another answer, then stop themselves (fluster.worker.lease). Well inside worker_timeout, so an
    # attempt of a paused or cut-off worker has ended before the controller may start the next one.
    attempt_lease_fraction: float = 0.6
    schedule_interval: float = 0.5  # the longest a due scheduling timeout waits for a pass
    dispatch_timeout: float = 5.0
    kill_grace: float = 5.0  # SIGTERM → SIGKILL
    unhealthy_backoff: float = 5.0  # no dispatch to a worker this long after one failed
    missing_attempt_grace: float = 10.0  # an assigned attempt its worker does not know of is lost after this
    replicas: int | None = None  # JetStream replicas for the namespace's assets (3 on a 3-node NATS cluster)
    finished_job_retention: float | None = 24 * 3600.0  # finished jobs are forgotten after this (None: never)
    metrics_interval: float = 5.0  # seconds between metrics snapshots (fluster.observe)
    max_concurrent_submits: int = 10_000  # submits waiting for their write at once; more wait in NATS
    # a job (a gang most of all) that has waited this long keeps the workers it needs as they free up
    reserve_after: float | None = 180.0
    job_issuer: JobIssuer | None = None  # mints each attempt's identity (fluster.security); None: none minted
    # the controller has its process to itself (``fluster controller``): it tunes the garbage collector for its
    # heap (``controller/heap.py``). Off where it shares the process with a user's code (``LocalCluster``),
    # whose cyclic garbage a frozen heap would keep for minutes.
    owns_process: bool = False

    @property
    def attempt_lease_s(self) -> float:
        return self.worker_timeout * self.attempt_lease_fraction
