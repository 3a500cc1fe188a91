"""The value store: where a value too large for a message lives, named by a ``ValueRef``
(``fluster.protocol.values``), with two backends.

- *Durable* (``DURABLE``): the namespace's object store (``fluster.bus.blobs``): large ``put`` values, task
  results and job payloads. A value stays until its owner deletes it or the bucket's TTL does.
- *Ephemeral* (``EPHEMERAL``): large actor call arguments and replies, the chunks of one value on their own
  subject of a memory stream (``Subjects...xfer.<id>``). They are published pipelined (the stream's acks
  gathered on one inbox) and read back by one ordered push consumer. The reader purges the subject as soon as
  it has the bytes (a fire-and-forget purge request, off the call's critical path), and the stream's
  ``max_age`` reaps values whose reader never came. This is the object store's job done without its
  metadata, digest and per-chunk round trips, which cost more than the copy itself at these sizes. A
  reference can be sent before its value (``reserve``, then ``send``), so writing and reading overlap.

Both streams are created by ``ensure_assets``; when one is missing (a restarted server dropped a memory
stream), ``repair`` puts it back and the write is tried again. ``resolve`` reads the refs among a call's
arguments, for the task executor and the actor server alike, so a large value goes from the store to the
code that needs it without passing through the caller.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from nats.aio.client import Client as NATS
from nats.js.object_store import ObjectStore

from fluster.bus.blobs import delete_blob, get_blob, put_blob
from fluster.bus.chunks import publish_chunks, read_chunks
from fluster.errors import NoStream, ObjectLost
from fluster.protocol.subjects import Subjects, actor_transfer_stream, actor_transfer_subject, blob_object
from fluster.protocol.values import DURABLE, EPHEMERAL, ValueRef, find, inline_limit, loads, replace

log = logging.getLogger(__name__)

TRANSFER_TIMEOUT_S = 60.0  # no progress for this long fails an ephemeral transfer
FIRST_CHUNK_S = 10.0  # an ephemeral value whose first chunk has not come within this does not exist
MAX_CHUNK = 4 * 1024 * 1024
READ_CACHE_BYTES = 256 * 1024 * 1024  # stored arguments kept (as bytes) for the next calls that need them


class ValueStore:
    """Puts and gets large values for one connection and namespace."""

    def __init__(
        self,
        nc: NATS,
        subjects: Subjects,
        objects: ObjectStore | None,
        repair: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._subjects = subjects
        self._objects = objects
        self._stream = actor_transfer_stream(subjects)
        self._repair = repair

    @property
    def inline_limit(self) -> int:
        return inline_limit(self._nc.max_payload)

    # -- durable --------------------------------------------------------------------------------------

    async def put(self, data: bytes, key: str | None = None) -> ValueRef:
        """Store ``data`` durably (as object ``key``, default a new one) and return its reference.

        Raises:
            FlusterError: the object store refused it.
            FlusterTimeout: JetStream did not acknowledge every chunk in time.
        """
        key = key or blob_object(uuid.uuid4().hex)
        await put_blob(self._durable(), key, data)
        return ValueRef(key, len(data), DURABLE)

    async def delete(self, ref: ValueRef) -> None:
        if ref.store == DURABLE:
            await delete_blob(self._durable(), ref.key)
        else:
            await self.drop(ref)

    # -- ephemeral ------------------------------------------------------------------------------------

    def reserve(self, size: int) -> ValueRef:
        """A reference for a ``size``-byte ephemeral value, to send before the value itself (``send``)."""
        chunk = self._chunk()
        return ValueRef(uuid.uuid4().hex, size, EPHEMERAL, (size + chunk - 1) // chunk)

    async def send(self, ref: ValueRef, data: bytes) -> None:
        """Publish the chunks of ``data`` for ``ref`` and wait until the stream has stored them all.

        Raises:
            FlusterError: the stream rejected a chunk.
            FlusterTimeout: the stream did not acknowledge every chunk in time.
        """
        if ref.size != len(data) or ref.chunks != (ref.size + self._chunk() - 1) // self._chunk():
            raise ValueError(f"{ref!r} was reserved for another size than {len(data)}")
        subject = actor_transfer_subject(self._subjects, ref.key)
        for attempt in range(2):
            try:
                await publish_chunks(
                    self._nc, subject, data, self._chunk(), timeout=TRANSFER_TIMEOUT_S, what="the transfer stream"
                )
                return
            except NoStream:
                if attempt or self._repair is None:
                    raise
                await self._repair()  # the stream is gone (a restarted server): put it back, send again

    async def put_ephemeral(self, data: bytes) -> ValueRef:
        ref = self.reserve(len(data))
        await self.send(ref, data)
        return ref

    async def drop(self, ref: ValueRef) -> None:
        """Purge an ephemeral value without waiting for the answer (max_age reaps it if this is lost)."""
        request = json.dumps({"filter": actor_transfer_subject(self._subjects, ref.key)}).encode()
        # The reply goes to an inbox nobody reads: the JetStream API ignores requests without a reply subject.
        await self._nc.publish(f"{self._js._prefix}.STREAM.PURGE.{self._stream}", request, reply=self._nc.new_inbox())

    # -- reading --------------------------------------------------------------------------------------

    async def get(self, ref: ValueRef) -> bytes:
        """The bytes behind ``ref`` (an ephemeral value is dropped once read).

        Raises:
            ObjectLost: a durable value is gone.
            FlusterTimeout: an ephemeral value's chunks did not start within ``FIRST_CHUNK_S`` (it does not
                exist), or either kind's chunks stopped.
        """
        if ref.store == DURABLE:
            return await get_blob(self._durable(), ref.key)
        data = await read_chunks(
            self._js,
            actor_transfer_subject(self._subjects, ref.key),
            ref.chunks,
            ref.size,
            timeout=TRANSFER_TIMEOUT_S,
            first_timeout=FIRST_CHUNK_S,
            what=f"transfer {ref.key}",
        )
        await self.drop(ref)
        return data

    async def resolve(self, values: list[Any], cache: ReadCache | None = None) -> list[Any]:
        """Each of ``values`` with every durable ``ValueRef`` in it replaced by the value it names, or, when
        one of its refs cannot be read, the exception saying why (``ObjectLost`` naming the key when it is
        gone). Each key is read once, concurrently, or taken from ``cache`` when an earlier call read it;
        each use unpickles its own copy."""
        refs = [[ref for ref in find(value, ValueRef) if ref.store == DURABLE] for value in values]
        if not any(refs):
            return values
        read: dict[str, bytes] = {}
        errors: dict[str, BaseException] = {}

        async def fetch(key: str) -> None:
            try:
                read[key] = await get_blob(self._durable(), key)
            except Exception as exc:
                errors[key] = exc
                return
            if cache is not None:
                cache.put(key, read[key])

        async with anyio.create_task_group() as tg:
            for key in {ref.key for found in refs for ref in found}:
                cached = cache.get(key) if cache is not None else None
                if cached is not None:
                    read[key] = cached
                else:
                    tg.start_soon(fetch, key)
        out: list[Any] = []
        for value, found in zip(values, refs, strict=True):
            failed = [errors[ref.key] for ref in found if ref.key in errors]
            if failed:
                out.append(failed[0])
            elif found:
                out.append(replace(value, ValueRef, lambda r: loads(read[r.key]) if r.store == DURABLE else r))
            else:
                out.append(value)
        return out

    def _durable(self) -> ObjectStore:
        if self._objects is None:
            raise ObjectLost("-", "this connection has no object store to keep large values in")
        return self._objects

    def _chunk(self) -> int:
        return max(1, min(MAX_CHUNK, self._nc.max_payload - 1024))


class ReadCache:
    """The bytes of recently read durable values by key, least recently used dropped first, up to ``limit``
    bytes. A key names immutable content (a rebuilt value gets a new key), so a cached copy is never stale."""

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
