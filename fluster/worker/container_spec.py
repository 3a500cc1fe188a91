"""What an attempt's container looks like: its mounts (the work dir, the bootstrap, fluster's site directory,
the job's import path and cwd, each at a fixed path inside), its environment, labels and limits, as the docker
SDK's options. No docker calls: creating and running the container is ``docker_runtime``'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker.types

from fluster.protocol.resources import parse_memory
from fluster.protocol.subjects import LABEL_ATTEMPT, LABEL_JOB, LABEL_WORKER
from fluster.worker.image import JOB_UID
from fluster.worker.runtime import BOOTSTRAP, AttemptSpec

# Fixed paths inside the container.
JOB_DIR = "/job"  # the attempt's work dir (entrypoint.pkl in, result.out out), read-write
BOOTSTRAP_PATH = "/fluster/bootstrap.py"
SUPPORT_DIR = "/fluster/site"  # fluster and its dependencies, read-only, last on PYTHONPATH
PATH_DIR = "/fluster/path"  # PATH_DIR/<n>: the attempt's python_path entries, read-only
CWD_DIR = "/fluster/cwd"  # the attempt's cwd when it is not on its python_path, read-only

# The daemon keeps a copy of the output too; bound it (we stream it as it comes, so rotation loses nothing).
_LOG_CONFIG = {"type": "json-file", "config": {"max-size": "64m", "max-file": "2"}}


def container_options(
    spec: AttemptSpec, support: Path, gpus: list[str], *, worker_id: str, pids_limit: int
) -> dict[str, Any]:
    """The ``containers.create`` options for ``spec``'s attempt: ``support`` is fluster's site directory,
    ``gpus`` the GPUs it was given (none: any ``count`` of them)."""
    mounts = [
        _bind(spec.workdir, JOB_DIR, read_only=False),
        _bind(BOOTSTRAP, BOOTSTRAP_PATH),
        _bind(support, SUPPORT_DIR),
    ]
    container_paths: list[str] = []
    for index, path in enumerate(spec.python_path):
        container_paths.append(f"{PATH_DIR}/{index}")
        mounts.append(_bind(path, container_paths[-1]))
    cwd = JOB_DIR
    if spec.cwd is not None:
        host_paths = [path.resolve() for path in spec.python_path]
        if spec.cwd.resolve() in host_paths:  # the workspace: already mounted, keep one path for it
            cwd = container_paths[host_paths.index(spec.cwd.resolve())]
        else:
            cwd = CWD_DIR
            mounts.append(_bind(spec.cwd, CWD_DIR))

    # a variable naming a file in the work dir (the job's connection file) names it where the job sees it
    workdir = str(spec.workdir)
    env = {k: JOB_DIR + v[len(workdir) :] if v.startswith(workdir + "/") else v for k, v in spec.env.items()}
    env["PYTHONUNBUFFERED"] = "1"
    paths = [*container_paths, SUPPORT_DIR]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = ":".join(paths)

    options: dict[str, Any] = {
        "network_mode": "host",
        "user": f"{JOB_UID}:{JOB_UID}",
        "working_dir": cwd,
        "init": True,  # docker-init forwards SIGTERM and reaps; python as PID 1 would ignore SIGTERM
        "labels": {
            LABEL_JOB: spec.job_id,
            LABEL_ATTEMPT: str(spec.attempt),
            LABEL_WORKER: worker_id,
        },
        "environment": env,
        "mounts": mounts,
        "pids_limit": pids_limit,
        "log_config": _LOG_CONFIG,
        "stdin_open": False,
        "detach": True,
    }
    if spec.resources.cpu > 0:
        options["nano_cpus"] = int(spec.resources.cpu * 1e9)
    memory = parse_memory(spec.resources.memory)
    if memory > 0:
        options["mem_limit"] = memory
        options["memswap_limit"] = memory  # no swap beyond the limit
    device = spec.resources.device
    if device.type == "gpu" and device.count > 0:
        request = (
            docker.types.DeviceRequest(device_ids=gpus, capabilities=[["gpu"]])
            if gpus
            else docker.types.DeviceRequest(count=device.count, capabilities=[["gpu"]])
        )
        options["device_requests"] = [request]
    return options


def _bind(source: Path, target: str, *, read_only: bool = True) -> docker.types.Mount:
    return docker.types.Mount(target, str(source.resolve()), type="bind", read_only=read_only)
