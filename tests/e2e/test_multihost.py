"""Multi-host jobs against real controller and worker processes: replicas, gangs placed all at once, a gang
retried as a whole, group_by and constraints, pending reasons, all_gather, no starvation, per-task results
and logs, and the Fray ResourceConfig path."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import cloudpickle
import pytest
from cluster_helpers import Processes, in_own_task, local_cluster

from fluster import ClusterClient, Constraint, Entrypoint, JobState, ResourceSpec
from fluster.errors import Unschedulable

cloudpickle.register_pickle_by_value(sys.modules[__name__])

Eventually = Callable[..., Awaitable[None]]
ONE = ResourceSpec(cpu=1, memory="256m")


def whoami() -> tuple[int, int, list[str]]:
    hosts = os.environ["FLUSTER_TASK_HOSTS"].split(",")
    print("task", os.environ["FLUSTER_TASK_INDEX"], "of", os.environ["FLUSTER_NUM_TASKS"], flush=True)
    return int(os.environ["FLUSTER_TASK_INDEX"]), int(os.environ["FLUSTER_NUM_TASKS"]), hosts


def gather_rank() -> list[object]:
    from fluster.gang import all_gather

    index = int(os.environ["FLUSTER_TASK_INDEX"])
    first = all_gather({"rank": index, "addr": f"10.0.0.{index}"})
    second = all_gather(index * 10)  # the second call meets the others' second
    return [first, second]


def one_task_dies_first(marker_dir: str) -> int:
    """Task 1's first attempt kills itself; everything else sleeps a little and succeeds."""
    index, attempt = int(os.environ["FLUSTER_TASK_INDEX"]), int(os.environ["FLUSTER_ATTEMPT"])
    Path(marker_dir, f"{attempt}-{index}-{os.getpid()}").write_text("")
    if index == 1 and attempt == 0:
        time.sleep(0.5)
        os._exit(3)
    time.sleep(2 if attempt == 0 else 0.1)
    return attempt


def maybe_fail(bad: list[int]) -> int:
    index = int(os.environ["FLUSTER_TASK_INDEX"])
    if index in bad:
        raise ValueError(f"task {index} fails")
    return index


def sleep_for(seconds: float) -> str:
    time.sleep(seconds)
    return os.environ.get("FLUSTER_WORKER_ID", "")


async def workers_up(client: ClusterClient, n: int) -> bool:
    return len(await client.list_workers()) >= n


def slot_worker(processes: Processes, worker_id: str, *labels: str) -> None:
    extra = [label if label.startswith("--") else f"--label={label}" for label in labels]
    processes.worker(worker_id, "--max-concurrent-jobs", "1", "--cpu", "1", *extra)


async def test_a_gang_of_three_lands_at_once_and_each_task_knows_its_place(
    processes: Processes, nats_url: str, namespace: str, eventually_fn: Eventually
) -> None:
    async with in_own_task(local_cluster(nats_url, namespace, workers=0)) as client:
        for i in range(3):  # slot0 says how other hosts reach it; the others go by their host name
            slot_worker(processes, f"slot{i}", *(["--address=127.0.0.7"] if i == 0 else []))
        await eventually_fn(lambda: workers_up(client, 3), 30, "three workers")
        job_id = await client.submit("gang", whoami, resources=ONE, replicas=3, coschedule=True)
        results = await client.result(job_id, timeout=60)
        assert [r[:2] for r in results] == [(0, 3), (1, 3), (2, 3)]
        status = await client.status(job_id)
        hosts = ["127.0.0.7" if a.worker_id == "slot0" else socket.gethostname() for a in status.attempts]
        assert all(r[2] == hosts for r in results)  # every task's host, in task order, the same for each
        assert len({a.worker_id for a in status.attempts}) == 3  # one slot each: three workers
        assert len({a.assigned_at_ms for a in status.attempts}) == 1  # one decision
        lines = [(line.task, line.line) async for line in client.logs(job_id)]
        assert sorted(lines) == [(0, "task 0 of 3"), (1, "task 1 of 3"), (2, "task 2 of 3")]
        assert [line.line async for line in client.logs(job_id, task=2)] == ["task 2 of 3"]


