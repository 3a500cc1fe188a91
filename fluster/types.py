"""Public types users build jobs from: ``Entrypoint``, ``create_environment`` and ``JobStatus``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fluster.protocol import jobfiles, messages
from fluster.protocol.messages import AttemptRecord, JobRecord, JobState
from fluster.protocol.resources import ResourceSpec


@dataclass(frozen=True)
class Entrypoint:
    """What a job runs: a Python callable with arguments, or a command (``from_binary``)."""

    callable: Callable[..., Any] | None = None
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    command: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if (self.callable is None) == (self.command is None):
            raise ValueError("an Entrypoint needs exactly one of a callable or a command")
        if self.callable is not None and not callable(self.callable):
            raise ValueError(f"Entrypoint callable must be callable, got {self.callable!r}")

    @classmethod
    def from_callable(cls, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Entrypoint:
        return cls(callable=fn, args=tuple(args), kwargs=dict(kwargs))

    @classmethod
    def from_binary(cls, command: str, args: Sequence[str] = ()) -> Entrypoint:
        """Run ``command`` with ``args`` (looked up on PATH) as the job's process."""
        if not command:
            raise ValueError("Entrypoint.from_binary needs a command")
        return cls(command=(command, *[str(a) for a in args]))

    def to_bytes(self) -> bytes:
        """The pickled form the job bootstrap reads."""
        if self.command is not None:
            return jobfiles.exec_entrypoint(list(self.command))
        return jobfiles.call_entrypoint(self.callable, tuple(self.args), dict(self.kwargs))


@dataclass(frozen=True)
class Environment:
    """A job's environment: env vars, pip packages, extras, and a workspace directory uploaded as a bundle."""

    env_vars: Mapping[str, str] = field(default_factory=dict)
    pip_packages: tuple[str, ...] = ()
    extras: tuple[str, ...] = ()
    workspace: Path | None = None


def create_environment(
    env_vars: Mapping[str, str] | None = None,
    pip_packages: Sequence[str] | None = None,
    workspace: str | Path | None = None,
    extras: Sequence[str] | None = None,
) -> Environment:
    """Describe a job's environment.

    Raises:
        ValueError: an env var name or value is not a string, or the workspace is not a directory.
    """
    env = dict(env_vars or {})
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key:
            raise ValueError(f"invalid environment variable name {key!r}")
        if not isinstance(value, str):
            raise ValueError(f"environment variable {key} must be a string, got {type(value).__name__}")
    path = Path(workspace).resolve() if workspace is not None else None
    if path is not None and not path.is_dir():
        raise ValueError(f"workspace {str(workspace)!r} is not a directory")
    return Environment(
        env_vars=env,
        pip_packages=tuple(pip_packages or ()),
        extras=tuple(extras or ()),
        workspace=path,
    )


@dataclass(frozen=True)
class Constraint:
    """A condition on worker labels: ``Constraint("zone", "in", ["a", "b"])``, ``Constraint("gpu-pool",
    "exists")``; ops ``eq`` (one value), ``in``, ``not_in``, ``exists``."""

    label: str
    op: Literal["eq", "in", "not_in", "exists"] = "eq"
    values: Sequence[str] | str = ()

    def __post_init__(self) -> None:
        if self.op not in ("eq", "in", "not_in", "exists"):
            raise ValueError(f"unknown constraint op {self.op!r}: use 'eq', 'in', 'not_in' or 'exists'")
        values = [self.values] if isinstance(self.values, str) else list(self.values)
        if self.op == "exists" and values:
            raise ValueError(f"an 'exists' constraint on {self.label!r} takes no values")
        if self.op != "exists" and not values:
            raise ValueError(f"a {self.op!r} constraint on {self.label!r} needs values")
        if self.op == "eq" and len(values) != 1:
            raise ValueError(f"an 'eq' constraint on {self.label!r} takes one value (use 'in' for several)")
        object.__setattr__(self, "values", tuple(values))

    def to_message(self) -> messages.Constraint:
        return messages.Constraint(label=self.label, op=self.op, values=list(self.values))


Constraints = Mapping[str, str] | Sequence[Constraint]


def constraint_messages(constraints: Constraints | None) -> list[messages.Constraint]:
    """``{"zone": "a"}`` (equality) or ``[Constraint(...), ...]`` as wire constraints.

    Raises:
        ValueError: a bad label, op or values.
    """
    if constraints is None:
        return []
    if isinstance(constraints, Mapping):
        return [Constraint(label, "eq", str(value)).to_message() for label, value in constraints.items()]
    out = []
    for c in constraints:
        if not isinstance(c, Constraint):
            raise ValueError(f"constraints must be a dict of label=value or Constraint objects, got {c!r}")
        out.append(c.to_message())
    return out


@dataclass(frozen=True)
class TaskStatus:
    """One task of a multi-task job."""

    index: int
    state: JobState
    worker_id: str | None
    attempt: int
    exit_code: int | None
    error: str | None
    failure_count: int
    preemption_count: int
    attempts: tuple[AttemptRecord, ...]


@dataclass(frozen=True)
class JobStatus:
    """A job as the client sees it."""

    job_id: str
    name: str
    state: JobState
    attempt: int
    worker_id: str | None
    exit_code: int | None
    error: str | None
    submitted_at_ms: int
    started_at_ms: int | None
    finished_at_ms: int | None
    failure_count: int
    preemption_count: int
    attempts: tuple[AttemptRecord, ...]
    parent_id: str | None
    resources: ResourceSpec = field(default_factory=ResourceSpec)
    error_traceback: str | None = None  # the remote traceback of a job that raised
    pending_reason: str | None = None  # why the scheduler has not placed it, when the record says
    tasks: tuple[TaskStatus, ...] = ()  # a multi-task job's tasks (empty for a job of one task)

    @property
    def finished(self) -> bool:
        return self.state.is_terminal

    @classmethod
    def from_record(cls, record: JobRecord) -> JobStatus:
        current = record.current
        return cls(
            job_id=record.job_id,
            name=record.request.name,
            state=record.state,
            attempt=current.attempt if current else 0,
            worker_id=current.worker_id if current else None,
            exit_code=record.exit_code,
            error=record.error,
            submitted_at_ms=record.submitted_at_ms,
            started_at_ms=record.started_at_ms,
            finished_at_ms=record.finished_at_ms,
            failure_count=record.failure_count,
            preemption_count=record.preemption_count,
            attempts=tuple(record.attempts),
            parent_id=record.request.parent_id,
            resources=record.request.resources,
            error_traceback=record.error_info.traceback if record.error_info is not None else None,
            pending_reason=record.pending_reason,
            tasks=tuple(_task_status(record, t.index) for t in record.tasks),
        )


def _task_status(record: JobRecord, index: int) -> TaskStatus:
    task = record.tasks[index]
    attempts = tuple(a for a in record.attempts if a.task == index)
    current = attempts[-1] if attempts else None
    running = current is not None and current.state in (JobState.PENDING, JobState.BUILDING, JobState.RUNNING)
    return TaskStatus(
        index=index,
        state=task.state,
        worker_id=current.worker_id if current is not None and running else None,
        attempt=current.attempt if current is not None else 0,
        exit_code=task.exit_code,
        error=task.error,
        failure_count=task.failure_count,
        preemption_count=task.preemption_count,
        attempts=attempts,
    )
