"""The task executor: what each ``WorkerPool`` job runs. An actor whose ``run`` method runs a batch of tasks.

A batch normally runs in one of the executor's threads (one hand-off per batch, however many tasks it
holds), so a long task never stalls the server's event loop or its endpoint heartbeat; functions the
``FastPath`` has seen return in microseconds run on the event loop instead.

Stored arguments (``ValueRef``) are read from the value store before a batch runs (``ValueStore.resolve``,
their bytes kept in a bounded ``ReadCache`` for the next tasks that need them; each use unpickles its own
copy); a task whose argument is gone fails with ``ObjectLost`` naming it, so its caller can rebuild the
object and send the task again. When the batch asks for it, results larger than its ``store_over`` are
written to the store and only their reference goes back (a ``STORED`` outcome).
"""

from __future__ import annotations

import inspect
import os
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any, NoReturn

from fluster.bus.values import READ_CACHE_BYTES, ReadCache, ValueStore
from fluster.cancel import Running
from fluster.graceful import run_async
from fluster.pool.batch import FunctionCache, run_tasks
from fluster.protocol.subjects import blob_object
from fluster.protocol.tasks import Encoded, TaskSpec, decode_batch, encode_outcomes
from fluster.protocol.values import OK, STORED, Outcome, failure
from fluster.threads import FastPath, ThreadRunner

RUN_METHOD = "run"
CANCEL_METHOD = "cancel"  # a control method: answered at once, however many batches run
MAX_FINISHED = 10_000
CACHE_ENV = "FLUSTER_EXECUTOR_CACHE_BYTES"  # overrides the read cache's size for an executor job (0: none)


class TaskExecutor:
    """Runs task batches sent by a ``WorkerPool`` (see ``fluster.protocol.tasks``), ``slots`` at a time."""

    def __init__(self, name: str, slots: int, values: ValueStore | None = None) -> None:
        self._values = values
        self._threads = ThreadRunner(slots, name)
        self._fast = FastPath()
        self._functions = FunctionCache()
        self._cache = ReadCache(int(os.environ.get(CACHE_ENV, READ_CACHE_BYTES)))
        self._running = Running()
        self._finished: OrderedDict[str, None] = OrderedDict()  # recent batches: a late cancel leaves no trace
        self.stream: Callable[[Any], Any] | None = None  # opens a generator's stream on the serving server

    async def run(self, batch: bytes) -> Encoded:
        try:
            tasks, store_over, batch_id = decode_batch(batch, self._functions.loads)
        except Exception as exc:  # e.g. a module the executor cannot import: every task fails with it
            return Encoded(encode_outcomes(0.0, [failure(exc)]))
        fns = {_key(fn) for fn, _, _ in tasks}
        for fn, _, _ in tasks:
            if inspect.iscoroutinefunction(fn):
                self._fast.never(_key(fn))
        tasks = await self._read_stored(tasks)
        if all(self._fast.inline(fn) for fn in fns):
            outcomes, elapsed = run_tasks(tasks, self._running, batch_id, False, self.stream)
        else:
            run = partial(run_tasks, tasks, self._running, batch_id, True, self.stream)
            outcomes, elapsed = await self._threads.run(run)
        self._finished[batch_id] = None
        if len(self._finished) > MAX_FINISHED:
            self._finished.popitem(last=False)
        per_task = elapsed / len(tasks) if tasks else 0.0
        for fn in fns:
            self._fast.observe(fn, per_task)
        if store_over is not None:
            await self._store_large(outcomes, store_over)
        return Encoded(encode_outcomes(elapsed, outcomes))

    async def _read_stored(self, tasks: list[TaskSpec]) -> list[TaskSpec]:
        """The tasks with each stored argument read; a task whose argument cannot be read raises its error."""
        if self._values is None:
            return tasks
        resolved = await self._values.resolve([(args, kwargs) for _, args, kwargs in tasks], self._cache)
        ready: list[TaskSpec] = []
        for (fn, _, _), value in zip(tasks, resolved, strict=True):
            if isinstance(value, BaseException):
                ready.append((partial(_raise, value), (), {}))
            else:
                ready.append((fn, *value))
        return ready

    async def _store_large(self, outcomes: list[Outcome], limit: int) -> None:
        """Replace each result larger than ``limit`` by the reference of a stored copy."""
        for i, (status, data, _) in enumerate(outcomes):
            if status != OK or len(data) <= limit:
                continue
            try:
                if self._values is None:
                    raise RuntimeError("this executor has no value store to store results in")
                ref = await self._values.put(data, blob_object(f"task-{os.urandom(16).hex()}"))
            except Exception as exc:
                outcomes[i] = failure(exc)
            else:
                outcomes[i] = Outcome(STORED, b"", ref)

    def ping(self) -> bool:
        return True

    def cancel(self, batch_id: str, index: int, recursive: bool = True) -> bool:
        """Cancel task ``index`` of batch ``batch_id``: ``TaskCancelled`` is raised in its thread if it runs
        (True), else it fails as it starts (False); ``recursive`` cancels the tasks it started too."""
        if not isinstance(batch_id, str) or not isinstance(index, int) or not isinstance(recursive, bool):
            raise TypeError("cancel(batch_id: str, index: int, recursive: bool)")
        return self._running.cancel((batch_id, index), recursive=recursive, early=batch_id not in self._finished)

    def close(self) -> None:
        self._threads.close()


def _raise(error: BaseException) -> NoReturn:
    raise error


def _key(fn: Any) -> Any:
    # A function may arrive as a fresh copy (closures are never cached): key it by where its code comes from.
    code = getattr(fn, "__code__", None)
    return (getattr(fn, "__module__", None), getattr(fn, "__qualname__", repr(type(fn))), code and code.co_firstlineno)


def serve_executor(actor_name: str, slots: int) -> None:
    """A job entrypoint: serve a ``TaskExecutor`` as ``actor_name`` with ``slots`` concurrent batches, forever
    (the pool kills the job when it is done with it)."""
    run_async(_serve, actor_name, slots)


async def _serve(actor_name: str, slots: int) -> None:
    from fluster.actor.server import ActorServer
    from fluster.client.cluster import ClusterClient

    executor: TaskExecutor | None = None
    try:
        async with ClusterClient.connect() as client:
            server = ActorServer(client)
            executor = TaskExecutor(actor_name, slots, server.values)
            server.register(
                actor_name, executor, max_concurrency=slots, threaded=False, control_methods=(CANCEL_METHOD,)
            )
            executor.stream = partial(server.streams.open, subject=server.endpoints[0].subject)
            await server.serve()
    finally:
        if executor is not None:
            executor.close()
