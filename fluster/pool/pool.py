"""``WorkerPool``: N jobs that each serve a task executor, fed from one queue of tasks; ``submit`` gives futures.

The pool owns its lifecycle and the API callable from any thread; the queue and its dispatch to executors are
``fluster.pool.dispatch``, a batch's run and what its failure means (a retry, or ``TaskLost``) are
``fluster.pool.running``. A dead executor's job is replaced, so the pool keeps its size until ``shutdown``
(``fluster.pool.fleet``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import threading
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from fluster import blocking
from fluster.actor.resolver import ClusterResolver
from fluster.errors import FlusterTimeout
from fluster.observe.components import PoolMetrics
from fluster.observe.publish import publish_loop
from fluster.pool.config import PoolStatus, WorkerPoolConfig
from fluster.pool.dispatch import Dispatcher, PoolTask
from fluster.pool.fleet import ExecutorFleet
from fluster.pool.future import TaskFuture
from fluster.pool.progress import ProgressBar
from fluster.pool.running import stop_running

if TYPE_CHECKING:
    from fluster.client.blocking import Client
    from fluster.client.cluster import ClusterClient
    from fluster.pool.blocking import BlockingWorkerPool


class WorkerPool:
    """``async with WorkerPool(client, config) as pool``; ``with WorkerPool(sync_client, config)`` gives the
    blocking ``BlockingWorkerPool``. ``submit`` is safe to call from any thread."""

    def __init__(self, client: ClusterClient | Client, config: WorkerPoolConfig) -> None:
        from fluster.client.blocking import Client

        self._sync_client = client if isinstance(client, Client) else None
        self.client: ClusterClient = client.aio if isinstance(client, Client) else client
        self.config = config
        self.pool_id = uuid.uuid4().hex[:8]
        self._inbox: deque[PoolTask] = deque()
        self._inbox_lock = threading.Lock()
        self._inbox_wake_pending = False
        # the fleet calls back into the dispatcher made after it: only once executors run, so it exists by then
        self._fleet = ExecutorFleet(self.client, config, self.pool_id, lambda: self._dispatch.pump())
        self._dispatch = Dispatcher(self.client, config, self.pool_id, self._fleet)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._stack: contextlib.AsyncExitStack | None = None
        self._sync_cm: contextlib.AbstractContextManager[WorkerPool] | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    async def __aenter__(self) -> WorkerPool:
        stack = contextlib.AsyncExitStack()
        try:
            await stack.enter_async_context(self._running())
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            if exc is None and not self._fleet.stopping:
                await self.shutdown(wait=True)
            await stack.aclose()

    def __enter__(self) -> BlockingWorkerPool:
        from fluster.pool.blocking import BlockingWorkerPool

        if self._sync_client is None:
            raise TypeError("`with WorkerPool(...)` needs a fluster.Client; use `async with` with a ClusterClient")
        portal = self._sync_client.portal
        self._sync_cm, _ = blocking.entered(portal, self)
        return BlockingWorkerPool(portal, self)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        cm, self._sync_cm = self._sync_cm, None
        if cm is not None:
            cm.__exit__(exc_type, exc, tb)

    async def shutdown(self, wait: bool = True) -> None:
        """Stop taking tasks; with ``wait``, let queued and running ones finish, else cancel the queued ones;
        then kill every executor job."""
        self._closed = True
        if self._loop is None:
            return
        self._drain_inbox()
        if wait:
            while self._dispatch.outstanding:
                self._dispatch.idle.clear()
                await self._dispatch.idle.wait()
        else:
            while self._dispatch.queue:
                task = self._dispatch.queue.popleft()
                concurrent.futures.Future.cancel(task.future)  # never ran: cancelled, not TaskCancelled
                self._dispatch.finish(task, None)
        await self._fleet.stop()

    # -- tasks ----------------------------------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> TaskFuture[Any]:
        """Queue ``fn(*args, **kwargs)`` and return its future; callable from any thread.

        Raises:
            RuntimeError: the pool is shut down (or not started).
        """
        future: TaskFuture[Any] = TaskFuture()
        self.submit_to(future, fn, args, kwargs)
        return future

    def submit_to(
        self, future: TaskFuture[Any], fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """Queue ``fn(*args, **kwargs)`` to complete ``future``, a fresh ``TaskFuture`` (or subclass) of the
        caller's; callable from any thread.

        Raises:
            RuntimeError: the pool is shut down (or not started).
        """
        if self._closed or self._loop is None:
            raise RuntimeError("cannot submit to a WorkerPool that is shut down or not started")
        task = PoolTask((fn, args, kwargs), future, self._cancel)
        future.canceller = task
        if asyncio._get_running_loop() is self._loop:
            self._dispatch.accept(task)
            self._dispatch.pump()
        else:
            self._post(task)

    def map(
        self,
        fn: Callable[[Any], Any],
        items: Iterable[Any],
        progress: bool | Callable[[int, int], None] = False,
    ) -> list[TaskFuture[Any]]:
        """Submit ``fn(item)`` for every item; the futures are in item order. ``progress=True`` draws a
        progress bar on stderr; a callable ``progress(done, total)`` is called instead (on the pool's event
        loop) each time one finishes."""
        futures = [self.submit(fn, item) for item in items]
        report = ProgressBar(f"map {getattr(fn, '__name__', 'tasks')}") if progress is True else progress
        if callable(report):
            total, counter = len(futures), itertools.count(1)
            for future in futures:
                future.add_done_callback(lambda _: report(next(counter), total))
        return futures

    async def wait_for_workers(self, n: int | None = None, timeout: float | None = 60.0) -> int:
        """Wait until at least ``n`` (default: all) executors are ready; returns how many are.

        Raises:
            FlusterTimeout: fewer than ``n`` after ``timeout`` seconds.
        """
        return await self._fleet.wait_for(self.config.num_workers if n is None else n, timeout)

    def status(self) -> PoolStatus:
        executors = list(self._fleet.executors.values())
        return PoolStatus(
            pool_id=self.pool_id,
            num_workers=self.config.num_workers,
            ready=sum(1 for e in executors if e.ready),
            busy=sum(1 for e in executors if e.ready and e.in_flight),
            starting=sum(1 for e in executors if not e.ready and e.alive),
            queued=len(self._dispatch.queue) + len(self._inbox),
            in_flight=sum(e.in_flight for e in executors),
            completed=self._dispatch.counts["completed"],
            failed=self._dispatch.counts["failed"],
            retried=self._dispatch.counts["retried"],
            replaced=self._fleet.replaced,
            job_ids=tuple(e.job_id for e in executors),
        )

    @property
    def size(self) -> int:
        return self._fleet.ready_count()

    # -- internals: running -----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        self._loop = asyncio.get_running_loop()
        resolver = self._dispatch.resolver = ClusterResolver(self.client, call_timeout=None)
        not_started: FlusterTimeout | None = None
        try:
            async with anyio.create_task_group() as tg, asyncio.TaskGroup() as batches:
                self._dispatch.batches = batches
                for index in range(self.config.num_workers):
                    tg.start_soon(self._fleet.keep, index, resolver)
                metrics = PoolMetrics(f"{self.config.name_prefix}-{self.pool_id}", self.status)
                tg.start_soon(publish_loop, self.client.nc, self.client.subjects, metrics.registry)
                try:
                    await self.wait_for_workers(1, self.config.startup_timeout)
                except FlusterTimeout as exc:
                    failure = self._fleet.last_failure
                    why = f"; the last failure: {failure}" if failure else ""
                    not_started = FlusterTimeout(f"{exc}{why}")
                try:
                    if not_started is None:
                        yield
                finally:
                    self._closed = True
                    with anyio.CancelScope(shield=True):
                        await self._fleet.stop()
                    tg.cancel_scope.cancel()
                    for task in self._dispatch.queue:
                        concurrent.futures.Future.cancel(task.future)  # never ran: cancelled, not TaskCancelled
            if not_started is not None:
                raise not_started  # after its executor jobs were killed
        finally:
            self._dispatch.batches = None
            with anyio.CancelScope(shield=True):
                await resolver.close()

    # -- internals: from any thread ----------------------------------------------------------------------------

    def _post(self, task: PoolTask) -> None:
        """Hand a task to the loop from another thread; one wake-up per burst, not one per task."""
        with self._inbox_lock:
            self._inbox.append(task)
            wake = not self._inbox_wake_pending
            self._inbox_wake_pending = True
        if wake:
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._drain_inbox)

    def _drain_inbox(self) -> None:
        with self._inbox_lock:
            tasks = list(self._inbox)
            self._inbox.clear()
            self._inbox_wake_pending = False
        for task in tasks:
            self._dispatch.accept(task)
        self._dispatch.pump()

    def _cancel(self, task: PoolTask, force: bool, recursive: bool) -> None:
        """Stop a cancelled task where it runs (its future has failed with ``TaskCancelled`` already); any
        thread. A queued one is dropped when it comes up."""
        loop = self._loop
        if loop is None or self._closed and self._dispatch.batches is None:
            return
        if asyncio._get_running_loop() is loop:
            stop_running(self._dispatch, task, force, recursive)
        else:
            with contextlib.suppress(RuntimeError):  # the loop has stopped: nothing runs any more
                loop.call_soon_threadsafe(stop_running, self._dispatch, task, force, recursive)
