"""The ``docker`` runtime: each attempt in its own container, host network, non-root user, with limits.

It owns containers only: the worker prepares the work dir and environment (``environments.py``) exactly as for
the ``process`` runtime, and this module mounts them. Inside a container the job runs the same bootstrap with
the same fluster code and dependency versions as the worker, copied once into a read-only cache directory.
Blocking docker SDK calls go through threads; the streaming ones (logs, wait) run in daemon threads that end
with their container. What a container looks like (mounts, environment, limits) is ``container_spec.py``'s.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import docker
import docker.errors
import docker.types

from fluster.errors import RuntimeStartError
from fluster.protocol.subjects import LABEL_PYTHON, LABEL_WORKER
from fluster.worker.container_spec import BOOTSTRAP_PATH, JOB_DIR, container_options
from fluster.worker.docker_attempt import DockerAttempt
from fluster.worker.fluster_site import fluster_site_dir
from fluster.worker.image import DEFAULT_IMAGE, JOB_UID, PYTHON_VERSION
from fluster.worker.runtime import AttemptSpec, RunningAttempt

log = logging.getLogger(__name__)


@dataclass
class _PythonCheck:
    image_id: str
    version: str


class DockerRuntime:
    """Runs each attempt as ``python bootstrap.py /job`` in a container of ``image``.

    ``worker_id`` labels the containers so a restarted worker can remove what it left behind.
    ``gpu_ids`` are the worker's GPUs (``nvidia-smi`` indices or UUIDs); a GPU job gets ``count`` of those
    that no other running attempt holds. Fluster's own code and dependencies are copied for containers under
    ``cache_dir`` (default: ``<tmp>/fluster-env-cache``, shared with the worker's EnvironmentCache) once per
    version.
    """

    name = "docker"

    def __init__(
        self,
        worker_id: str,
        cache_dir: Path | None = None,
        image: str = DEFAULT_IMAGE,
        *,
        pids_limit: int = 4096,
        gpu_ids: list[str] | None = None,
        client: docker.DockerClient | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.image = image
        self._cache_dir = cache_dir or Path(tempfile.gettempdir()) / "fluster-env-cache"
        self._pids_limit = pids_limit
        self._gpu_ids = list(gpu_ids or [])
        self._gpus_in_use: set[str] = set()
        self._client = client
        self._support: Path | None = None
        self._python: _PythonCheck | None = None
        self._setup_lock = anyio.Lock()

    async def start(self, spec: AttemptSpec) -> RunningAttempt:
        """Create and start the attempt's container.

        Raises:
            RuntimeStartError: the daemon or image is unavailable, the image's Python is not the worker's
                ``major.minor``, or not enough GPUs are free. The job should fail with this message.
        """
        await self._ensure_ready()
        assert self._support is not None
        gpus = self._take_gpus(spec)
        try:
            # shielded so a cancelled start cannot lose track of a container it created
            with anyio.CancelScope(shield=True):
                container = await anyio.to_thread.run_sync(self._create, spec, self._support, gpus)
        except BaseException:
            self._release_gpus(gpus)
            raise
        try:
            await anyio.lowlevel.checkpoint_if_cancelled()
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(lambda: container.remove(force=True))
            self._release_gpus(gpus)
            raise
        log.info(
            "container started job_id=%s attempt=%s container=%s image=%s",
            spec.job_id,
            spec.attempt,
            container.short_id,
            self.image,
        )
        return DockerAttempt(container, spec, on_removed=lambda: self._release_gpus(gpus))

    async def cleanup_stale(self) -> None:
        """Remove every container labelled with this worker id (left by an earlier run of this worker)."""
        client = await self._docker()

        def remove_all() -> int:
            stale = client.containers.list(all=True, filters={"label": f"{LABEL_WORKER}={self.worker_id}"})
            for container in stale:
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True)
            return len(stale)

        removed = await anyio.to_thread.run_sync(remove_all)
        if removed:
            log.warning("removed stale containers worker=%s count=%d", self.worker_id, removed)

    # -- setup ------------------------------------------------------------------------------------------

    async def _docker(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = await anyio.to_thread.run_sync(connect_docker)
            except docker.errors.DockerException as exc:
                raise RuntimeStartError(f"cannot reach the Docker daemon: {exc}") from exc
        return self._client

    async def _ensure_ready(self) -> None:
        """Check the image's Python once per image id, and copy fluster's runtime files once."""
        async with self._setup_lock:
            client = await self._docker()
            if self._support is None:
                self._support = await anyio.to_thread.run_sync(fluster_site_dir, self._cache_dir)
            image = await anyio.to_thread.run_sync(self._get_or_pull, client)
            if self._python is None or self._python.image_id != image.id:
                version = await self._image_python(client, image)
                self._python = _PythonCheck(str(image.id), version)
        if not self._python.version:
            raise RuntimeStartError(
                f"docker image {self.image!r} cannot run `python3` (see the worker's log); use an image with "
                f"Python {PYTHON_VERSION} on its PATH, such as one built by `fluster build-image`"
            )
        if self._python.version != PYTHON_VERSION:
            raise RuntimeStartError(
                f"docker image {self.image!r} has Python {self._python.version} but this worker "
                f"runs Python {PYTHON_VERSION}: jobs are pickled with cloudpickle, which needs the same "
                f"major.minor version; build a matching image with `fluster build-image`"
            )

    def _get_or_pull(self, client: docker.DockerClient) -> Any:
        """The image, pulled from its registry when it is not on this machine (once, by the first job)."""
        try:
            return client.images.get(self.image)
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.DockerException as exc:
            raise RuntimeStartError(f"cannot inspect docker image {self.image!r}: {exc}") from exc
        log.info("pulling image=%s", self.image)
        try:
            return client.images.pull(self.image)
        except docker.errors.DockerException as exc:
            raise RuntimeStartError(
                f"docker image {self.image!r} is not on this machine and cannot be pulled ({exc}); build it "
                f"with `fluster build-image --image {self.image}` (or `python -m fluster.worker.image`)"
            ) from exc

    async def _image_python(self, client: docker.DockerClient, image: Any) -> str:
        labelled = (image.labels or {}).get(LABEL_PYTHON)
        if labelled:
            return str(labelled)

        def probe() -> str:
            code = "import sys; print('%d.%d' % sys.version_info[:2])"
            try:
                out = client.containers.run(
                    self.image, ["python3", "-c", code], remove=True, network_mode="none", user=f"{JOB_UID}"
                )
            except docker.errors.DockerException as exc:
                log.warning("cannot run python3 in image=%s: %s", self.image, exc)
                return ""
            return bytes(out).decode().strip()

        version = await anyio.to_thread.run_sync(probe)
        log.info("image python image=%s version=%s", self.image, version)
        return version

    # -- GPUs -------------------------------------------------------------------------------------------

    def _take_gpus(self, spec: AttemptSpec) -> list[str]:
        device = spec.resources.device
        if device.type != "gpu" or device.count == 0 or not self._gpu_ids:
            return []
        free = [gpu for gpu in self._gpu_ids if gpu not in self._gpus_in_use]
        if len(free) < device.count:
            raise RuntimeStartError(
                f"job wants {device.count} GPU(s) but only {len(free)} of this worker's {len(self._gpu_ids)} are free"
            )
        taken = free[: device.count]
        self._gpus_in_use.update(taken)
        return taken

    def _release_gpus(self, gpus: list[str]) -> None:
        self._gpus_in_use.difference_update(gpus)

    # -- container --------------------------------------------------------------------------------------

    def _create(self, spec: AttemptSpec, support: Path, gpus: list[str]) -> Any:
        assert self._client is not None
        _share_with_job_user(spec.workdir)
        options = container_options(spec, support, gpus, worker_id=self.worker_id, pids_limit=self._pids_limit)
        try:
            container = self._client.containers.create(self.image, ["python3", BOOTSTRAP_PATH, JOB_DIR], **options)
        except docker.errors.DockerException as exc:
            raise RuntimeStartError(f"cannot create the job's container: {exc}") from exc
        try:
            container.start()
        except docker.errors.DockerException as exc:
            with contextlib.suppress(docker.errors.DockerException):
                container.remove(force=True)
            raise RuntimeStartError(f"cannot start the job's container: {exc}") from exc
        with contextlib.suppress(docker.errors.DockerException):
            container.reload()  # its State.Pid: the container's first process, as this host sees it (usage)
        return container


def connect_docker() -> docker.DockerClient:
    """A client for the daemon the environment points at (``DOCKER_HOST`` or the default socket). Blocking.

    Raises:
        docker.errors.DockerException: no daemon answers.
    """
    try:
        # Each running container holds two log streams and a wait: more than the SDK's default pool of 10.
        return docker.from_env(max_pool_size=256)
    except docker.errors.DockerException as exc:
        message = str(exc)
    # The SDK leaks the socket of its failed version probe. Drop the traceback that holds it and collect it
    # now, so its ResourceWarning does not surface later in unrelated code.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    raise docker.errors.DockerException(message)


def _share_with_job_user(workdir: Path) -> None:
    """Give the work dir to the container's user (the worker usually runs as root)."""
    for path in [workdir, *workdir.rglob("*")]:
        try:
            os.chown(path, JOB_UID, JOB_UID)
        except PermissionError:  # not root: open it up instead
            path.chmod(0o777 if path.is_dir() else 0o666)


def docker_available() -> bool:
    """Whether a Docker daemon answers (blocking)."""
    try:
        connect_docker().close()
    except docker.errors.DockerException:
        return False
    return True
