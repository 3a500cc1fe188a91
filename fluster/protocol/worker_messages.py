"""The worker protocol: what a worker and the controller say to each other (registration, heartbeats and the
attempt lease, dispatching and stopping attempts, attempts' state updates, job identities).

Import these from ``fluster.protocol.messages``, like every message; the job API's messages are defined there.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from fluster.protocol.ids import JobIdField, NameField, TokenField
from fluster.protocol.message_base import MAX_REPLICAS, MAX_TEXT, ErrorInfo, JobRequest, JobState, Message, Payload
from fluster.protocol.resources import CpuDevice, Device

MAX_RUNNING = 100_000  # attempts one heartbeat may list


# -- workers and attempts ----------------------------------------------------------------------------------------


class WorkerResources(Message):
    cpu: float
    memory_bytes: int
    device: Device = Field(default_factory=CpuDevice)
    max_concurrent_jobs: int = 10


class WorkerInfo(Message):
    worker_id: NameField
    incarnation: TokenField
    hostname: str = Field(max_length=255)
    pid: int
    runtime: str = Field(max_length=32)
    resources: WorkerResources
    registered_at_ms: int
    metadata: dict[str, str] = Field(default_factory=dict, max_length=64)
    labels: dict[str, str] = Field(default_factory=dict, max_length=64)  # matched by jobs' constraints


class AttemptRef(Message):
    job_id: JobIdField
    attempt: int = Field(ge=0)
    task: int = Field(default=0, ge=0, lt=MAX_REPLICAS)


class RegisterWorker(Message):
    info: WorkerInfo


class RegisterWorkerReply(Message):
    lease_ms: int = Field(default=0, ge=0)  # the first attempt lease (see ``HeartbeatReply.lease_ms``)


class DeregisterWorker(Message):
    worker_id: NameField
    incarnation: TokenField


class Heartbeat(Message):
    worker_id: NameField
    incarnation: TokenField
    running: list[AttemptRef] = Field(default_factory=list, max_length=MAX_RUNNING)


class HeartbeatReply(Message):
    status: Literal["ok", "reregister"]
    kill: list[AttemptRef] = Field(default_factory=list)
    # How long after sending the heartbeat this reply answers the worker may keep its attempts running without
    # another answered heartbeat (see ``fluster.worker.lease``); 0 from a controller that grants none.
    lease_ms: int = Field(default=0, ge=0)


class Ack(Message):
    ok: bool = True
    message: str = ""


class RunJob(Message):
    """Controller → worker: run attempt ``attempt`` of a job."""

    job_id: JobIdField
    attempt: int = Field(ge=0)
    incarnation: TokenField  # the worker incarnation this dispatch was meant for
    request: JobRequest
    task: int = Field(default=0, ge=0, lt=MAX_REPLICAS)
    task_hosts: list[Annotated[str, Field(max_length=255)]] = Field(default_factory=list, max_length=MAX_REPLICAS)


class RunJobReply(Message):
    accepted: bool
    reason: str = ""


class StopJob(Message):
    """Controller → worker: stop an attempt (SIGTERM, then SIGKILL after ``grace_ms``)."""

    job_id: JobIdField
    attempt: int = Field(ge=0)
    grace_ms: int = Field(default=5000, ge=0, le=3_600_000)
    state: Literal[JobState.KILLED, JobState.PREEMPTED] = JobState.KILLED  # a stop never succeeds a job
    task: int = Field(default=0, ge=0, lt=MAX_REPLICAS)


class StopJobReply(Message):
    stopped: bool
    message: str = ""


REPORTED_STATES = frozenset(
    {JobState.BUILDING, JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.KILLED, JobState.PREEMPTED}
)


def _reported(state: JobState) -> JobState:
    if state not in REPORTED_STATES:
        raise ValueError(f"a worker cannot report an attempt {state.value}")
    return state


class JobUpdated(Message):
    """Worker → controller: an attempt changed state (BUILDING, RUNNING or a final state)."""

    worker_id: NameField
    incarnation: TokenField
    job_id: JobIdField
    attempt: int = Field(ge=0)
    state: Annotated[JobState, AfterValidator(_reported)]
    at_ms: int
    exit_code: int | None = None
    error: str | None = Field(default=None, max_length=MAX_TEXT)
    error_info: ErrorInfo | None = None
    result: Payload | None = None
    task: int = Field(default=0, ge=0, lt=MAX_REPLICAS)


# -- job identities (fluster.security.issuer) -----------------------------------------------------------


class IssueJobIdentity(Message):
    """Worker → controller: sign the identity of an attempt assigned to me, for this user public key (the
    worker made the key pair; the seed stays with it). Asked again, same key, to renew before expiry."""

    worker_id: NameField
    incarnation: TokenField
    job_id: JobIdField
    attempt: int = Field(ge=0)
    public_key: str = Field(min_length=56, max_length=56, pattern=r"^U[A-Z2-7]{55}$")
    task: int = Field(default=0, ge=0, lt=MAX_REPLICAS)


class JobIdentityReply(Message):
    jwt: str | None = Field(default=None, max_length=MAX_TEXT)  # None: refused (see ``reason``)
    expires_at_ms: int = 0
    minting: bool = True  # False: this controller mints no job identities (an open or static-users cluster)
    reason: str = Field(default="", max_length=MAX_TEXT)
