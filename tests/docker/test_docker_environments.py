"""Environments inside containers: a workspace module and a pip package built by the worker, used by jobs."""

from __future__ import annotations

from pathlib import Path

import pytest
from fluster_docker_helpers import make_spec, make_wheel, read_result, run_attempt
from nats.js.object_store import ObjectStore

from fluster.client.bundle import upload_workspace
from fluster.protocol.messages import EnvironmentSpec
from fluster.worker.docker_runtime import DockerRuntime
from fluster.worker.environments import EnvironmentCache

pytestmark = pytest.mark.docker


async def _discard(line: str) -> None:
    return None


def _use_environment() -> tuple[str, int, str, int, bool]:
    import os

    import flusterdocker  # type: ignore[import-not-found]
    import mymod  # type: ignore[import-not-found]
    import pkg  # type: ignore[import-not-found]

    writable = True
    try:
        with open("scratch.txt", "w") as f:
            f.write("x")
    except OSError:
        writable = False
    return os.getcwd(), pkg.VALUE, mymod.hello(), flusterdocker.ANSWER, writable


async def test_job_in_a_container_imports_its_workspace_and_packages(
    runtime: DockerRuntime, objects: ObjectStore, tmp_path: Path
) -> None:
    workspace = tmp_path / "ws"
    (workspace / "pkg").mkdir(parents=True)
    (workspace / "pkg" / "__init__.py").write_text("VALUE = 42\n")
    (workspace / "mymod.py").write_text("def hello():\n    return 'hello'\n")
    wheel = make_wheel(tmp_path, "flusterdocker", "1.0", "ANSWER = 41\n")
    digest, _ = await upload_workspace(objects, workspace)
    cache = EnvironmentCache(tmp_path / "cache", objects)
    env = EnvironmentSpec(workspace=digest, pip_packages=[str(wheel)])

    for expect_hit in (False, True):
        prepared = await cache.prepare(env, _discard)
        assert prepared.cache_hit is expect_hit
        spec = make_spec(tmp_path, _use_environment, python_path=prepared.python_path, cwd=prepared.cwd)
        info, lines = await run_attempt(await runtime.start(spec))
        assert info.exit_code == 0, lines
        cwd, value, hello, answer, writable = read_result(spec)
        assert (cwd, value, hello, answer) == ("/fluster/path/0", 42, "hello", 41)
        assert not writable  # the cached workspace is shared by jobs: read-only in a container
