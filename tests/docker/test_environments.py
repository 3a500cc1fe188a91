"""Workspace bundles and the worker's environment cache, with a real nats-server and real pip (no docker)."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import zipfile
from pathlib import Path

import anyio
import pytest
from fluster_docker_helpers import make_wheel
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from fluster.bus.blobs import put_blob
from fluster.client.bundle import build_bundle, upload_workspace, workspace_files
from fluster.errors import EnvironmentBuildFailed
from fluster.protocol.messages import EnvironmentSpec
from fluster.protocol.subjects import bundle_object
from fluster.worker.environments import EnvironmentCache


class Emitted:
    def __init__(self) -> None:
        self.lines: list[str] = []

    async def __call__(self, line: str) -> None:
        self.lines.append(line)


def _workspace(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("VALUE = 42\n")
    (root / "mymod.py").write_text("def hello():\n    return 'hello from the workspace'\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    return root


def _entries(directory: Path) -> list[Path]:
    """Cache entries, built or half-built (the lock files stay: removing them would race other workers)."""
    return [path for path in directory.iterdir() if not path.name.startswith(".lock-")]


def _bundle_count(objects_names: list[str]) -> int:
    return sum(1 for name in objects_names if name.startswith("bundles/"))


async def _object_names(objects: ObjectStore) -> list[str]:
    try:
        return [info.name for info in await objects.list()]
    except NotFoundError:  # nats-py's answer for an empty store
        return []


async def test_same_workspace_content_is_stored_once(objects: ObjectStore, tmp_path: Path) -> None:
    first = _workspace(tmp_path / "a")
    second = _workspace(tmp_path / "b")
    os.utime(second / "mymod.py", (1, 1))  # other timestamps, same content
    digest, size = await upload_workspace(objects, first)
    again = await upload_workspace(objects, second)
    assert again == (digest, size)
    assert digest == hashlib.sha256(build_bundle(first)).hexdigest()
    assert _bundle_count(await _object_names(objects)) == 1
    (second / "mymod.py").write_text("changed = True\n")
    other, _ = await upload_workspace(objects, second)
    assert other != digest
    assert _bundle_count(await _object_names(objects)) == 2


def test_bundle_respects_gitignore_outside_git(tmp_path: Path) -> None:
    root = _workspace(tmp_path / "ws")
    (root / ".gitignore").write_text("*.log\ndata/\n!keep.log\n/top_only.txt\n")
    (root / "debug.log").write_text("x")
    (root / "keep.log").write_text("x")
    (root / "data").mkdir()
    (root / "data" / "big.bin").write_text("x")
    (root / "top_only.txt").write_text("x")
    (root / "pkg" / "top_only.txt").write_text("x")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "m.cpython-311.pyc").write_text("x")
    (root / ".venv" / "lib").mkdir(parents=True)
    (root / ".venv" / "lib" / "x.py").write_text("x")
    assert workspace_files(root) == [
        ".gitignore",
        "keep.log",
        "mymod.py",
        "pkg/__init__.py",
        "pkg/top_only.txt",
        "run.sh",
    ]


def test_bundle_in_a_git_repository_holds_what_git_would(tmp_path: Path) -> None:
    root = _workspace(tmp_path / "repo")
    (root / ".gitignore").write_text("secret.txt\n")
    (root / "secret.txt").write_text("x")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "mymod.py"], check=True)
    assert workspace_files(root) == [".gitignore", "mymod.py", "pkg/__init__.py", "run.sh"]


def test_bundle_over_the_limit_is_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "big"
    root.mkdir()
    (root / "random.bin").write_bytes(os.urandom(200_000))
    with pytest.raises(ValueError, match=r"over the limit of 100000 bytes.*\.gitignore"):
        build_bundle(root, max_bytes=100_000)


async def test_workspace_is_fetched_once_and_becomes_cwd_and_import_path(objects: ObjectStore, tmp_path: Path) -> None:
    digest, _ = await upload_workspace(objects, _workspace(tmp_path / "ws"))
    cache = EnvironmentCache(tmp_path / "cache", objects)
    env = EnvironmentSpec(workspace=digest)
    assert cache.needs_build(env)
    emit = Emitted()
    prepared = await cache.prepare(env, emit)
    assert not prepared.cache_hit and prepared.cwd is not None
    assert prepared.python_path == [prepared.cwd]
    assert (prepared.cwd / "pkg" / "__init__.py").read_text() == "VALUE = 42\n"
    assert os.access(prepared.cwd / "run.sh", os.X_OK)
    assert not cache.needs_build(env)
    again = await cache.prepare(env, emit)
    assert again.cache_hit and again.cwd == prepared.cwd


async def test_bundle_escaping_its_directory_is_refused(objects: ObjectStore, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ok.py", "x = 1\n")
        archive.writestr("../../evil.py", "x = 1\n")
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    await put_blob(objects, bundle_object(digest), data)
    cache = EnvironmentCache(tmp_path / "cache", objects)
    with pytest.raises(EnvironmentBuildFailed, match="unsafe path"):
        await cache.prepare(EnvironmentSpec(workspace=digest), Emitted())
    assert not (tmp_path / "evil.py").exists()
    assert _entries(tmp_path / "cache" / "workspaces") == []


async def test_local_wheel_is_installed_once_and_reused(objects: ObjectStore, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "flusterwheel", "1.0", "ANSWER = 41\n")
    cache = EnvironmentCache(tmp_path / "cache", objects)
    env = EnvironmentSpec(pip_packages=[str(wheel)])
    first_emit, second_emit = Emitted(), Emitted()
    with anyio.fail_after(120):
        # two jobs asking at once: one installs, the other waits for it and reuses it
        results = []

        async def prepare(emit: Emitted) -> None:
            results.append(await cache.prepare(env, emit))

        async with anyio.create_task_group() as tg:
            tg.start_soon(prepare, first_emit)
            tg.start_soon(prepare, second_emit)
    assert sorted(r.cache_hit for r in results) == [False, True]
    assert results[0].python_path == results[1].python_path
    (target,) = results[0].python_path
    assert (target / "flusterwheel.py").read_text() == "ANSWER = 41\n"
    installs = [line for line in first_emit.lines + second_emit.lines if line.startswith("installing ")]
    assert len(installs) == 1
    assert not cache.needs_build(env)


async def test_workspace_pyproject_dependencies_and_extras_are_installed(objects: ObjectStore, tmp_path: Path) -> None:
    base = make_wheel(tmp_path, "flusterbase", "1.0", "BASE = 1\n")
    extra = make_wheel(tmp_path, "flusterextra", "1.0", "EXTRA = 2\n")
    root = _workspace(tmp_path / "ws")
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "ws"\nversion = "0"\ndependencies = ["{base}"]\n'
        f'[project.optional-dependencies]\nfast = ["{extra}"]\n'
    )
    digest, _ = await upload_workspace(objects, root)
    cache = EnvironmentCache(tmp_path / "cache", objects)
    with anyio.fail_after(120):
        prepared = await cache.prepare(EnvironmentSpec(workspace=digest, extras=["fast"]), Emitted())
    assert len(prepared.python_path) == 2
    packages = prepared.python_path[1]
    assert (packages / "flusterbase.py").exists() and (packages / "flusterextra.py").exists()
    with pytest.raises(EnvironmentBuildFailed, match="extra 'slow' is not defined"):
        await cache.prepare(EnvironmentSpec(workspace=digest, extras=["slow"]), Emitted())


async def test_failed_install_raises_with_the_installer_output(objects: ObjectStore, tmp_path: Path) -> None:
    cache = EnvironmentCache(tmp_path / "cache", objects)
    env = EnvironmentSpec(pip_packages=[str(tmp_path / "no-such-dir" / "nothing-1.0-py3-none-any.whl")])
    emit = Emitted()
    with (
        anyio.fail_after(120),
        pytest.raises(EnvironmentBuildFailed, match="pip install .* failed") as caught,
    ):
        await cache.prepare(env, emit)
    assert "nothing-1.0-py3-none-any.whl" in caught.value.output
    assert "ERROR" in caught.value.output
    assert any("ERROR" in line for line in emit.lines)  # streamed to the job's logs as it happened
    assert _entries(tmp_path / "cache" / "packages") == []  # nothing half-built is kept
    assert cache.needs_build(env)


async def test_workers_sharing_a_cache_directory_install_once(objects: ObjectStore, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "flustershared", "1.0", "X = 1\n")
    caches = [EnvironmentCache(tmp_path / "cache", objects) for _ in range(2)]  # as two workers would
    env = EnvironmentSpec(pip_packages=[str(wheel)])
    hits: list[bool] = []

    async def prepare(cache: EnvironmentCache) -> None:
        hits.append((await cache.prepare(env, Emitted())).cache_hit)

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for cache in caches:
                tg.start_soon(prepare, cache)
    assert sorted(hits) == [False, True]
