"""fluster: distributed jobs, actors and tasks for Python, on NATS."""

from fluster.bus.options import ConnectOptions
from fluster.client.blocking import Client
from fluster.client.cluster import ClusterClient
from fluster.errors import (
    ActorNotFound,
    ClusterUnavailable,
    FlusterError,
    FlusterTimeout,
    JobAlreadyExists,
    JobFailed,
    JobNotFound,
    RemoteError,
    Unschedulable,
)
from fluster.graceful import run_async
from fluster.local.cluster import LocalCluster
from fluster.protocol.messages import JobState, LogLine
from fluster.protocol.resources import (
    CpuDevice,
    GpuDevice,
    ResourceSpec,
    TpuDevice,
    cpu_device,
    gpu_device,
    parse_memory,
    tpu_device,
)
from fluster.types import Constraint, Entrypoint, Environment, JobStatus, TaskStatus, create_environment

__all__ = [
    "ActorNotFound",
    "Client",
    "Constraint",
    "ClusterClient",
    "ClusterUnavailable",
    "ConnectOptions",
    "CpuDevice",
    "Entrypoint",
    "Environment",
    "FlusterError",
    "FlusterTimeout",
    "GpuDevice",
    "JobAlreadyExists",
    "JobFailed",
    "JobNotFound",
    "JobState",
    "JobStatus",
    "LocalCluster",
    "LogLine",
    "RemoteError",
    "ResourceSpec",
    "TaskStatus",
    "TpuDevice",
    "Unschedulable",
    "cpu_device",
    "create_environment",
    "gpu_device",
    "parse_memory",
    "run_async",
    "tpu_device",
]