async def test_a_gang_that_cannot_all_fit_waits_whole_and_says_why(
    processes: Processes, nats_url: str, namespace: str, eventually_fn: Eventually
) -> None:
    async with in_own_task(local_cluster(nats_url, namespace, workers=0)) as client:
        for i in range(2):
            slot_worker(processes, f"two{i}")
        await eventually_fn(lambda: workers_up(client, 2), 30, "two workers")
        job_id = await client.submit("too-big", whoami, resources=ONE, replicas=3, coschedule=True)

        async def explained() -> bool:
            return bool((await client.status(job_id)).pending_reason)

        await eventually_fn(explained, 30, "a pending reason")
        status = await client.status(job_id)
        assert status.state == JobState.PENDING and status.attempts == ()  # none of it runs
        assert "gang of 3" in (status.pending_reason or "") and "room for 2" in (status.pending_reason or "")
        slot_worker(processes, "two2")
        assert len(await client.result(job_id, timeout=60)) == 3


async def test_a_task_that_dies_ends_its_siblings_and_the_gang_is_retried_whole(
    processes: Processes, nats_url: str, namespace: str, tmp_path: Path, eventually_fn: Eventually
) -> None:
    async with in_own_task(local_cluster(nats_url, namespace, workers=0)) as client:
        for i in range(3):
            slot_worker(processes, f"g{i}")
        await eventually_fn(lambda: workers_up(client, 3), 30, "three workers")
        job_id = await client.submit(
            "retried",
            Entrypoint.from_callable(one_task_dies_first, str(tmp_path)),
            resources=ONE,
            replicas=3,
            coschedule=True,
            max_retries_failure=1,
        )
        assert await client.result(job_id, timeout=90) == [1, 1, 1]
        status = await client.status(job_id)
        assert status.failure_count == 1
        first = [a for a in status.attempts if a.attempt == 0]
        cause = next(a for a in first if a.task == 1)
        assert cause.state == JobState.FAILED and "exit code 3" in (cause.error or "")
        # the others' attempts say which task ended them
        assert all("task 1" in (a.error or "") for a in first if a.task != 1)
        assert len(first) == 3 and all(a.state != JobState.RUNNING for a in first)
        # every task's first attempt ended before the retry started (siblings were stopped, not left running)
        retry_start = min(a.assigned_at_ms for a in status.attempts if a.attempt == 1)
        assert all((a.finished_at_ms or 0) <= retry_start for a in first)


async def test_group_by_keeps_a_gang_on_one_label_value(
    processes: Processes, nats_url: str, namespace: str, eventually_fn: Eventually
) -> None:
    async with in_own_task(local_cluster(nats_url, namespace, workers=0)) as client:
        slot_worker(processes, "a0", "slice=sa")
        slot_worker(processes, "b0", "slice=sb")
        slot_worker(processes, "b1", "slice=sb")
        await eventually_fn(lambda: workers_up(client, 3), 30, "three workers")
        job_id = await client.submit(
            "sliced",
            Entrypoint.from_callable(sleep_for, 0.1),
            resources=ONE,
            replicas=2,
            coschedule=True,
            group_by="slice",
        )
        assert sorted(await client.result(job_id, timeout=60)) == ["b0", "b1"]
        workers = {w.worker_id: w for w in await client.list_workers()}
        assert workers["a0"].labels["slice"] == "sa" and workers["a0"].labels["hostname"] == socket.gethostname()


async def test_constraints_steer_jobs_and_a_miss_is_explained(
    processes: Processes, nats_url: str, namespace: str, eventually_fn: Eventually
) -> None:
    async with in_own_task(local_cluster(nats_url, namespace, workers=0)) as client:
        slot_worker(processes, "za", "zone=a")
        slot_worker(processes, "zb", "zone=b")
        await eventually_fn(lambda: workers_up(client, 2), 30, "two workers")
        steered = await client.submit(
            "to-b", Entrypoint.from_callable(sleep_for, 0), resources=ONE, constraints={"zone": "b"}
        )
        assert await client.result(steered, timeout=60) == "zb"
        avoided = await client.submit(
            "not-a",
            Entrypoint.from_callable(sleep_for, 0),
            resources=ONE,
            constraints=[Constraint("zone", "not_in", ["a"])],
        )
        assert await client.result(avoided, timeout=60) == "zb"
        missed = await client.submit(
            "to-c",
            Entrypoint.from_callable(sleep_for, 0),
            resources=ONE,
            constraints={"zone": "c"},
            scheduling_timeout=3,
        )
        with pytest.raises(Unschedulable, match=r"no worker matches zone=c \(zones: a, b\)"):
            await client.result(missed, timeout=60)


