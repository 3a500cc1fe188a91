"""KV reads that hide nats-py quirks: absent keys, delete/purge markers, and whole-bucket snapshots by watch."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any, TypeVar

import anyio
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, ConnectionDrainingError
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from fluster.bus.retry import Repair, with_retries
from fluster.errors import ProtocolError
from fluster.protocol.codec import decode
from fluster.protocol.subjects import KV_OPERATION_HEADER, MARKER_REASON_HEADER

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

REPAIR_ATTRIBUTE = "_fluster_repair"  # set by ``ensure_assets`` on the buckets it binds: re-creates them


def repair_of(kv: object) -> Repair | None:
    """What re-creates ``kv``'s bucket when it has gone missing (None for a bucket fluster did not bind)."""
    repair: Repair | None = getattr(kv, REPAIR_ATTRIBUTE, None)
    return repair


log = logging.getLogger(__name__)

_DELETED = ("DEL", "PURGE")
_DIRECT_BATCH = 10_000
_DIRECT_TIMEOUT_S = 10.0


async def get_model(kv: KeyValue, key: str, model: type[M]) -> tuple[M, int] | None:
    """The decoded value of ``key`` and its revision, or None when absent (deleted, purged or expired)."""
    try:
        entry = await with_retries(lambda: kv.get(key), f"read {key}", repair=repair_of(kv))
    except (KeyNotFoundError, NotFoundError):
        return None
    if entry.operation in _DELETED or not entry.value:  # an expired key's marker comes back with no value
        return None
    return decode(entry.value, model), int(entry.revision or 0)


async def snapshot(
    kv: KeyValue, model: type[M], pattern: str = ">", corrupt: dict[str, bytes] | None = None
) -> dict[str, M]:
    """Every live key matching ``pattern`` with its decoded value.

    One batched direct get (``multi_last``) when the bucket allows direct gets, else one pass of a watcher.
    A value that does not decode is left out and logged; with ``corrupt``, its key and bytes are put there,
    for the caller to repair or quarantine.
    """
    return await _snapshot(kv, lambda data: decode(data, model), pattern, corrupt)


async def snapshot_bytes(kv: KeyValue, pattern: str = ">") -> dict[str, bytes]:
    """Every live key matching ``pattern`` with its value as stored."""
    return await _snapshot(kv, bytes, pattern, None)


async def _snapshot(
    kv: KeyValue, load: Callable[[bytes], T], pattern: str, corrupt: dict[str, bytes] | None
) -> dict[str, T]:
    found = await _direct_snapshot(kv, load, pattern, corrupt)
    return found if found is not None else await _watch_snapshot(kv, load, pattern, corrupt)


async def latest_valid(kv: KeyValue, key: str, model: type[M]) -> M | None:
    """The newest revision of ``key`` in its history that decodes as ``model`` (None when there is none)."""
    try:
        entries = await with_retries(lambda: kv.history(key), f"history of {key}", repair=repair_of(kv))
    except (KeyNotFoundError, NotFoundError):
        return None
    for entry in reversed(entries):
        if entry.operation in _DELETED or not entry.value:
            return None  # deleted after its last good value: absent, not corrupt
        try:
            return decode(entry.value, model)
        except ProtocolError:
            continue
    return None


def _corrupt(corrupt: dict[str, bytes] | None, key: str, data: bytes, exc: ProtocolError) -> None:
    log.error("undecodable value at key %s (%d bytes): %s", key, len(data), str(exc)[:200])
    if corrupt is not None:
        corrupt[key] = data


async def _direct_snapshot(
    kv: KeyValue, load: Callable[[bytes], T], pattern: str, corrupt: dict[str, bytes] | None
) -> dict[str, T] | None:
    """None when the bucket has no direct gets or holds more than one batch (the caller then watches)."""
    nc = kv._js._nc
    inbox = nc.new_inbox()
    replies: asyncio.Queue[Msg] = asyncio.Queue()
    sub = await nc.subscribe(inbox, cb=replies.put)
    prefix = kv._pre
    found: dict[str, T] = {}
    try:
        request = json.dumps({"multi_last": [f"{prefix}{pattern}"], "batch": _DIRECT_BATCH}).encode()
        await nc.publish(f"{kv._js._prefix}.DIRECT.GET.{kv._stream}", request, reply=inbox)
        with anyio.fail_after(_DIRECT_TIMEOUT_S):
            while True:
                msg = await replies.get()
                headers = msg.headers or {}
                status = headers.get("Status")
                if status == "204":  # end of batch
                    return found if headers.get("Nats-Num-Pending", "0") == "0" else None
                if status == "404":  # no key matches
                    return found
                if status:  # 503 and friends: no direct get on this bucket
                    return None
                if headers.get(KV_OPERATION_HEADER) in _DELETED or headers.get(MARKER_REASON_HEADER) or not msg.data:
                    continue
                key = headers.get("Nats-Subject", "")[len(prefix) :]
                try:
                    found[key] = load(msg.data)
                except ProtocolError as exc:
                    _corrupt(corrupt, key, msg.data, exc)
    finally:
        await sub.unsubscribe()


async def _watch_snapshot(
    kv: KeyValue, load: Callable[[bytes], T], pattern: str, corrupt: dict[str, bytes] | None
) -> dict[str, T]:
    watcher = await with_retries(lambda: kv.watch(pattern), f"watch {pattern}", repair=repair_of(kv))
    found: dict[str, T] = {}
    try:
        async for entry in watcher:
            if entry is None:
                break
            if entry.operation in _DELETED or not entry.value:
                found.pop(entry.key, None)
                continue
            try:
                found[entry.key] = load(entry.value)
            except ProtocolError as exc:
                _corrupt(corrupt, entry.key, entry.value, exc)
    finally:
        await _stop(watcher)
    return found


async def watch_model(kv: KeyValue, key: str, model: type[M]) -> AsyncGenerator[M | None, None]:
    """The current value of ``key`` (None when absent), then every change, until the caller stops iterating.

    A watcher's "no initial value" marker can overtake the value itself (nats-py decides it from a
    consumer-info reply), so an absence it reports is checked with a direct read before it is believed.
    """
    watcher = await with_retries(lambda: kv.watch(key), f"watch {key}", repair=repair_of(kv))
    try:
        initial = True
        async for entry in watcher:
            if entry is None:
                if initial:
                    initial = False
                    found = await get_model(kv, key, model)
                    yield found[0] if found is not None else None
                continue
            initial = False
            if entry.operation in _DELETED or not entry.value:
                yield None
            else:
                yield decode(entry.value, model)
    finally:
        await _stop(watcher)


async def _stop(watcher: Any) -> None:
    with anyio.CancelScope(shield=True), anyio.move_on_after(5):
        try:
            await watcher.stop()
        except (ConnectionClosedError, ConnectionDrainingError):  # the connection went first: nothing to stop
            pass
