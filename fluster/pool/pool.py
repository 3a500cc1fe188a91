"""``WorkerPool``: N jobs that each serve a task executor, fed from one queue of tasks; ``submit`` gives futures.

Dispatch is work-pulling from the pool's side: an executor gets a batch only when it has a free slot, so no
executor queues work while another idles. Batches adapt to the tasks: one task per batch until tasks are seen
to take microseconds, then the queue is split across the free executors (capped at ``MAX_BATCH``), with one
batch prefetched per slot so an executor never waits a round trip for its next batch.

An executor whose job ends (SIGKILL, worker lost) fails its in-flight batches as infrastructure failures: each
task is retried on another executor up to ``max_retries`` times, then fails with ``TaskLost``. A user
exception is delivered to the future and never retried. A dead executor's job is replaced, so the pool
keeps its size until ``shutdown`` (``fluster.pool.fleet``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import math
import threading
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from fluster import blocking
from fluster.actor import tracked
from fluster.actor.pool import ClusterResolver, Pending
from fluster.errors import ActorCallTimeout, ActorNotFound, FlusterTimeout, TaskLost
from fluster.observe.components import PoolMetrics
from fluster.observe.publish import publish_loop
from fluster.pool.batch import FunctionCache
from fluster.pool.config import PoolStatus, WorkerPoolConfig
from fluster.pool.executor import CANCEL_METHOD, RUN_METHOD
from fluster.pool.fleet import Executor, ExecutorFleet
from fluster.pool.future import TaskFuture
from fluster.pool.progress import ProgressBar
from fluster.protocol.tasks import TaskSpec, decode_outcomes, encode_batch
from fluster.protocol.values import value_of

if TYPE_CHECKING:
    from fluster.client.blocking import Client
    from fluster.client.cluster import ClusterClient
    from fluster.pool.blocking import BlockingWorkerPool

log = logging.getLogger(__name__)

MAX_BATCH = 256
FAST_TASK_S = 0.002  # tasks shorter than this on average are batched and prefetched
EWMA_WEIGHT = 0.2
CANCEL_TIMEOUT_S = 10.0


class _Task:
    __slots__ = ("spec", "future", "attempts", "where")

    def __init__(self, spec: TaskSpec, future: TaskFuture[Any]) -> None:
        self.spec = spec
        self.future = future
        self.attempts = 0
        self.where: tuple[Executor, str, int] | None = None  # while in flight: executor, batch id, index


class WorkerPool:
    """``async with WorkerPool(client, config) as pool``; ``with WorkerPool(sync_client, config)`` gives the
    blocking ``BlockingWorkerPool``. ``submit`` is safe to call from any thread."""

    def __init__(self, client: ClusterClient | Client, config: WorkerPoolConfig) -> None:
        from fluster.client.blocking import Client

        self._sync_client = client if isinstance(client, Client) else None
        self.client: ClusterClient = client.aio if isinstance(client, Client) else client
        self.config = config
        self.pool_id = uuid.uuid4().hex[:8]
        self._queue: deque[_Task] = deque()
        self._functions = FunctionCache()
        self._inbox: deque[_Task] = deque()
        self._inbox_lock = threading.Lock()
        self._inbox_wake_pending = False
        self._fleet = ExecutorFleet(self.client, config, self.pool_id, self._pump)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._resolver: ClusterResolver | None = None
        self._batches: asyncio.TaskGroup | None = None
        self._closed = False
        self._outstanding = 0
        self._idle = asyncio.Event()
        self._task_seconds: float | None = None
        self._batch_ids = itertools.count(1)
        self._counts = {"completed": 0, "failed": 0, "retried": 0}
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
            while self._outstanding:
                self._idle.clear()
                await self._idle.wait()
        else:
            while self._queue:
                task = self._queue.popleft()
                concurrent.futures.Future.cancel(task.future)  # never ran: cancelled, not TaskCancelled
                self._finish(task, None)
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
        task = _Task((fn, args, kwargs), future)
        future.canceller = partial(self._cancel, task)
        if asyncio._get_running_loop() is self._loop:
            self._accept(task)
            self._pump()
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
            queued=len(self._queue) + len(self._inbox),
            in_flight=sum(e.in_flight for e in executors),
            completed=self._counts["completed"],
            failed=self._counts["failed"],
            retried=self._counts["retried"],
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
        self._resolver = ClusterResolver(self.client, call_timeout=None)
        not_started: FlusterTimeout | None = None
        try:
            async with anyio.create_task_group() as tg, asyncio.TaskGroup() as batches:
                self._batches = batches
                for index in range(self.config.num_workers):
                    tg.start_soon(self._fleet.keep, index, self._resolver)
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
                    for task in self._queue:
                        concurrent.futures.Future.cancel(task.future)  # never ran: cancelled, not TaskCancelled
            if not_started is not None:
                raise not_started  # after its executor jobs were killed
        finally:
            self._batches = None
            with anyio.CancelScope(shield=True):
                await self._resolver.close()

    # -- internals: dispatch ----------------------------------------------------------------------------

    def _post(self, task: _Task) -> None:
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
            self._accept(task)
        self._pump()

    def _accept(self, task: _Task) -> None:
        self._outstanding += 1
        self._queue.append(task)

    def _pump(self) -> None:
        """Hand queued tasks to executors with free slots (called whenever either changes)."""
        batches = self._batches
        while self._queue and batches is not None:
            executor = self._free_executor()
            if executor is None:
                return
            batch = []
            for _ in range(self._batch_size()):
                task = self._queue.popleft()
                if task.future.done():  # cancelled while queued: never sent
                    self._finish(task, None)
                else:
                    batch.append(task)
            if not batch:
                continue
            executor.in_flight += 1
            call_id, payload, started = self._start_batch(executor, batch)
            running = batches.create_task(self._run_batch(executor, batch, call_id, payload, started))
            if isinstance(started, Pending):  # a task cancelled before it starts never reads its reply
                running.add_done_callback(partial(_drop_reply, started))

    def _free_executor(self) -> Executor | None:
        fast = self._task_seconds is not None and self._task_seconds < FAST_TASK_S
        best: Executor | None = None
        for executor in self._fleet.executors.values():
            limit = executor.slots * 2 if fast else executor.slots
            if executor.ready and executor.in_flight < limit and (best is None or executor.in_flight < best.in_flight):
                best = executor
        return best

    def _batch_size(self) -> int:
        if self._task_seconds is None or self._task_seconds >= FAST_TASK_S:
            return 1
        ready = sum(e.slots for e in self._fleet.executors.values() if e.ready) or 1
        return max(1, min(MAX_BATCH, len(self._queue), math.ceil(len(self._queue) / (2 * ready))))

    def _start_batch(self, executor: Executor, batch: list[_Task]) -> tuple[str, bytes, Pending | None]:
        """Encode the batch and count the attempt, and send it right away when the connection takes the write
        now (so the request is out before the loop runs anything else); else its bytes, for ``_run_batch``.
        Returns the batch's call id with it: the call is tracked, so a lost request or reply is noticed."""
        call_id = f"{self.pool_id}-{next(self._batch_ids)}"
        payload = self._encode(batch, call_id)
        for index, task in enumerate(batch):
            task.attempts += 1
            task.where = (executor, call_id, index)
        if batch and self._resolver is not None:
            subject = self.client.subjects.actor(executor.name)
            sent = self._resolver.send_now(subject, RUN_METHOD, (payload,), {}, None, call_id)
            return call_id, payload, sent
        return call_id, payload, None

    async def _run_batch(
        self, executor: Executor, batch: list[_Task], call_id: str, payload: bytes, started: Pending | None
    ) -> None:
        try:
            if not batch:
                return
            assert self._resolver is not None
            subject = self.client.subjects.actor(executor.name)
            try:
                if started is None:
                    pending = await self._resolver.send(subject, RUN_METHOD, (payload,), {}, None, call_id)
                else:
                    pending = started
                if not executor.alive:
                    pending.future.cancel()
                executor.replies.add(pending.future)
                try:
                    reply = await tracked.result(
                        self._resolver,
                        pending,
                        subject,
                        executor.name,
                        RUN_METHOD,
                        ((payload,), {}),
                        call_id,
                        self.config.probe_interval,
                        self.config.unreachable_timeout,
                        raw=True,
                    )
                finally:
                    executor.replies.discard(pending.future)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if executor.alive or (current is not None and current.cancelling()):
                    raise  # the pool is stopping
                self._lost(batch, f"executor {executor.name} (job {executor.job_id}) died")
                return
            except ActorNotFound:  # never delivered, so not an attempt; the executor is going away
                for task in batch:
                    task.attempts -= 1
                self._retire(executor)
                self._requeue(batch)
                return
            except ActorCallTimeout as exc:  # it answers nothing, not even probes: give up on it
                self._retire(executor)
                self._lost(batch, f"executor {executor.name} stopped answering: {exc}")
                return
            except Exception as exc:
                self._lost(batch, f"executor {executor.name} failed: {exc!r}")
                return
            try:
                elapsed, outcomes = decode_outcomes(reply, len(batch))
            except Exception as exc:  # not what an executor sends: the batch is lost, not the pool
                self._lost(batch, f"executor {executor.name} sent a malformed reply: {exc}")
                return
            per_task = elapsed / len(batch)
            self._task_seconds = (
                per_task
                if self._task_seconds is None
                else (1 - EWMA_WEIGHT) * self._task_seconds + EWMA_WEIGHT * per_task
            )
            for task, outcome in zip(batch, outcomes, strict=True):
                try:
                    value = value_of(outcome)
                except Exception as exc:
                    self._finish(task, exc)
                else:
                    self._finish(task, None, value)
        finally:
            for task in batch:
                task.where = None
            executor.in_flight -= 1
            self._pump()

    def _cancel(self, task: _Task, force: bool, recursive: bool) -> None:
        """Stop a cancelled task where it runs (its future has failed with ``TaskCancelled`` already); any
        thread. A queued one is dropped when it comes up."""
        loop = self._loop
        if loop is None or self._closed and self._batches is None:
            return
        if asyncio._get_running_loop() is loop:
            self._stop_running(task, force, recursive)
        else:
            with contextlib.suppress(RuntimeError):  # the loop has stopped: nothing runs any more
                loop.call_soon_threadsafe(self._stop_running, task, force, recursive)

    def _stop_running(self, task: _Task, force: bool, recursive: bool) -> None:
        if task.where is None or self._batches is None:
            return  # queued (skipped by _pump), or finished meanwhile
        executor, call_id, index = task.where
        if force:  # its executor's job is killed and replaced; the other tasks it ran are retried
            if executor.alive:
                self._retire(executor)
            return
        subject = self.client.subjects.actor(executor.name)
        self._batches.create_task(self._send_cancel(subject, executor, call_id, index, recursive))

    async def _send_cancel(self, subject: str, executor: Executor, batch_id: str, index: int, recursive: bool) -> None:
        assert self._resolver is not None
        try:
            await self._resolver.call(
                subject, executor.name, CANCEL_METHOD, (batch_id, index, recursive), {}, CANCEL_TIMEOUT_S
            )
        except Exception as exc:  # the executor is going away, or busy beyond reach: its result is dropped anyway
            log.warning("cannot cancel task %s/%d on executor %s: %r", batch_id, index, executor.name, exc)

    def _retire(self, executor: Executor) -> None:
        """Stop sending to an executor and kill its job; the fleet replaces it."""
        executor.kill()
        assert self._batches is not None
        self._batches.create_task(self._fleet.kill_job(executor.job_id))

    def _encode(self, batch: list[_Task], batch_id: str) -> bytes:
        """The batch's bytes; a task that cannot be pickled fails alone and leaves the batch."""
        over = self.config.store_results_over
        try:
            return encode_batch([t.spec for t in batch], self._functions.dumps, over, batch_id)
        except Exception:
            good = []
            for task in batch:
                try:
                    encode_batch([task.spec], self._functions.dumps)
                except Exception as exc:
                    self._finish(task, TypeError(f"cannot pickle task {task.spec[0]!r}: {exc}"))
                else:
                    good.append(task)
            batch[:] = good
            if not good:
                return b""
            return encode_batch([t.spec for t in good], self._functions.dumps, over, batch_id)

    def _lost(self, batch: list[_Task], why: str) -> None:
        retry = [t for t in batch if t.attempts <= self.config.max_retries]
        for task in batch:
            if task.attempts > self.config.max_retries:
                self._finish(task, TaskLost(f"task lost after {task.attempts} attempt(s): {why}"))
        self._counts["retried"] += len(retry)
        self._requeue(retry)

    def _requeue(self, tasks: list[_Task]) -> None:
        self._queue.extendleft(reversed(tasks))
        self._pump()

    def _finish(self, task: _Task, error: BaseException | None, value: Any = None) -> None:
        self._outstanding -= 1
        if self._outstanding == 0:
            self._idle.set()
        future = task.future
        if future.done():  # cancelled (a late result is dropped)
            return
        try:
            if error is None:
                future.set_result(value)
                self._counts["completed"] += 1
            else:
                future.set_exception(error)
                self._counts["failed"] += 1
        except concurrent.futures.InvalidStateError:  # cancelled from another thread just now
            pass


def _drop_reply(pending: Pending, _: object) -> None:
    pending.future.cancel()  # done already (the usual case): nothing happens
