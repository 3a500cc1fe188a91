"""Actor endpoints in the namespace's ``endpoints`` KV bucket: publish, refresh, claim a name, list and watch.

Liveness is the bucket TTL: a server refreshes its keys every ``REFRESH_S``; a key not refreshed for
``ENDPOINT_TTL_S`` expires and watchers see a PURGE, so a SIGKILLed server's endpoint vanishes without any
cleanup code. The call path never touches this module.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Iterable

import anyio
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from fluster.bus.assets import ENDPOINT_TTL_S
from fluster.bus.kv import get_model, snapshot
from fluster.errors import ActorNameTaken, ProtocolError
from fluster.protocol.actor_messages import EndpointRecord, claim_key, endpoint_key, endpoints_pattern
from fluster.protocol.codec import decode, encode

log = logging.getLogger(__name__)

REFRESH_S = ENDPOINT_TTL_S / 3
WATCH_STOP_S = 2.0  # at most this long to stop a watch
_DIRECT_BATCH = 10_000
_DIRECT_TIMEOUT_S = 10.0

_DELETED = ("DEL", "PURGE")


async def publish(kv: KeyValue, record: EndpointRecord) -> None:
    """Write (or refresh) the endpoint's key."""
    await kv.put(endpoint_key(record.name, record.endpoint_id), encode(record))


async def withdraw(kv: KeyValue, record: EndpointRecord) -> None:
    """Delete the endpoint's key, and its claim on the name when it holds one."""
    await kv.delete(endpoint_key(record.name, record.endpoint_id))
    if record.exclusive:
        found = await get_model(kv, claim_key(record.name), EndpointRecord)
        if found is not None and found[0].endpoint_id == record.endpoint_id:
            try:
                await kv.delete(claim_key(record.name), last=found[1])
            except KeyWrongLastSequenceError:
                pass  # someone else claimed it after ours expired: theirs now


async def claim(kv: KeyValue, record: EndpointRecord) -> int:
    """Create the name's claim key for an exclusive registration and return its revision.

    Raises:
        ActorNameTaken: a live endpoint already holds the name.
    """
    key = claim_key(record.name)
    try:
        return int(await kv.create(key, encode(record)))
    except KeyWrongLastSequenceError:
        pass
    # nats-py's create() retries over a DEL/PURGE marker but not over the marker a TTL expiry leaves behind.
    try:
        entry = await kv.get(key)
    except (KeyNotFoundError, NotFoundError):
        entry = None
    if (
        entry is not None
        and entry.operation not in _DELETED
        and entry.value
        and not _earlier_attempt(entry.value, record)
    ):
        raise ActorNameTaken(f"actor {record.name!r} is already held by {_holder(entry.value)}")
    try:
        return int(await kv.update(key, encode(record), last=entry.revision if entry else 0))
    except KeyWrongLastSequenceError as exc:
        raise ActorNameTaken(f"actor {record.name!r} was claimed concurrently by another server") from exc


async def refresh_claim(kv: KeyValue, record: EndpointRecord, revision: int) -> int | None:
    """Refresh the claim if it is still ours; the new revision, or None when it was lost."""
    try:
        return int(await kv.update(claim_key(record.name), encode(record), last=revision))
    except KeyWrongLastSequenceError:
        return None


async def check_exclusive(kv: KeyValue, record: EndpointRecord) -> None:
    """After publishing ``record``, fail when it shares its name against an exclusive registration.

    Both sides write first and check second, so of two racing registrations at least one sees the other.

    Raises:
        ActorNameTaken: an exclusive endpoint holds the name, or ``record`` is exclusive and others serve it.
    """
    if record.exclusive:
        # An exclusive endpoint lives only while it holds the claim, which is now ours: one still listed is
        # a dead holder whose key has not expired yet (its claim may lapse a moment before it).
        others = [
            e for e in (await endpoints(kv, record.name)) if e.endpoint_id != record.endpoint_id and not e.exclusive
        ]
        if others:
            raise ActorNameTaken(
                f"actor {record.name!r} is already served by {len(others)} endpoint(s), "
                f"e.g. {_describe(others[0])}; an exclusive registration needs the name free"
            )
        return
    found = await get_model(kv, claim_key(record.name), EndpointRecord)
    if found is not None and found[0].endpoint_id != record.endpoint_id:
        raise ActorNameTaken(f"actor {record.name!r} is held exclusively by {_describe(found[0])}")


async def endpoints(kv: KeyValue, name: str) -> list[EndpointRecord]:
    """The live endpoints of actor ``name``, oldest registration first.

    ``snapshot`` reads them with one batched direct get: a watcher's "initial values done" marker is not
    reliable for this (nats-py decides it from a consumer-info reply that can overtake the deliveries).
    """
    found = await snapshot(kv, EndpointRecord, endpoints_pattern(name))
    return oldest_first(found.values())


def oldest_first(records: Iterable[EndpointRecord]) -> list[EndpointRecord]:
    """Endpoints in the order callers list them: oldest registration first."""
    return sorted(records, key=lambda r: (r.registered_ms, r.endpoint_id))


async def watch(kv: KeyValue, name: str) -> AsyncGenerator[dict[str, EndpointRecord], None]:
    """The live endpoints of ``name`` by endpoint id: after the initial read, then at each change."""
    watcher = await kv.watch(endpoints_pattern(name))
    current: dict[str, EndpointRecord] = {}
    ready = False
    try:
        async for entry in watcher:
            if entry is None:
                ready = True
                yield dict(current)
                continue
            endpoint_id = entry.key.rsplit(".", 1)[-1]
            if entry.operation in _DELETED or not entry.value:
                current.pop(endpoint_id, None)
            else:
                try:
                    current[endpoint_id] = decode(entry.value, EndpointRecord)
                except ProtocolError:
                    log.warning("ignoring undecodable endpoint key=%s", entry.key)
                    continue
            if ready:
                yield dict(current)
    finally:
        # bounded and shielded: a closing connection may never answer the unsubscribe, and a cancelled
        # watch must still end
        with anyio.move_on_after(WATCH_STOP_S, shield=True):
            try:
                await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py leaves stop() unannotated
            except Exception as exc:  # a closed connection has no subscription left to stop
                log.debug("endpoint watch stop failed: %r", exc)


def _earlier_attempt(value: bytes, record: EndpointRecord) -> bool:
    """Whether the claim ``value`` is held by an earlier attempt of ``record``'s own job: a restarted actor
    takes its name over (the controller never runs two attempts of a job at once, so that one is gone)."""
    try:
        holder = decode(value, EndpointRecord)
    except ProtocolError:
        return False
    return record.job_id is not None and holder.job_id == record.job_id and holder.endpoint_id != record.endpoint_id


def _holder(value: bytes) -> str:
    try:
        return _describe(decode(value, EndpointRecord))
    except ProtocolError:
        return "an unknown endpoint"


def _describe(record: EndpointRecord) -> str:
    owner = f" of job {record.job_id}" if record.job_id else ""
    return f"endpoint {record.endpoint_id}{owner}"
