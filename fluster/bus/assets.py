"""The JetStream assets of a namespace (KV buckets, the logs stream, the object store), created idempotently."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType, StreamConfig
from nats.js.errors import BadRequestError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from fluster.protocol.subjects import Subjects

LOG_MAX_AGE_S = 7 * 24 * 3600
OBJECT_TTL_S = 7 * 24 * 3600
LEADER_LEASE_S = 10.0  # a controller that stops refreshing its lease for this long is replaced
ENDPOINT_TTL_S = 6.0  # an endpoint not refreshed for this long has died (its server refreshes every 2 s)


@dataclass
class Assets:
    jobs: KeyValue
    workers: KeyValue
    endpoints: KeyValue
    objects: ObjectStore
    leader: KeyValue
    logs_stream: str


async def ensure_assets(js: JetStreamContext, subjects: Subjects, replicas: int | None = None) -> Assets:
    """Create (or bind) the namespace's buckets, stream and object store; safe to call from every process.

    ``replicas``: the JetStream replica count to create (or raise) the assets with, on a NATS cluster. None
    (clients, workers) creates missing assets with one replica and leaves existing ones as they are; the
    controller passes its setting, so ``fluster controller --replicas 3`` makes every asset survive the loss of
    a server.
    """
    r = replicas or 1
    jobs = await _kv(
        js,
        KeyValueConfig(bucket=subjects.jobs_bucket, history=5, storage=StorageType.FILE, direct=True, replicas=r),
        replicas,
    )
    workers = await _kv(
        js,
        KeyValueConfig(bucket=subjects.workers_bucket, history=1, storage=StorageType.FILE, direct=True, replicas=r),
        replicas,
    )
    endpoints = await _kv(
        js,
        KeyValueConfig(
            bucket=subjects.endpoints_bucket,
            history=1,
            ttl=ENDPOINT_TTL_S,
            limit_marker_ttl=ENDPOINT_TTL_S,
            storage=StorageType.MEMORY,
            direct=True,  # actor lookups read every endpoint of a name in one batched direct get
            replicas=r,
        ),
        replicas,
    )
    await _stream(
        js,
        StreamConfig(
            name=subjects.logs_stream,
            subjects=[subjects.logs_all],
            max_age=LOG_MAX_AGE_S,
            storage=StorageType.FILE,
            allow_direct=True,
            num_replicas=r,
        ),
        replicas,
    )
    objects = await _object_store(js, subjects.object_bucket, replicas)
    leader = await _kv(
        js,
        KeyValueConfig(
            bucket=subjects.leader_bucket, history=1, ttl=LEADER_LEASE_S, storage=StorageType.FILE, replicas=r
        ),
        replicas,
    )
    return Assets(
        jobs=jobs,
        workers=workers,
        endpoints=endpoints,
        objects=objects,
        logs_stream=subjects.logs_stream,
        leader=leader,
    )


async def _kv(js: JetStreamContext, config: KeyValueConfig, replicas: int | None) -> KeyValue:
    try:
        return await js.create_key_value(config)
    except BadRequestError:  # exists with another config (an older version, other replicas): bind to it
        await _set_replicas(js, f"KV_{config.bucket}", replicas)
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
        await _set_replicas(js, f"OBJ_{bucket}", replicas)
        return await js.object_store(bucket)


async def _set_replicas(js: JetStreamContext, stream: str, replicas: int | None) -> None:
    """Raise (or lower) an existing stream's replica count to ``replicas``; None leaves it alone."""
    info = await js.stream_info(stream)
    if replicas is None or info.config.num_replicas == replicas:
        return
    await js.update_stream(dataclasses.replace(info.config, num_replicas=replicas))
