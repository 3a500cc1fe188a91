"""Every control message, as a frozen pydantic model. Commands are verbs, events past tense, replies ``...Reply``.

User callables, arguments and results are cloudpickle ``bytes`` (or a ``Payload`` that may point into the
object store); everything else is typed. Timestamps are int milliseconds since the epoch.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from fluster.protocol.ids import JobIdField, NameField, TokenField
from fluster.protocol.resources import CpuDevice, Device, ResourceSpec

MAX_TEXT = 64 * 1024  # a reason, an error line, a host name: longer text is cut by its sender
MAX_RUNNING = 100_000  # attempts one heartbeat may list


def now_ms() -> int:
    return int(time.time() * 1000)


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


M = TypeVar("M", bound=BaseModel)
_NO_FIELDS_SET: set[str] = set()  # shared by what ``evolve`` and ``construct`` make; nobody changes it


def evolve(model: M, **changes: Any) -> M:
    """A copy of a (frozen) message with ``changes``, not validated: for the controller's own transitions,
    where ``model_copy`` cost more than the transition (and gave every copy a fields-set of its own)."""
    new = model.__class__.__new__(model.__class__)
    object.__setattr__(new, "__dict__", {**model.__dict__, **changes})
    object.__setattr__(new, "__pydantic_fields_set__", _NO_FIELDS_SET)
    object.__setattr__(new, "__pydantic_extra__", None)
    object.__setattr__(new, "__pydantic_private__", None)
    return new


class JobState(StrEnum):
    PENDING = "PENDING"
    BUILDING = "BUILDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    KILLED = "KILLED"
    WORKER_FAILED = "WORKER_FAILED"
    PREEMPTED = "PREEMPTED"
    UNSCHEDULABLE = "UNSCHEDULABLE"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.KILLED, JobState.WORKER_FAILED, JobState.UNSCHEDULABLE}
)


class ErrorInfo(Message):
    """An exception on the wire: its type, message, traceback text and, when it pickles, the exception itself."""

    type_name: str
    message: str
    traceback: str = ""
    pickled: bytes | None = None
    code: str = "error"


class Payload(Message):
    """Bytes that travel inline when small, or as a reference: to an object in the namespace's object store
    (``ref``), or to a key of its entrypoints bucket (``entry``: a job's entrypoint, written by its submitter
    and read by the worker, so job records and the controller never carry it)."""

    inline: bytes | None = None
    ref: str | None = Field(default=None, max_length=1024)
    entry: TokenField | None = None
    size: int = Field(default=0, ge=0)
    # SHA-256 (hex) of the bytes a reference stands for, checked by the reader: a record or dispatch that only
    # the controller writes vouches for bytes in a store that other identities of the namespace can write
    digest: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


# -- environments and requests --------------------------------------------------------------------------


class EnvironmentSpec(Message):
    env_vars: dict[str, str] = Field(default_factory=dict)
    pip_packages: list[str] = Field(default_factory=list)
    extras: list[str] = Field(default_factory=list)
    workspace: str | None = None  # content digest of an uploaded workspace bundle
    workspace_size: int = 0


MAX_REPLICAS = 4096  # tasks of one job


class Constraint(Message):
    """A condition on a worker's labels: ``eq``/``in`` (the label has one of ``values``), ``not_in``, ``exists``."""

    label: NameField
    op: Literal["eq", "in", "not_in", "exists"] = "eq"
    values: list[Annotated[str, Field(max_length=255)]] = Field(default_factory=list, max_length=64)


class PayloadSignature(Message):
    """A submitter's Ed25519 signature (``fluster.security.signing``): its public nkey and the signature."""

    key: str = Field(min_length=56, max_length=56)
    sig: bytes = Field(min_length=64, max_length=64)


