"""The context API: tasks, objects and actors behind one interface, on the ``sync``, ``threads``, ``cluster``
or ``ray`` backend (``create_context``), and the current context (``get_job_context``, ``job_context``).

See ``docs/tasks.md`` and ``docs/ray.md``. ``fluster.context.env`` is the ``FLUSTER_*`` bootstrap this builds
on. ``RayCluster`` and ``RayContext`` are imported on first use, so ``import fluster.context`` never imports Ray.
"""

from typing import TYPE_CHECKING, Any

from fluster.context.api import JobContext
from fluster.context.current import create_context, get_job_context, job_context
from fluster.context.handles import ActorHandle, ActorMethod, ActorOptions, Lifetime, ObjectRef, TaskOptions
from fluster.context.jobs import Cluster, GpuConfig, JobInfo, JobRequest, ResourceConfig, TpuConfig

if TYPE_CHECKING:
    from fluster.context.ray_backend import RayContext
    from fluster.context.ray_cluster import RayCluster

_LAZY = {"RayCluster": "fluster.context.ray_cluster", "RayContext": "fluster.context.ray_backend"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ActorHandle",
    "ActorMethod",
    "ActorOptions",
    "Cluster",
    "GpuConfig",
    "JobContext",
    "JobInfo",
    "JobRequest",
    "Lifetime",
    "ResourceConfig",
    "ObjectRef",
    "RayCluster",
    "RayContext",
    "TaskOptions",
    "TpuConfig",
    "create_context",
    "get_job_context",
    "job_context",
]
