"""The docker runtime on a real dockerd: results, limits, OOM, stop, logs, fluster inside, stale cleanup."""

from __future__ import annotations

import io
import logging
import tarfile
from pathlib import Path

import anyio
import docker
import pytest
from fluster_docker_helpers import make_spec, read_result, run_attempt

from fluster.errors import RuntimeStartError
from fluster.protocol.jobfiles import ENTRYPOINT_FILE, exec_entrypoint
from fluster.protocol.resources import ResourceSpec, gpu_device
from fluster.protocol.subjects import LABEL_JOB, LABEL_WORKER
from fluster.worker.docker_runtime import DockerRuntime
from fluster.worker.image import PYTHON_VERSION

pytestmark = pytest.mark.docker


def _whoami() -> tuple[int, int, str, tuple[int, int]]:
    import os
    import sys

    return os.getuid(), os.getgid(), os.getcwd(), (sys.version_info[0], sys.version_info[1])


async def test_job_runs_in_a_container_as_non_root_and_returns_its_result(
    runtime: DockerRuntime, tmp_path: Path
) -> None:
    spec = make_spec(tmp_path, _whoami)
    info, _ = await run_attempt(await runtime.start(spec))
    assert info.exit_code == 0 and not info.oom_killed and info.error is None
    uid, gid, cwd, version = read_result(spec)
    assert (uid, gid, cwd) == (1000, 1000, "/job")
    import sys

    assert version == (sys.version_info[0], sys.version_info[1])


def _limits() -> dict[str, str]:
    from pathlib import Path

    def read(*candidates: str) -> str:
        for candidate in candidates:
            path = Path("/sys/fs/cgroup") / candidate
            if path.exists():
                return path.read_text().strip()
        return "missing"

    return {
        "cpu": read("cpu/cpu.cfs_quota_us", "cpu.max"),
        "period": read("cpu/cpu.cfs_period_us"),
        "memory": read("memory/memory.limit_in_bytes", "memory.max"),
        "memsw": read("memory/memory.memsw.limit_in_bytes", "memory.swap.max"),
        "pids": read("pids/pids.max", "pids.max"),
    }


async def test_cpu_memory_and_pid_limits_are_visible_inside_the_container(
    runtime: DockerRuntime, tmp_path: Path
) -> None:
    spec = make_spec(tmp_path, _limits, resources=ResourceSpec(cpu=0.5, memory="256m"))
    info, _ = await run_attempt(await runtime.start(spec))
    assert info.exit_code == 0
    limits = read_result(spec)
    if limits["period"] != "missing":  # cgroup v1
        assert limits["cpu"] == "50000" and limits["period"] == "100000"
        assert limits["memory"] == limits["memsw"] == str(256 << 20)
    else:  # cgroup v2: "<quota> <period>", and swap beyond memory is 0
        assert limits["cpu"] == "50000 100000"
        assert limits["memory"] == str(256 << 20) and limits["memsw"] == "0"
    assert limits["pids"] == "4096"


def _allocate_forever() -> None:
    chunks = []
    while True:
        chunks.append(bytearray(16 << 20))


async def test_job_past_its_memory_limit_is_reported_out_of_memory(runtime: DockerRuntime, tmp_path: Path) -> None:
    spec = make_spec(tmp_path, _allocate_forever, resources=ResourceSpec(cpu=1, memory="96m"))
    info, _ = await run_attempt(await runtime.start(spec))
    assert info.oom_killed
    assert info.error == "out of memory: the job exceeded its memory limit of 96m"
    assert info.exit_code == -9


def _sleep_after_ready(ignore_sigterm: bool) -> None:
    import signal
    import time

    if ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import sys

    sys.stdout.write("ready\n")
    sys.stdout.flush()
    time.sleep(300)


