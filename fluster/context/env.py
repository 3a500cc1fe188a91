"""The ``FLUSTER_*`` bootstrap, under its older name; it lives in ``fluster.environ``."""

from fluster.environ import URL_VARS, JobEnv, default_namespace, default_url, job_env, job_env_vars

__all__ = ["URL_VARS", "JobEnv", "default_namespace", "default_url", "job_env", "job_env_vars"]
