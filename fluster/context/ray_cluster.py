"""``RayCluster``: the Fray cluster API (``launch``, ``poll``, ``monitor``, ``wait``, ``terminate``,
``list_jobs``) on a Ray cluster, through Ray's job server; the same ``JobRequest`` launches on either cluster.

Every job, a command or a callable, is a Ray *job*: its id is the job's submission id, which the job server
keeps, so any client of the cluster can poll, follow or stop it. A callable travels as a package of the job's
runtime env (see ``fluster.context.ray_entry``). Ray is imported when a ``RayCluster`` is created.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import shlex
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from fluster.bus.retry import backoff
from fluster.context.jobs import JobInfo, JobRequest
from fluster.context.ray_entry import PAYLOAD
from fluster.context.ray_jobs import (
    NAME_KEY,
    NAMESPACE_KEY,
    JobLogLines,
    entry_command,
    job_status,
    remote_options,
    runtime_env,
    submit_options,
)
from fluster.context.resources import ray_job_resources
from fluster.errors import FlusterTimeout
from fluster.protocol.ids import validate_name

STOP_TIMEOUT_S = 60.0  # Ray sends SIGTERM, then SIGKILL after RAY_JOB_STOP_WAIT_TIME_S (3 s by default)


class RayCluster:
    """Jobs on a Ray cluster. ``address``: ``"auto"`` (the running local cluster, or ``RAY_ADDRESS``), a GCS
    address (``host:6379``) or the job server's URL (``http://host:8265``). ``namespace`` tags the jobs
    launched here (``list_jobs`` lists only those) and is the Ray namespace of a callable job's context.
    ``python`` is the interpreter that runs callable jobs on the cluster's nodes.
    """

    def __init__(self, address: str = "auto", namespace: str | None = None, python: str = "python") -> None:
        from ray.job_submission import JobSubmissionClient

        self.namespace = validate_name(namespace, "namespace") if namespace is not None else None
        self.python = python
        self.client = JobSubmissionClient(address)

    def launch(self, request: JobRequest) -> str:
        """Submit the job and return its id (``<name>-<8 hex digits>``).

        Ray's job server runs a job once: ``max_retries_preemption`` has nothing to act on (a job whose node
        dies fails), and a request for failure retries is refused rather than ignored.

        Raises:
            ValueError: the request's environment or resources cannot be expressed on Ray, or it asks for
                ``max_retries_failure``.
        """
        if request.max_retries_failure:
            raise ValueError(
                f"job {request.name!r}: Ray's job server does not retry failed jobs, so max_retries_failure="
                f"{request.max_retries_failure} cannot apply on a RayCluster: launch with 0 and launch again on failure"
            )
        job_id = f"{request.name}-{uuid.uuid4().hex[:8]}"
        env = runtime_env(request.environment)
        options: dict[str, Any] = dict(
            submission_id=job_id,
            runtime_env=env,
            metadata={NAME_KEY: request.name, NAMESPACE_KEY: self.namespace or ""},
            **submit_options(request),
        )
        entrypoint = request.entrypoint
        if entrypoint.command is not None:
            submitted: str = self.client.submit_job(entrypoint=shlex.join(entrypoint.command), **options)
            return submitted
        with tempfile.TemporaryDirectory(prefix="fluster-ray-") as scratch:  # only until Ray has uploaded it
            package = _entry_package(entrypoint.to_bytes(), Path(scratch))
            options["runtime_env"] = {**env, "py_modules": [str(package)]}
            command = entry_command(self.python, package.name, self.namespace)
            submitted = self.client.submit_job(entrypoint=command, **options)
        return submitted

    def poll(self, job_id: str) -> JobInfo:
        """The job's current state.

        Raises:
            KeyError: no job with that id on this cluster.
        """
        return JobInfo.from_status(job_status(self._details(job_id)))

    def monitor(self, job_id: str) -> Iterator[str]:
        """The job's output lines as they are written (Ray's own setup lines left out), until it has ended.

        Raises:
            KeyError: no job with that id on this cluster.
        """
        lines = JobLogLines(job_id, self._details(job_id).entrypoint)
        loop = asyncio.new_event_loop()  # Ray's log tail is an async iterator: drive it here, chunk by chunk
        chunks = self.client.tail_job_logs(job_id)
        try:
            while True:
                try:
                    chunk = loop.run_until_complete(chunks.__anext__())
                except StopAsyncIteration:
                    break
                yield from lines.feed(chunk)
            yield from lines.end()
        finally:
            loop.run_until_complete(chunks.aclose())
            loop.close()

    def wait(self, job_id: str, timeout: float | None = None) -> JobInfo:
        """Block until the job ends.

        Raises:
            KeyError: no job with that id on this cluster.
            FlusterTimeout: still running after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for polls in itertools.count():
            info = self.poll(job_id)
            if info.finished:
                return info
            if deadline is not None and time.monotonic() >= deadline:
                raise FlusterTimeout(f"job {job_id} is still {info.status} after {timeout:g}s")
            # Ray's job server has no watch: poll, backing off to once a second
            delay = backoff(polls)
            time.sleep(delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic())))
        raise AssertionError("unreachable")

    def terminate(self, job_id: str, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the job and return once it has stopped (or ended on its own meanwhile).

        Ray hands the stop to the job's supervisor (the actor that runs the entrypoint), so a job whose
        entrypoint resources no node has stays pending until Ray's start timeout fails it
        (``RAY_JOB_START_TIMEOUT_SECONDS``, 15 minutes by default).

        Raises:
            KeyError: no job with that id on this cluster.
            FlusterTimeout: the job has not stopped within ``timeout`` seconds.
        """
        self._details(job_id)
        self.client.stop_job(job_id)
        try:
            self.wait(job_id, timeout)
        except FlusterTimeout as exc:
            if self.poll(job_id).status != "pending":
                raise
            raise FlusterTimeout(
                f"job {job_id} is still pending after {timeout:g}s: Ray stops a job once its entrypoint is placed, "
                "and no node has the resources it asks for yet"
            ) from exc

    def list_jobs(self) -> list[JobInfo]:
        """The jobs launched on the cluster (with a ``namespace``: only those launched in it), oldest first."""
        jobs = [
            d
            for d in self.client.list_jobs()
            if d.submission_id
            and str(getattr(d.type, "value", d.type)) == "SUBMISSION"
            and (self.namespace is None or (d.metadata or {}).get(NAMESPACE_KEY) == self.namespace)
        ]
        jobs.sort(key=lambda d: d.start_time or 0)
        return [JobInfo.from_status(job_status(d)) for d in jobs]

    def get_runtime_env(self, request: JobRequest) -> dict[str, Any]:
        """The request's environment as a Ray ``runtime_env`` (env vars, pip packages, working dir and excludes)."""
        return runtime_env(request.environment)

    def get_ray_resources(self, request: JobRequest) -> dict[str, float]:
        """The request's accelerators as Ray resources: ``{"GPU": n}``, ``{"TPU": chips, "TPU-<type>-head": 1}``
        or ``{}``. Ray takes GPUs as ``num_gpus``, not in ``resources=``: ``get_ray_options`` has the split."""
        return ray_job_resources(request.spec)

    def get_ray_options(self, request: JobRequest) -> dict[str, Any]:
        """Everything ``ray.remote(**options)`` needs to run like the request: ``num_cpus``, ``memory``,
        ``num_gpus``, custom ``resources`` and ``runtime_env``."""
        return remote_options(request)

    def close(self) -> None:
        """Nothing to release (the job server is spoken to over HTTP, one request at a time)."""

    def __enter__(self) -> RayCluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _details(self, job_id: str) -> Any:
        try:
            return self.client.get_job_info(job_id)
        except RuntimeError as exc:
            if "status code 404" in str(exc):  # how Ray's client reports an unknown id
                raise KeyError(f"no Ray job {job_id!r} on {self.client.get_address()}") from None
            raise


def _entry_package(payload: bytes, scratch: Path) -> Path:
    """A package ``fluster_entry_<digest>`` holding ``payload`` as ``entrypoint.pkl``, under ``scratch``."""
    package = scratch / f"fluster_entry_{hashlib.sha256(payload).hexdigest()[:16]}"
    package.mkdir()
    (package / "__init__.py").write_text('"""A fluster callable job\'s entrypoint (entrypoint.pkl)."""\n')
    (package / PAYLOAD).write_bytes(payload)
    return package
