"""Identifier types and the one validator for names that users and peers give (job names, actor names, worker
ids, namespaces), with the length bounds that keep every subject built from them under the server's limits.

A NATS control line (``PUB <subject> <reply> <size>``) is at most 4 KiB by default; a name that fits these
bounds keeps every subject fluster builds (``fluster.<namespace>.logs.<job id>``, an inbox beside it) well
under that, so no peer can make the controller's connection fail by naming something too long.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, NewType

from pydantic import AfterValidator

JobId = NewType("JobId", str)
WorkerId = NewType("WorkerId", str)
EndpointId = NewType("EndpointId", str)
Incarnation = NewType("Incarnation", str)

MAX_NAME = 128  # one name: a job name, an actor name, a worker id, a namespace
MAX_JOB_DEPTH = 8  # parent/child/... levels of a job id
MAX_JOB_ID = 512  # a whole job id
MAX_TOKEN = 64  # submit tokens, incarnations, endpoint and transfer ids

_NAME = re.compile(r"[A-Za-z0-9_-]+")
# the shapes every valid name and job id has, matched at once (a peer's ids are checked in every message,
# ~14 times a job in the controller): what fails them goes through the checks that say what is wrong
_TOKEN_CHARS = f"[A-Za-z0-9_-]{{1,{MAX_NAME}}}"
_NAME_FAST = re.compile(_TOKEN_CHARS)
_JOB_ID_FAST = re.compile(f"{_TOKEN_CHARS}(?:/{_TOKEN_CHARS}){{0,{MAX_JOB_DEPTH - 1}}}")
_NAME_HELP = "use letters, digits, '-' and '_' only (no spaces, '.', '/', '*' or '>')"


def validate_name(name: str, what: str = "name", max_length: int = MAX_NAME) -> str:
    """Return ``name`` if it can be a NATS subject token and KV key of bounded length, else raise ValueError.

    Raises:
        ValueError: the name is empty, too long, or has a character that subjects or KV keys cannot carry.
    """
    if type(name) is str and len(name) <= max_length and _NAME_FAST.fullmatch(name):
        return name
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} must be a non-empty string, got {_show(name)}")
    if len(name) > max_length:
        raise ValueError(f"{what} {_show(name)} is {len(name)} characters long; the limit is {max_length}")
    if not _NAME.fullmatch(name):
        if "/" in name:
            raise ValueError(f"invalid {what} {_show(name)}: it cannot contain '/' ({_NAME_HELP})")
        raise ValueError(f"invalid {what} {_show(name)}: {_NAME_HELP}")
    return name


def validate_job_id(job_id: str) -> JobId:
    """A job id is one or more valid names joined by '/' (``parent/child``), of bounded length and depth.

    Raises:
        ValueError: a component of the id is not a valid name, or the id is too long or too deep.
    """
    if type(job_id) is str and len(job_id) <= MAX_JOB_ID and _JOB_ID_FAST.fullmatch(job_id):
        return JobId(job_id)
    if not isinstance(job_id, str) or not job_id:
        raise ValueError(f"job id must be a non-empty string, got {_show(job_id)}")
    if len(job_id) > MAX_JOB_ID:
        raise ValueError(f"job id {_show(job_id)} is {len(job_id)} characters long; the limit is {MAX_JOB_ID}")
    parts = job_id.split("/")
    if len(parts) > MAX_JOB_DEPTH:
        raise ValueError(f"job id {_show(job_id)} nests {len(parts)} levels deep; the limit is {MAX_JOB_DEPTH}")
    for part in parts:
        validate_name(part, "job id component")
    return JobId(job_id)


def parent_of(job_id: str) -> str | None:
    """The id of the job that ``job_id`` was submitted from (None for a top-level job)."""
    parent, sep, _ = job_id.rpartition("/")
    return parent if sep else None


def validate_token(value: str, what: str = "token") -> str:
    return validate_name(value, what, MAX_TOKEN)


def child_job_id(parent: JobId | None, name: str) -> JobId:
    """The id of job ``name`` submitted from inside ``parent`` (or at top level when parent is None).

    Raises:
        ValueError: a bad name, or a job nested deeper than ``MAX_JOB_DEPTH`` levels.
    """
    validate_name(name, "job name")
    return validate_job_id(f"{parent}/{name}" if parent else name)


def new_worker_id(prefix: str = "worker") -> WorkerId:
    return WorkerId(f"{validate_name(prefix, 'worker id prefix', MAX_NAME - 9)}-{uuid.uuid4().hex[:8]}")


def new_incarnation() -> Incarnation:
    return Incarnation(uuid.uuid4().hex[:12])


def new_endpoint_id() -> EndpointId:
    return EndpointId(uuid.uuid4().hex[:12])


def new_token() -> str:
    return uuid.uuid4().hex


def _show(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters: an error about a 7 MiB name must not be 7 MiB long."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


# Field types for messages: a peer's id is checked when its message is decoded, before any handler sees it.
JobIdField = Annotated[str, AfterValidator(validate_job_id)]
NameField = Annotated[str, AfterValidator(validate_name)]
TokenField = Annotated[str, AfterValidator(validate_token)]
