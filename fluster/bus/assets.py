"""The JetStream assets of a namespace (KV buckets, streams, the object store), created idempotently, and put
back when they go missing.

Assets can disappear under a running cluster: a single nats-server restart drops every memory-storage asset
(the endpoints bucket, the actor-transfers stream), and an operator can delete a bucket. ``Assets.repair``
re-creates whatever is missing; ``bus.retry.with_retries`` calls it when an operation fails the way a missing
stream fails, and ``watch_reconnects`` calls it after every reconnect, so every component recovers on its own
once the server is back. What each asset is (its name, storage, TTL) is ``asset_configs``'.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType, StreamConfig
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from fluster.bus.asset_configs import ENDPOINT_TTL_S, LEADER_LEASE_S, OBJECT_TTL_S, kv_configs, stream_configs
from fluster.bus.kv import REPAIR_ATTRIBUTE
from fluster.errors import NamespaceNotReady
from fluster.protocol.subjects import (
    Subjects,
    actor_transfer_stream,
    kv_stream,
    object_stream,
)

log = logging.getLogger(__name__)

# ENDPOINT_TTL_S and LEADER_LEASE_S are asset_configs', imported from here by actor/, context/ and controller/
__all__ = [
    "ENDPOINT_TTL_S",
    "LEADER_LEASE_S",
    "REPAIR_INTERVAL_S",
    "Assets",
    "assets_when_ready",
    "ensure_assets",
    "watch_reconnects",
]

REPAIR_INTERVAL_S = 1.0  # missing assets are looked for at most this often per process


@dataclass
class Assets:
    jobs: KeyValue
    workers: KeyValue
    endpoints: KeyValue
    entrypoints: KeyValue
    gangs: KeyValue
    objects: ObjectStore
    leader: KeyValue
    logs_stream: str
    transfers_stream: str
    usage: KeyValue
    _js: JetStreamContext = field(repr=False)
    _subjects: Subjects = field(repr=False)
    _replicas: int | None = field(repr=False, default=None)
    _create: bool = field(repr=False, default=True)  # False: this identity may not create streams (it binds)
    _last_repair: float = field(repr=False, default=0.0)
    _repairing: asyncio.Future[set[str]] | None = field(repr=False, default=None)
    _on_recreated: list[Callable[[set[str]], Awaitable[None]]] = field(repr=False, default_factory=list)

    async def repair(self, force: bool = False) -> set[str]:
        """Re-create every asset that is missing; the names of those it re-created (empty when none was).

        At most one repair runs at a time, and (unless ``force``) one per ``REPAIR_INTERVAL_S``: callers that
        fail together share it. Never raises for a server that does not answer: the next call tries again.
        """
        if self._repairing is not None:
            return await asyncio.shield(self._repairing)
        if not force and time.monotonic() - self._last_repair < REPAIR_INTERVAL_S:
            return set()
        self._last_repair = time.monotonic()
        self._repairing = asyncio.get_running_loop().create_future()
        recreated: set[str] = set()
        try:
            if not self._create:  # the controller re-creates them; this process waits for that
                return set()
            recreated = await _recreate_missing(self._js, self._subjects, self._replicas)
            if recreated:
                log.warning("re-created missing JetStream assets: %s", ", ".join(sorted(recreated)))
                for hook in self._on_recreated:
                    await hook(recreated)
        except Exception as exc:  # the server is not answering yet: a later failure repairs again
            log.info("asset repair failed: %r", exc)
        finally:
            self._repairing.set_result(recreated)
            self._repairing = None
        return recreated

    def on_recreated(self, hook: Callable[[set[str]], Awaitable[None]]) -> None:
        """Call ``hook(names)`` after a repair re-created assets (the controller rewrites a lost jobs bucket)."""
        self._on_recreated.append(hook)


def watch_reconnects(nc: NATS, assets: Assets) -> None:
    """Repair ``assets`` after each reconnect of ``nc`` (a restarted server has lost its memory assets)."""
    previous = nc._reconnected_cb
    tasks: set[asyncio.Task[set[str]]] = set()

    async def reconnected() -> None:
        if previous is not None:
            await previous()
        # not awaited here: nats-py awaits this callback inside its reconnect routine
        task = asyncio.ensure_future(assets.repair(force=True))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    nc._reconnected_cb = reconnected


async def ensure_assets(
    js: JetStreamContext, subjects: Subjects, replicas: int | None = None, *, create: bool = True
) -> Assets:
    """Create (or bind) the namespace's buckets, streams and object store; safe to call from every process.

    ``replicas``: the JetStream replica count to create (or raise) the assets with, on a NATS cluster. None
    (clients, workers) creates missing assets with one replica and leaves existing ones as they are; the
    controller passes its setting, so ``fluster controller --replicas 3`` makes every asset survive the loss of
    a server. ``create=False`` only binds (an identity that may not create streams: only the controller may,
    in a cluster of fluster identities).

    Raises:
        NamespaceNotReady: ``create`` is False and an asset does not exist yet.
    """
    r = replicas or 1
    if not create:
        return await _bind(js, subjects)
    made: dict[str, KeyValue] = {}
    for config in kv_configs(subjects, r):
        made[config.bucket] = await _kv(js, config, replicas)
    for stream in stream_configs(subjects, r):
        await _stream(js, stream, replicas)
    objects = await _object_store(js, subjects.object_bucket, replicas)
    return _assets(js, subjects, made, objects, replicas)


async def assets_when_ready(js: JetStreamContext, subjects: Subjects, create: bool) -> Assets:
    """``ensure_assets``; when this identity may not create the assets (``create`` False), wait for the
    namespace's controller to (a worker or a dashboard started before it)."""
    waited = False
    while True:
        try:
            return await ensure_assets(js, subjects, create=create)
        except NamespaceNotReady as exc:
            if not waited:
                log.warning("waiting for the controller: %s", exc)
                waited = True
            await anyio.sleep(1.0)


