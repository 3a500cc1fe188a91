"""Faults against real processes: a worker SIGKILLed mid-job, a controller restarted mid-run, a worker that
comes back after being declared dead, and garbage on every controller and worker subject."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import cloudpickle
import nats
import pytest
from cluster_helpers import Processes, in_own_task, local_cluster

from fluster import ClusterClient, Entrypoint, JobState, ResourceSpec
from fluster.errors import ProtocolError
from fluster.protocol.codec import ERROR_HEADER, decode
from fluster.protocol.messages import ErrorInfo
from fluster.protocol.subjects import Subjects

cloudpickle.register_pickle_by_value(sys.modules[__name__])

Eventually = Callable[..., Awaitable[None]]


def slow_first_attempt(marker_dir: str) -> int:
    attempt = int(os.environ["FLUSTER_ATTEMPT"])
    Path(marker_dir, f"attempt-{attempt}-{os.getpid()}").write_text(os.environ["FLUSTER_WORKER_ID"])
    if attempt == 0:
        time.sleep(60)
    return attempt


def sleep_then_return(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


async def workers_registered(client: ClusterClient, n: int) -> bool:
    return len(await client.list_workers()) >= n


async def test_worker_killed_mid_job_is_retried_on_another_worker(
    processes: Processes, nats_url: str, namespace: str, tmp_path: Path, eventually_fn: Eventually
) -> None:
    tmp_path = tmp_path / "markers"
    tmp_path.mkdir()
    async with in_own_task(local_cluster(nats_url, namespace, workers=0)) as client:
        workers = {wid: processes.worker(wid) for wid in ("w1", "w2")}
        await eventually_fn(lambda: workers_registered(client, 2), 30, "two workers")
        job_id = await client.submit("survivor", Entrypoint.from_callable(slow_first_attempt, str(tmp_path)))

        async def first_attempt_running() -> bool:
            return any(p.name.startswith("attempt-0") for p in tmp_path.iterdir())

        await eventually_fn(first_attempt_running, 30, "the first attempt")
        first = next(p for p in tmp_path.iterdir() if p.name.startswith("attempt-0"))
        victim = first.read_text()
        job_pid = int(first.name.rsplit("-", 1)[1])
        os.killpg(workers[victim].pid, signal.SIGKILL)

        assert await client.result(job_id, timeout=60) == 1
        status = await client.status(job_id)
        assert status.state == JobState.SUCCEEDED and status.preemption_count == 1
        assert status.attempts[0].state == JobState.WORKER_FAILED and status.attempts[0].worker_id == victim
        assert status.attempts[1].worker_id != victim
        # the job process of the dead worker died with it: nothing runs twice
        await eventually_fn(lambda: _gone(job_pid), 10, "the orphaned job process to die")


async def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:  # reaped between the two looks
        return True


async def test_controller_restart_mid_run_loses_no_job(
    processes: Processes, nats_url: str, namespace: str, eventually_fn: Eventually
) -> None:
    controller = processes.controller()
    async with in_own_task(local_cluster(nats_url, namespace, controller=False)) as client:
        ids = [await client.submit(f"job-{i}", Entrypoint.from_callable(sleep_then_return, 0.5, i)) for i in range(6)]
        os.killpg(controller.pid, signal.SIGKILL)
        controller.wait()

        # submissions made while no controller runs are acknowledged once one is back
        async with anyio.create_task_group() as tg:
            late: list[str] = []

            async def submit_late() -> None:
                late.append(await client.submit("late", Entrypoint.from_callable(sleep_then_return, 0, 99)))

            tg.start_soon(submit_late)
            await anyio.sleep(0.5)  # let the submit hit a cluster with no controller (it must retry, not fail)
            processes.controller()
        assert [await client.result(j, timeout=60) for j in ids] == list(range(6))
        assert await client.result(late[0], timeout=60) == 99
        assert len(await client.list_jobs()) == 7


async def test_worker_declared_dead_kills_its_job_when_it_comes_back(
    processes: Processes, nats_url: str, namespace: str, tmp_path: Path, eventually_fn: Eventually
) -> None:
    tmp_path = tmp_path / "markers"
    tmp_path.mkdir()
    async with in_own_task(local_cluster(nats_url, namespace, workers=0)) as client:
        frozen = processes.worker("frozen")
        await eventually_fn(lambda: workers_registered(client, 1), 30, "the worker")
        job_id = await client.submit("fenced", Entrypoint.from_callable(slow_first_attempt, str(tmp_path)))
        await eventually_fn(lambda: _has_marker(tmp_path), 30, "the first attempt")
        marker = next(tmp_path.iterdir())
        job_pid = int(marker.name.rsplit("-", 1)[1])

        os.kill(frozen.pid, signal.SIGSTOP)  # a partition: the worker's socket stays open, it just goes silent

        async def attempt_lost() -> bool:
            return (await client.status(job_id)).preemption_count >= 1

        await eventually_fn(attempt_lost, 30, "the controller to declare the worker dead")
        os.kill(frozen.pid, signal.SIGCONT)
        # it comes back, learns it was declared dead, kills the stale attempt, and re-registers
        await eventually_fn(lambda: _gone(job_pid), 30, "the stale attempt to be killed")
        assert await client.result(job_id, timeout=60) == 1
        assert [w.worker_id for w in await client.list_workers()] == ["frozen"]


async def _has_marker(path: Path) -> bool:
    return any(path.iterdir())


GARBAGE = [b"", b"\x00\xff garbage", b"\x93\x01\x02\x03", b"\x81\xa3foo\xa3bar", os.urandom(2048)]


async def test_garbage_on_every_controller_and_worker_subject_gets_errors_not_crashes(
    cluster: ClusterClient, nats_url: str
) -> None:
    subjects = Subjects(cluster.namespace)
    worker_id = (await cluster.list_workers())[0].worker_id
    targets = [
        subjects.submit,
        subjects.kill,
        subjects.register(worker_id),
        subjects.deregister(worker_id),
        subjects.heartbeat(worker_id),
        subjects.job_update(worker_id),
        subjects.worker_run(worker_id),
        subjects.worker_kill(worker_id),
    ]
    nc = await nats.connect(nats_url)
    try:
        for subject in targets:
            for payload in GARBAGE:
                await nc.publish(subject, payload)  # fire-and-forget garbage must be survived too
                reply = await nc.request(subject, payload, timeout=5)
                assert reply.headers and reply.headers.get(ERROR_HEADER) == "1", subject
                info = decode(reply.data, ErrorInfo)
                assert "ProtocolError" in info.type_name and "cannot decode" in info.message
    finally:
        await nc.drain()
    job_id = await cluster.submit("still-serving", Entrypoint.from_callable(sleep_then_return, 0, 7))
    assert await cluster.result(job_id, timeout=30) == 7
    with pytest.raises(ProtocolError):
        decode(b"\x00", ErrorInfo)


async def test_standby_controller_takes_over_when_the_active_one_dies(
    processes: Processes, nats_url: str, namespace: str
) -> None:
    first, second = processes.controller(), processes.controller()
    async with in_own_task(local_cluster(nats_url, namespace, controller=False)) as client:
        before = await client.submit("before", Entrypoint.from_callable(sleep_then_return, 0, 1))
        assert await client.result(before, timeout=60) == 1
        entry = await client.assets.leader.get("controller")
        holder_pid = int(entry.value.decode().rsplit("-", 2)[1])
        active, standby = (first, second) if holder_pid == first.pid else (second, first)
        assert holder_pid == active.pid
        os.killpg(active.pid, signal.SIGKILL)
        active.wait()
        after = await client.submit("after", Entrypoint.from_callable(sleep_then_return, 0, 2))
        assert await client.result(after, timeout=60) == 2
        entry = await client.assets.leader.get("controller")
        assert int(entry.value.decode().rsplit("-", 2)[1]) == standby.pid


async def test_dispatch_to_a_worker_that_does_not_answer_requeues_the_job(
    processes: Processes, nats_url: str, namespace: str, eventually_fn: Eventually
) -> None:
    from fluster.bus.rpc import request
    from fluster.protocol.messages import RegisterWorker, RegisterWorkerReply, WorkerInfo, WorkerResources

    async with in_own_task(local_cluster(nats_url, namespace, workers=0)) as client:
        # a worker that registers but never listens for dispatches (nor heartbeats)
        ghost = WorkerInfo(
            worker_id="ghost",
            incarnation="x1",
            hostname="nowhere",
            pid=1,
            runtime="process",
            resources=WorkerResources(cpu=64, memory_bytes=64 << 30),
            registered_at_ms=0,
        )
        await request(
            client.nc, client.subjects.register("ghost"), RegisterWorker(info=ghost), RegisterWorkerReply, timeout=5
        )
        job_id = await client.submit(
            "requeued", Entrypoint.from_callable(sleep_then_return, 0, 5), resources=fluster_resources(cpu=3)
        )

        async def ghost_gone() -> bool:
            return not await client.list_workers()

        await eventually_fn(ghost_gone, 30, "the silent worker to be declared dead")
        status = await client.status(job_id)
        assert status.state == JobState.PENDING and status.attempts == ()  # the failed dispatch was undone
        processes.worker("real", "--cpu", "4")
        assert await client.result(job_id, timeout=60) == 5
        assert [a.worker_id for a in (await client.status(job_id)).attempts] == ["real"]


def fluster_resources(cpu: float) -> ResourceSpec:
    return ResourceSpec(cpu=cpu, memory="1g")


def spawn_grandchild(marker_dir: str) -> None:
    import subprocess

    child = subprocess.Popen(["sleep", "600"])
    Path(marker_dir, f"grandchild-{child.pid}").write_text("")
    child.wait()


async def test_a_sigkilled_workers_job_and_its_children_die_with_it(
    processes: Processes, nats_url: str, namespace: str, tmp_path: Path, eventually_fn: Eventually
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    async with in_own_task(local_cluster(nats_url, namespace, workers=0)) as client:
        worker = processes.worker("doomed")
        await eventually_fn(lambda: workers_registered(client, 1), 30, "the worker")
        await client.submit("family", Entrypoint.from_callable(spawn_grandchild, str(markers)))
        await eventually_fn(lambda: _has_marker(markers), 30, "the grandchild to start")
        grandchild = int(next(markers.iterdir()).name.split("-")[1])
        os.killpg(worker.pid, signal.SIGKILL)
        await eventually_fn(lambda: _gone(grandchild), 15, "the job's own child to die with the worker")
