"""The job-context bootstrap: where a process learns, from ``FLUSTER_*`` variables, whether it runs inside a job,
and where library defaults for the cluster URL and NATS credentials come from (``FLUSTER_URL``, ``NATS_*``,
natscli contexts).

This module and ``fluster/cli`` are the only places that read environment variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from fluster.bus.natscontext import URL_VARS, ConnectionFlags, resolve
from fluster.bus.options import ConnectOptions, read_connection_file
from fluster.security.signing import Signer, Verifier

CONNECTION_VAR = "FLUSTER_CONNECTION"  # the path of the job's connection file (see bus/options.py)
SIGNING_KEY_VAR = "FLUSTER_SIGNING_KEY"  # an nkey seed file: sign submissions and actor calls with it
TRUSTED_KEYS_VAR = "FLUSTER_TRUSTED_KEYS"  # public keys whose signed calls actor servers accept
# natscli's connection variables: a worker's own credentials, which its jobs must not inherit
NATS_VARS = frozenset(
    {
        *URL_VARS,
        "NATS_CONTEXT",
        "NATS_USER",
        "NATS_PASSWORD",
        "NATS_TOKEN",
        "NATS_CREDS",
        "NATS_NKEY",
        "NATS_JWT",
        "NATS_SEED",
        "NATS_CERT",
        "NATS_KEY",
        "NATS_CA",
    }
)

__all__ = [
    "URL_VARS",
    "JobEnv",
    "default_connection",
    "default_namespace",
    "default_signing",
    "default_url",
    "inherited_job_environment",
    "job_env",
    "job_env_vars",
]


@dataclass(frozen=True)
class JobEnv:
    """What a job process is told by its worker."""

    url: str
    namespace: str
    job_id: str
    attempt: int
    worker_id: str
    connection_file: str | None = None  # credentials and TLS material, mode 0600, in the attempt's work dir

    def connect_options(self) -> tuple[str, ConnectOptions]:
        """The URL and options to reach the job's cluster: from the connection file when the worker wrote one.

        Raises:
            ConfigurationError: the connection file cannot be read.
        """
        if self.connection_file:
            return read_connection_file(self.connection_file)
        return self.url, ConnectOptions()


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
        connection_file=os.environ.get(CONNECTION_VAR) or None,
    )


def default_url() -> str | None:
    """``FLUSTER_URL``, then ``NATS_URL``, else None."""
    for var in URL_VARS:
        value = os.environ.get(var)
        if value:
            return value
    return None


def default_connection(url: str | None = None) -> tuple[str | None, ConnectOptions]:
    """The URL (``url``, else ``FLUSTER_URL``, ``NATS_URL``, the natscli context) and the credentials and TLS
    options that the environment gives (``NATS_USER``, ``NATS_PASSWORD``, ``NATS_TOKEN``, ``NATS_CREDS``,
    ``NATS_NKEY``, ``NATS_CERT``, ``NATS_KEY``, ``NATS_CA``, ``NATS_CONTEXT``).

    Raises:
        ConfigurationError: ``NATS_CONTEXT`` names a context that cannot be read.
    """
    return resolve(ConnectionFlags(url=url), os.environ)


# What a job process inherits of its worker's environment: what programs need to run (where commands and
# libraries are, who and where the user is, locale, time zone, temp dir, TLS trust stores). Nothing else: a
# worker started with secrets in its environment (cloud keys, tokens) must not hand them to every job.
JOB_INHERITS = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TERM",
        "LD_LIBRARY_PATH",
        "VIRTUAL_ENV",
        "PYTHONPATH",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    }
)
JOB_INHERITS_PREFIXES = ("LC_",)


def inherited_job_environment(passthrough: frozenset[str] = frozenset()) -> dict[str, str]:
    """What a job process inherits of the worker's environment: ``JOB_INHERITS`` (PATH, HOME, locale, ...) and
    the names in ``passthrough`` (``fluster worker --job-env VAR``), never the worker's NATS credentials. The
    job's own variables (its submission's, and ``FLUSTER_*``) come on top."""
    return {
        key: value
        for key, value in os.environ.items()
        if key not in NATS_VARS and (key in JOB_INHERITS or key in passthrough or key.startswith(JOB_INHERITS_PREFIXES))
    }


def default_signing() -> tuple[Signer | None, Verifier | None]:
    """The signer of ``FLUSTER_SIGNING_KEY`` (an nkey seed file) and a verifier of ``FLUSTER_TRUSTED_KEYS``
    (public keys, comma-separated), each None when unset (payload signing, ``fluster.security.signing``).

    Raises:
        ConfigurationError: the signing key cannot be read.
    """
    path = os.environ.get(SIGNING_KEY_VAR)
    trusted = trusted_keys(os.environ.get(TRUSTED_KEYS_VAR, ""))
    return (Signer.read(path) if path else None), (Verifier(trusted) if trusted else None)


def trusted_keys(text: str) -> frozenset[str]:
    """Public keys from a comma- or space-separated list."""
    return frozenset(key for key in text.replace(",", " ").split() if key)


def default_namespace() -> str | None:
    return os.environ.get("FLUSTER_NAMESPACE") or None


def job_env_vars(
    url: str,
    namespace: str,
    job_id: str,
    attempt: int,
    worker_id: str,
    connection_file: str | None = None,
    trusted: frozenset[str] = frozenset(),
) -> dict[str, str]:
    """The ``FLUSTER_*`` variables a worker gives a job process (the inverse of ``job_env``); ``trusted``: the
    submitter keys the worker trusts, which the job's actor servers then require of calls too."""
    env = {
        "FLUSTER_URL": url,
        "FLUSTER_NAMESPACE": namespace,
        "FLUSTER_JOB_ID": job_id,
        "FLUSTER_ATTEMPT": str(attempt),
        "FLUSTER_WORKER_ID": worker_id,
    }
    if connection_file:
        env[CONNECTION_VAR] = connection_file
    if trusted:
        env[TRUSTED_KEYS_VAR] = ",".join(sorted(trusted))
    return env


def task_env_vars(task: int, num_tasks: int, hosts: list[str]) -> dict[str, str]:
    """What a task of a (multi-task) job is told about its place in the job."""
    return {
        "FLUSTER_TASK_INDEX": str(task),
        "FLUSTER_NUM_TASKS": str(num_tasks),
        "FLUSTER_TASK_HOSTS": ",".join(hosts),
    }


def task_env() -> tuple[int, int, list[str]]:
    """This process's task index, the job's task count and every task's host (``0, 1, []`` outside a job)."""
    hosts = os.environ.get("FLUSTER_TASK_HOSTS", "")
    return (
        int(os.environ.get("FLUSTER_TASK_INDEX", "0") or 0),
        int(os.environ.get("FLUSTER_NUM_TASKS", "1") or 1),
        hosts.split(",") if hosts else [],
    )
