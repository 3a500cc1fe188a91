"""The pure half of ``RayCluster``: a ``JobRequest`` as Ray job options (runtime env, resources, entrypoint),
Ray's job details as fluster's ``JobStatus``, and a job's log chunks as lines. No Ray import, no I/O beyond
reading a workspace's ``pyproject.toml``."""

from __future__ import annotations

import shlex
import tomllib
from dataclasses import dataclass, field
from typing import Any

from fluster.client.bundle import DEFAULT_EXCLUDES
from fluster.context.jobs import JobRequest
from fluster.context.resources import ray_job_resources
from fluster.protocol.messages import JobState
from fluster.types import Environment, JobStatus

ENTRY_MODULE = "fluster.context.ray_entry"
NAME_KEY, NAMESPACE_KEY = "fluster_name", "fluster_namespace"  # job metadata

RAY_STATES: dict[str, JobState] = {
    "PENDING": JobState.PENDING,
    "RUNNING": JobState.RUNNING,
    "SUCCEEDED": JobState.SUCCEEDED,
    "FAILED": JobState.FAILED,
    "STOPPED": JobState.KILLED,
}


def runtime_env(environment: Environment | None) -> dict[str, Any]:
    """Ray's ``runtime_env`` for a fluster ``Environment``: ``env_vars``, ``pip`` (the packages, plus the
    workspace's ``pyproject.toml`` dependencies and requested extras, as a fluster worker installs them), and
    the workspace as ``working_dir`` with ``excludes`` (what fluster leaves out of a bundle; Ray also honours
    ``.gitignore`` files).

    Raises:
        ValueError: an extra is not defined in the workspace's ``pyproject.toml``, or the file is not TOML.
    """
    if environment is None:
        return {}
    env: dict[str, Any] = {}
    if environment.env_vars:
        env["env_vars"] = dict(environment.env_vars)
    pip = pip_requirements(environment)
    if pip:
        env["pip"] = pip
    if environment.workspace is not None:
        env["working_dir"] = str(environment.workspace)
        env["excludes"] = list(DEFAULT_EXCLUDES)
    return env


def pip_requirements(environment: Environment) -> list[str]:
    """The environment's pip packages, its workspace's dependencies and those of its extras, without repeats."""
    requirements = list(environment.pip_packages)
    pyproject = environment.workspace / "pyproject.toml" if environment.workspace else None
    project: dict[str, Any] = {}
    if pyproject is not None and pyproject.is_file():
        try:
            project = dict(tomllib.loads(pyproject.read_text()).get("project", {}))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{pyproject} is not valid TOML: {exc}") from exc
    requirements += [str(dep) for dep in project.get("dependencies") or []]
    optional = project.get("optional-dependencies") or {}
    for extra in environment.extras:
        if extra not in optional:
            where = str(pyproject) if pyproject is not None and pyproject.is_file() else "no workspace pyproject.toml"
            raise ValueError(f"extra {extra!r} is not defined ({where}): define it there, or drop it from extras")
        requirements += [str(dep) for dep in optional[extra]]
    return list(dict.fromkeys(requirements))


def remote_options(request: JobRequest) -> dict[str, Any]:
    """Options for ``ray.remote``/``.options`` that ask for what ``request`` asks: ``num_cpus``, ``memory``,
    ``num_gpus``, custom ``resources`` (a TPU slice's chips and head) and ``runtime_env``."""
    resources = ray_job_resources(request.spec)
    options: dict[str, Any] = {"num_cpus": request.spec.cpu, "memory": request.spec.memory_bytes}
    if "GPU" in resources:
        options["num_gpus"] = resources.pop("GPU")
    if resources:
        options["resources"] = resources
    env = runtime_env(request.environment)
    if env:
        options["runtime_env"] = env
    return options


def submit_options(request: JobRequest) -> dict[str, Any]:
    """The ``entrypoint_*`` resource arguments of Ray's ``submit_job`` for ``request`` (the same amounts as
    ``remote_options``)."""
    options = remote_options(request)
    return {
        "entrypoint_num_cpus": options["num_cpus"],
        "entrypoint_memory": options["memory"],
        "entrypoint_num_gpus": options.get("num_gpus"),
        "entrypoint_resources": options.get("resources"),
    }


def entry_command(python: str, package: str, namespace: str | None) -> str:
    """The shell command that runs a callable job: the entry module reads the pickle from ``package``."""
    return shlex.join([python, "-m", ENTRY_MODULE, package, *([namespace] if namespace else [])])


def job_status(details: Any) -> JobStatus:
    """Ray's ``JobDetails`` as fluster's ``JobStatus`` (one attempt; the driver's node as its worker)."""
    state = RAY_STATES[str(getattr(details.status, "value", details.status))]
    metadata = details.metadata or {}
    started = state != JobState.PENDING
    return JobStatus(
        job_id=details.submission_id,
        name=metadata.get(NAME_KEY, details.submission_id),
        state=state,
        attempt=1 if started else 0,
        worker_id=details.driver_node_id or None,
        exit_code=details.driver_exit_code,
        error=details.message if state in (JobState.FAILED, JobState.KILLED) else None,
        submitted_at_ms=details.start_time or 0,
        started_at_ms=details.start_time if started else None,
        finished_at_ms=details.end_time,
        failure_count=1 if state == JobState.FAILED else 0,
        preemption_count=0,
        attempts=(),
        parent_id=None,
    )


@dataclass
class JobLogLines:
    """A Ray job's log, fed in chunks as they arrive, as the entrypoint's own lines.

    Ray's log starts with its own setup output and ``Running entrypoint for job <id>: <entrypoint>`` (the
    command, over as many lines as it has); that part is dropped. A job whose entrypoint never started (its
    runtime env failed) gets that setup output instead, at ``end()``: it says why.
    """

    job_id: str
    entrypoint: str
    _partial: str = ""
    _skip: int = -1  # lines of the marker still to drop; -1 until the marker is seen
    _setup: list[str] = field(default_factory=list)

    def feed(self, chunk: str) -> list[str]:
        *complete, self._partial = (self._partial + chunk).split("\n")
        return self._take(complete)

    def end(self) -> list[str]:
        rest, self._partial = ([self._partial] if self._partial else []), ""
        lines = self._take(rest)
        if self._skip < 0:
            lines, self._setup = self._setup, []
        return lines

    def _take(self, lines: list[str]) -> list[str]:
        out = []
        for line in lines:
            if self._skip == 0:
                out.append(line)
            elif self._skip > 0:
                self._skip -= 1
            elif line == f"Running entrypoint for job {self.job_id}: " + self.entrypoint.split("\n", 1)[0]:
                self._skip, self._setup = self.entrypoint.count("\n"), []
            else:
                self._setup.append(line)
        return out
