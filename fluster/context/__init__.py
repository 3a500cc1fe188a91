"""The context API: tasks, objects and actors behind one interface, on the ``sync``, ``threads`` or ``cluster``
backend (``create_context``), and the current context (``get_job_context``, ``job_context``).

See ``docs/tasks.md``. ``fluster.context.env`` is the ``FLUSTER_*`` bootstrap this builds on.
"""

from fluster.context.api import (
    ActorHandle,
    ActorMethod,
    ActorOptions,
    JobContext,
    Lifetime,
    ObjectRef,
    TaskOptions,
    create_context,
    get_job_context,
    job_context,
)
from fluster.context.jobs import Cluster, JobInfo, JobRequest

__all__ = [
    "ActorHandle",
    "ActorMethod",
    "ActorOptions",
    "Cluster",
    "JobContext",
    "JobInfo",
    "JobRequest",
    "Lifetime",
    "ObjectRef",
    "TaskOptions",
    "create_context",
    "get_job_context",
    "job_context",
]
