"""Identifier types and the one validator for names that users give (job names, actor names, namespaces)."""

from __future__ import annotations

import re
import uuid
from typing import NewType

JobId = NewType("JobId", str)
WorkerId = NewType("WorkerId", str)
EndpointId = NewType("EndpointId", str)
Incarnation = NewType("Incarnation", str)

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_NAME_HELP = "use letters, digits, '-' and '_' only (no spaces, '.', '/', '*' or '>')"


def validate_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it can be a NATS subject token and KV key, else raise ValueError.

    Raises:
        ValueError: the name is empty or has a character that subjects or KV keys cannot carry.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} must be a non-empty string, got {name!r}")
    if not _NAME.match(name):
        raise ValueError(f"invalid {what} {name!r}: {_NAME_HELP}")
    return name


def validate_job_id(job_id: str) -> JobId:
    """A job id is one or more valid names joined by '/' (``parent/child``).

    Raises:
        ValueError: a component of the id is not a valid name.
    """
    if not isinstance(job_id, str) or not job_id:
        raise ValueError(f"job id must be a non-empty string, got {job_id!r}")
    for part in job_id.split("/"):
        validate_name(part, "job id component")
    return JobId(job_id)


def child_job_id(parent: JobId | None, name: str) -> JobId:
    """The id of job ``name`` submitted from inside ``parent`` (or at top level when parent is None)."""
    validate_name(name, "job name")
    return JobId(f"{parent}/{name}" if parent else name)


def new_worker_id(prefix: str = "worker") -> WorkerId:
    return WorkerId(f"{validate_name(prefix, 'worker id prefix')}-{uuid.uuid4().hex[:8]}")


def new_incarnation() -> Incarnation:
    return Incarnation(uuid.uuid4().hex[:12])


def new_endpoint_id() -> EndpointId:
    return EndpointId(uuid.uuid4().hex[:12])


def new_token() -> str:
    return uuid.uuid4().hex
