"""The in-process backends: ``SyncContext`` runs each task at once in the caller's thread, ``ThreadContext``
in a thread pool. Actors are plain objects, called under a lock (sync) or on their own threads (threads)."""

from __future__ import annotations

import concurrent.futures
import contextvars
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from fluster.cancel import Running
from fluster.context.api import Future, JobContext
from fluster.context.handles import ActorHandle, ActorOptions, ObjectRef, TaskOptions
from fluster.pool.future import TaskFuture, settle


class _LocalContext(JobContext):
    def put(self, obj: Any) -> ObjectRef:
        return ObjectRef(value=obj)

    def _load(self, ref: ObjectRef) -> Any:
        return ref.value

    def _new_actor(
        self, cls: type[Any], args: tuple[Any, ...], kwargs: dict[str, Any], options: ActorOptions
    ) -> ActorHandle:
        with self._named_lock:  # makes get-or-create atomic within the process
            if options.name is not None and options.name in self._named:
                if options.get_if_exists:
                    return self._named[options.name]
                raise ValueError(f"an actor named {options.name!r} already exists")
            handle = ActorHandle(
                name=options.name or f"actor-{id(self):x}-{len(self._named)}",
                _context=self,
                _instance=cls(*args, **kwargs),
                _lock=threading.Lock(),
                _threads=self._actor_threads(options),
            )
            if options.name is not None:
                self._named[options.name] = handle
            return handle

    def _actor_threads(self, options: ActorOptions) -> concurrent.futures.ThreadPoolExecutor | None:
        return None

    def _call_actor(
        self, handle: ActorHandle, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Future[Any]:
        bound = getattr(handle._instance, method)
        if handle._threads is not None:
            return handle._threads.submit(contextvars.copy_context().run, bound, *args, **kwargs)
        assert handle._lock is not None
        with handle._lock:
            return self._submit(bound, args, kwargs, TaskOptions())


class SyncContext(_LocalContext):
    """Every task and actor call runs to completion inside the call that starts it."""

    def _submit(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], options: TaskOptions
    ) -> Future[Any]:
        future: TaskFuture[Any] = TaskFuture()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def close(self) -> None:
        pass  # nothing runs in the background


class ThreadContext(_LocalContext):
    """Tasks on a thread pool of ``max_workers``; each actor on its own ``max_concurrency`` threads."""

    def __init__(self, max_workers: int | None = None) -> None:
        super().__init__()
        self._threads = concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix="fluster-task")
        self._actor_pools: list[concurrent.futures.ThreadPoolExecutor] = []
        self._running = Running()  # force=True cannot kill a thread: it cancels as force=False does

    def _submit(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], options: TaskOptions
    ) -> Future[Any]:
        future: TaskFuture[Any] = TaskFuture()
        key = id(future)
        future.canceller = lambda force, recursive: self._running.cancel(key, force, recursive)

        def run() -> None:
            if future.done():  # cancelled while queued
                return
            try:
                value = self._running.run(key, partial(fn, *args, **kwargs))
            except BaseException as exc:
                settle(future, error=exc)
            else:
                settle(future, value)

        # in the caller's contextvars, so the task sees the context set with job_context(ctx), as on sync
        queued = self._threads.submit(contextvars.copy_context().run, run)
        queued.add_done_callback(lambda q: q.cancelled() and concurrent.futures.Future.cancel(future))
        return future

    def _actor_threads(self, options: ActorOptions) -> concurrent.futures.ThreadPoolExecutor:
        threads = concurrent.futures.ThreadPoolExecutor(options.max_concurrency, thread_name_prefix="fluster-actor")
        self._actor_pools.append(threads)
        return threads

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        for threads in self._actor_pools:
            threads.shutdown(wait=False, cancel_futures=True)
