"""``ClusterClient``: the async API for submitting, watching and killing jobs in one namespace of a cluster.

It reads job and worker state straight from KV (watches, no polling) and talks to the controller only to
submit and kill. ``fluster.Client`` is the blocking facade over it. Where it connects is ``client/connect.py``'s,
how it sends a submission ``client/submission.py``'s, and how it follows a job (wait, result, logs)
``client/follow.py``'s.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncGenerator, Callable
from types import TracebackType
from typing import Any

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from fluster.bus.assets import Assets, ensure_assets, watch_reconnects
from fluster.bus.blobs import store_entrypoint
from fluster.bus.connection import connect
from fluster.bus.kv import get_model, snapshot
from fluster.bus.options import ConnectOptions
from fluster.bus.rpc import request
from fluster.client.connect import Connecting, resolve_target
from fluster.client.follow import finished_value, follow_logs, read_record, wait_record
from fluster.client.submission import environment_spec, send_submit
from fluster.environ import JobEnv, default_signing
from fluster.errors import PermissionDenied
from fluster.protocol.ids import JobId, child_job_id, new_token, validate_job_id
from fluster.protocol.messages import (
    JobRecord,
    JobRequest,
    JobState,
    KillJob,
    KillJobReply,
    LogLine,
    SubmitJob,
    WorkerInfo,
)
from fluster.protocol.observe import UsageRecord
from fluster.protocol.permissions import Role
from fluster.protocol.resources import ResourceSpec
from fluster.protocol.subjects import Subjects
from fluster.security.identity import identity_of, may_create_assets
from fluster.types import Constraints, Entrypoint, Environment, JobStatus, constraint_messages

log = logging.getLogger(__name__)

KILL_TIMEOUT_S = 60.0


class ClusterClient:
    """A connection to one namespace of a fluster cluster. Create it with ``await ClusterClient.connect()``."""

    def __init__(
        self,
        nc: NATS,
        url: str,
        namespace: str,
        assets: Assets,
        job: JobEnv | None,
        options: ConnectOptions | None = None,
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.url = url  # without credentials: they are in ``options``
        self.options = options or ConnectOptions()
        self.namespace = namespace
        self.subjects = Subjects(namespace)
        self.assets = assets
        self.job = job  # set when this process runs inside a fluster job of this namespace
        self.identity = identity_of(self.options)  # the fluster identity it connects as (None: other credentials)
        # payload signing (fluster.security.signing): what it signs its submissions and actor calls with, and
        # the keys its actor servers accept calls from; FLUSTER_SIGNING_KEY and FLUSTER_TRUSTED_KEYS by default
        self.signer, self.verifier = default_signing()

    @staticmethod
    def connect(
        url: str | None = None, namespace: str | None = None, *, options: ConnectOptions | None = None
    ) -> Connecting:
        """Connect to the cluster at ``url`` with ``options``' credentials and TLS.

        Inside a job, the defaults are the job's own cluster (its worker's connection file); elsewhere
        ``FLUSTER_URL``, then ``NATS_URL``, and the ``NATS_*`` credentials and TLS variables or the natscli
        context (``NATS_CONTEXT``). Use ``client = await ClusterClient.connect()`` or
        ``async with ClusterClient.connect() as client``.

        Raises:
            ClusterUnavailable: no URL is configured, or nothing answers there.
            ConfigurationError: the options (or the context or connection file behind them) cannot work.
        """
        return Connecting(lambda: ClusterClient._open(url, namespace, options))

    @classmethod
    async def _open(cls, url: str | None, namespace: str | None, options: ConnectOptions | None) -> ClusterClient:
        url, namespace, options, job = resolve_target(url, namespace, options)
        nc = await connect(url, name=f"fluster-client-{uuid.uuid4().hex[:6]}", options=options)
        try:
            assets = await ensure_assets(nc.jetstream(), Subjects(namespace), create=may_create_assets(options))
        except BaseException:
            await nc.close()
            raise
        watch_reconnects(nc, assets)
        return cls(nc, url, namespace, assets, job, options)

    async def close(self) -> None:
        if not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception as exc:  # a connection that is already failing has nothing left to flush
                log.debug("drain failed: %r", exc)
                await self.nc.close()

    async def __aenter__(self) -> ClusterClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- jobs -------------------------------------------------------------------------------------------

    async def submit(
        self,
        name: str,
        entrypoint: Entrypoint | Callable[..., Any],
        resources: ResourceSpec | None = None,
        environment: Environment | None = None,
        scheduling_timeout: float | None = None,
        max_retries_failure: int = 0,
        max_retries_preemption: int = 100,
        replicas: int = 1,
        coschedule: bool = False,
        group_by: str | None = None,
        constraints: Constraints | None = None,
        max_task_failures: int = 0,
    ) -> JobId:
        """Submit a job and return its id (``name``, or ``parent/name`` when called from inside a job).

        The submit is durable once this returns; retrying it after a lost reply never creates a second job.
        ``replicas`` runs N tasks of the job (indices 0..N-1, each on a worker slot with ``resources``);
        ``coschedule`` places them all at once (a gang, optionally all on workers sharing one value of the
        ``group_by`` label); ``constraints`` (``{"zone": "a"}`` or ``Constraint``s) pick workers by label.

        Raises:
            ValueError: a bad name, resources or environment.
            JobAlreadyExists: another submission already used this job id.
            ClusterUnavailable: no controller answered within the submit deadline.
            PermissionDenied: this identity is a worker's or a controller's.
        """
        self._may("submit jobs")
        if not isinstance(entrypoint, Entrypoint):
            if not callable(entrypoint):
                raise ValueError(f"entrypoint must be an Entrypoint or a callable, got {entrypoint!r}")
            entrypoint = Entrypoint.from_callable(entrypoint)
        job_id = child_job_id(JobId(self.job.job_id) if self.job else None, name)
        env_spec = await environment_spec(self.assets.objects, environment)
        token = new_token()
        payload = await store_entrypoint(self.assets.objects, self.assets.entrypoints, token, entrypoint.to_bytes())
        timeout_ms = int(scheduling_timeout * 1000) if scheduling_timeout else None
        message = SubmitJob(
            job_id=job_id,
            token=token,
            request=JobRequest(
                name=name,
                entrypoint=payload,
                resources=resources or ResourceSpec(),
                environment=env_spec,
                scheduling_timeout_ms=timeout_ms,
                max_retries_failure=max_retries_failure,
                max_retries_preemption=max_retries_preemption,
                parent_id=self.job.job_id if self.job else None,
                replicas=replicas,
                coschedule=coschedule,
                group_by=group_by,
                constraints=constraint_messages(constraints),
                max_task_failures=max_task_failures,
            ),
        )
        if self.signer is not None:
            message = message.model_copy(update={"request": self.signer.sign_job(job_id, message.request)})
        reply = await send_submit(self.nc, self.subjects, message, self.url)
        return JobId(reply.job_id)

    async def status(self, job_id: str) -> JobStatus:
        """The job's current status.

        Raises:
            JobNotFound: no such job in this namespace.
        """
        return JobStatus.from_record(await self._record(job_id))

    async def wait(self, job_id: str, timeout: float | None = None) -> JobStatus:
        """Wait until the job is finished (by watching its KV key) and return its final status.

        Raises:
            JobNotFound: no such job.
            FlusterTimeout: still not finished after ``timeout`` seconds.
        """
        return JobStatus.from_record(await wait_record(self.assets, self.namespace, job_id, timeout))

    async def result(self, job_id: str, timeout: float | None = None) -> Any:
        """Wait for the job and return its entrypoint's return value.

        Raises:
            Exception: the job's own exception, re-raised with the remote traceback as its ``__cause__``.
            Unschedulable: no worker could take the job in time.
            JobFailed: the job ended with no result (killed, worker lost, failed outside Python).
        """
        record = await wait_record(self.assets, self.namespace, job_id, timeout)
        return await finished_value(self.assets, job_id, record)

    async def kill(self, job_id: str) -> KillJobReply:
        """Kill a job and its children; returns once their processes are gone.

        Killing a finished job changes nothing and says so (``already_finished``).

        Raises:
            JobNotFound: no such job.
            PermissionDenied: this identity is a worker's or a controller's.
        """
        validate_job_id(job_id)
        self._may("kill jobs")
        return await request(
            self.nc,
            self.subjects.kill,
            KillJob(job_id=job_id),
            KillJobReply,
            timeout=KILL_TIMEOUT_S,
            what="the controller",
        )

    async def list_jobs(self, state: JobState | str | None = None, prefix: str | None = None) -> list[JobStatus]:
        """All jobs of the namespace in submission order, optionally only those in ``state`` or under ``prefix``."""
        wanted = JobState(state) if state is not None else None
        records = await snapshot(self.assets.jobs, JobRecord)
        found = [
            r
            for r in records.values()
            if (wanted is None or r.state == wanted) and (prefix is None or r.job_id.startswith(prefix))
        ]
        found.sort(key=lambda r: r.seq)
        return [JobStatus.from_record(r) for r in found]

    async def usage(self, job_id: str) -> UsageRecord | None:
        """The CPU and memory use of the job's latest sampled attempt (None before its first sample)."""
        found = await get_model(self.assets.usage, validate_job_id(job_id), UsageRecord)
        return found[0] if found is not None else None

    async def list_usage(self) -> dict[str, UsageRecord]:
        """Every job's latest usage record, by job id."""
        return await snapshot(self.assets.usage, UsageRecord)

    async def list_workers(self) -> list[WorkerInfo]:
        workers = await snapshot(self.assets.workers, WorkerInfo)
        return sorted(workers.values(), key=lambda w: w.worker_id)

    def logs(self, job_id: str, follow: bool = False, task: int | None = None) -> AsyncGenerator[LogLine, None]:
        """The job's output lines (each tagged with its task), from the start; with ``follow``, keep going
        until the job has finished; with ``task``, only that task's."""
        return follow_logs(self.js, self.assets, self.namespace, job_id, follow=follow, task=task)

    # -- internals --------------------------------------------------------------------------------------

    async def _record(self, job_id: str) -> JobRecord:
        return await read_record(self.assets, self.namespace, job_id)

    def _may(self, what: str) -> None:
        """Say at once that this identity's role may not do ``what`` (the server would refuse it anyway, but
        a refused publish only shows as silence)."""
        if self.identity is not None and self.identity.role not in (Role.CLIENT, Role.JOB):
            raise PermissionDenied(
                f"these credentials are {self.identity.role.value} {self.identity.name!r}'s: a "
                f"{self.identity.role.value} may not {what}; use a client's (`fluster creds client`)"
            )
