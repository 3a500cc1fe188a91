"""A worker's side of per-attempt identities: a fresh user key pair for each attempt, its JWT signed by the
controller (``fluster.controller.credentials``), written as ``job.creds`` (mode 0600) into the attempt's work
dir, and renewed there while the attempt runs; the job reads it at each (re)connect.

The job's identity is not the worker's: a job can do what a client can, nothing of its worker's (take other
attempts' dispatches, report for them, deregister the worker). The key pair is made here, so the seed never
crosses the network. Large results are written under the job's identity too (``connection``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
from nats.aio.client import Client as NATS

from fluster.bus.connection import connect
from fluster.bus.options import ConnectOptions
from fluster.bus.retry import backoff
from fluster.bus.rpc import request
from fluster.errors import ClusterUnavailable, FlusterError, FlusterTimeout, LeadershipLost, PermissionDenied
from fluster.protocol.messages import IssueJobIdentity, JobIdentityReply
from fluster.protocol.subjects import Subjects
from fluster.security.identity import identity_of
from fluster.security.issuer import write_private
from fluster.security.jwt import KeyPair, creds_text, new_keypair

log = logging.getLogger(__name__)

CREDS_FILE = "job.creds"
Attempt = tuple[str, int, int]  # job id, task, attempt
REQUEST_TIMEOUT_S = 5.0
RENEW_AT = 0.5  # of an identity's lifetime: when the worker asks for the next one
RENEW_CHECK_S = 1.0
ISSUE_DEADLINE_S = 30.0  # a new attempt's identity is asked for this long while no controller answers


@dataclass
class _Held:
    key: KeyPair
    path: Path
    incarnation: str
    issued_at: float
    expires_at: float


class JobIdentities:
    """The identities of a worker's running attempts: ``issue`` before the job starts, ``forget`` when it
    ended, ``run`` (in the worker's task group) renews them."""

    def __init__(self, nc: NATS, subjects: Subjects, worker_id: str, url: str, connect_options: ConnectOptions) -> None:
        self._nc = nc
        self._subjects = subjects
        self._worker_id = worker_id
        self._url = url
        self._options = connect_options
        self._held: dict[Attempt, _Held] = {}
        # A worker with a fluster identity gives each job its own; one without (an open cluster, static users
        # or credentials fluster did not issue) hands its jobs its own connection settings, as it must.
        self.enabled = identity_of(connect_options) is not None

    async def issue(self, key: Attempt, incarnation: str, workdir: Path) -> str | None:
        """Get the identity of attempt ``key`` (job id, task, attempt) and write it to ``workdir``; returns the
        file's name, or None when this worker's jobs get its own connection settings (it has no fluster
        identity).

        Raises:
            PermissionDenied: the controller refused (the attempt is no longer this worker's), or mints no
                identities (this worker will not hand its own identity to a job).
            FlusterError: no controller answered within ``ISSUE_DEADLINE_S``.
        """
        if not self.enabled:
            return None
        user = new_keypair("user")
        reply = await self._ask_through_failover(key, incarnation, user)
        if not reply.minting:
            raise PermissionDenied(
                "the controller mints no job identities, and this worker does not hand its own identity to "
                "jobs: run the controller with --job-issuer (the file `fluster creds controller` writes)"
            )
        path = workdir / CREDS_FILE
        self._held[key] = _Held(user, path, incarnation, time.time(), reply.expires_at_ms / 1000)
        write_private(path, creds_text(_jwt(reply), user.seed))
        return CREDS_FILE

    def forget(self, key: Attempt) -> None:
        self._held.pop(key, None)

    @contextlib.asynccontextmanager
    async def connection(self, key: Attempt) -> AsyncIterator[NATS | None]:
        """A connection as the attempt's identity (to write its large result), or None when it has none."""
        held = self._held.get(key)
        if held is None:
            yield None
            return
        tls = self._options
        options = ConnectOptions(
            creds=str(held.path),
            tls_cert=tls.tls_cert,
            tls_key=tls.tls_key,
            tls_ca=tls.tls_ca,
            tls_hostname=tls.tls_hostname,
            tls_first=tls.tls_first,
        )
        nc = await connect(self._url, name=f"fluster-job-{key[0]}-{key[1]}-{key[2]}", options=options)
        try:
            yield nc
        finally:
            with anyio.CancelScope(shield=True):
                await nc.close()

    async def run(self) -> None:
        """Renew each identity once half its lifetime has passed, until the attempt is forgotten."""
        while True:
            # look often enough to renew each identity well inside the half of its life that is left
            lifetimes = [held.expires_at - held.issued_at for held in self._held.values()]
            await anyio.sleep(min([RENEW_CHECK_S, *(max(0.05, life / 10) for life in lifetimes)]))
            now = time.time()
            for key, held in list(self._held.items()):
                if now < held.issued_at + (held.expires_at - held.issued_at) * RENEW_AT:
                    continue
                try:
                    reply = await self._ask(key, held.incarnation, held.key)
                    if key in self._held:
                        write_private(held.path, creds_text(_jwt(reply), held.key.seed))
                        held.issued_at, held.expires_at = now, reply.expires_at_ms / 1000
                except FlusterError as exc:  # the next check asks again, until the identity expires
                    log.warning("cannot renew the identity of job_id=%s task=%d attempt=%d: %s", *key, exc)

    async def _ask_through_failover(self, key: Attempt, incarnation: str, user: KeyPair) -> JobIdentityReply:
        """``_ask``, again while no controller answers for up to ``ISSUE_DEADLINE_S`` (a failover takes a lease)."""
        deadline, tries = anyio.current_time() + ISSUE_DEADLINE_S, 0
        while True:
            try:
                return await self._ask(key, incarnation, user)
            except (FlusterTimeout, ClusterUnavailable, LeadershipLost) as exc:
                if anyio.current_time() >= deadline:
                    raise
                log.info("no controller signs the identity of job_id=%s yet (%s): asking again", key[0], exc)
                await anyio.sleep(backoff(tries, first=0.2))
                tries += 1

    async def _ask(self, key: Attempt, incarnation: str, user: KeyPair) -> JobIdentityReply:
        job_id, task, attempt = key
        message = IssueJobIdentity(
            worker_id=self._worker_id,
            incarnation=incarnation,
            job_id=job_id,
            task=task,
            attempt=attempt,
            public_key=user.public,
        )
        return await request(
            self._nc,
            self._subjects.credentials(self._worker_id),
            message,
            JobIdentityReply,
            timeout=REQUEST_TIMEOUT_S,
            what="the controller (job identity)",
        )


def _jwt(reply: JobIdentityReply) -> str:
    if reply.jwt is None:
        raise FlusterError(f"the controller issued no identity: {reply.reason}")
    return reply.jwt
