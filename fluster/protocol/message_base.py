"""What every message is built on, and the vocabulary both the job API (``messages``) and the worker protocol
(``worker_messages``) use: ``Message`` (frozen, no extra fields), ``evolve``, the text and size limits, job
states, ``ErrorInfo``, ``Payload``, and ``JobRequest``: what a job asks for, carried by its submit and by each
dispatch of it. Messages are imported from ``fluster.protocol.messages``; ``Message`` itself, for the models of
other protocol modules, from here.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from fluster.protocol.ids import JobIdField, NameField, TokenField
from fluster.protocol.resources import ResourceSpec

MAX_TEXT = 64 * 1024  # a reason, an error line, a host name: longer text is cut by its sender


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
