"""The channel between a worker and a job process: files in the attempt's work dir.

The job process starts in ``fluster/worker/bootstrap.py``, which imports only the standard library (a job
starts in tens of milliseconds); it repeats the constants below, and ``tests/worker/test_jobfiles.py`` checks
that they are equal.

- ``ENTRYPOINT_FILE``: the pickled entrypoint, ``(CALL, fn, args, kwargs)`` or ``(EXEC, argv)``.
- ``RESULT_FILE``: the job's outcome, in the data envelope's statuses (``fluster.protocol.values``): one JSON
  line ``{"status": OK}`` followed by the pickled value, or ``{"status": ERROR, "error": {ErrorInfo fields,
  "pickled" in base64}}``. Never a pickle as a whole: the worker reads this file, and whatever the job wrote
  into it must not run code in the worker. ``read_outcome`` gives it back as an ``Outcome``.
- ``LIFELINE_FILE``: a FIFO the worker holds open; the job sees end-of-file when the worker dies. Each lease
  renewal written to it is ``LEASE_FORMAT``: the monotonic time the lease runs until.
- ``LIFELINE_ENDED_FILE``: written by the bootstrap when its lifeline ends the job: why.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import cloudpickle

from fluster.protocol.codec import encode
from fluster.protocol.messages import ErrorInfo
from fluster.protocol.values import ERROR, OK, Outcome

ENTRYPOINT_FILE = "entrypoint.pkl"
RESULT_FILE = "result.out"
LIFELINE_FILE = "lifeline"
LEASE_FORMAT = "!d"
LIFELINE_ENDED_FILE = "lifeline.ended"
CALL = "call"
EXEC = "exec"

MAX_OUTCOME_HEADER = 16 * 1024 * 1024  # an error's JSON line (message, traceback, pickled exception) at most


def call_entrypoint(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    return bytes(cloudpickle.dumps((CALL, fn, tuple(args), dict(kwargs))))


def exec_entrypoint(argv: list[str]) -> bytes:
    return bytes(cloudpickle.dumps((EXEC, list(argv))))


def read_outcome(path: Path) -> Outcome | None:
    """What the job wrote to its result file: ``Outcome(OK, value pickle)`` or ``Outcome(ERROR, encoded
    ErrorInfo)``; None when it wrote nothing readable. It is the job's output, so it is parsed, never
    unpickled."""
    try:
        with open(path, "rb") as f:
            header = json.loads(f.readline(MAX_OUTCOME_HEADER))
            if not isinstance(header, dict):
                return None
            if header.get("status") == OK:
                return Outcome(OK, f.read())
    except (OSError, ValueError):
        return None
    error = header.get("error") if header.get("status") == ERROR else None
    if not isinstance(error, dict):
        return None
    try:
        if error.get("pickled") is not None:
            error["pickled"] = base64.b64decode(error["pickled"], validate=True)
    except (ValueError, TypeError):
        error["pickled"] = None
    try:
        info = ErrorInfo.model_validate(error)
    except ValueError:
        return None
    return Outcome(ERROR, encode(info))
