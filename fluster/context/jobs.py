"""The cluster API in the Fray shape: ``launch(JobRequest) -> job id``, ``poll``, ``monitor``, ``wait``,
``terminate``, ``list_jobs``. A thin, blocking layer over ``fluster.Client``; the job model is fluster's."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

from fluster.client.sync import Client
from fluster.protocol.ids import JobId, validate_name
from fluster.protocol.messages import JobState
from fluster.protocol.resources import ResourceSpec
from fluster.types import Entrypoint, Environment, JobStatus

FrayStatus = Literal["pending", "running", "succeeded", "failed", "stopped"]

_STATUS: dict[JobState, FrayStatus] = {
    JobState.PENDING: "pending",
    JobState.BUILDING: "pending",
    JobState.PREEMPTED: "pending",  # waiting to be retried
    JobState.RUNNING: "running",
    JobState.SUCCEEDED: "succeeded",
    JobState.FAILED: "failed",
    JobState.WORKER_FAILED: "failed",
    JobState.UNSCHEDULABLE: "failed",
    JobState.KILLED: "stopped",
}


@dataclass(frozen=True)
class JobRequest:
    """A job to launch: ``Entrypoint.from_callable(fn, *args)`` or ``Entrypoint.from_binary(cmd, args)``."""

    name: str
    entrypoint: Entrypoint
    resources: ResourceSpec = field(default_factory=ResourceSpec)
    environment: Environment | None = None
    max_retries_failure: int = 0
    max_retries_preemption: int = 100

    def __post_init__(self) -> None:
        validate_name(self.name, "job name")


@dataclass(frozen=True)
class JobInfo:
    """A job as the Fray API reports it; ``state`` and ``details`` keep fluster's own view."""

    job_id: str
    name: str
    status: FrayStatus
    error_message: str | None
    state: JobState
    details: JobStatus

    @property
    def finished(self) -> bool:
        return self.state.is_terminal

    @classmethod
    def from_status(cls, status: JobStatus) -> JobInfo:
        return cls(
            job_id=status.job_id,
            name=status.name,
            status=_STATUS[status.state],
            error_message=status.error,
            state=status.state,
            details=status,
        )


class Cluster:
    """Jobs on a fluster cluster: ``Cluster(url, namespace)`` or ``Cluster(client=fluster.Client(...))``."""

    def __init__(self, url: str | None = None, namespace: str | None = None, client: Client | None = None) -> None:
        self._owns_client = client is None
        self.client = client if client is not None else Client(url, namespace)

    def launch(self, request: JobRequest) -> JobId:
        """Submit the job and return its id."""
        return self.client.submit(
            request.name,
            request.entrypoint,
            resources=request.resources,
            environment=request.environment,
            max_retries_failure=request.max_retries_failure,
            max_retries_preemption=request.max_retries_preemption,
        )

    def poll(self, job_id: str) -> JobInfo:
        return JobInfo.from_status(self.client.status(job_id))

    def monitor(self, job_id: str) -> Iterator[str]:
        """The job's output lines as they are written, until the job has ended."""
        for line in self.client.logs(job_id, follow=True):
            yield line.line

    def wait(self, job_id: str, timeout: float | None = None) -> JobInfo:
        """Block until the job ends.

        Raises:
            FlusterTimeout: still running after ``timeout`` seconds.
        """
        return JobInfo.from_status(self.client.wait(job_id, timeout))

    def terminate(self, job_id: str) -> None:
        """Kill the job (and its children); returns once their processes are gone."""
        self.client.kill(job_id)

    def list_jobs(self) -> list[JobInfo]:
        return [JobInfo.from_status(s) for s in self.client.list_jobs()]

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
