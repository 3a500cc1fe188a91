"""Bytes of any size: inline in a message when small, else in the namespace's JetStream object store.

Objects are written in the object store's own layout (chunks on ``$O.<bucket>.C.<nuid>``, then a rollup
meta message), so any NATS object-store client reads them, but faster than nats-py does it: the chunks are
published pipelined (acks gathered on one inbox, not one round trip each) while the digest is computed in a
thread, and a read is one ordered push consumer over the chunk subject, joined once (nats-py's ``get``
concatenates bytes per chunk and reaches ~17 MiB/s). JetStream checksums its own store: reads do not re-hash.
Publishing and reading the chunks themselves is ``chunks``'.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from datetime import UTC, datetime

import anyio
from nats.js import api
from nats.js.errors import APIError, KeyNotFoundError, NotFoundError, ObjectNotFoundError
from nats.js.kv import MSG_ROLLUP_SUBJECT, KeyValue
from nats.js.object_store import (
    OBJ_CHUNKS_PRE_TEMPLATE,
    OBJ_DIGEST_TEMPLATE,
    OBJ_META_PRE_TEMPLATE,
    ObjectStore,
)

from fluster.bus.chunks import publish_chunks, read_chunks
from fluster.bus.kv import repair_of
from fluster.bus.retry import with_retries
from fluster.errors import FlusterError, NoStream, ObjectLost, ProtocolError
from fluster.protocol.messages import Payload
from fluster.protocol.subjects import entrypoint_object
from fluster.protocol.values import inline_limit

log = logging.getLogger(__name__)

MAX_CHUNK = 1024 * 1024
BLOB_TIMEOUT_S = 60.0  # no progress for this long on a blob transfer fails it
HASH_IN_THREAD = 1 << 20  # larger values are hashed off the event loop


async def put_blob(objects: ObjectStore, name: str, data: bytes) -> bytes:
    """Store ``data`` as object ``name``, replacing any object of that name (re-creating the object store
    first when it has gone missing); returns the SHA-256 digest of ``data``.

    Raises:
        FlusterTimeout: JetStream did not acknowledge every chunk in time.
    """
    try:
        try:
            return await _put_blob(objects, name, data)
        except NoStream:
            repair = repair_of(objects)
            if repair is None:
                raise
            await repair()
            return await _put_blob(objects, name, data)
    except APIError as exc:  # a full disk ("insufficient resources"), a limit: say what could not be stored
        raise FlusterError(f"the object store refused {name!r} ({len(data)} bytes): {exc.description}") from exc


async def _put_blob(objects: ObjectStore, name: str, data: bytes) -> bytes:
    js = objects._js
    nc = js._nc
    bucket = objects._name
    nuid = nc._nuid.next().decode()
    chunk_subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=bucket, obj=nuid)
    meta_subject = OBJ_META_PRE_TEMPLATE.format(bucket=bucket, obj=_b64(name))
    chunk = max(1, min(MAX_CHUNK, nc.max_payload // 2))
    try:
        previous: api.ObjectInfo | None = await objects.get_info(name)
    except (ObjectNotFoundError, NotFoundError):
        previous = None

    # the digest is computed in a thread while the chunks are published
    hashing = asyncio.get_running_loop().run_in_executor(None, lambda: hashlib.sha256(data).digest())
    try:
        count = await publish_chunks(
            objects._js._nc, chunk_subject, data, chunk, timeout=BLOB_TIMEOUT_S, what="the object store"
        )
        digest = await hashing
    except BaseException:
        with anyio.move_on_after(5, shield=True):
            try:
                await js.purge_stream(objects._stream, subject=chunk_subject)
            except Exception as exc:  # the stream itself is gone (or unreachable): nothing to clean
                log.debug("cannot purge the chunks of %s: %r", name, exc)
        raise

    info = api.ObjectInfo(
        name=name,
        bucket=bucket,
        nuid=nuid,
        size=len(data),
        chunks=count,
        mtime=datetime.now(UTC).isoformat(),
        digest=OBJ_DIGEST_TEMPLATE.format(digest=base64.urlsafe_b64encode(digest).decode()),
        options=api.ObjectMetaOptions(max_chunk_size=chunk),
    )
    await js.publish(meta_subject, json.dumps(info.as_dict()).encode(), headers={api.Header.ROLLUP: MSG_ROLLUP_SUBJECT})
    if previous is not None and previous.nuid and previous.nuid != nuid:
        await js.purge_stream(objects._stream, subject=OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=bucket, obj=previous.nuid))
    return digest


async def get_blob(objects: ObjectStore, name: str) -> bytes:
    """Read object ``name``.

    Raises:
        ObjectLost: it does not exist (or was deleted while being read).
        FlusterTimeout: its chunks stopped arriving.
    """
    try:
        info = await objects.get_info(name)
    except (ObjectNotFoundError, NotFoundError) as exc:
        raise ObjectLost(name) from exc
    if not info.size or not info.chunks:
        return b""
    subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=objects._name, obj=info.nuid)

    async def unchanged() -> bool:
        try:
            return (await objects.get_info(name)).nuid == info.nuid
        except (ObjectNotFoundError, NotFoundError):
            return False

    return await read_chunks(
        objects._js,
        subject,
        info.chunks,
        info.size,
        timeout=BLOB_TIMEOUT_S,
        what=f"object {name!r}",
        still_there=unchanged,
        key=name,
    )


async def delete_blob(objects: ObjectStore, name: str) -> None:
    try:
        await objects.delete(name)
    except (ObjectNotFoundError, NotFoundError):
        pass


async def to_payload(objects: ObjectStore, name: str, data: bytes) -> Payload:
    """Wrap ``data`` in a Payload, storing it as object ``name`` when it is larger than the inline limit."""
    if len(data) <= _inline_limit(objects):
        return Payload(inline=data, size=len(data))
    digest = await put_blob(objects, name, data)
    return Payload(ref=name, size=len(data), digest=digest.hex())


async def from_payload(objects: ObjectStore, payload: Payload, entries: KeyValue | None = None) -> bytes:
    """The bytes a payload stands for, read from where it says they are (and checked against its digest).

    Raises:
        ObjectLost: the object or entry it names is gone.
        ProtocolError: the bytes there are not the ones the payload's digest names (someone replaced them).
    """
    if payload.inline is not None:
        return payload.inline
    data = await _referenced(objects, payload, entries)
    if payload.digest is not None:
        found = await _sha256(data)
        if found.hex() != payload.digest:
            where = f"entry {payload.entry!r}" if payload.entry is not None else f"object {payload.ref!r}"
            raise ProtocolError(f"{where} does not match its digest: it was replaced after it was stored")
    return data


async def _referenced(objects: ObjectStore, payload: Payload, entries: KeyValue | None) -> bytes:
    if payload.entry is not None:
        if entries is None:
            raise ObjectLost(payload.entry, f"entry {payload.entry!r} is in the entrypoints bucket, not given here")
        try:
            entry = await with_retries(
                lambda: entries.get(payload.entry or ""), f"read entry {payload.entry}", repair=repair_of(entries)
            )
        except (KeyNotFoundError, NotFoundError) as exc:
            raise ObjectLost(payload.entry, f"entry {payload.entry!r} not found") from exc
        if entry.operation in ("DEL", "PURGE") or entry.value is None:
            raise ObjectLost(payload.entry, f"entry {payload.entry!r} not found")
        return bytes(entry.value)
    if payload.ref is None:
        return b""
    return await get_blob(objects, payload.ref)


async def store_entrypoint(objects: ObjectStore, entries: KeyValue, token: str, data: bytes) -> Payload:
    """Store a job's entrypoint where its worker reads it: a key of the entrypoints bucket named by the
    submission's token, or (when large) an object of the same name. Job records carry only the reference."""
    if len(data) <= _inline_limit(objects):
        await with_retries(lambda: entries.put(token, data), "store the entrypoint", repair=repair_of(entries))
        return Payload(entry=token, size=len(data), digest=(await _sha256(data)).hex())
    name = entrypoint_object(token)
    digest = await put_blob(objects, name, data)
    return Payload(ref=name, size=len(data), digest=digest.hex())


async def _sha256(data: bytes) -> bytes:
    if len(data) < HASH_IN_THREAD:
        return hashlib.sha256(data).digest()
    return await anyio.to_thread.run_sync(lambda: hashlib.sha256(data).digest())


def _inline_limit(objects: ObjectStore) -> int:
    return inline_limit(objects._js._nc.max_payload)


def _b64(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode()
