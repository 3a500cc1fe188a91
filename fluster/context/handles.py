"""The values the context API hands out and takes: ``TaskOptions``, ``ActorOptions`` and ``Lifetime``, ``ObjectRef``,
and ``ActorHandle`` with its ``ActorMethod``. How a context runs them is ``fluster.context.api``'s ``JobContext``.
"""

from __future__ import annotations

import concurrent.futures
import enum
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from fluster.context.resources import Resources
from fluster.context.streams import TaskStream

if TYPE_CHECKING:
    from fluster.context.api import JobContext


class Lifetime(enum.Enum):
    """EPHEMERAL actors end with the job (or context) that created them; DETACHED ones outlive it."""

    EPHEMERAL = "ephemeral"
    DETACHED = "detached"


@dataclass(frozen=True)
class TaskOptions:
    """Per-task requirements: resources route a task to executors that have them (cluster backend).
    ``resources`` is a ``ResourceSpec`` or a Ray-style dict (``fluster.context.resources``)."""

    resources: Resources | None = None
    max_retries: int | None = None


@dataclass(frozen=True)
class ActorOptions:
    """How an actor is started; ``max_restarts`` is how often a dead actor is started again, its constructor
    re-run (-1: always); ``max_task_retries``, how often a call in flight when it died is sent again to the
    restarted actor (-1: always; else it fails with ``ActorDied``); ``call_timeout``: a call not answered
    within this many seconds fails with ``ActorCallTimeout``."""

    name: str | None = None
    get_if_exists: bool = False
    lifetime: Lifetime = Lifetime.EPHEMERAL
    resources: Resources | None = None
    max_concurrency: int = 1
    max_restarts: int = 0
    max_task_retries: int = 0
    call_timeout: float | None = None  # each call's, unless ``handle.method.options(timeout=...)`` says otherwise


@dataclass(frozen=True, eq=False)
class ObjectRef:
    """A stored object: the value itself when small, else the key of a blob in the cluster's object store.

    The context that stored the blob deletes it when this ref is garbage-collected. A ref that leaves its
    process (pickled: returned from a task, sent inside an object) hands the blob over to the object store's
    TTL instead, since its owner cannot know when the copies die.
    """

    value: Any = None
    key: str | None = None
    size: int = 0
    owner: Any = field(default=None, repr=False, compare=False)  # what deletes the blob (ContextObjects)

    def __reduce__(self) -> tuple[object, ...]:
        if self.key is not None and self.owner is not None:
            self.owner.escape(self.key)
        return (ObjectRef, (self.value, self.key, self.size))


class ActorMethod:
    """``handle.method.remote(*args, **kwargs)`` calls the method and returns a future of its result."""

    def __init__(self, handle: ActorHandle, method: str, timeout: float | None | Literal["default"] = "default"):
        self._handle = handle
        self._method = method
        self._timeout = timeout

    def options(self, *, timeout: float | None) -> ActorMethod:
        """This method with its own call timeout (seconds; None: wait as long as it takes)."""
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive (or None), got {timeout}")
        return ActorMethod(self._handle, self._method, timeout)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """A future of the method's result; for a generator method (sync or async), a ``TaskStream`` of
        its items."""
        handle, method = self._handle, self._method
        context = handle._context
        future = context._when_resolved(args, kwargs, lambda a, k: context._call_actor(handle, method, a, k))
        timeout = handle._call_timeout if self._timeout == "default" else self._timeout
        if method in handle._streaming:
            stream = TaskStream(future, context._stream_source)
            stream.timeout = timeout
            return stream
        if timeout is None:
            return future
        from fluster.context.deadlines import within
        from fluster.errors import ActorCallTimeout

        return within(
            future,
            timeout,
            lambda: ActorCallTimeout(f"actor call {handle.name}.{method} got no reply within {timeout:g}s"),
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"call actor methods with .remote(): handle.{self._method}.remote(...)")


@dataclass(eq=False)
class ActorHandle:
    """An actor created by a context; ``handle.method.remote(...)`` returns a future."""

    name: str
    _context: JobContext = field(repr=False)
    _instance: Any = field(default=None, repr=False)  # local backends hold the object itself
    _lock: threading.Lock | None = field(default=None, repr=False)
    _threads: concurrent.futures.ThreadPoolExecutor | None = field(default=None, repr=False)
    job_id: str | None = None
    _call_timeout: float | None = field(default=None, repr=False)
    _max_task_retries: int = field(default=0, repr=False)
    _streaming: frozenset[str] = field(default=frozenset(), repr=False)  # its generator methods

    def restarts(self) -> int:
        """How often this actor has been restarted (its constructor run again) so far."""
        return self._context._restarts(self)

    def __getattr__(self, method: str) -> ActorMethod:
        if method.startswith("_"):
            raise AttributeError(method)
        return ActorMethod(self, method)
