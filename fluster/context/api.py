"""The context API (the Fray shape): one interface for tasks, objects and actors, on any backend.

``JobContext`` implements what every backend shares (argument resolution, ``get``, ``wait``, named-actor
rules); a backend supplies how a task runs, how an object is stored, and how an actor is started.
``get_job_context()`` returns the current context: the one set with ``job_context(ctx)``, else, inside a
fluster job, a cluster context for that job, else an in-process thread context.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import enum
import inspect
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable, Generator, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, overload

from fluster.cancel import cancel_future, started
from fluster.context.resolve import captured_futures, chain, dependencies, substitute, when_done
from fluster.context.resources import Resources
from fluster.context.streams import Fetch, LocalItems, TaskStream, is_streaming
from fluster.pool.future import TaskFuture
from fluster.protocol.values import all_plain

Future = concurrent.futures.Future
Streamed = Generator[Any, Any, Any] | AsyncGenerator[Any, Any]


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


class JobContext(ABC):
    """Tasks, objects and actors on one backend. Use ``with`` (or ``close()``) to release what it started."""

    def __init__(self) -> None:
        self._named: dict[str, ActorHandle] = {}
        self._named_lock = threading.Lock()

    # -- objects --------------------------------------------------------------------------------------

    @abstractmethod
    def put(self, obj: Any) -> ObjectRef:
        """Store ``obj`` and return a reference to pass to tasks or ``get``."""

    def get(self, ref: Any, timeout: float | None = None) -> Any:
        """The value of a ref or future, or of each in a list; re-raises a task's exception."""
        if isinstance(ref, list):
            return [self.get(r, timeout) for r in ref]
        if isinstance(ref, ObjectRef):
            return self._load(ref)
        if isinstance(ref, concurrent.futures.Future):
            return ref.result(timeout)
        return ref

    # -- tasks ----------------------------------------------------------------------------------------

    @overload
    def run(self, fn: Callable[..., Streamed], *args: Any, **kwargs: Any) -> TaskStream: ...

    @overload
    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]: ...

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any] | TaskStream:
        """Run ``fn(*args, **kwargs)`` as a task and return its future; a generator function (sync or
        async) streams: a ``TaskStream`` of its items' futures, as they are produced."""
        started: Future[Any] | TaskStream = self.create_task(fn, *args, **kwargs)
        return started

    @overload
    def create_task(
        self, fn: Callable[..., Streamed], *args: Any, options: TaskOptions | None = None, **kwargs: Any
    ) -> TaskStream: ...

    @overload
    def create_task(
        self, fn: Callable[..., Any], *args: Any, options: TaskOptions | None = None, **kwargs: Any
    ) -> Future[Any]: ...

    def create_task(
        self, fn: Callable[..., Any], *args: Any, options: TaskOptions | None = None, **kwargs: Any
    ) -> Future[Any] | TaskStream:
        """Like ``run``, with ``TaskOptions``. Futures and refs among the arguments (also inside lists,
        tuples, sets and dicts) are replaced by their values before the task runs."""
        if is_streaming(fn):
            return TaskStream(self._start_task(fn, args, kwargs, options), self._stream_source)
        return self._start_task(fn, args, kwargs, options)

    def _start_task(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], options: TaskOptions | None
    ) -> Future[Any]:
        options = options or TaskOptions()
        captured = captured_futures(fn)
        if not captured:
            future = self._when_resolved(args, kwargs, lambda a, k: self._submit(fn, a, k, options))
            started(future)
            return future
        outer = self._new_future()

        def begin() -> None:  # the futures it closes over are done: now they pickle as their values
            if outer.done():
                return  # cancelled while it waited
            try:
                _forward(self._when_resolved(args, kwargs, lambda a, k: self._submit(fn, a, k, options)), outer)
            except BaseException as exc:
                outer.set_exception(exc)

        when_done(captured, begin)
        started(outer)
        return outer

    def cancel(self, future: Any, force: bool = False, recursive: bool = True) -> bool:
        """Cancel a task: its future fails with ``TaskCancelled`` at once; if it runs, ``TaskCancelled`` is
        raised in its thread (at its next Python bytecode: a task blocked in one long C call, such as
        ``time.sleep``, sees it when that returns) or, with ``force``, the process running it is killed
        (and replaced; on the cluster backend the other tasks it was running are retried). ``recursive``
        also cancels the tasks it started. Returns False, doing nothing, when the task had finished."""
        return cancel_future(future, force=force, recursive=recursive)

    def as_completed(self, futures: Sequence[Any], timeout: float | None = None) -> Iterator[Any]:
        """``futures`` as they complete (refs first, as they are ready), like Dask's and
        ``concurrent.futures``' ``as_completed``.

        Raises:
            TimeoutError: some are not done ``timeout`` seconds after the iteration started.
        """
        items = list(futures)
        yield from (item for item in items if not isinstance(item, concurrent.futures.Future))
        yield from concurrent.futures.as_completed(
            [item for item in items if isinstance(item, concurrent.futures.Future)], timeout
        )

    def wait(
        self, futures: Sequence[Any], num_returns: int = 1, timeout: float | None = None
    ) -> tuple[list[Any], list[Any]]:
        """Wait until ``num_returns`` of ``futures`` are done (or ``timeout`` passes): ``(ready, pending)``,
        each in the order given. As in Ray, ``ready`` holds at most ``num_returns``: the first to finish (refs
        and futures already done count first, in the order given); the rest, done or not, are in ``pending``."""
        items = list(futures)
        if not items:
            return [], []
        if num_returns < 0 or num_returns > len(items):
            raise ValueError(f"num_returns={num_returns} is not between 0 and the {len(items)} futures given")
        finished = [i for i, f in enumerate(items) if _is_ready(f)]  # in completion order from here on
        seen = set(finished)
        enough = threading.Event()
        lock = threading.Lock()

        def one_done(index: int) -> None:
            with lock:
                if index not in seen:
                    seen.add(index)
                    finished.append(index)
                if len(finished) >= num_returns:
                    enough.set()

        if len(finished) >= num_returns:
            enough.set()
        for index, future in enumerate(items):
            if index not in seen:
                future.add_done_callback(lambda _, index=index: one_done(index))
        enough.wait(timeout)
        with lock:
            chosen = set(finished[:num_returns])
        return [f for i, f in enumerate(items) if i in chosen], [f for i, f in enumerate(items) if i not in chosen]

    # -- actors ---------------------------------------------------------------------------------------

    def create_actor(
        self, cls: type[Any], *args: Any, options: ActorOptions | None = None, **kwargs: Any
    ) -> ActorHandle:
        """Start ``cls(*args, **kwargs)`` as an actor; ``handle.method.remote(...)`` returns futures.

        Raises:
            ValueError: ``options.name`` is taken and ``get_if_exists`` is False.
        """
        options = options or ActorOptions()
        if options.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {options.max_concurrency}")
        if options.call_timeout is not None and options.call_timeout <= 0:
            raise ValueError(f"call_timeout must be positive (or None), got {options.call_timeout}")
        for budget in ("max_restarts", "max_task_retries"):
            if getattr(options, budget) < -1:
                raise ValueError(f"{budget} must be -1 (always) or more, got {getattr(options, budget)}")
        args, kwargs = substitute((args, kwargs), self._constructor_argument)
        args, kwargs = substitute((args, kwargs))  # constructor arguments wait for their futures here
        handle = self._new_actor(cls, args, kwargs, options)
        streaming = frozenset(name for name, member in inspect.getmembers(cls) if is_streaming(member))
        settings = (options.call_timeout, options.max_task_retries, streaming)
        if settings != (handle._call_timeout, handle._max_task_retries, handle._streaming):
            # a copy: a named handle may be shared
            handle = dataclasses.replace(
                handle,
                _call_timeout=options.call_timeout,
                _max_task_retries=options.max_task_retries,
                _streaming=streaming,
            )
        return handle

    def _when_resolved(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        start: Callable[[tuple[Any, ...], dict[str, Any]], Future[Any]],
    ) -> Future[Any]:
        """``start(args, kwargs)`` once the futures among the arguments are done, with their values in place
        (refs become what ``_ref_argument`` makes of them, now, in this thread); a future of what ``start``
        returns."""
        if all_plain(args, kwargs):  # the common case: nothing to look for
            return start(args, kwargs)
        args, kwargs = substitute((args, kwargs), self._ref_argument)
        deps = dependencies(args, kwargs)
        if not deps:
            return start(args, kwargs)
        outer = self._new_future()

        def begin() -> None:
            if outer.done():
                return  # cancelled while it waited
            try:
                ready_args, ready_kwargs = substitute((args, kwargs))
            except BaseException as exc:  # a dependency failed: so does this call, with that error
                outer.set_exception(exc)
                return
            try:
                _forward(start(ready_args, ready_kwargs), outer)
            except BaseException as exc:
                outer.set_exception(exc)

        when_done(deps, begin)
        return outer

    # -- lifecycle ------------------------------------------------------------------------------------

    @abstractmethod
    def close(self) -> None:
        """Release what this context started (pools, ephemeral actors, stored objects)."""

    def __enter__(self) -> JobContext:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- backend hooks --------------------------------------------------------------------------------

    @abstractmethod
    def _submit(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], options: TaskOptions
    ) -> Future[Any]: ...

    @abstractmethod
    def _load(self, ref: ObjectRef) -> Any: ...

    def _ref_argument(self, ref: ObjectRef) -> Any:
        """What a task or actor call receives for ``ref`` among its arguments: by default its value."""
        return self._load(ref)

    def _constructor_argument(self, ref: ObjectRef) -> Any:
        """What an actor's constructor receives for ``ref``: by default its value."""
        return self._load(ref)

    def _stream_source(self, started: Any) -> Fetch:
        """Where a streamed call's items come from, given what the call returned: in process, the generator."""
        return LocalItems(started)

    def _new_future(self) -> Future[Any]:
        """A future of this backend's kind, for a call that waits on other futures first."""
        return TaskFuture()

    @abstractmethod
    def _new_actor(
        self, cls: type[Any], args: tuple[Any, ...], kwargs: dict[str, Any], options: ActorOptions
    ) -> ActorHandle: ...

    def _restarts(self, handle: ActorHandle) -> int:
        """How often ``handle``'s actor was restarted (in-process actors never are)."""
        return 0

    @abstractmethod
    def _call_actor(
        self, handle: ActorHandle, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Future[Any]: ...


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


def _forward(inner: Future[Any], outer: Future[Any]) -> None:
    """Complete ``outer`` as ``inner`` completes; cancelling ``outer`` from now on cancels ``inner``."""
    if isinstance(outer, TaskFuture):
        outer.canceller = lambda force, recursive: cancel_future(inner, force=force, recursive=recursive)
    chain(inner, outer)
    if outer.done() and not inner.done():  # cancelled just before the canceller was set
        cancel_future(inner)


def _is_ready(item: Any) -> bool:
    return not isinstance(item, concurrent.futures.Future) or item.done()
