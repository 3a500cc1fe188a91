"""KV reads that hide nats-py quirks: absent keys, delete/purge markers, and whole-bucket snapshots by watch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from fluster.errors import ProtocolError
from fluster.protocol.codec import decode

M = TypeVar("M", bound=BaseModel)

_DELETED = ("DEL", "PURGE")


async def get_model(kv: KeyValue, key: str, model: type[M]) -> tuple[M, int] | None:
    """The decoded value of ``key`` and its revision, or None when absent (deleted, purged or expired)."""
    try:
        entry = await kv.get(key)
    except (KeyNotFoundError, NotFoundError):
        return None
    if entry.operation in _DELETED or not entry.value:  # an expired key's marker comes back with no value
        return None
    return decode(entry.value, model), int(entry.revision or 0)


async def snapshot(kv: KeyValue, model: type[M], pattern: str = ">") -> dict[str, M]:
    """Every live key matching ``pattern`` with its decoded value, read in one pass of a watcher."""
    watcher = await kv.watch(pattern)
    found: dict[str, M] = {}
    try:
        async for entry in watcher:
            if entry is None:
                break
            if entry.operation in _DELETED or not entry.value:
                found.pop(entry.key, None)
                continue
            try:
                found[entry.key] = decode(entry.value, model)
            except ProtocolError:
                continue  # a foreign or corrupt entry is not ours to list
    finally:
        await watcher.stop()
    return found


async def watch_model(kv: KeyValue, key: str, model: type[M]) -> AsyncIterator[M | None]:
    """The current value of ``key`` (None when absent), then every change, until the caller stops iterating."""
    watcher = await kv.watch(key)
    try:
        initial = True
        async for entry in watcher:
            if entry is None:
                if initial:
                    initial = False
                    yield None
                continue
            initial = False
            if entry.operation in _DELETED or not entry.value:
                yield None
            else:
                yield decode(entry.value, model)
    finally:
        await watcher.stop()
