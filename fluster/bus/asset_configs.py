"""What each JetStream asset of a namespace is: its storage, history, TTL and replicas, and how long what it
holds lives. Creating, binding and repairing them is ``assets``'.
"""

from __future__ import annotations

from nats.js.api import KeyValueConfig, RetentionPolicy, StorageType, StreamConfig

from fluster.protocol.subjects import Subjects, actor_transfer_all, actor_transfer_stream

LOG_MAX_AGE_S = 7 * 24 * 3600
OBJECT_TTL_S = 7 * 24 * 3600
LEADER_LEASE_S = 10.0  # a controller that stops refreshing its lease for this long is replaced
ENDPOINT_TTL_S = 6.0  # an endpoint not refreshed for this long has died (its server refreshes every 2 s)
TRANSFER_MAX_AGE_S = 15 * 60.0  # an actor transfer nobody read within this is garbage
GANG_VALUE_TTL_S = 24 * 3600.0
USAGE_TTL_S = 7 * 24 * 3600.0  # a job's usage record (fluster.observe.usage) is kept this long after its last write


def kv_configs(subjects: Subjects, r: int) -> list[KeyValueConfig]:
    """The namespace's KV buckets, each with ``r`` replicas."""
    return [
        KeyValueConfig(bucket=subjects.jobs_bucket, history=5, storage=StorageType.FILE, direct=True, replicas=r),
        KeyValueConfig(bucket=subjects.workers_bucket, history=1, storage=StorageType.FILE, direct=True, replicas=r),
        KeyValueConfig(
            bucket=subjects.endpoints_bucket,
            history=1,
            ttl=ENDPOINT_TTL_S,
            limit_marker_ttl=ENDPOINT_TTL_S,
            storage=StorageType.MEMORY,
            direct=True,  # actor lookups read every endpoint of a name in one batched direct get
            replicas=r,
        ),
        # a job's entrypoint, written once by its submitter and read by its worker: job records stay small
        KeyValueConfig(
            bucket=subjects.entrypoints_bucket, history=1, storage=StorageType.FILE, direct=True, replicas=r
        ),
        KeyValueConfig(
            bucket=subjects.leader_bucket, history=1, ttl=LEADER_LEASE_S, storage=StorageType.FILE, replicas=r
        ),
        # what the tasks of a job exchange with fluster.gang.all_gather; kept a day
        KeyValueConfig(
            bucket=subjects.gangs_bucket, history=1, ttl=GANG_VALUE_TTL_S, storage=StorageType.FILE, replicas=r
        ),
        # per-job usage (fluster.observe.usage): written by workers, read by the CLI and the dashboard
        KeyValueConfig(
            bucket=subjects.usage_bucket, history=1, ttl=USAGE_TTL_S, storage=StorageType.FILE, direct=True, replicas=r
        ),
    ]


def stream_configs(subjects: Subjects, r: int) -> list[StreamConfig]:
    """The namespace's streams (besides those behind its buckets and object store), each with ``r`` replicas."""
    return [
        StreamConfig(
            name=subjects.logs_stream,
            subjects=[subjects.logs_all],
            max_age=LOG_MAX_AGE_S,
            storage=StorageType.FILE,
            allow_direct=True,
            num_replicas=r,
        ),
        # large actor arguments and results: memory, because they live for one call (re-created by repair
        # after a server restart, like the endpoints bucket)
        StreamConfig(
            name=actor_transfer_stream(subjects),
            subjects=[actor_transfer_all(subjects)],
            storage=StorageType.MEMORY,
            retention=RetentionPolicy.LIMITS,
            max_age=TRANSFER_MAX_AGE_S,
            max_msg_size=-1,
            num_replicas=r,
        ),
    ]