class JobRequest(Message):
    name: NameField
    entrypoint: Payload
    resources: ResourceSpec = Field(default_factory=ResourceSpec)
    environment: EnvironmentSpec = Field(default_factory=EnvironmentSpec)
    scheduling_timeout_ms: int | None = None
    max_retries_failure: int = Field(default=0, ge=0)
    max_retries_preemption: int = Field(default=100, ge=0)
    parent_id: JobIdField | None = None
    # multi-host: ``replicas`` tasks (indices 0..N-1), each on its own worker slot with ``resources``
    replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    coschedule: bool = False  # a gang: all tasks placed in one decision, failed and retried as one
    group_by: NameField | None = None  # a gang's tasks all on workers that share this label's value
    constraints: list[Constraint] = Field(default_factory=list, max_length=32)
    max_task_failures: int = Field(default=0, ge=0)  # independent tasks that may fail for good
    signature: PayloadSignature | None = None  # of everything above, by the submitter (optional)

    @property
    def is_gang(self) -> bool:
        """Placed, failed and retried as one unit (a single task is a gang of one)."""
        return self.coschedule or self.replicas == 1


class SubmitJob(Message):
    job_id: JobIdField
    token: TokenField  # the same token on a retried submit makes it idempotent
    request: JobRequest


class SubmitJobReply(Message):
    job_id: str
    created: bool


class KillJob(Message):
    job_id: JobIdField
    reason: str = Field(default="killed by user", max_length=1024)


class KillJobReply(Message):
    job_id: str
    state: JobState
    already_finished: bool
    message: str
    killed: list[str] = Field(default_factory=list)


# -- job records (jobs KV) ------------------------------------------------------------------------------


class AttemptRecord(Message):
    attempt: int  # the task's attempt number (a gang's tasks share it)
    worker_id: str
    incarnation: str
    state: JobState
    assigned_at_ms: int
    started_at_ms: int | None = None
    finished_at_ms: int | None = None
    exit_code: int | None = None
    error: str | None = None
    task: int = 0
    host: str | None = None  # the worker's host, for the job's other tasks (FLUSTER_TASK_HOSTS)


class TaskRecord(Message):
    """One task of a multi-task job, as its attempts left it (a single-task job keeps this in the job)."""

    index: int
    state: JobState = JobState.PENDING
    failure_count: int = 0
    preemption_count: int = 0
    started_at_ms: int | None = None
    finished_at_ms: int | None = None
    exit_code: int | None = None
    error: str | None = None
    error_info: ErrorInfo | None = None
    result: Payload | None = None


class JobRecord(Message):
    job_id: str
    token: str
    request: JobRequest
    state: JobState = JobState.PENDING
    submitted_at_ms: int
    seq: int = 0  # FIFO order among pending jobs: submission order, stable across controller restarts
    attempts: list[AttemptRecord] = Field(default_factory=list)
    failure_count: int = 0
    preemption_count: int = 0
    started_at_ms: int | None = None
    finished_at_ms: int | None = None
    exit_code: int | None = None
    error: str | None = None
    error_info: ErrorInfo | None = None
    result: Payload | None = None  # the entrypoint's return value (cloudpickle) once SUCCEEDED
    kill_requested: bool = False
    tasks: list[TaskRecord] = Field(default_factory=list)  # one per task of a multi-task job; empty for one task
    # the state the job takes once its running attempts have stopped (a gang restarting, too many failures)
    after_stop: JobState | None = None
    pending_reason: str | None = None  # why the scheduler has not placed it (while it waits)

    @property
    def current(self) -> AttemptRecord | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def worker_id(self) -> str | None:
        attempt = self.current
        if attempt is None or attempt.state.is_terminal or attempt.state == JobState.PREEMPTED:
            return None
        return attempt.worker_id


# -- workers --------------------------------------------------------------------------------------------


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


# -- logs -----------------------------------------------------------------------------------------------


class LogLine(Message):
    at_ms: int
    stream: Literal["stdout", "stderr", "system"]
    attempt: int
    line: str
    final: bool = False  # the last line of an attempt (no more output follows from it)
    task: int = 0


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
