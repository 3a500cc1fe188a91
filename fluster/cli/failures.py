"""How a command fails: one ``error: ...`` line on stderr and an exit code per kind of failure, never a Python
traceback for something the user can fix. The codes (also in docs/cli.md):

====  =====================================================================================================
0     success
1     the job failed (``run``, ``result``, ``submit --wait``); ``run`` and ``result`` exit with the job's own
      exit code when it has one
2     usage: a bad flag or value (memory string, CPU count, name, module or function that does not exist)
3     the cluster cannot be reached: no NATS server, no controller, the connection was lost
4     not found: no such job (or no cluster started by ``fluster up`` for ``down``)
5     configuration: credentials, TLS files or a natscli context that cannot work (or may not do that)
6     timed out
7     conflict: the job name is taken, or a live worker already uses the worker id
70    an internal error (a bug in fluster: the traceback is printed so it can be reported)
130   interrupted (Ctrl-C); ``run`` detaches from its job and says how to reattach
====  =====================================================================================================
"""

from __future__ import annotations

import sys
import traceback

from pydantic import ValidationError

from fluster.errors import (
    ActorNotFound,
    ClusterUnavailable,
    ConfigurationError,
    FlusterError,
    FlusterTimeout,
    JobAlreadyExists,
    JobFailed,
    JobNotFound,
    PermissionDenied,
    WorkerIdInUse,
)

OK = 0
JOB_FAILED = 1
USAGE = 2
UNAVAILABLE = 3
NOT_FOUND = 4
CONFIGURATION = 5
TIMEOUT = 6
CONFLICT = 7
INTERNAL = 70
INTERRUPTED = 130


class UsageError(FlusterError, ValueError):
    """What the user typed cannot work (raised by commands after parsing: an unknown module, say)."""


class NotFound(FlusterError, LookupError):
    """What the user named does not exist (a job, a cluster started by ``fluster up``)."""


class Exit(Exception):
    """End the command with ``code``, after the command printed what it had to say."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def report(exc: BaseException) -> int:
    """Print what went wrong (one line, unless it is a bug) and return the exit code."""
    leaf = _leaf(exc)
    if isinstance(leaf, Exit):
        return leaf.code
    if isinstance(leaf, KeyboardInterrupt):
        return INTERRUPTED
    code, message = classify(leaf)
    if code == INTERNAL:
        traceback.print_exception(leaf)
        message = f"internal error: {type(leaf).__name__}: {leaf} (a bug in fluster; please report the traceback above)"
    sys.stderr.write(f"error: {message}\n")
    return code


def classify(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one-line message for ``exc``."""
    text = _one_line(exc)
    if isinstance(exc, WorkerIdInUse | JobAlreadyExists):
        hint = "" if isinstance(exc, WorkerIdInUse) else "; pick another --name, or leave it out for a unique one"
        return CONFLICT, text + hint
    if isinstance(exc, JobNotFound | ActorNotFound | NotFound):
        hint = "; `fluster jobs` lists the jobs" if isinstance(exc, JobNotFound) else ""
        return NOT_FOUND, text + hint
    if isinstance(exc, ConfigurationError | PermissionDenied):
        return CONFIGURATION, text
    if isinstance(exc, FlusterTimeout | TimeoutError):
        return TIMEOUT, text or "timed out"
    if isinstance(exc, ClusterUnavailable):
        return UNAVAILABLE, text
    if isinstance(exc, JobFailed):
        return JOB_FAILED, text
    if isinstance(exc, UsageError):
        return USAGE, text
    if isinstance(exc, FlusterError):
        return JOB_FAILED, text
    if isinstance(exc, ValidationError):
        return USAGE, "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
    if isinstance(exc, ValueError):
        return USAGE, text
    if _is_connection_loss(exc):
        return UNAVAILABLE, f"lost the connection to NATS ({type(exc).__name__}: {exc}); is the cluster still up?"
    return INTERNAL, text


def _leaf(exc: BaseException) -> BaseException:
    """The first exception that is not a group or a cancellation (task groups wrap what their tasks raised)."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not _is_cancellation(e)] or list(exc.exceptions)
        exc = inner[0]
    return exc


def _is_cancellation(exc: BaseException) -> bool:
    import asyncio

    return isinstance(exc, asyncio.CancelledError)


def _is_connection_loss(exc: BaseException) -> bool:
    import nats.errors

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionError | nats.errors.ConnectionClosedError | nats.errors.NoServersError):
            return True
        if isinstance(seen, nats.errors.StaleConnectionError | nats.errors.OutboundBufferLimitError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(line.strip() for line in text.splitlines() if line.strip())