async def _bind(js: JetStreamContext, subjects: Subjects) -> Assets:
    missing = []
    made: dict[str, KeyValue] = {}
    for config in kv_configs(subjects, 1):
        try:
            made[config.bucket] = await js.key_value(config.bucket)
        except (NotFoundError, BucketNotFoundError):
            missing.append(config.bucket)
    for stream in stream_configs(subjects, 1):
        if not await _exists(js, stream.name or ""):
            missing.append(stream.name or "")
    try:
        objects = await js.object_store(subjects.object_bucket)
    except NotFoundError:
        missing.append(subjects.object_bucket)
    if missing:
        raise NamespaceNotReady(
            f"namespace {subjects.namespace!r} is not set up: {', '.join(missing)} missing; its controller "
            "creates them (start `fluster controller`), and this identity may not"
        )
    return _assets(js, subjects, made, objects, None, create=False)


def _assets(
    js: JetStreamContext,
    subjects: Subjects,
    made: dict[str, KeyValue],
    objects: ObjectStore,
    replicas: int | None,
    create: bool = True,
) -> Assets:
    assets = Assets(
        jobs=made[subjects.jobs_bucket],
        workers=made[subjects.workers_bucket],
        endpoints=made[subjects.endpoints_bucket],
        entrypoints=made[subjects.entrypoints_bucket],
        gangs=made[subjects.gangs_bucket],
        objects=objects,
        leader=made[subjects.leader_bucket],
        logs_stream=subjects.logs_stream,
        transfers_stream=actor_transfer_stream(subjects),
        usage=made[subjects.usage_bucket],
        _js=js,
        _subjects=subjects,
        _replicas=replicas,
        _create=create,
    )
    for bound in (*made.values(), objects):
        setattr(bound, REPAIR_ATTRIBUTE, assets.repair)  # bus.kv's retries re-create a missing bucket with it
    return assets


async def _recreate_missing(js: JetStreamContext, subjects: Subjects, replicas: int | None) -> set[str]:
    r = replicas or 1
    recreated: set[str] = set()
    for config in kv_configs(subjects, r):
        if not await _exists(js, kv_stream(config.bucket)):
            await _kv(js, config, replicas)
            recreated.add(config.bucket)
    for stream in stream_configs(subjects, r):
        if not await _exists(js, stream.name or ""):
            await _stream(js, stream, replicas)
            recreated.add(stream.name or "")
    if not await _exists(js, object_stream(subjects.object_bucket)):
        await _object_store(js, subjects.object_bucket, replicas)
        recreated.add(subjects.object_bucket)
    return recreated


async def _exists(js: JetStreamContext, stream: str) -> bool:
    try:
        await js.stream_info(stream)
    except NotFoundError:
        return False
    return True


async def _kv(js: JetStreamContext, config: KeyValueConfig, replicas: int | None) -> KeyValue:
    try:
        return await js.create_key_value(config)
    except BadRequestError:  # exists with another config (an older version, other replicas): bind to it
        await _set_replicas(js, kv_stream(config.bucket), replicas)
        return await js.key_value(config.bucket)


async def _stream(js: JetStreamContext, config: StreamConfig, replicas: int | None) -> None:
    try:
        await js.add_stream(config)
    except BadRequestError:
        await _set_replicas(js, config.name or "", replicas)


async def _object_store(js: JetStreamContext, bucket: str, replicas: int | None) -> ObjectStore:
    try:
        # objects (job results, large values, bundles) expire after OBJECT_TTL_S: what a crashed owner never
        # deleted does not stay forever; a bundle that expired is uploaded again by the next submit that needs it
        return await js.create_object_store(bucket, storage=StorageType.FILE, replicas=replicas or 1, ttl=OBJECT_TTL_S)
    except BadRequestError:
        await _set_replicas(js, object_stream(bucket), replicas)
        return await js.object_store(bucket)


async def _set_replicas(js: JetStreamContext, stream: str, replicas: int | None) -> None:
    """Raise (or lower) an existing stream's replica count to ``replicas``; None leaves it alone."""
    info = await js.stream_info(stream)
    if replicas is None or info.config.num_replicas == replicas:
        return
    await js.update_stream(dataclasses.replace(info.config, num_replicas=replicas))
