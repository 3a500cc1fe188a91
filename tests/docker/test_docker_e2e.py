"""The docker runtime in a whole cluster: results, OOM, kill, logs and environments, through the client."""

from __future__ import annotations

import os
import signal
import sys
import uuid
from pathlib import Path

import anyio
import cloudpickle
import docker
import pytest
from cluster_helpers import Processes, eventually, in_own_task, local_cluster
from fluster_docker_helpers import make_wheel

from fluster.client.cluster import ClusterClient
from fluster.local.cluster import LocalCluster
from fluster.protocol.messages import JobState
from fluster.protocol.resources import ResourceSpec
from fluster.protocol.subjects import LABEL_JOB
from fluster.types import Entrypoint, create_environment

pytestmark = pytest.mark.docker


# The containers cannot import this test module: its job functions travel by value, as a script's would.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture
def docker_cluster(nats_url: str, namespace: str, base_image: str, docker_client: docker.DockerClient) -> LocalCluster:
    """Used as ``async with docker_cluster as client`` inside the test, so one task enters and exits it."""
    return LocalCluster(
        url=nats_url,
        namespace=namespace,
        workers=1,
        cpu=2,
        memory="4g",
        runtime="docker",
        heartbeat_interval=0.2,
        worker_timeout=5.0,
    )


async def _lines(client: ClusterClient, job_id: str) -> list[tuple[str, str]]:
    return [(line.stream, line.line) async for line in client.logs(job_id)]


def _double(x: int) -> tuple[int, int, str]:
    import os
    import sys

    sys.stdout.write("to stdout\n")
    sys.stderr.write("to stderr\n")
    return x * 2, os.getuid(), os.getcwd()


async def test_job_runs_in_a_container_and_its_output_reaches_the_logs(docker_cluster: LocalCluster) -> None:
    async with docker_cluster as client:
        job = await client.submit("double", Entrypoint.from_callable(_double, 21))
        assert await client.result(job, timeout=60) == (42, 1000, "/job")
        lines = await _lines(client, job)
    assert ("stdout", "to stdout") in lines and ("stderr", "to stderr") in lines


def _allocate_forever() -> None:
    chunks = []
    while True:
        chunks.append(bytearray(16 << 20))


async def test_job_past_its_memory_limit_fails_with_the_oom_message(docker_cluster: LocalCluster) -> None:
    async with docker_cluster as client:
        job = await client.submit(
            "hog", Entrypoint.from_callable(_allocate_forever), resources=ResourceSpec(cpu=1, memory="96m")
        )
        status = await client.wait(job, timeout=60)
    assert status.state == JobState.FAILED
    assert status.error == "out of memory: the job exceeded its memory limit of 96m"


def _sleep_forever() -> None:
    import sys
    import time

    sys.stdout.write("ready\n")
    sys.stdout.flush()
    time.sleep(600)


async def test_killed_job_leaves_no_container(docker_cluster: LocalCluster, docker_client: docker.DockerClient) -> None:
    async with docker_cluster as client:
        job = await client.submit("sleeper", Entrypoint.from_callable(_sleep_forever))
        with anyio.fail_after(60):
            async for line in client.logs(job, follow=True):
                if line.line == "ready":
                    break
        assert docker_client.containers.list(filters={"label": f"{LABEL_JOB}={job}"}) != []
        await client.kill(job)
        status = await client.wait(job, timeout=30)
        assert status.state == JobState.KILLED
        assert docker_client.containers.list(all=True, filters={"label": f"{LABEL_JOB}={job}"}) == []


def _use_environment() -> tuple[str, int]:
    import importlib
    import os

    import helper  # type: ignore[import-not-found]  # from the workspace

    package = importlib.import_module(os.environ["WHEEL_MODULE"])
    return helper.greet(), int(package.ANSWER)


async def test_workspace_and_packages_are_built_once_and_reused(docker_cluster: LocalCluster, tmp_path: Path) -> None:
    module = f"wheel{uuid.uuid4().hex[:8]}"  # the worker's cache outlives this test: a new hash every run
    wheel = make_wheel(tmp_path, module, "1.0", "ANSWER = 41\n")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "helper.py").write_text("def greet():\n    return 'hi from the workspace'\n")
    env = create_environment(workspace=workspace, pip_packages=[str(wheel)], env_vars={"WHEEL_MODULE": module})
    outputs = []
    async with docker_cluster as client:
        for name in ("first", "second"):
            job = await client.submit(name, Entrypoint.from_callable(_use_environment), environment=env)
            assert await client.result(job, timeout=120) == ("hi from the workspace", 41)
            outputs.append(await _lines(client, job))
    first, second = ([line for stream, line in out if stream == "system"] for out in outputs)
    assert any(line.startswith("installing ") for line in first)
    assert not any(line.startswith("installing ") for line in second)  # the cache hit


async def test_failed_install_fails_the_job_with_the_installer_output(
    docker_cluster: LocalCluster, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "ghost-1.0-py3-none-any.whl"
    env = create_environment(pip_packages=[str(missing)])
    async with docker_cluster as client:
        job = await client.submit("broken", Entrypoint.from_callable(_double, 1), environment=env)
        status = await client.wait(job, timeout=120)
        lines = [line for _, line in await _lines(client, job)]
    assert status.state == JobState.FAILED
    assert status.error is not None and "pip install" in status.error
    assert any("ERROR" in line and "ghost-1.0-py3-none-any.whl" in line for line in lines), lines


def _sleep_long() -> None:
    import time

    time.sleep(600)


async def test_a_sigkilled_workers_container_does_not_outlive_it(
    processes: Processes, nats_url: str, namespace: str, base_image: str, docker_client: docker.DockerClient
) -> None:
    async with in_own_task(local_cluster(nats_url, namespace, workers=0)) as client:
        worker = processes.worker(f"dw-{uuid.uuid4().hex[:6]}", "--runtime", "docker", "--image", base_image)

        async def registered() -> bool:
            return len(await client.list_workers()) == 1

        await eventually(registered, 30, "the docker worker")
        job = await client.submit("orphan", Entrypoint.from_callable(_sleep_long))

        def running() -> list[object]:
            return docker_client.containers.list(filters={"label": f"{LABEL_JOB}={job}", "status": "running"})

        async def started() -> bool:
            return bool(await anyio.to_thread.run_sync(running))

        async def gone() -> bool:
            return not await anyio.to_thread.run_sync(running)

        await eventually(started, 60, "the job's container")
        os.killpg(worker.pid, signal.SIGKILL)
        # the worker's end of the job's lifeline closed with it: the job ends its own process group
        await eventually(gone, 30, "the container to stop after its worker died")
        for container in docker_client.containers.list(all=True, filters={"label": f"{LABEL_JOB}={job}"}):
            container.remove(force=True)


def _hold_memory() -> None:
    import time

    held = bytearray(48 << 20)
    for i in range(0, len(held), 4096):  # touched, so it is resident
        held[i] = 1
    time.sleep(600)  # until killed


async def test_a_container_jobs_usage_is_sampled_like_a_process_jobs(docker_cluster: LocalCluster) -> None:
    async with docker_cluster as client:
        job = await client.submit("holder", Entrypoint.from_callable(_hold_memory))

        async def sampled() -> bool:
            usage = await client.usage(job)
            return usage is not None and usage.rss_bytes > 40 << 20

        try:
            await eventually(sampled, 60, "a usage sample of the container's processes")  # every 5 s
        finally:
            await client.kill(job)
