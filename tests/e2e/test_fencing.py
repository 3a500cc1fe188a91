"""Never two live attempts of one job: a worker paused past its timeout, a worker cut off from NATS, a dispatch
that waited in a paused worker's socket, and a leader paused past its lease (real processes throughout)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import cloudpickle
from cluster_helpers import Processes, in_own_task, local_cluster
from fault_helpers import Proxy, assert_no_overlap, attempts_ran, gone, record_attempt
from nats.js.errors import KeyNotFoundError

from fluster import ClusterClient, Entrypoint, JobState
from fluster.local.server import NatsServer

cloudpickle.register_pickle_by_value(sys.modules[__name__])
import fault_helpers  # noqa: E402

cloudpickle.register_pickle_by_value(fault_helpers)

Eventually = Callable[..., Awaitable[None]]


async def registered(client: ClusterClient, *worker_ids: str) -> bool:
    return {w.worker_id for w in await client.list_workers()} >= set(worker_ids)


async def test_a_paused_workers_attempt_ends_itself_before_the_retry_starts(
    processes: Processes, nats_url: str, namespace: str, tmp_path: Path, eventually_fn: Eventually
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    async with in_own_task(local_cluster(nats_url, namespace, workers=0, worker_timeout=3.0)) as client:
        workers = {w: processes.worker(w) for w in ("pa", "pb")}
        await eventually_fn(lambda: registered(client, "pa", "pb"), 30, "two workers")
        job_id = await client.submit("paused", Entrypoint.from_callable(record_attempt, str(markers)))
        await eventually_fn(lambda: _started(markers, 0), 30, "the first attempt")
        first = (await client.status(job_id)).attempts[0].worker_id
        pid = attempts_ran(markers)[0][2]
        os.kill(workers[first].pid, signal.SIGSTOP)
        try:
            # the attempt's lease runs out while its worker is still paused: it ends itself
            await eventually_fn(lambda: _true(gone(pid)), 15, "the paused worker's attempt to end itself")
            assert await client.result(job_id, timeout=60) == 1
            assert_no_overlap(markers)
        finally:
            os.kill(workers[first].pid, signal.SIGCONT)
        status = await client.status(job_id)
        assert status.attempts[1].worker_id != first and status.preemption_count == 1


async def test_a_worker_cut_off_from_nats_stops_its_attempt_before_the_retry_starts(
    processes: Processes, nats_server: NatsServer, namespace: str, tmp_path: Path, eventually_fn: Eventually
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    proxy = Proxy(nats_server.port)
    try:
        async with in_own_task(local_cluster(nats_server.url, namespace, workers=0, worker_timeout=3.0)) as client:
            cut_off = processes.worker("cut", url=proxy.url)
            await eventually_fn(lambda: registered(client, "cut"), 30, "the worker behind the proxy")
            job_id = await client.submit("partitioned", Entrypoint.from_callable(record_attempt, str(markers)))
            await eventually_fn(lambda: _started(markers, 0), 30, "the first attempt")
            pid = attempts_ran(markers)[0][2]
            processes.worker("other")
            proxy.blackhole()  # the worker and its job run on; nothing they send arrives
            await eventually_fn(lambda: _true(gone(pid)), 15, "the cut-off worker's attempt to stop")
            assert cut_off.poll() is None  # the worker itself is alive: only its attempt stopped
            assert await client.result(job_id, timeout=60) == 1
            assert_no_overlap(markers)
            proxy.restore()
            # the worker comes back, learns it was declared dead, and registers again
            await eventually_fn(lambda: registered(client, "cut", "other"), 60, "the worker to come back")
            status = await client.status(job_id)
            assert status.attempts[0].worker_id == "cut" and status.attempts[1].worker_id == "other"
    finally:
        proxy.close()


async def test_a_dispatch_queued_on_a_paused_worker_does_not_run_beside_its_retry(
    processes: Processes, nats_url: str, namespace: str, tmp_path: Path, eventually_fn: Eventually
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    async with in_own_task(local_cluster(nats_url, namespace, workers=0, worker_timeout=3.0)) as client:
        worker = processes.worker("sleepy")
        await eventually_fn(lambda: registered(client, "sleepy"), 30, "the worker")
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            # dispatched while the worker still counts as alive: the request waits in its socket
            job_id = await client.submit("queued", Entrypoint.from_callable(record_attempt, str(markers), 1.0))

            async def lost() -> bool:
                return (await client.status(job_id)).preemption_count >= 1 or not await client.list_workers()

            await eventually_fn(lost, 30, "the worker to be declared dead")
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        assert await client.result(job_id, timeout=60) in (0, 1)
        assert_no_overlap(markers)
        ran = attempts_ran(markers)
        assert len(ran) == 1, f"the stale dispatch ran beside its retry: {sorted(ran)}"


async def test_a_leader_paused_past_its_lease_stands_by_and_harms_nothing(
    processes: Processes, nats_url: str, namespace: str, tmp_path: Path, eventually_fn: Eventually
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    first = processes.controller()
    async with in_own_task(local_cluster(nats_url, namespace, workers=0, controller=False)) as client:
        processes.worker("steady")
        await eventually_fn(lambda: registered(client, "steady"), 30, "the worker")
        job_id = await client.submit("long", Entrypoint.from_callable(record_attempt, str(markers), 600.0, 600.0))
        await eventually_fn(lambda: _started(markers, 0), 30, "the job")
        second = processes.controller()
        os.kill(first.pid, signal.SIGSTOP)
        try:

            async def taken_over() -> bool:
                try:
                    entry = await client.assets.leader.get("controller")
                except KeyNotFoundError:  # expired, not yet taken
                    return False
                return entry.value is not None and f"-{second.pid}-" in entry.value.decode()

            await eventually_fn(taken_over, 30, "the standby to take the lease")
            await eventually_fn(lambda: _running_again(client, job_id), 30, "the job to run under the new leader")
        finally:
            os.kill(first.pid, signal.SIGCONT)
        before = await client.status(job_id)
        await eventually_fn(
            lambda: _logged(processes, first, "stepping down to standby"), 30, "the old leader to stand by"
        )
        after = await client.status(job_id)
        # the old leader judged nothing on resuming: no worker removed, no attempt lost
        assert after.state == JobState.RUNNING and len(after.attempts) == len(before.attempts)
        assert await registered(client, "steady")
        assert first.poll() is None, "the old leader exited instead of standing by"
        await client.kill(job_id)


async def _started(markers: Path, attempt: int) -> bool:
    return attempt in attempts_ran(markers)


async def _true(value: bool) -> bool:
    return value


async def _running_again(client: ClusterClient, job_id: str) -> bool:
    status = await client.status(job_id)
    return (
        status.state == JobState.RUNNING and len(status.attempts) >= 2 and status.attempts[-1].state == JobState.RUNNING
    )


async def _logged(processes: Processes, proc: object, text: str) -> bool:
    return text in processes.log(proc)  # type: ignore[arg-type]