@pytest.mark.parametrize(("ignore_sigterm", "exit_code"), [(False, -15), (True, -9)])
async def test_stop_terminates_then_kills_and_removes_the_container(
    runtime: DockerRuntime,
    docker_client: docker.DockerClient,
    tmp_path: Path,
    ignore_sigterm: bool,
    exit_code: int,
) -> None:
    spec = make_spec(tmp_path, _sleep_after_ready, ignore_sigterm, job_id="stopme")
    attempt = await runtime.start(spec)
    with anyio.fail_after(30):
        async for stream, line in attempt.lines():
            if (stream, line) == ("stdout", "ready"):
                break
        await attempt.stop(grace=0.5)
    labels = [f"{LABEL_WORKER}={runtime.worker_id}", f"{LABEL_JOB}=stopme"]
    assert docker_client.containers.list(all=True, filters={"label": labels}) == []
    info = await attempt.wait()
    assert info.exit_code == exit_code and not info.oom_killed


def _talk() -> None:
    import sys

    sys.stdout.write("first line\n")
    sys.stdout.flush()
    sys.stderr.write("to stderr\n")
    sys.stdout.write("x" * 100_000 + "\n")
    sys.stdout.write("no newline at the end")


async def test_output_arrives_line_by_line_per_stream(runtime: DockerRuntime, tmp_path: Path) -> None:
    info, lines = await run_attempt(await runtime.start(make_spec(tmp_path, _talk)))
    assert info.exit_code == 0
    stdout = [line for stream, line in lines if stream == "stdout"]
    assert stdout == ["first line", "x" * 100_000, "no newline at the end"]
    assert [line for stream, line in lines if stream == "stderr"] == ["to stderr"]


def _use_fluster_and_nats(url: str) -> str:
    import asyncio

    import nats

    import fluster.errors
    from fluster.protocol.resources import parse_memory

    async def main() -> str:
        nc = await nats.connect(url)
        await nc.flush()
        connected = str(nc.connected_url.netloc) if nc.connected_url else ""
        await nc.close()
        return connected

    # no assert here: pytest rewrites asserts into calls the container cannot unpickle
    if parse_memory("1k") != 1024 or not issubclass(fluster.errors.FlusterError, Exception):
        raise RuntimeError("fluster did not import properly")
    return asyncio.run(main())


async def test_job_imports_fluster_and_reaches_nats_on_the_host_network(
    runtime: DockerRuntime, tmp_path: Path, nats_url: str
) -> None:
    spec = make_spec(tmp_path, _use_fluster_and_nats, nats_url)
    info, lines = await run_attempt(await runtime.start(spec))
    assert info.exit_code == 0, lines
    assert read_result(spec) == nats_url.removeprefix("nats://")


def _fail() -> None:
    raise KeyError("missing")


async def test_a_failing_job_writes_its_error_from_inside_the_container(runtime: DockerRuntime, tmp_path: Path) -> None:
    from fluster.errors import from_wire
    from fluster.protocol.codec import decode
    from fluster.protocol.jobfiles import RESULT_FILE, read_outcome
    from fluster.protocol.messages import ErrorInfo
    from fluster.protocol.values import ERROR

    spec = make_spec(tmp_path, _fail)
    info, lines = await run_attempt(await runtime.start(spec))
    assert info.exit_code == 1 and info.error is None
    outcome = read_outcome(spec.workdir / RESULT_FILE)
    assert outcome is not None and outcome.status == ERROR
    assert isinstance(from_wire(decode(outcome.data, ErrorInfo)), KeyError)
    assert ("stderr", "KeyError: 'missing'") in lines


async def test_a_restarted_worker_removes_the_containers_of_its_earlier_run(
    runtime: DockerRuntime, docker_client: docker.DockerClient, tmp_path: Path, runtime_cache: Path
) -> None:
    attempt = await runtime.start(make_spec(tmp_path, _sleep_after_ready, False))
    label = f"{LABEL_WORKER}={runtime.worker_id}"
    assert len(docker_client.containers.list(filters={"label": label})) == 1
    restarted = DockerRuntime(runtime.worker_id, runtime_cache, runtime.image, client=docker_client)
    await restarted.cleanup_stale()
    assert docker_client.containers.list(all=True, filters={"label": label}) == []
    with anyio.fail_after(30):
        info = await attempt.wait()  # the old attempt object still ends cleanly
    assert info.exit_code != 0


