"""The cluster API in the Fray shape: ``launch(JobRequest) -> job id``, ``poll``, ``monitor``, ``wait``,
``terminate``, ``list_jobs``. A thin, blocking layer over ``fluster.Client``; the job model is fluster's."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

from fluster.client.blocking import Client
from fluster.protocol.ids import JobId, validate_name
from fluster.protocol.messages import JobState
from fluster.protocol.resources import CpuDevice, GpuDevice, ResourceSpec, TpuDevice
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
class GpuConfig:
    """``count`` GPUs of ``type`` (``"auto"``: any) per task."""

    type: str = "auto"
    count: int = 1


@dataclass(frozen=True)
class TpuConfig:
    """A TPU slice: ``type`` like ``"v5e-16"`` (16 chips), ``count`` chips on each host. A slice of more
    chips than one host holds spans ``chips // count`` hosts: a job of that many tasks."""

    type: str
    count: int = 4
    topology: str | None = None

    @property
    def chips(self) -> int:
        suffix = self.type.rsplit("-", 1)[-1]
        return int(suffix) if suffix.isdigit() else self.count

    @property
    def hosts(self) -> int:
        return max(1, self.chips // max(1, self.count))


@dataclass(frozen=True)
class ResourceConfig:
    """What each task of a job needs, and how many tasks (``replicas``; a multi-host TPU slice implies it)."""

    cpu: float = 1
    ram: str = "1g"
    disk: str | None = None
    device: GpuConfig | TpuConfig | None = None
    replicas: int | None = None

    def __post_init__(self) -> None:
        if self.replicas is None:
            hosts = self.device.hosts if isinstance(self.device, TpuConfig) else 1
            object.__setattr__(self, "replicas", hosts)
        elif self.replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {self.replicas}")

    @property
    def spec(self) -> ResourceSpec:
        device: CpuDevice | GpuDevice | TpuDevice = CpuDevice()
        if isinstance(self.device, GpuConfig):
            device = GpuDevice(variant=self.device.type, count=self.device.count)
        elif isinstance(self.device, TpuConfig):
            device = TpuDevice(variant=self.device.type, count=self.device.count, topology=self.device.topology)
        return ResourceSpec(cpu=self.cpu, memory=self.ram, disk=self.disk, device=device)


@dataclass(frozen=True)
class JobRequest:
    """A job to launch: ``Entrypoint.from_callable(fn, *args)`` or ``Entrypoint.from_binary(cmd, args)``;
    ``resources`` a ``ResourceSpec`` (one task) or a ``ResourceConfig`` (``replicas`` tasks)."""

    name: str
    entrypoint: Entrypoint
    resources: ResourceSpec | ResourceConfig = field(default_factory=ResourceSpec)
    environment: Environment | None = None
    max_retries_failure: int = 0
    max_retries_preemption: int = 100
    coschedule: bool | None = None  # None: a multi-host TPU slice is a gang, other replicas are not

    def __post_init__(self) -> None:
        validate_name(self.name, "job name")

    @property
    def spec(self) -> ResourceSpec:
        """What each task needs."""
        return self.resources.spec if isinstance(self.resources, ResourceConfig) else self.resources

    @property
    def replicas(self) -> int:
        return (self.resources.replicas or 1) if isinstance(self.resources, ResourceConfig) else 1

    @property
    def gang(self) -> bool:
        if self.coschedule is not None:
            return self.coschedule
        return isinstance(self.resources, ResourceConfig) and isinstance(self.resources.device, TpuConfig)


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
            resources=request.spec,
            environment=request.environment,
            max_retries_failure=request.max_retries_failure,
            max_retries_preemption=request.max_retries_preemption,
            replicas=request.replicas,
            coschedule=request.gang and request.replicas > 1,
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
