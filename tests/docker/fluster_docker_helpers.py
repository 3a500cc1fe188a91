"""Helpers for the docker and environment tests: attempt specs, running attempts, results, wheels."""

from __future__ import annotations

import base64
import hashlib
import sys
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import cloudpickle

from fluster.protocol.jobfiles import ENTRYPOINT_FILE, RESULT_FILE, call_entrypoint, read_outcome
from fluster.protocol.messages import EnvironmentSpec
from fluster.protocol.resources import ResourceSpec
from fluster.protocol.values import OK
from fluster.worker.runtime import AttemptSpec, ExitInfo, RunningAttempt, Stream


def make_spec(
    tmp_path: Path,
    fn: Callable[..., Any],
    *args: Any,
    resources: ResourceSpec | None = None,
    env: dict[str, str] | None = None,
    python_path: list[Path] | None = None,
    cwd: Path | None = None,
    job_id: str = "job",
) -> AttemptSpec:
    """An attempt that calls ``fn(*args)``; ``fn`` is pickled by value, as a client's function would be."""
    module = sys.modules[fn.__module__]
    cloudpickle.register_pickle_by_value(module)
    try:
        entry = call_entrypoint(fn, args, {})
    finally:
        cloudpickle.unregister_pickle_by_value(module)
    workdir = tmp_path / f"work-{uuid.uuid4().hex[:6]}"
    workdir.mkdir()
    (workdir / ENTRYPOINT_FILE).write_bytes(entry)
    return AttemptSpec(
        job_id=job_id,
        attempt=1,
        workdir=workdir,
        env=env or {},
        resources=resources or ResourceSpec(cpu=1, memory="512m"),
        environment=EnvironmentSpec(),
        python_path=python_path or [],
        cwd=cwd,
    )


async def run_attempt(attempt: RunningAttempt) -> tuple[ExitInfo, list[tuple[Stream, str]]]:
    """Collect every output line and the exit of an attempt (within a minute)."""
    lines: list[tuple[Stream, str]] = []

    async def collect() -> None:
        async for item in attempt.lines():
            lines.append(item)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(collect)
            info = await attempt.wait()
    return info, lines


def read_result(spec: AttemptSpec) -> Any:
    outcome = read_outcome(spec.workdir / RESULT_FILE)
    assert outcome is not None and outcome.status == OK, outcome
    return cloudpickle.loads(outcome.data)


def make_wheel(directory: Path, name: str, version: str, source: str) -> Path:
    """Write a pure-Python wheel holding module ``name`` with ``source``; no build tools or index needed."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": source.encode(),
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: fluster-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "".join(f"{path},sha256={_b64_digest(data)},{len(data)}\n" for path, data in files.items())
    files[f"{dist_info}/RECORD"] = (record + f"{dist_info}/RECORD,,\n").encode()
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for member, data in files.items():
            wheel.writestr(member, data)
    return path


def _b64_digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