async def test_missing_image_fails_start_with_how_to_build_it(
    docker_client: docker.DockerClient, runtime_cache: Path, tmp_path: Path
) -> None:
    runtime = DockerRuntime("test-noimage", runtime_cache, "fluster-no-such-image:1", client=docker_client)
    with pytest.raises(RuntimeStartError, match="fluster build-image"):
        await runtime.start(make_spec(tmp_path, _whoami))


async def test_image_with_another_python_fails_start_clearly(
    docker_client: docker.DockerClient, runtime_cache: Path, tmp_path: Path
) -> None:
    tag = "fluster-test-python27:latest"
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo("etc/hostname")
        tar.addfile(info, io.BytesIO(b""))
    docker_client.api.import_image_from_data(
        archive.getvalue(), repository=tag.split(":")[0], tag="latest", changes=["LABEL fluster.python=2.7"]
    )
    try:
        runtime = DockerRuntime("test-oldpython", runtime_cache, tag, client=docker_client)
        with pytest.raises(RuntimeStartError, match=r"has Python 2\.7 but this worker runs Python 3\.\d+"):
            await runtime.start(make_spec(tmp_path, _whoami))
    finally:
        docker_client.images.remove(tag, force=True)


async def test_gpu_job_without_an_nvidia_runtime_fails_start_clearly(runtime: DockerRuntime, tmp_path: Path) -> None:
    spec = make_spec(tmp_path, _whoami, resources=ResourceSpec(cpu=1, memory="256m", device=gpu_device()))
    with pytest.raises(RuntimeStartError, match="device driver"):
        await runtime.start(spec)


async def test_gpu_jobs_get_distinct_gpus_of_the_worker(
    docker_client: docker.DockerClient, runtime_cache: Path, tmp_path: Path
) -> None:
    runtime = DockerRuntime("test-gpus", runtime_cache, client=docker_client, gpu_ids=["0", "1"])
    two = make_spec(tmp_path, _whoami, resources=ResourceSpec(device=gpu_device(count=2)))
    three = make_spec(tmp_path, _whoami, resources=ResourceSpec(device=gpu_device(count=3)))
    with pytest.raises(RuntimeStartError, match="wants 3 GPU"):
        await runtime.start(three)
    with pytest.raises(RuntimeStartError, match="device driver"):  # no NVIDIA runtime here
        await runtime.start(two)
    with pytest.raises(RuntimeStartError, match="device driver"):  # the failed start released its GPUs
        await runtime.start(two)


async def test_unreachable_daemon_fails_start_clearly(
    monkeypatch: pytest.MonkeyPatch, runtime_cache: Path, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    runtime = DockerRuntime("test-nodaemon", runtime_cache)
    with pytest.raises(RuntimeStartError, match="cannot reach the Docker daemon"):
        await runtime.start(make_spec(tmp_path, _whoami))


async def test_image_without_the_python_label_is_probed_once(
    docker_client: docker.DockerClient,
    base_image: str,
    runtime_cache: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tag = "fluster-test-unlabelled:latest"
    dockerfile = io.BytesIO(f"FROM {base_image}\nLABEL fluster.python=\n".encode())
    docker_client.images.build(fileobj=dockerfile, tag=tag, rm=True)
    try:
        runtime = DockerRuntime("test-unlabelled", runtime_cache, tag, client=docker_client)
        caplog.set_level(logging.INFO, logger="fluster.worker.docker_runtime")
        for _ in range(2):
            spec = make_spec(tmp_path, _whoami)
            info, _ = await run_attempt(await runtime.start(spec))
            assert info.exit_code == 0 and read_result(spec)[0] == 1000
        probes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("image python")]
        assert probes == [f"image python image={tag} version={PYTHON_VERSION}"]
    finally:
        docker_client.images.remove(tag, force=True)


async def test_command_job_runs_in_the_container(runtime: DockerRuntime, tmp_path: Path) -> None:

    spec = make_spec(tmp_path, _whoami)
    (spec.workdir / ENTRYPOINT_FILE).write_bytes(exec_entrypoint(["sh", "-c", "echo hi from $(id -u)"]))
    info, lines = await run_attempt(await runtime.start(spec))
    assert info.exit_code == 0
    assert lines == [("stdout", "hi from 1000")]
