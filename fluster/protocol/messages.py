"""Every control message, as a frozen pydantic model. Commands are verbs, events past tense, replies ``...Reply``.

User callables, arguments and results are cloudpickle ``bytes`` (or a ``Payload`` that may point into the
object store); everything else is typed. Timestamps are int milliseconds since the epoch. Import every message
from here; this module defines the job API (submit, kill, the jobs KV's records, log lines), ``message_base``
what all messages share, and ``worker_messages`` the worker protocol.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fluster.protocol.ids import JobIdField, TokenField
from fluster.protocol.message_base import (
    Constraint,
    EnvironmentSpec,
    ErrorInfo,
    JobRequest,
    JobState,
    Message,
    Payload,
    evolve,
    now_ms,
)
from fluster.protocol.worker_messages import (
    Ack,
    AttemptRef,
    DeregisterWorker,
    Heartbeat,
    HeartbeatReply,
    IssueJobIdentity,
    JobIdentityReply,
    JobUpdated,
    RegisterWorker,
    RegisterWorkerReply,
    RunJob,
    RunJobReply,
    StopJob,
    StopJobReply,
    WorkerInfo,
    WorkerResources,
)

__all__ = [
    "Ack",
    "AttemptRecord",
    "AttemptRef",
    "Constraint",
    "DeregisterWorker",
    "EnvironmentSpec",
    "ErrorInfo",
    "Heartbeat",
    "HeartbeatReply",
    "IssueJobIdentity",
    "JobIdentityReply",
    "JobRecord",
    "JobRequest",
    "JobState",
    "JobUpdated",
    "KillJob",
    "KillJobReply",
    "LogLine",
    "Payload",
    "RegisterWorker",
    "RegisterWorkerReply",
    "RunJob",
    "RunJobReply",
    "StopJob",
    "StopJobReply",
    "SubmitJob",
    "SubmitJobReply",
    "TaskRecord",
    "WorkerInfo",
    "WorkerResources",
    "evolve",
    "now_ms",
]


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


# -- logs -----------------------------------------------------------------------------------------------


class LogLine(Message):
    at_ms: int
    stream: Literal["stdout", "stderr", "system"]
    attempt: int
    line: str
    final: bool = False  # the last line of an attempt (no more output follows from it)
    task: int = 0
