"""The stored objects of a cluster context: ``put`` values and large task outputs in the object store, their
deletion once nothing refers to them, and the re-running of a task whose stored output is gone.

A value whose pickle is larger than the inline limit (``fluster.protocol.values.inline_limit``) lives in the
durable value store. ``put`` returns an ``ObjectRef`` naming it; a task whose result is that large leaves it
in the store, and its future holds a ``ValueRef`` carrying the task's lineage (function, arguments,
options): ``result()`` reads the object, and passing the future (or the ref) to a task or an actor passes
only the reference, which the executor or actor server reads itself.

When a read finds an object gone (deleted, expired, lost with its stream), the task that made it runs again
from its lineage (its own stored arguments are rebuilt the same way, recursively) and the ref names the new
object; many callers losing one object share one re-run. An object with no lineage (a ``put``) raises
``ObjectLost``. An object is deleted when its ref is garbage-collected (the future holding it, and every
lineage naming it as an argument, are gone) or when the context closes; the store's TTL removes what a
crashed context never deleted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import pickle
import uuid
import weakref
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import cloudpickle

from fluster.context.resolve import raw_result
from fluster.errors import ObjectLost
from fluster.pool.future import TaskFuture, settle, until_done
from fluster.protocol.subjects import blob_object
from fluster.protocol.values import ValueRef

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal

    from fluster.bus.values import ValueStore
    from fluster.context.handles import ObjectRef

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_REBUILDS = 3  # re-runs of one lost object per read before giving up

Lineage = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], Any]  # fn, args, kwargs, TaskOptions


class StoredFuture(TaskFuture[T]):
    """A cluster task's future, completed by the pool: ``result()`` reads a stored result from the object store
    (re-running the task if it is gone) rather than holding a large value in memory.

    With a ``lineage`` (the task it stands for), a stored result is adopted with that lineage, and a failure
    because a stored argument is gone sends the task again once the argument is rebuilt. The lineage is
    dropped as soon as the result is known not to need it.
    """

    def __init__(self, objects: ContextObjects, lineage: Lineage | None = None) -> None:
        super().__init__()
        self._objects = objects
        self.lineage = lineage
        self.rebuilds = 0

    def set_result(self, result: T) -> None:
        if isinstance(result, ValueRef):
            self._objects.adopt(result, self.lineage)
        self.lineage = None
        super().set_result(result)

    def set_exception(self, exception: BaseException | None) -> None:
        if self.lineage is not None and isinstance(exception, ObjectLost) and self._objects.recover(self, exception):
            return  # sent again once the lost argument is rebuilt
        self.lineage = None
        super().set_exception(exception)

    def __reduce__(self) -> tuple[Any, ...]:
        if self.done() and not self.cancelled() and self.exception() is None and isinstance(raw_result(self), ValueRef):
            raise TypeError(
                "a future whose result is stored (too large to travel inline) cannot be closed over: pass it "
                "to the task as an argument, and its executor reads the value"
            )
        return super().__reduce__()

    def result(self, timeout: float | None = None) -> T:
        value = super().result(timeout)
        if isinstance(value, ValueRef):
            read: T = self._objects.read(value)
            return read
        return value


class ContextObjects:
    """Objects one ``ClusterContext`` owns. ``spawn`` starts a coroutine on the context's loop; ``resubmit``
    sends a ``StoredFuture``'s task (its lineage) to the pool again, to complete that future."""

    def __init__(
        self,
        values: ValueStore,
        portal: BlockingPortal,
        loop: asyncio.AbstractEventLoop,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        resubmit: Callable[[StoredFuture[Any]], None],
    ) -> None:
        self._values = values
        self._portal = portal
        self._loop = loop
        self._spawn = spawn
        self._resubmit = resubmit
        self._keys: set[str] = set()  # what close() deletes
        self._by_key: weakref.WeakValueDictionary[str, ValueRef] = weakref.WeakValueDictionary()
        self._rebuilds: dict[str, asyncio.Future[None]] = {}
        self._closed = False

    # -- put values -----------------------------------------------------------------------------------

    def put(self, obj: Any) -> ObjectRef:
        from fluster.context.handles import ObjectRef

        data = cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        if len(data) <= self._values.inline_limit:
            return ObjectRef(value=obj, size=len(data))
        key = blob_object(f"ctx-{uuid.uuid4().hex}")
        self._portal.call(self._values.put, data, key)
        ref = ObjectRef(key=key, size=len(data), owner=self)
        self._own(ref, key)
        return ref

    def escape(self, key: str) -> None:
        """Object ``key`` is referred to from elsewhere now (its ref was pickled): never delete it; the object
        store's TTL will."""
        self._keys.discard(key)

    def as_argument(self, ref: ObjectRef) -> Any:
        """What a task or actor call receives for ``ref``: the value when inline, else a ``ValueRef`` that
        its executor or actor server reads (holding ``ref``, so the object outlives the call)."""
        if ref.key is None:
            return ref.value
        return ValueRef(ref.key, ref.size, owner=ref)

    def load(self, ref: ObjectRef) -> Any:
        return ref.value if ref.key is None else self.read(ValueRef(ref.key, ref.size, owner=ref))

    # -- reading --------------------------------------------------------------------------------------

    def read(self, ref: ValueRef) -> Any:
        """The stored value, from a thread other than the context's event loop."""
        if asyncio._get_running_loop() is self._loop:
            raise RuntimeError(
                "a stored task result cannot be read on the context's event loop (for example in a future's "
                "done callback): call result() from your own thread"
            )
        return self._portal.call(self.read_async, ref)

    async def read_async(self, ref: ValueRef) -> Any:
        for rebuilds in itertools.count():
            key = ref.key
            try:
                return pickle.loads(await self._values.get(ref))
            except ObjectLost:
                if ref.lineage is None:
                    raise ObjectLost(
                        key, f"object {key!r} is gone from the object store and no task made it (a put): put it again"
                    ) from None
                if rebuilds >= MAX_REBUILDS:
                    raise ObjectLost(key, f"object {key!r} is still gone after {rebuilds} re-runs") from None
                await self.rebuild(ref, key)
        raise AssertionError("unreachable")

    # -- task results ---------------------------------------------------------------------------------

    def adopt(self, ref: ValueRef, lineage: Lineage | None) -> None:
        """Take ownership of a task's stored result (once: a result copied to a second future is owned)."""
        if ref.finalizer is None:
            ref.lineage = lineage
            ref.finalizer = self._own(ref, ref.key)

    def recover(self, future: StoredFuture[Any], error: ObjectLost) -> bool:
        """Whether ``future``'s task, which failed because a stored argument is gone, will be sent again once
        that argument is rebuilt from its lineage."""
        source = self._by_key.get(error.key)
        if source is None or source.lineage is None or future.rebuilds >= MAX_REBUILDS:
            return False
        future.rebuilds += 1
        coro = self._rebuild_then_run(future, source, error.key)
        if asyncio._get_running_loop() is self._loop:
            self._spawn(coro)
        else:
            try:
                self._loop.call_soon_threadsafe(self._spawn, coro)
            except RuntimeError:  # the context's loop has stopped: nothing will run it again
                coro.close()
                return False
        return True

    async def _rebuild_then_run(self, future: StoredFuture[Any], source: ValueRef, lost: str) -> None:
        try:
            await self.rebuild(source, lost)
            self._resubmit(future)
        except Exception as exc:
            settle(future, error=exc)

    async def rebuild(self, ref: ValueRef, lost: str) -> None:
        """Run ``ref``'s task again so that ``ref`` names a new object; callers that lost the same object
        share one re-run."""
        if ref.key != lost:
            return  # rebuilt already
        running = self._rebuilds.get(lost)
        if running is None:
            running = self._rebuilds[lost] = asyncio.ensure_future(self._rerun(ref, lost))
            running.add_done_callback(lambda _: self._rebuilds.pop(lost, None))
        await asyncio.shield(running)

    async def _rerun(self, ref: ValueRef, lost: str) -> None:
        log.info("object %s is gone: re-running the task that made it", lost)
        assert ref.lineage is not None
        done: StoredFuture[Any] = StoredFuture(self, ref.lineage)
        self._resubmit(done)
        value = await _raw(done)
        if isinstance(value, ValueRef):  # ref takes over the new object
            assert value.finalizer is not None
            value.finalizer.detach()
            key, size = value.key, value.size
        else:  # small this time: store it so that ref still names an object
            data = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
            key, size = blob_object(f"ctx-{uuid.uuid4().hex}"), len(data)
            await self._values.put(data, key)
        if ref.finalizer is not None:
            ref.finalizer.detach()
        self._keys.discard(lost)
        # The lost key stays mapped to its ref (weakly): a task that read the old key and fails after this
        # rebuild finds the ref, sees it rebuilt already, and is sent again (it failed with ObjectLost under
        # load, when one of three tasks needing the object reported after the other two had it rebuilt).
        ref.key, ref.size = key, size
        ref.finalizer = self._own(ref, key)

    # -- ownership ------------------------------------------------------------------------------------

    def _own(self, ref: ObjectRef | ValueRef, key: str) -> weakref.finalize[Any, Any]:
        """Delete object ``key`` when ``ref`` is garbage-collected (or this context closes)."""
        self._keys.add(key)
        if isinstance(ref, ValueRef):
            self._by_key[key] = ref
        return weakref.finalize(ref, self._drop, key)

    def _drop(self, key: str) -> None:
        if self._closed or key not in self._keys:
            return
        self._keys.discard(key)
        try:  # the coroutine is made on the loop: one made here would never be awaited if the loop is gone
            self._loop.call_soon_threadsafe(lambda: self._spawn(self._delete(key)))
        except RuntimeError:  # the loop is gone; close() already deleted what it could
            pass

    async def _delete(self, key: str) -> None:
        try:
            await self._values.delete(ValueRef(key, 0))
        except Exception as exc:  # the connection is closing
            log.debug("cannot delete object %s: %r", key, exc)

    async def release(self) -> None:
        """Delete every object this context still owns (it is closing)."""
        self._closed = True
        keys, self._keys = list(self._keys), set()
        for key in keys:
            await self._delete(key)


async def _raw(future: concurrent.futures.Future[Any]) -> Any:
    """Await ``future`` on this loop for its result as stored (never calling an overridden ``result``)."""
    await until_done(future)
    if (error := future.exception()) is not None:
        raise error
    return raw_result(future)
