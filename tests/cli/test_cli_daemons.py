"""``fluster worker`` under signals and conflicts, and a follower whose cluster goes away."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import anyio
import cloudpickle
import pytest
from cli_helpers import finish, fluster, start
from cluster_helpers import Processes, eventually

from fluster import ClusterClient, Entrypoint, JobState
from fluster.cli import failures
from fluster.local.server import NatsServer

cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = pytest.mark.timeout(120)


def slow_cleanup() -> None:
    print("started", flush=True)
    try:
        time.sleep(60)
    finally:
        print("cleanup started", flush=True)
        time.sleep(1)
        print("cleanup done", flush=True)


async def _until_line(client: ClusterClient, job_id: str, text: str) -> None:
    with anyio.fail_after(30):
        async for line in client.logs(job_id, follow=True):
            if line.line == text:
                return


def _wait_for_output(log: Path, text: str) -> None:
    deadline = time.monotonic() + 30
    while text not in log.read_text():
        assert time.monotonic() < deadline, f"{text!r} not in {log}:\n{log.read_text()}"
        time.sleep(0.05)


async def test_a_second_ctrl_c_keeps_the_drain_clean_and_a_third_forces_it(
    processes: Processes, client: ClusterClient, tmp_path: Path
) -> None:
    processes.controller()
    worker = processes.worker("drainer", "--drain-grace", "0.2")
    job_id = await client.submit("cleanup", Entrypoint.from_callable(slow_cleanup))
    await _until_line(client, job_id, "started")
    worker.send_signal(signal.SIGINT)
    await _until_line(client, job_id, "cleanup started")
    worker.send_signal(signal.SIGINT)  # while the drain waits for the job's cleanup
    assert await anyio.to_thread.run_sync(lambda: worker.wait(30)) == 0
    record = await client.status(job_id)
    assert record.attempts[0].state == JobState.PREEMPTED, record
    assert "cleanup done" in [line.line async for line in client.logs(job_id)]
    assert await client.list_workers() == []
    log = next(tmp_path.glob("drainer-*.log"))
    assert "still stopping worker drainer cleanly" in log.read_text()

    forced = processes.worker("forced", "--drain-grace", "60")
    await eventually(lambda: _attempt_on(client, job_id, "forced"), timeout=30, what="the job on worker 'forced'")
    log = next(tmp_path.glob("forced-*.log"))
    for expected in ("stopping worker forced", "still stopping", "forced: worker forced stops now"):
        forced.send_signal(signal.SIGINT)
        await anyio.to_thread.run_sync(_wait_for_output, log, expected)
    assert await anyio.to_thread.run_sync(lambda: forced.wait(30)) == failures.INTERRUPTED
    await client.kill(job_id)


async def _attempt_on(client: ClusterClient, job_id: str, worker_id: str) -> bool:
    status = await client.status(job_id)
    return status.state == JobState.RUNNING and status.worker_id == worker_id


async def test_a_second_worker_with_a_live_id_exits_with_a_clear_error(
    processes: Processes, client: ClusterClient, nats_url: str, namespace: str
) -> None:
    processes.controller()
    processes.worker("twin")

    async def registered() -> bool:
        return [w.worker_id for w in await client.list_workers()] == ["twin"]

    await eventually(registered, timeout=30, what="worker twin")
    run = await anyio.to_thread.run_sync(
        lambda: fluster("worker", "--worker-id", "twin", "--url", nats_url, "--namespace", namespace, timeout=30)
    )
    assert run.code == failures.CONFLICT
    assert "worker id 'twin' is in use by a live worker" in run.error_line


def test_a_follower_whose_cluster_goes_away_says_so(tmp_path: Path) -> None:
    with NatsServer(store_dir=tmp_path / "nats") as server:
        procs = Processes(server.url, "default", tmp_path)
        try:
            procs.controller()
            procs.worker("w")
            env = {"FLUSTER_URL": server.url}
            job = fluster("run", "--no-wait", "--name", "sleeper", "--", "sh", "-c", "echo up; sleep 60", extra_env=env)
            job.ok()
            args = ["logs", "-f", "sleeper"]
            follower = start(args, extra_env={**env, "FLUSTER_CONNECTION_LOST_AFTER": "1"})
            assert follower.stdout is not None
            assert follower.stdout.readline() == "up\n"
            server.kill()
            run = finish(follower, args, timeout=60)
        finally:
            procs.stop_all()
    assert run.code == failures.UNAVAILABLE
    assert "lost the connection to NATS" in run.error_line
