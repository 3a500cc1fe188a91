"""``ClusterContext``: the context API on a fluster cluster.

Tasks run on warm executors: one ``WorkerPool`` per resource shape (and retry budget), started on first use
and kept until ``close``. Actors are jobs serving the object by name (``fluster.context.actor_job``, started
or found by ``fluster.context.actor_launch``): EPHEMERAL ones are children of the current job (and killed by
``close``), DETACHED ones are top-level jobs that outlive it. Small objects and results travel inline; large
ones stay in the namespace's object store, and a task whose stored result is gone is run again from its
lineage (``fluster.context.objects``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractContextManager
from typing import Any

from fluster import blocking
from fluster.actor import tracked
from fluster.actor.resolver import ClusterResolver
from fluster.aio import cancel_and_wait
from fluster.cancel import current_scope, started
from fluster.client.blocking import Client
from fluster.client.cluster import ClusterClient
from fluster.context.actor_launch import ActorLauncher
from fluster.context.actor_life import ActorLives, restarts_of
from fluster.context.api import Future, JobContext
from fluster.context.handles import ActorHandle, ActorOptions, ObjectRef, TaskOptions
from fluster.context.objects import ContextObjects, StoredFuture
from fluster.context.resolve import captured_futures
from fluster.context.resources import as_resource_spec
from fluster.context.streams import Fetch, RemoteItems
from fluster.pool.config import WorkerPoolConfig
from fluster.pool.future import TaskFuture
from fluster.pool.pool import WorkerPool
from fluster.protocol.messages import JobRecord
from fluster.protocol.resources import ResourceSpec
from fluster.protocol.streams import StreamHandle
from fluster.protocol.values import all_plain
from fluster.types import Environment

log = logging.getLogger(__name__)

DEFAULT_TASK_RESOURCES = ResourceSpec(cpu=1, memory="512m")
NO_OPTIONS = TaskOptions()
CLOSE_CALLS_S = 10.0  # close() cancels the calls and watches still running for at most this long


class ClusterContext(JobContext):
    """The context API on a cluster (``FLUSTER_URL`` and the job's namespace by default, or ``client``).

    ``num_workers`` executors per resource shape, each a job with ``resources`` unless a task's
    ``TaskOptions`` says otherwise; a task lost with its executor is retried ``max_retries`` times.
    """

    def __init__(
        self,
        url: str | None = None,
        namespace: str | None = None,
        client: Client | None = None,
        num_workers: int = 2,
        resources: ResourceSpec | None = None,
        max_retries: int = 3,
        environment: Environment | None = None,
        slots: int = 1,
    ) -> None:
        super().__init__()
        self._owns_client = client is None
        self.client = client if client is not None else Client(url, namespace)
        self._portal = self.client.portal
        self._aio: ClusterClient = self.client.aio
        self._defaults = WorkerPoolConfig(
            num_workers=num_workers,
            resources=resources or DEFAULT_TASK_RESOURCES,
            environment=environment,
            max_retries=max_retries,
            slots=slots,
            name_prefix="ctx",
        )
        self._pools: dict[tuple[str, int], tuple[WorkerPool, AbstractContextManager[WorkerPool]]] = {}
        self._pools_lock = threading.Lock()
        self._default_pool: WorkerPool | None = None
        self._calls_cm, self._calls = blocking.entered(self._portal, self._call_group())
        self._loop: asyncio.AbstractEventLoop = self._portal.call(_running_loop)
        self._resolver = ClusterResolver(self._aio, call_timeout=None)
        self._actors = ActorLauncher(self, self._resolver, self._aio)
        self._defaults = dataclasses.replace(self._defaults, store_results_over=self._resolver.values.inline_limit)
        self._closed = False
        self._call_tasks: set[asyncio.Task[None]] = set()
        self._lives = ActorLives(self._aio.assets.jobs, self._spawn)  # actor jobs' attempts, for calls in flight
        self.objects = ContextObjects(self._resolver.values, self._portal, self._loop, self._spawn, self._resubmit)

    # -- objects --------------------------------------------------------------------------------------

    def put(self, obj: Any) -> ObjectRef:
        return self.objects.put(obj)

    def _load(self, ref: ObjectRef) -> Any:
        return self.objects.load(ref)

    def _ref_argument(self, ref: ObjectRef) -> Any:
        return self.objects.as_argument(ref)

    def _constructor_argument(self, ref: ObjectRef) -> Any:
        return self.objects.as_argument(ref)  # the actor's job reads it from the store

    def _new_future(self) -> Future[Any]:
        return StoredFuture(self.objects)

    def _stream_source(self, started: Any) -> Fetch:
        if not isinstance(started, StreamHandle):
            return super()._stream_source(started)
        return RemoteItems(self._resolver, self._loop, started)

    # -- tasks ----------------------------------------------------------------------------------------

    def _start_task(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], options: TaskOptions | None
    ) -> Future[Any]:
        options = options or NO_OPTIONS
        if all_plain(args, kwargs) and not captured_futures(fn):  # the hot path: nothing to resolve first
            future = self._submit(fn, args, kwargs, options)
            if current_scope.get() is not None:  # a task started inside a task (recursive cancellation)
                started(future)
            return future
        self._pool(options)  # started here, in the caller's thread, never in a completion callback
        return super()._start_task(fn, args, kwargs, options)

    def _submit(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], options: TaskOptions
    ) -> Future[Any]:
        future: StoredFuture[Any] = StoredFuture(self.objects, (fn, args, kwargs, options))
        self._pool(options).submit_to(future, fn, args, kwargs)
        return future

    def _resubmit(self, future: StoredFuture[Any]) -> None:
        assert future.lineage is not None
        fn, args, kwargs, options = future.lineage
        self._pool(options).submit_to(future, fn, args, kwargs)

    def _pool(self, options: TaskOptions) -> WorkerPool:
        if options.resources is None and options.max_retries is None and self._default_pool is not None:
            return self._default_pool  # the hot path: no key to compute
        resources = as_resource_spec(options.resources) or self._defaults.resources
        retries = self._defaults.max_retries if options.max_retries is None else options.max_retries
        key = (resources.model_dump_json(), retries)
        found = self._pools.get(key)
        if found is not None:
            return found[0]
        with self._pools_lock:
            found = self._pools.get(key)
            if found is not None:
                return found[0]
            if self._closed:
                raise RuntimeError("this ClusterContext is closed")
            config = WorkerPoolConfig(
                num_workers=self._defaults.num_workers,
                resources=resources,
                environment=self._defaults.environment,
                max_retries=retries,
                slots=self._defaults.slots,
                name_prefix="ctx",
                store_results_over=self._defaults.store_results_over,
            )
            pool = WorkerPool(self._aio, config)
            cm, _ = blocking.entered(self._portal, pool)
            self._pools[key] = (pool, cm)
            if options.resources is None and options.max_retries is None:
                self._default_pool = pool
            return pool

    # -- actors ---------------------------------------------------------------------------------------

    def _new_actor(
        self, cls: type[Any], args: tuple[Any, ...], kwargs: dict[str, Any], options: ActorOptions
    ) -> ActorHandle:
        handle: ActorHandle = self._portal.call(self._actors.start, cls, args, kwargs, options)
        return handle

    def _restarts(self, handle: ActorHandle) -> int:
        if handle.job_id is None:
            return 0
        record: JobRecord = self._portal.call(self._aio._record, handle.job_id)
        return restarts_of(record)

    def _call_actor(
        self, handle: ActorHandle, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Future[Any]:
        future: TaskFuture[Any] = TaskFuture()
        subject = self._aio.subjects.actor(handle.name)

        async def call() -> None:
            try:
                # tracked: a request or reply lost in a reconnect is noticed (probed) instead of hanging;
                # stored values among the arguments go as references, which the actor's server reads
                def send() -> Coroutine[Any, Any, Any]:
                    return tracked.call(self._resolver, subject, handle.name, method, args, kwargs)

                if handle.job_id is None:
                    value = await send()
                else:
                    what = f"{handle.name}.{method}"
                    value = await self._lives.call(handle.job_id, what, send, handle._max_task_retries)
            except Exception as exc:
                future.set_exception(exc)
            else:
                future.set_result(value)

        if asyncio._get_running_loop() is self._loop:
            self._spawn(call())
        else:
            coro = call()
            try:
                self._loop.call_soon_threadsafe(self._spawn, coro)
            except RuntimeError:  # the context's loop has stopped
                coro.close()
                future.set_exception(RuntimeError("this ClusterContext is closed"))
        return future

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` on the loop (call it there), cancelled if still running when the context closes."""
        try:
            task = self._calls.create_task(coro)
        except RuntimeError:  # the context has closed: nothing more runs
            coro.close()
            return
        self._call_tasks.add(task)
        task.add_done_callback(self._call_tasks.discard)

    # -- lifecycle ------------------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            for pool, cm in list(self._pools.values()):
                self._portal.call(pool.shutdown, False)  # tasks nobody waited for are abandoned, not awaited
                cm.__exit__(None, None, None)
            self._pools.clear()
            self._portal.call(self._release)
            self._calls_cm.__exit__(None, None, None)
        finally:
            if self._owns_client:
                self.client.close()

    async def _release(self) -> None:
        for job_id in self._actors.ephemeral:
            with contextlib.suppress(Exception):  # already gone
                await self._aio.kill(job_id)
        await self.objects.release()
        await self._resolver.close()

    @contextlib.asynccontextmanager
    async def _call_group(self) -> AsyncIterator[asyncio.TaskGroup]:
        async with asyncio.TaskGroup() as calls:
            try:
                yield calls
            finally:
                # calls to actors that will never answer, and the watches of actor jobs
                await cancel_and_wait(list(self._call_tasks), CLOSE_CALLS_S)


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()
