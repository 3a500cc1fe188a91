"""The task executor: what each ``WorkerPool`` job runs. An actor whose ``run`` method runs a batch of tasks.

A batch normally runs in one of the executor's threads (one hand-off per batch, however many tasks it
holds), so a long task never stalls the server's event loop or its endpoint heartbeat. Functions seen to
return within ``INLINE_TASK_S`` every time (``INLINE_AFTER`` runs in a row) run on the event loop instead,
saving two thread hand-offs per batch; one that is ever slower goes back to threads for good.
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import Any

import anyio

from fluster.actor.threads import ThreadRunner
from fluster.pool.batch import FunctionCache, decode_batch, failed_batch, run_tasks

RUN_METHOD = "run"
INLINE_TASK_S = 0.0001
INLINE_AFTER = 3


class TaskExecutor:
    """Runs task batches sent by a ``WorkerPool`` (see ``fluster.pool.batch``), ``slots`` at a time."""

    def __init__(self, name: str, slots: int) -> None:
        self._threads = ThreadRunner(slots, name)
        self._fast_runs: dict[Any, int] = {}
        self._slow: set[Any] = set()
        self._functions = FunctionCache()

    async def run(self, batch: bytes) -> bytes:
        try:
            tasks = decode_batch(batch, self._functions)
        except Exception as exc:  # e.g. a module the executor cannot import: every task fails with it
            return failed_batch(exc)
        fns = {_key(fn) for fn, _, _ in tasks}
        self._slow.update(_key(fn) for fn, _, _ in tasks if inspect.iscoroutinefunction(fn))
        inline = all(self._fast_runs.get(fn, 0) >= INLINE_AFTER for fn in fns)
        if inline:
            result, elapsed = run_tasks(tasks)
        else:
            result, elapsed = await self._threads.run(partial(run_tasks, tasks))
        self._observe(fns, elapsed / len(tasks) if tasks else 0.0)
        return result

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        self._threads.close()

    def _observe(self, fns: set[Any], per_task_s: float) -> None:
        fast = per_task_s < INLINE_TASK_S
        for fn in fns:
            if fn in self._slow:
                continue
            if not fast:
                self._slow.add(fn)
                self._fast_runs.pop(fn, None)
            elif len(self._fast_runs) < 10_000:
                self._fast_runs[fn] = self._fast_runs.get(fn, 0) + 1


def _key(fn: Any) -> Any:
    # A function may arrive as a fresh copy (closures are never cached): key it by where its code comes from.
    code = getattr(fn, "__code__", None)
    return (getattr(fn, "__module__", None), getattr(fn, "__qualname__", repr(type(fn))), code and code.co_firstlineno)


def serve_executor(actor_name: str, slots: int) -> None:
    """A job entrypoint: serve a ``TaskExecutor`` as ``actor_name`` with ``slots`` concurrent batches, forever
    (the pool kills the job when it is done with it)."""
    anyio.run(_serve, actor_name, slots, backend="asyncio")


async def _serve(actor_name: str, slots: int) -> None:
    from fluster.actor.server import ActorServer
    from fluster.client.cluster import ClusterClient

    executor = TaskExecutor(actor_name, slots)
    try:
        async with ClusterClient.connect() as client:
            server = ActorServer(client)
            server.register(actor_name, executor, max_concurrency=slots, threaded=False)
            await server.serve()
    finally:
        executor.close()
