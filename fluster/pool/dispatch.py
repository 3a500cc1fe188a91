"""The dispatch of a ``WorkerPool``'s tasks: its queue, which executor gets the next batch and how large it is,
and the encoding and sending of each batch; what a batch's run and its failure mean is ``fluster.pool.running``.

Dispatch is work-pulling from the pool's side: an executor gets a batch only when it has a free slot, so no
executor queues work while another idles. Batches adapt to the tasks: one task per batch until tasks are seen
to take microseconds, then the queue is split across the free executors (capped at ``MAX_BATCH``), with one
batch prefetched per slot so an executor never waits a round trip for its next batch.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from fluster.actor.resolver import ClusterResolver, Pending
from fluster.pool.batch import FunctionCache
from fluster.pool.config import WorkerPoolConfig
from fluster.pool.executor import RUN_METHOD
from fluster.pool.fleet import Executor, ExecutorFleet
from fluster.pool.future import TaskFuture, settle
from fluster.pool.running import drop_reply, run_batch
from fluster.protocol.tasks import TaskSpec, encode_batch

if TYPE_CHECKING:
    from fluster.client.cluster import ClusterClient

MAX_BATCH = 256
FAST_TASK_S = 0.002  # tasks shorter than this on average are batched and prefetched


class PoolTask:
    """A queued or running task; it is its future's ``canceller`` too (one object a task, not two)."""

    __slots__ = ("spec", "future", "attempts", "where", "cancel")

    def __init__(self, spec: TaskSpec, future: TaskFuture[Any], cancel: Callable[[PoolTask, bool, bool], None]) -> None:
        self.spec = spec
        self.future = future
        self.attempts = 0
        self.where: tuple[Executor, str, int] | None = None  # while in flight: executor, batch id, index
        self.cancel = cancel

    def __call__(self, force: bool, recursive: bool) -> None:
        self.cancel(self, force, recursive)


class Dispatcher:
    """One pool's queued tasks, handed to its executors' free slots; the counts its status reports. The pool
    sets ``resolver`` and ``batches`` (the task group batches run in) while it runs."""

    def __init__(self, client: ClusterClient, config: WorkerPoolConfig, pool_id: str, fleet: ExecutorFleet) -> None:
        self.client = client
        self.config = config
        self.pool_id = pool_id
        self.fleet = fleet
        self.queue: deque[PoolTask] = deque()
        self.resolver: ClusterResolver | None = None
        self.batches: asyncio.TaskGroup | None = None
        self.outstanding = 0
        self.idle = asyncio.Event()
        self.task_seconds: float | None = None
        self.counts = {"completed": 0, "failed": 0, "retried": 0}
        self._functions = FunctionCache()
        self._batch_ids = itertools.count(1)

    def accept(self, task: PoolTask) -> None:
        self.outstanding += 1
        self.queue.append(task)

    def pump(self) -> None:
        """Hand queued tasks to executors with free slots (called whenever either changes)."""
        batches = self.batches
        while self.queue and batches is not None:
            executor = self._free_executor()
            if executor is None:
                return
            batch = []
            for _ in range(self._batch_size()):
                task = self.queue.popleft()
                if task.future.done():  # cancelled while queued: never sent
                    self.finish(task, None)
                else:
                    batch.append(task)
            if not batch:
                continue
            executor.in_flight += 1
            call_id, payload, started = self._start_batch(executor, batch)
            running = batches.create_task(run_batch(self, executor, batch, call_id, payload, started))
            if isinstance(started, Pending):  # a task cancelled before it starts never reads its reply
                running.add_done_callback(partial(drop_reply, started))

    def _free_executor(self) -> Executor | None:
        fast = self.task_seconds is not None and self.task_seconds < FAST_TASK_S
        best: Executor | None = None
        for executor in self.fleet.executors.values():
            limit = executor.slots * 2 if fast else executor.slots
            if executor.ready and executor.in_flight < limit and (best is None or executor.in_flight < best.in_flight):
                best = executor
        return best

    def _batch_size(self) -> int:
        if self.task_seconds is None or self.task_seconds >= FAST_TASK_S:
            return 1
        ready = sum(e.slots for e in self.fleet.executors.values() if e.ready) or 1
        return max(1, min(MAX_BATCH, len(self.queue), math.ceil(len(self.queue) / (2 * ready))))

    def _start_batch(self, executor: Executor, batch: list[PoolTask]) -> tuple[str, bytes, Pending | None]:
        """Encode the batch and count the attempt, and send it right away when the connection takes the write
        now (so the request is out before the loop runs anything else); else its bytes, for ``run_batch``.
        Returns the batch's call id with it: the call is tracked, so a lost request or reply is noticed."""
        call_id = f"{self.pool_id}-{next(self._batch_ids)}"
        payload = self._encode(batch, call_id)
        for index, task in enumerate(batch):
            task.attempts += 1
            task.where = (executor, call_id, index)
        if batch and self.resolver is not None:
            subject = self.client.subjects.actor(executor.name)
            sent = self.resolver.send_now(subject, RUN_METHOD, (payload,), {}, None, call_id)
            return call_id, payload, sent
        return call_id, payload, None

    def _encode(self, batch: list[PoolTask], batch_id: str) -> bytes:
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
                    self.finish(task, TypeError(f"cannot pickle task {task.spec[0]!r}: {exc}"))
                else:
                    good.append(task)
            batch[:] = good
            if not good:
                return b""
            return encode_batch([t.spec for t in good], self._functions.dumps, over, batch_id)

    def requeue(self, tasks: list[PoolTask]) -> None:
        self.queue.extendleft(reversed(tasks))
        self.pump()

    def finish(self, task: PoolTask, error: BaseException | None, value: Any = None) -> None:
        self.outstanding -= 1
        if self.outstanding == 0:
            self.idle.set()
        future = task.future
        if future.done():  # cancelled (a late result is dropped)
            return
        # It refers back to the future (through the task): left in place, every finished task would be cyclic
        # garbage for the GC (client CPU per no-op task rose from ~25 to 31-48 us over three 20,000-task runs).
        future.canceller = None
        if settle(future, value, error):  # False: cancelled from another thread just now
            self.counts["completed" if error is None else "failed"] += 1
