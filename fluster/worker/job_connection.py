"""What a worker tells a job about reaching its cluster: the ``FLUSTER_*`` variables, with a URL that carries no
credentials, and a connection file (mode 0600, in the attempt's work dir) with the credentials and TLS material.

Secrets never travel in a job's environment, where every child process and ``/proc/<pid>/environ`` would see
them. With a per-job identity the file names the job's own creds file instead of carrying the worker's.
"""

from __future__ import annotations

from pathlib import Path

from fluster.bus.options import split_url, write_connection_file
from fluster.environ import job_env_vars
from fluster.worker.settings import WorkerSettings


def job_connection_env(
    url: str,
    settings: WorkerSettings,
    workdir: Path,
    job_id: str,
    attempt: int,
    worker_id: str,
    identity: str | None = None,
) -> dict[str, str]:
    """Write the attempt's connection file into ``workdir`` and return the job's ``FLUSTER_*`` variables.

    ``identity``: the job's own ``.creds`` file in ``workdir`` (``fluster.worker.job_identity``); without it
    the job gets the worker's connection settings (a cluster whose controller mints no identities).

    Raises:
        ConfigurationError: a credentials or TLS file of the worker cannot be read.
    """
    path = write_connection_file(workdir, url, settings.connect, identity=identity)
    clean_url, _ = split_url(url)
    return job_env_vars(
        clean_url, settings.namespace, job_id, attempt, worker_id, str(path), settings.trusted_submitters
    )
