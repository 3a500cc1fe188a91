"""What each role may publish and subscribe to in one namespace: the least privilege that nats-server enforces.

Pure data, built beside ``Subjects``: ``fluster.security`` puts these lists into the templates of the account's
scoped signing keys, where the server expands ``{{name()}}`` into the name of the user that connects (a
worker's id, a job identity's name). docs/security.md explains every grant.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from fluster.protocol.ids import validate_name
from fluster.protocol.subjects import Subjects, actor_transfer_all, actor_transfer_stream

NAME = "{{name()}}"  # expanded by nats-server to the connecting user's JWT name
JS_API = "$JS.API"
WORKER_VERBS = ("register", "deregister", "heartbeat", "update", "credentials")  # a worker's controller subjects


class Role(StrEnum):
    CONTROLLER = "controller"
    WORKER = "worker"
    CLIENT = "client"
    JOB = "job"  # minted for one attempt by the controller, expiring


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


@dataclass(frozen=True)
class Streams:
    """The JetStream streams of a namespace (a KV bucket ``b`` is stream ``KV_b``, an object store ``OBJ_b``)."""

    jobs: str
    workers: str
    endpoints: str
    entrypoints: str
    leader: str
    gangs: str
    usage: str
    objects: str
    logs: str
    transfers: str

    @classmethod
    def of(cls, s: Subjects) -> Streams:
        return cls(
            jobs=f"KV_{s.jobs_bucket}",
            workers=f"KV_{s.workers_bucket}",
            endpoints=f"KV_{s.endpoints_bucket}",
            entrypoints=f"KV_{s.entrypoints_bucket}",
            leader=f"KV_{s.leader_bucket}",
            gangs=f"KV_{s.gangs_bucket}",
            usage=f"KV_{s.usage_bucket}",
            objects=f"OBJ_{s.object_bucket}",
            logs=s.logs_stream,
            transfers=actor_transfer_stream(s),
        )

    @property
    def all(self) -> tuple[str, ...]:
        return tuple(vars(self).values())


def inbox_prefix(namespace: str, role: Role, name: str) -> str:
    """The private inbox prefix of an identity: only it may subscribe below it, so nobody reads its replies.
    Dots separate the parts (no name contains one), so no two identities' prefixes overlap."""
    return f"_INBOX_{validate_name(namespace, 'namespace')}.{role.value}.{name}"


def role_permissions(s: Subjects, role: Role) -> Permissions:
    """The publish and subscribe allow-lists of ``role`` in ``s``'s namespace (templates: see ``NAME``)."""
    st = Streams.of(s)
    inbox = f"{inbox_prefix(s.namespace, role, NAME)}.>"
    # every role binds every asset of its namespace (STREAM.INFO) and may find a stream by subject (NAMES)
    bind = (*(f"{JS_API}.STREAM.INFO.{stream}" for stream in st.all), f"{JS_API}.STREAM.NAMES")
    metrics = f"{s.prefix}.metrics"  # snapshots on <metrics>.<component>.<source id>; a dashboard polls them
    if role is Role.CONTROLLER:
        return Permissions(
            publish=(
                f"{s.prefix}.worker.*.run",
                f"{s.prefix}.worker.*.kill",
                f"{JS_API}.INFO",  # nats-py reads the account's JetStream limits before it makes a bucket
                *bind,
                *(grant for stream in st.all for grant in (*_own(stream), *_read(stream))),
                *(f"$KV.{b}.>" for b in (s.jobs_bucket, s.workers_bucket, s.leader_bucket, s.entrypoints_bucket)),
                f"$KV.{s.endpoints_bucket}.>",
                f"$O.{s.object_bucket}.>",
                f"{metrics}.controller.*",
            ),
            subscribe=(s.controller_all, s.metrics_poll, inbox),
        )
    if role is Role.WORKER:
        # its own dispatch and kill subjects and its own controller subjects; log lines and its jobs' usage
        # records; its own metrics; entrypoints by key only (a direct get names the key; no listing);
        # objects (workspace bundles, large entrypoints) read only. No stream, purge or other KV write.
        return Permissions(
            publish=(
                *(f"{s.prefix}.ctl.{verb}.{NAME}" for verb in WORKER_VERBS),
                s.logs_all,
                f"$KV.{s.usage_bucket}.>",
                f"{metrics}.worker.{NAME}",
                *bind,
                f"{JS_API}.DIRECT.GET.{st.entrypoints}.>",
                *_read(st.objects),
            ),
            subscribe=(f"{s.prefix}.worker.{NAME}.run", f"{s.prefix}.worker.{NAME}.kill", s.metrics_poll, inbox),
        )
    # clients and jobs: submit and kill, read the namespace's state, logs, usage and metrics, store entrypoints
    # and objects, serve and call actors (the endpoints bucket, the transfers stream), exchange a gang's values;
    # purge only the chunks of objects and of transfers (an overwritten object's, a consumed transfer's)
    actors = f"{s.prefix}.actor.>"
    readable = (st.jobs, st.workers, st.endpoints, st.logs, st.objects, st.transfers, st.gangs, st.usage)
    return Permissions(
        publish=(
            s.submit,
            s.kill,
            actors,
            actor_transfer_all(s),
            f"$KV.{s.entrypoints_bucket}.>",
            f"$KV.{s.endpoints_bucket}.>",
            f"$KV.{s.gangs_bucket}.>",
            f"$O.{s.object_bucket}.>",
            f"{metrics}.actor.*",
            f"{metrics}.pool.*",
            s.metrics_poll,
            *bind,
            *(grant for stream in readable for grant in _read(stream)),
            f"{JS_API}.STREAM.PURGE.{st.objects}",
            f"{JS_API}.STREAM.PURGE.{st.transfers}",
        ),
        subscribe=(actors, s.metrics_all, s.metrics_poll, inbox),
    )


def _read(stream: str) -> tuple[str, ...]:
    """Reading a stream: direct and API gets, consumers (KV watches, ordered reads) and their flow control."""
    return (
        f"{JS_API}.DIRECT.GET.{stream}",
        f"{JS_API}.DIRECT.GET.{stream}.>",
        f"{JS_API}.STREAM.MSG.GET.{stream}",
        f"{JS_API}.CONSUMER.CREATE.{stream}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.>",
        f"{JS_API}.CONSUMER.INFO.{stream}.*",
        f"{JS_API}.CONSUMER.DELETE.{stream}.*",
        f"$JS.ACK.{stream}.>",
        f"$JS.FC.{stream}.>",
    )


def _own(stream: str) -> tuple[str, ...]:
    """Owning a stream: create it, change its replicas, purge it (the controller's; nobody deletes one)."""
    verbs = ("STREAM.CREATE", "STREAM.UPDATE", "STREAM.PURGE", "STREAM.MSG.DELETE")
    return tuple(f"{JS_API}.{verb}.{stream}" for verb in verbs)
