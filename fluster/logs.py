"""Structured logs: the fields a log record carries besides its message (job id, attempt, worker id, actor,
component), bound to the running task with ``bind_context`` and added to every record by ``ContextFilter``.

Library code only binds (``bind_context(job_id=...)`` at the start of the task that works for a job: asyncio
copies the context into each new task, so a binding reaches the tasks it starts and nothing else). Output is
configured in one place, ``configure_logging``, which only the CLI calls: readable text by default, one JSON
object a line with ``--log-format json``.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from typing import IO, Any, Literal

FIELDS = ("component", "worker_id", "job_id", "attempt", "actor")  # in the order text output shows them
LogFormat = Literal["text", "json"]

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("fluster_log_context", default=None)


def bind_context(**fields: Any) -> None:
    """Add ``fields`` (names from ``FIELDS``) to the log records of this task and of the tasks it starts."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown log context field(s): {', '.join(sorted(unknown))}")
    current = _context.get()
    _context.set({**current, **fields} if current else dict(fields))


def current_context() -> dict[str, Any]:
    return dict(_context.get() or {})


def context_with(**fields: Any) -> contextvars.Context:
    """A copy of the current context with ``fields`` bound: for tasks started with ``create_task(context=...)``."""
    ctx = contextvars.copy_context()
    ctx.run(bind_context, **fields)
    return ctx


def job_log_fields(job: Any) -> dict[str, Any]:
    """The fields that name the job a process runs as (a ``fluster.environ.JobEnv``, or None outside a job)."""
    if job is None:
        return {}
    return {"job_id": job.job_id, "attempt": job.attempt, "worker_id": job.worker_id or None}


class ContextFilter(logging.Filter):
    """Sets every field of ``FIELDS`` on each record: the bound value, else None."""

    def filter(self, record: logging.LogRecord) -> bool:
        bound = _context.get() or {}
        for name in FIELDS:
            if not hasattr(record, name) or getattr(record, name) is None:
                setattr(record, name, bound.get(name))
        return True


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [job_id=... attempt=... worker_id=...]``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = [f"{name}={getattr(record, name)}" for name in FIELDS if getattr(record, name, None) is not None]
        if not fields:
            return text
        head, sep, tail = text.partition("\n")  # a traceback follows the first line
        return f"{head} [{' '.join(fields)}]{sep}{tail}"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (ISO 8601, UTC), level, logger, message, the context fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - stdlib name
        from datetime import UTC, datetime

        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


def configure_logging(level: str | int = "INFO", fmt: LogFormat = "text", stream: IO[str] | None = None) -> None:
    """Send every logger's records to ``stream`` (stderr) in ``fmt``; replaces handlers set before."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
