"""The task executor: what each ``WorkerPool`` job runs. An actor whose ``run`` method runs a batch of tasks.

A batch normally runs in one of the executor's threads (one hand-off per batch, however many tasks it
holds), so a long task never stalls the server's event loop or its endpoint heartbeat. Functions seen to
return within ``INLINE_TASK_S`` every time (``INLINE_AFTER`` runs in a row) run on the event loop instead,
saving two thread hand-offs per batch; one that is ever slower goes back to threads for good.

Stored arguments (``RemoteRef``) are read from the object store before a batch runs (their bytes are kept in
a bounded cache for the next tasks that need them; each use unpickles its own copy); a task whose argument
is gone fails with ``ObjectLost`` naming it, so its caller can rebuild the object and send the task again.
When the batch asks for it, results larger than its ``store_over`` are written to the object store and
only their key goes back.
"""

from __future__ import annotations

import inspect
import os
import pickle
import uuid
from collections import OrderedDict
from functools import partial
from typing import Any, NoReturn

import anyio
from nats.js.object_store import ObjectStore

from fluster.actor.threads import ThreadRunner
from fluster.bus.blobs import BlobNotFound, get_blob, put_blob
from fluster.errors import ObjectLost
from fluster.graceful import run_async
from fluster.pool.batch import (
    OK,
    FunctionCache,
    Outcome,
    TaskSpec,
    decode_batch,
    encode_outcomes,
    error_outcome,
    failed_batch,
    run_tasks,
    stored_outcome,
)
from fluster.pool.remote import RemoteRef, find, replace
from fluster.protocol.subjects import blob_object

RUN_METHOD = "run"
INLINE_TASK_S = 0.0001
INLINE_AFTER = 3
READ_CACHE_BYTES = 256 * 1024 * 1024  # stored arguments kept (as bytes) for the next tasks that need them
CACHE_ENV = "FLUSTER_EXECUTOR_CACHE_BYTES"  # overrides it for an executor job (0: no cache)


class BlobCache:
    """The bytes of recently read objects by key, least recently used dropped first, up to ``limit`` bytes.
    A key names immutable content (a rebuilt object gets a new key), so a cached copy is never stale."""

    def __init__(self, limit: int = READ_CACHE_BYTES) -> None:
        self._limit = limit
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0

    def get(self, key: str) -> bytes | None:
        data = self._items.get(key)
        if data is not None:
            self._items.move_to_end(key)
        return data

    def put(self, key: str, data: bytes) -> None:
        if len(data) > self._limit or key in self._items:
            return
        self._items[key] = data
        self._size += len(data)
        while self._size > self._limit:
            _, dropped = self._items.popitem(last=False)
            self._size -= len(dropped)


class TaskExecutor:
    """Runs task batches sent by a ``WorkerPool`` (see ``fluster.pool.batch``), ``slots`` at a time."""

    def __init__(self, name: str, slots: int, objects: ObjectStore | None = None) -> None:
        self._objects = objects
        self._threads = ThreadRunner(slots, name)
        self._fast_runs: dict[Any, int] = {}
        self._slow: set[Any] = set()
        self._functions = FunctionCache()
        self._cache = BlobCache(int(os.environ.get(CACHE_ENV, READ_CACHE_BYTES)))

    async def run(self, batch: bytes) -> bytes:
        try:
            tasks, store_over = decode_batch(batch, self._functions)
        except Exception as exc:  # e.g. a module the executor cannot import: every task fails with it
            return failed_batch(exc)
        fns = {_key(fn) for fn, _, _ in tasks}
        self._slow.update(_key(fn) for fn, _, _ in tasks if inspect.iscoroutinefunction(fn))
        tasks = await self._read_stored(tasks)
        inline = all(self._fast_runs.get(fn, 0) >= INLINE_AFTER for fn in fns)
        if inline:
            outcomes, elapsed = run_tasks(tasks)
        else:
            outcomes, elapsed = await self._threads.run(partial(run_tasks, tasks))
        self._observe(fns, elapsed / len(tasks) if tasks else 0.0)
        if store_over is not None:
            await self._store_large(outcomes, store_over)
        return encode_outcomes(elapsed, outcomes)

    async def _read_stored(self, tasks: list[TaskSpec]) -> list[TaskSpec]:
        """The tasks with each stored argument read (from the cache when an earlier task read it; each use gets
        its own copy); a task whose argument cannot be read raises its error."""
        refs = find([(args, kwargs) for _, args, kwargs in tasks], RemoteRef)
        if not refs:
            return tasks
        values: dict[str, bytes] = {}
        errors: dict[str, BaseException] = {}

        async def read(key: str) -> None:
            try:
                if self._objects is None:
                    raise RuntimeError("this executor has no object store to read stored arguments from")
                values[key] = await get_blob(self._objects, key)
                self._cache.put(key, values[key])
            except BlobNotFound:
                errors[key] = ObjectLost(key, f"task argument {key!r} is no longer in the object store")
            except Exception as exc:
                errors[key] = exc

        async with anyio.create_task_group() as tg:
            for key in {ref.key for ref in refs}:
                cached = self._cache.get(key)
                if cached is not None:
                    values[key] = cached
                else:
                    tg.start_soon(read, key)
        ready: list[TaskSpec] = []
        for fn, args, kwargs in tasks:
            failed = [errors[ref.key] for ref in find((args, kwargs), RemoteRef) if ref.key in errors]
            if failed:
                ready.append((partial(_raise, failed[0]), (), {}))
            else:
                args, kwargs = replace((args, kwargs), RemoteRef, lambda ref: pickle.loads(values[ref.key]))
                ready.append((fn, args, kwargs))
        return ready

    async def _store_large(self, outcomes: list[Outcome], limit: int) -> None:
        """Replace each result larger than ``limit`` by the key of an object holding it."""
        for i, (status, data) in enumerate(outcomes):
            if status != OK or len(data) <= limit:
                continue
            key = blob_object(f"task-{uuid.uuid4().hex}")
            try:
                if self._objects is None:
                    raise RuntimeError("this executor has no object store to store results in")
                await put_blob(self._objects, key, data)
            except Exception as exc:
                outcomes[i] = error_outcome(exc)
            else:
                outcomes[i] = stored_outcome(key, len(data))

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
            executor = TaskExecutor(actor_name, slots, client.assets.objects)
            server = ActorServer(client)
            server.register(actor_name, executor, max_concurrency=slots, threaded=False)
            await server.serve()
    finally:
        if executor is not None:
            executor.close()
