"""The current context: ``get_job_context()`` (the one set with ``job_context(ctx)``, else, inside a fluster job,
a cluster context for that job, else an in-process thread context), and ``create_context`` for each backend.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from fluster.context.api import JobContext

_current: ContextVar[JobContext | None] = ContextVar("fluster_job_context", default=None)


def get_job_context() -> JobContext:
    """The context set with ``job_context``; else, inside a fluster job, a cluster context of that job;
    else an in-process thread context. The latter two are created once and then kept as current."""
    ctx = _current.get()
    if ctx is not None:
        return ctx
    from fluster.environ import job_env

    if job_env() is None:
        ctx = create_context("threads")
    else:
        ctx = create_context("cluster")
        # Close it before the interpreter joins its threads at exit (its event-loop thread would never end):
        # threading's exit hooks run before atexit's, in reverse order of registration.
        threading._register_atexit(ctx.close)  # type: ignore[attr-defined]
    _current.set(ctx)
    return ctx


@contextlib.contextmanager
def job_context(ctx: JobContext) -> Iterator[JobContext]:
    """Make ``ctx`` the current context for the block (this thread and tasks started from it)."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def create_context(kind: Literal["sync", "threads", "cluster", "ray"], **options: Any) -> JobContext:
    """A new context: ``"sync"`` (runs everything at once, in this thread), ``"threads"`` (a thread pool;
    ``max_workers``), ``"cluster"`` (warm executor jobs; see ``ClusterContext`` for its options) or ``"ray"``
    (Ray tasks and actors, ``pip install 'fluster[ray]'``; see ``RayContext``)."""
    if kind == "sync":
        from fluster.context.local import SyncContext

        return SyncContext()
    if kind in ("threads", "threadpool"):
        from fluster.context.local import ThreadContext

        return ThreadContext(**options)
    if kind == "cluster":
        from fluster.context.cluster import ClusterContext

        return ClusterContext(**options)
    if kind == "ray":
        from fluster.context.ray_backend import RayContext

        return RayContext(**options)
    raise ValueError(f"unknown context kind {kind!r}: use 'sync', 'threads', 'cluster' or 'ray'")
