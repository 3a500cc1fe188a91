"""The context API (the Fray shape): one interface for tasks, objects and actors, on any backend.

``JobContext`` implements what every backend shares (argument resolution, ``get``, ``wait``, named-actor
rules); a backend supplies how a task runs, how an object is stored, and how an actor is started. The options
and handles it takes and gives are ``fluster.context.handles``; the current context (``get_job_context``,
``job_context``, ``create_context``) is ``fluster.context.current``. Both are re-exported here.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import inspect
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable, Generator, Iterator, Sequence
from types import TracebackType
from typing import Any, overload

from fluster.cancel import cancel_future, started
from fluster.context.current import create_context, get_job_context, job_context
from fluster.context.handles import ActorHandle, ActorMethod, ActorOptions, Lifetime, ObjectRef, TaskOptions
from fluster.context.resolve import captured_futures, chain, dependencies, substitute, when_done
from fluster.context.streams import Fetch, LocalItems, TaskStream, is_streaming
from fluster.pool.future import TaskFuture
from fluster.protocol.values import all_plain

__all__ = [
    "ActorHandle",
    "ActorMethod",
    "ActorOptions",
    "Future",
    "JobContext",
    "Lifetime",
    "ObjectRef",
    "TaskOptions",
    "create_context",
    "get_job_context",
    "job_context",
]

Future = concurrent.futures.Future
Streamed = Generator[Any, Any, Any] | AsyncGenerator[Any, Any]


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
        if is_streaming(fn):
            return TaskStream(self._start_task(fn, args, kwargs, None), self._stream_source)
        return self._start_task(fn, args, kwargs, None)  # create_task's body, one call less on the hot path

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


def _drop_canceller(future: Future[Any]) -> None:
    if isinstance(future, TaskFuture):
        future.canceller = None


def _forward(inner: Future[Any], outer: Future[Any]) -> None:
    """Complete ``outer`` as ``inner`` completes; cancelling ``outer`` from now on cancels ``inner``."""
    if isinstance(outer, TaskFuture):
        outer.canceller = lambda force, recursive: cancel_future(inner, force=force, recursive=recursive)
        outer.add_done_callback(_drop_canceller)  # inner's callback refers to outer: no cycle left behind
    chain(inner, outer)
    if outer.done() and not inner.done():  # cancelled just before the canceller was set
        cancel_future(inner)


def _is_ready(item: Any) -> bool:
    return not isinstance(item, concurrent.futures.Future) or item.done()