async def test_all_gather_returns_every_tasks_value_in_order(
    processes: Processes, nats_url: str, namespace: str, eventually_fn: Eventually
) -> None:
    async with in_own_task(local_cluster(nats_url, namespace, workers=0)) as client:
        for i in range(3):
            slot_worker(processes, f"ag{i}")
        await eventually_fn(lambda: workers_up(client, 3), 30, "three workers")
        job_id = await client.submit("gather", gather_rank, resources=ONE, replicas=3, coschedule=True)
        results = await client.result(job_id, timeout=60)
        expected = [[{"rank": i, "addr": f"10.0.0.{i}"} for i in range(3)], [0, 10, 20]]
        assert results == [expected] * 3


async def test_a_waiting_gang_is_not_starved_by_a_stream_of_small_jobs(
    processes: Processes, nats_url: str, namespace: str, eventually_fn: Eventually
) -> None:
    processes.controller("--reserve-after", "2")
    async with in_own_task(local_cluster(nats_url, namespace, workers=0, controller=False)) as client:
        for i in range(2):
            slot_worker(processes, f"s{i}")
        await eventually_fn(lambda: workers_up(client, 2), 30, "two workers")
        small = [
            await client.submit(f"small-{i}", Entrypoint.from_callable(sleep_for, 0.6), resources=ONE) for i in range(2)
        ]
        gang = await client.submit(
            "gang-of-2", Entrypoint.from_callable(sleep_for, 0.1), resources=ONE, replicas=2, coschedule=True
        )
        # a stream of small jobs that, without reservations, would always take a freed slot first
        for i in range(2, 30):
            small.append(await client.submit(f"small-{i}", Entrypoint.from_callable(sleep_for, 0.6), resources=ONE))
            status = await client.status(gang)
            if status.state == JobState.SUCCEEDED:
                break
            time.sleep(0.3)
        assert sorted(await client.result(gang, timeout=60)) == ["s0", "s1"]
        done = [await client.status(j) for j in small]
        gang_end = (await client.status(gang)).finished_at_ms or 0
        assert any(s.started_at_ms is None or (s.started_at_ms or 0) > gang_end for s in done)  # small ones waited
        for job_id in small:
            await client.kill(job_id)


async def test_independent_tasks_and_max_task_failures(cluster: ClusterClient) -> None:
    ok = await cluster.submit(
        "tolerant", Entrypoint.from_callable(maybe_fail, [1]), resources=ONE, replicas=3, max_task_failures=1
    )
    status = await cluster.wait(ok, timeout=60)
    assert status.state == JobState.SUCCEEDED
    assert [t.state for t in status.tasks] == [JobState.SUCCEEDED, JobState.FAILED, JobState.SUCCEEDED]
    assert await cluster.result(ok) == [0, None, 2]
    failed = await cluster.submit(
        "intolerant", Entrypoint.from_callable(maybe_fail, [0, 2]), resources=ONE, replicas=3, max_task_failures=1
    )
    with pytest.raises(ValueError, match="task (0|2) fails"):
        await cluster.result(failed, timeout=60)
    assert (await cluster.status(failed)).state == JobState.FAILED


def test_the_fray_resource_config_runs_replicas(nats_url: str, namespace: str) -> None:
    from fluster.context import Cluster, JobRequest, ResourceConfig, TpuConfig

    with fluster_client(nats_url, namespace) as client, Cluster(client=client) as cluster:
        job_id = cluster.launch(
            JobRequest(
                name="fray-replicas",
                entrypoint=Entrypoint.from_callable(whoami),
                resources=ResourceConfig(cpu=1, ram="256m", replicas=2),
            )
        )
        info = cluster.wait(job_id, timeout=60)
        assert info.status == "succeeded" and len(info.details.tasks) == 2
        assert ResourceConfig(cpu=8, ram="16g", device=TpuConfig(type="v5e-16", count=4)).replicas == 4


def fluster_client(url: str, namespace: str):  # type: ignore[no-untyped-def]
    import fluster

    return fluster.LocalCluster(url=url, namespace=namespace, workers=2, cpu=2, memory="4g")
