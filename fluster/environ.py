"""The job-context bootstrap: where a process learns, from ``FLUSTER_*`` variables, whether it runs inside a job.

This module and ``fluster/cli`` are the only places that read environment variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

URL_VARS = ("FLUSTER_URL", "NATS_URL")


@dataclass(frozen=True)
class JobEnv:
    """What a job process is told by its worker."""

    url: str
    namespace: str
    job_id: str
    attempt: int
    worker_id: str


def job_env() -> JobEnv | None:
    """The job this process runs as, or None outside a fluster job."""
    job_id = os.environ.get("FLUSTER_JOB_ID")
    url = os.environ.get("FLUSTER_URL")
    if not job_id or not url:
        return None
    return JobEnv(
        url=url,
        namespace=os.environ.get("FLUSTER_NAMESPACE", "default"),
        job_id=job_id,
        attempt=int(os.environ.get("FLUSTER_ATTEMPT", "0") or 0),
        worker_id=os.environ.get("FLUSTER_WORKER_ID", ""),
    )


def default_url() -> str | None:
    """``FLUSTER_URL``, then ``NATS_URL``, else None."""
    for var in URL_VARS:
        value = os.environ.get(var)
        if value:
            return value
    return None


def default_namespace() -> str | None:
    return os.environ.get("FLUSTER_NAMESPACE") or None


def job_env_vars(url: str, namespace: str, job_id: str, attempt: int, worker_id: str) -> dict[str, str]:
    """The ``FLUSTER_*`` variables a worker gives a job process (the inverse of ``job_env``)."""
    return {
        "FLUSTER_URL": url,
        "FLUSTER_NAMESPACE": namespace,
        "FLUSTER_JOB_ID": job_id,
        "FLUSTER_ATTEMPT": str(attempt),
        "FLUSTER_WORKER_ID": worker_id,
    }
