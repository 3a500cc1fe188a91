"""A worker's settings, and what they resolve to: the resources it offers and the runtime it runs jobs with."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fluster.bus.options import ConnectOptions
from fluster.protocol.messages import WorkerResources
from fluster.protocol.resources import CpuDevice, Device, GpuDevice, TpuDevice, parse_memory
from fluster.worker.probe import probe_cpu, probe_gpus, probe_memory
from fluster.worker.runtime import ProcessRuntime, Runtime


@dataclass(frozen=True)
class WorkerSettings:
    url: str
    namespace: str = "default"
    connect: ConnectOptions = field(default_factory=ConnectOptions)  # credentials and TLS, also handed to jobs
    worker_id: str | None = None
    cpu: float | None = None  # None: probe
    memory: str | None = None  # None: probe
    device: CpuDevice | GpuDevice | TpuDevice | None = None  # None: probe (nvidia-smi)
    max_concurrent_jobs: int = 10
    heartbeat_interval: float = 1.0
    runtime: str = "process"
    docker_image: str = "fluster-base:py311"
    work_dir: Path | None = None
    cache_dir: Path | None = None  # environments and the docker runtime's fluster copy; shared by workers of a host
    kill_grace: float = 5.0
    metadata: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # matched by jobs' constraints (probed ones added)
    address: str | None = None  # how the job's other tasks reach this host (FLUSTER_TASK_HOSTS); default: its name
    metrics_interval: float = 5.0  # seconds between metrics snapshots (fluster.observe)
    usage_interval: float = 5.0  # seconds between samples of each job's CPU and memory (fluster.observe.usage)
    # the worker's environment variables its jobs inherit besides PATH, HOME, locale (fluster.environ)
    job_env_passthrough: frozenset[str] = frozenset()
    # payload signing: run only jobs signed by one of these keys (empty: any job), fluster.security.signing
    trusted_submitters: frozenset[str] = frozenset()


def resolve_resources(settings: WorkerSettings) -> WorkerResources:
    device: Device = settings.device if settings.device is not None else probe_gpus()
    return WorkerResources(
        cpu=settings.cpu if settings.cpu is not None else probe_cpu(),
        memory_bytes=parse_memory(settings.memory) if settings.memory is not None else probe_memory(),
        device=device,
        max_concurrent_jobs=settings.max_concurrent_jobs,
    )


def make_runtime(settings: WorkerSettings, worker_id: str, cache_dir: Path, resources: WorkerResources) -> Runtime:
    if settings.runtime == "process":
        return ProcessRuntime(passthrough=settings.job_env_passthrough)
    if settings.runtime == "docker":
        from fluster.worker.docker_runtime import DockerRuntime

        device = resources.device
        gpu_ids = [str(i) for i in range(device.count)] if device.type == "gpu" else None
        runtime: Runtime = DockerRuntime(worker_id, cache_dir=cache_dir, image=settings.docker_image, gpu_ids=gpu_ids)
        return runtime
    raise ValueError(f"unknown runtime {settings.runtime!r}: use 'process' or 'docker'")


def resolve_labels(settings: WorkerSettings, resources: WorkerResources, hostname: str) -> dict[str, str]:
    """The worker's labels: the probed ones (device type and variant, host name), then the configured ones."""
    device = resources.device
    probed = {"device-type": device.type, "hostname": hostname}
    if device.type != "cpu":
        probed["device-variant"] = device.variant
    return {**probed, **settings.labels}
