"""Job environments on a worker: workspace bundles and pip packages, built once per content hash and reused.

A workspace is fetched from the object store by digest and extracted (zip-slip safe) into the cache; pip
packages (the job's own plus its workspace's ``pyproject.toml`` dependencies and extras) are installed on the
host with ``pip install --target`` into the cache. Both runtimes put the result on the job's import path; the
docker runtime mounts it read-only. The directory of fluster's own code that containers import is
``worker/fluster_site.py``'s. This module does not choose runtimes or report job states.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import re
import shutil
import stat
import sys
import tempfile
import time
import tomllib
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import anyio
from anyio.streams.text import TextReceiveStream
from nats.js.object_store import ObjectStore

from fluster.bus.blobs import get_blob
from fluster.errors import EnvironmentBuildFailed, ObjectLost
from fluster.protocol.messages import EnvironmentSpec
from fluster.protocol.subjects import bundle_object
from fluster.worker.cache_entries import open_for_all, publish, remove_abandoned

log = logging.getLogger(__name__)

Emit = Callable[[str], Awaitable[None]]

PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
MAX_EXTRACTED_BYTES = 4 << 30  # a bundle is at most 64 MiB zipped; this stops a zip bomb, not a real workspace
_LOCK_POLL_S = 0.1
_OUTPUT_KEPT = 200  # installer output lines kept for EnvironmentBuildFailed
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class PreparedEnvironment:
    python_path: list[Path] = field(default_factory=list)  # first wins: workspace, then installed packages
    cwd: Path | None = None  # the workspace, when there is one
    cache_hit: bool = True  # nothing had to be fetched or installed


class EnvironmentCache:
    """Builds environments under ``cache_dir`` (``workspaces/<digest>``, ``packages/<hash>``) and reuses them.

    Concurrent jobs asking for the same content wait for one build; a finished entry is renamed into place
    atomically, so an entry that exists is complete (also across workers sharing the directory).
    """

    def __init__(self, cache_dir: Path, objects: ObjectStore, python: str | None = None) -> None:
        self.cache_dir = cache_dir
        self._objects = objects
        self._python = python or sys.executable
        self._locks: dict[str, anyio.Lock] = {}
        for sub in ("workspaces", "packages"):
            (cache_dir / sub).mkdir(parents=True, exist_ok=True)
            remove_abandoned(cache_dir / sub)

    def needs_build(self, env: EnvironmentSpec) -> bool:
        """Whether ``prepare(env)`` would fetch or install anything (the job is BUILDING meanwhile)."""
        workspace = None
        if env.workspace:
            workspace = self._workspace_dir(env.workspace)
            if not workspace.exists():
                return True
        try:
            requirements = _requirements(env, workspace)
        except EnvironmentBuildFailed:
            return True
        return bool(requirements) and not self._packages_dir(requirements, workspace).exists()

    async def prepare(self, env: EnvironmentSpec, emit: Emit) -> PreparedEnvironment:
        """Fetch the workspace and install the packages ``env`` asks for, or reuse them from the cache.

        ``emit`` receives progress and installer output lines, for the job's logs.

        Raises:
            EnvironmentBuildFailed: the bundle is missing or unsafe, an extra is unknown, or pip failed.
        """
        hit = True
        python_path: list[Path] = []
        workspace: Path | None = None
        if env.workspace:
            workspace, fetched = await self._prepare_workspace(env.workspace, emit)
            hit = hit and not fetched
            python_path.append(workspace)
            if (workspace / "src").is_dir() and (workspace / "pyproject.toml").exists():
                python_path.append(workspace / "src")  # a src-layout project imports from src/
        requirements = await anyio.to_thread.run_sync(_requirements, env, workspace)
        if requirements:
            packages, installed = await self._prepare_packages(requirements, workspace, emit)
            hit = hit and not installed
            python_path.append(packages)
        return PreparedEnvironment(python_path=python_path, cwd=workspace, cache_hit=hit)

    # -- workspaces -------------------------------------------------------------------------------------

    def _workspace_dir(self, digest: str) -> Path:
        if not _DIGEST.match(digest):
            raise EnvironmentBuildFailed(f"invalid workspace digest {digest!r}: expected 64 hex digits")
        return self.cache_dir / "workspaces" / digest

    async def _prepare_workspace(self, digest: str, emit: Emit) -> tuple[Path, bool]:
        final = self._workspace_dir(digest)
        async with self._exclusive(final):
            if final.exists():
                return final, False
            await emit(f"fetching workspace {digest[:12]}")
            try:
                data = await get_blob(self._objects, bundle_object(digest))
            except ObjectLost as exc:
                raise EnvironmentBuildFailed(f"workspace bundle {digest[:12]} is not in the object store") from exc
            if hashlib.sha256(data).hexdigest() != digest:
                raise EnvironmentBuildFailed(f"workspace bundle {digest[:12]} does not match its digest")
            count = await anyio.to_thread.run_sync(self._extract, data, final)
            await emit(f"workspace {digest[:12]}: {count} files, {len(data)} bytes")
            return final, True

    def _extract(self, data: bytes, final: Path) -> int:
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                count = extract_zip_safely(archive, tmp)
            publish(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return count

    # -- packages ---------------------------------------------------------------------------------------

    def _packages_dir(self, requirements: list[str], workspace: Path | None) -> Path:
        return self.cache_dir / "packages" / _requirements_hash(requirements, workspace)

    async def _prepare_packages(self, requirements: list[str], workspace: Path | None, emit: Emit) -> tuple[Path, bool]:
        final = await anyio.to_thread.run_sync(self._packages_dir, requirements, workspace)
        async with self._exclusive(final):
            if final.exists():
                return final, False
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
            try:
                await self._pip_install(requirements, tmp, workspace, emit)
                await anyio.to_thread.run_sync(publish, tmp, final)
            finally:
                await anyio.to_thread.run_sync(lambda: shutil.rmtree(tmp, ignore_errors=True))
            return final, True

    async def _pip_install(self, requirements: list[str], target: Path, cwd: Path | None, emit: Emit) -> None:
        command = [self._python, "-m", "pip", "install", "--target", str(target), "--no-input"]
        command += ["--progress-bar", "off", "--disable-pip-version-check", *requirements]
        await emit(f"installing {' '.join(requirements)}")
        started = time.monotonic()
        output: list[str] = []
        async with await anyio.open_process(
            command,
            stdin=None,
            stderr=-2,
            cwd=str(cwd) if cwd else None,  # -2: subprocess.STDOUT
        ) as process:
            assert process.stdout is not None
            pending = ""
            async for text in TextReceiveStream(process.stdout, errors="replace"):
                pending += text
                *lines, pending = pending.split("\n")
                for line in lines:
                    output.append(line)
                    await emit(line)
            if pending:
                output.append(pending)
                await emit(pending)
            code = await process.wait()
        tail = "\n".join(output[-_OUTPUT_KEPT:])
        if code != 0:
            raise EnvironmentBuildFailed(
                f"pip install {' '.join(requirements)} failed with exit code {code}", output=tail
            )
        await anyio.to_thread.run_sync(open_for_all, target)
        await emit(f"installed {len(requirements)} requirement(s) in {time.monotonic() - started:.1f}s")

    @contextlib.asynccontextmanager
    async def _exclusive(self, entry: Path) -> AsyncIterator[None]:
        """Hold the build of ``entry``: against other jobs here (a lock) and other workers sharing the cache
        directory (an flock on a file beside it)."""
        async with self._locks.setdefault(str(entry), anyio.Lock()):
            async with await anyio.open_file(entry.parent / f".lock-{entry.name}", "a") as lock_file:
                # flock has no timeout or cancellation: poll it, so a killed job stops waiting at once
                while True:
                    try:
                        fcntl.flock(lock_file.wrapped.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        await anyio.sleep(_LOCK_POLL_S)
                try:
                    yield
                finally:
                    fcntl.flock(lock_file.wrapped.fileno(), fcntl.LOCK_UN)


def extract_zip_safely(archive: zipfile.ZipFile, dest: Path, max_bytes: int = MAX_EXTRACTED_BYTES) -> int:
    """Extract regular files and directories of ``archive`` under ``dest``; return the file count.

    Raises:
        EnvironmentBuildFailed: an entry is absolute, climbs out with ``..``, is a symlink, or the total
            size is above ``max_bytes``.
    """
    root = dest.resolve()
    total = 0
    count = 0
    for info in archive.infolist():
        name = info.filename
        parts = PurePosixPath(name).parts
        mode = info.external_attr >> 16
        if name.startswith("/") or "\\" in name or ".." in parts or re.match(r"^[A-Za-z]:", name):
            raise EnvironmentBuildFailed(f"unsafe path in workspace bundle: {name!r}")
        if stat.S_ISLNK(mode):
            raise EnvironmentBuildFailed(f"symlink in workspace bundle: {name!r}")
        target = (root / name).resolve()
        if not target.is_relative_to(root):
            raise EnvironmentBuildFailed(f"unsafe path in workspace bundle: {name!r}")
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        total += info.file_size
        if total > max_bytes:
            raise EnvironmentBuildFailed(f"workspace bundle expands to more than {max_bytes} bytes")
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(info) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        target.chmod(0o755 if mode & 0o111 else 0o644)
        count += 1
    return count


# -- helpers --------------------------------------------------------------------------------------------


def _requirements(env: EnvironmentSpec, workspace: Path | None) -> list[str]:
    """The job's pip packages plus its workspace's pyproject dependencies and requested extras."""
    requirements = list(env.pip_packages)
    project: dict[str, object] = {}
    pyproject = workspace / "pyproject.toml" if workspace else None
    if pyproject is not None and pyproject.exists():
        try:
            project = dict(tomllib.loads(pyproject.read_text()).get("project", {}))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise EnvironmentBuildFailed(f"the workspace's pyproject.toml is not valid TOML: {exc}") from exc
    requirements += [str(dep) for dep in _as_list(project.get("dependencies"))]
    optional = project.get("optional-dependencies") or {}
    for extra in env.extras:
        if not isinstance(optional, dict) or extra not in optional:
            where = "the workspace's pyproject.toml" if pyproject and pyproject.exists() else "no workspace pyproject"
            raise EnvironmentBuildFailed(f"extra {extra!r} is not defined ({where})")
        requirements += [str(dep) for dep in _as_list(optional[extra])]
    return list(dict.fromkeys(requirements))  # keep order, drop repeats


def _requirements_hash(requirements: list[str], workspace: Path | None) -> str:
    """Hash of what would be installed: requirement strings, and the content of those that are files."""
    files = {}
    for requirement in requirements:
        path = Path(requirement)
        if not path.is_absolute() and workspace is not None:
            path = workspace / path
        if path.is_file():
            files[requirement] = hashlib.sha256(path.read_bytes()).hexdigest()
    key = json.dumps({"python": PYTHON_VERSION, "requirements": sorted(requirements), "files": files})
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _as_list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []
