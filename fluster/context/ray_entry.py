"""The first code a callable job on Ray runs: ``python -m fluster.context.ray_entry <package> [namespace]``.

``RayCluster.launch`` ships the pickled entrypoint as the file ``entrypoint.pkl`` of a Python package in the
job's ``runtime_env`` (``py_modules``): Ray stores the package in its GCS-backed store and unpacks it on
whichever node runs the job, so the pickle is readable there and nowhere else is a file needed. The callable
runs with a ray context as the current one (``get_job_context()``), which connects to the job's cluster on
first use; a stop (SIGTERM) becomes ``SystemExit`` in the job, so its ``finally`` blocks run.
"""

from __future__ import annotations

import importlib.resources
import signal
import sys
from types import FrameType

import cloudpickle

from fluster.context.current import job_context
from fluster.context.ray_backend import RayContext
from fluster.protocol.jobfiles import CALL, ENTRYPOINT_FILE

PAYLOAD = ENTRYPOINT_FILE


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        sys.stderr.write("usage: python -m fluster.context.ray_entry PACKAGE [NAMESPACE]\n")
        return 2
    package, namespace = argv[1], (argv[2] if len(argv) == 3 else None)
    kind, fn, args, kwargs = cloudpickle.loads(importlib.resources.files(package).joinpath(PAYLOAD).read_bytes())
    if kind != CALL:
        sys.stderr.write(f"fluster: {package}/{PAYLOAD} holds a {kind!r} entrypoint, not a callable\n")
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    context = RayContext(namespace=namespace, connect=False)
    try:
        with job_context(context):
            fn(*args, **kwargs)
    finally:
        context.close()
    return 0


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
