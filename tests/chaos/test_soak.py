"""A seeded chaos soak: a whole cluster of real processes (a nats-server, 2 controllers, 3 workers) runs jobs
with side effects, actor calls, a WorkerPool and a cluster context with chained tasks, while a killer
SIGKILLs and SIGSTOPs workers and the leader, restarts the nats-server (SIGTERM and SIGKILL, same store) and
kills actor jobs. Afterwards: every acknowledged job is terminal, side effects stay within the retry budgets,
no two attempts of a job overlapped, every task future resolved once with its value or a typed error, no
process is left behind, and actor calls failed only inside fault windows.

``python -m pytest tests/chaos -m chaos --chaos-seconds 900 --chaos-seed 7`` runs a longer one by hand; the
default (``--chaos-seconds``, 90) is the short one CI runs.
"""

from __future__ import annotations

import concurrent.futures
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import cloudpickle
import pytest
from cluster_helpers import Processes
from fault_helpers import gone
from nats.js.errors import KeyNotFoundError

import fluster
from fluster import ClusterClient, Entrypoint, JobState
from fluster.actor import ClusterResolver
from fluster.errors import FlusterError, TaskLost
from fluster.local.server import NatsServer
from fluster.pool import WorkerPool, WorkerPoolConfig
from fluster.protocol.resources import ResourceSpec

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(3600)]

WORKER_TIMEOUT_S = 3.0
GRACE_S = 15.0  # after a fault ends, calls may fail this much longer (timeouts, re-registration, lookup)
SMALL = ResourceSpec(cpu=1, memory="256m")


# -- what the cluster runs ------------------------------------------------------------------------------


def chaos_job(marker_dir: str, seconds: float, fail_first: bool) -> int:
    """Records each attempt (start, last seen alive), runs ``seconds``, fails its first attempt if asked."""
    attempt = int(os.environ["FLUSTER_ATTEMPT"])
    base = Path(marker_dir, f"{attempt}-{os.getpid()}")
    Path(f"{base}.start").write_text(repr(time.time()))
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        tmp = Path(f"{base}.alive.tmp")
        tmp.write_text(repr(time.time()))
        tmp.replace(Path(f"{base}.alive"))
        time.sleep(0.05)
    if fail_first and attempt == 0:
        raise RuntimeError("failing on purpose (within the retry budget)")
    return attempt


def serve_echo(name: str) -> None:
    fluster.run_async(_serve_echo, name)


async def _serve_echo(name: str) -> None:
    from fluster.actor import ActorServer

    class Echo:
        def echo(self, value: object) -> object:
            return value

    async with ClusterClient.connect() as client:
        server = ActorServer(client)
        server.register(name, Echo(), max_concurrency=4)
        await server.serve()


def square(x: int) -> int:
    time.sleep(random.uniform(0.05, 0.4))
    return x * x


def inc(x: int) -> int:
    return x + 1


def add(a: int, b: int) -> int:
    return a + b


# -- the killer -----------------------------------------------------------------------------------------


@dataclass
class Cluster:
    server: NatsServer
    procs: Processes
    client: ClusterClient
    controllers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    windows: list[tuple[float, float, str]] = field(default_factory=list)  # (start, end, fault)
    actor_jobs: list[str] = field(default_factory=list)

    async def leader(self) -> subprocess.Popen[bytes] | None:
        try:
            entry = await self.client.assets.leader.get("controller")
        except (KeyNotFoundError, FlusterError, OSError, TimeoutError):
            return None
        if entry.value is None:
            return None
        for proc in self.controllers:
            if f"-{proc.pid}-".encode() in entry.value and proc.poll() is None:
                return proc
        return None


async def killer(cluster: Cluster, rng: random.Random, seconds: float) -> None:
    faults: list[Callable[[Cluster, random.Random], Awaitable[str]]] = [
        _kill_worker,
        _pause_worker,
        _kill_leader,
        _pause_leader,
        _restart_server,
        _kill_actor_job,
    ]
    end = time.monotonic() + seconds
    await anyio.sleep(rng.uniform(3, 5))
    order = list(faults)
    while time.monotonic() < end - 10:
        if not order:
            order = list(faults)
            rng.shuffle(order)
        fault = order.pop(0)
        start = time.time()
        what = await fault(cluster, rng)
        cluster.windows.append((start, time.time(), what))
        await anyio.sleep(rng.uniform(4, 8))


async def _kill_worker(cluster: Cluster, rng: random.Random) -> str:
    worker_id = rng.choice(sorted(cluster.workers))
    os.killpg(cluster.workers[worker_id].pid, signal.SIGKILL)
    cluster.workers[worker_id].wait()
    await anyio.sleep(1)
    cluster.workers[worker_id] = cluster.procs.worker(worker_id, "--cpu", "4")
    return f"SIGKILL worker {worker_id}"


async def _pause_worker(cluster: Cluster, rng: random.Random) -> str:
    worker_id = rng.choice(sorted(cluster.workers))
    pid = cluster.workers[worker_id].pid
    os.kill(pid, signal.SIGSTOP)
    await anyio.sleep(WORKER_TIMEOUT_S + 2)
    os.kill(pid, signal.SIGCONT)
    return f"SIGSTOP worker {worker_id} past its timeout"


async def _kill_leader(cluster: Cluster, rng: random.Random) -> str:
    leader = await _a_leader(cluster)
    if leader is None:
        return "no leader to kill"
    os.killpg(leader.pid, signal.SIGKILL)
    leader.wait()
    cluster.controllers.remove(leader)
    await anyio.sleep(1)
    cluster.controllers.append(cluster.procs.controller())
    return "SIGKILL the leader"


async def _pause_leader(cluster: Cluster, rng: random.Random) -> str:
    leader = await _a_leader(cluster)
    if leader is None:
        return "no leader to pause"
    os.kill(leader.pid, signal.SIGSTOP)
    await anyio.sleep(rng.uniform(4, 13))  # sometimes past its lease (10 s)
    os.kill(leader.pid, signal.SIGCONT)
    return "SIGSTOP the leader"


async def _a_leader(cluster: Cluster) -> subprocess.Popen[bytes] | None:
    """The leading controller, waiting for one to take over if none leads right now."""
    with anyio.move_on_after(20):
        while (leader := await cluster.leader()) is None:
            await anyio.sleep(0.5)
        return leader
    return None


async def _restart_server(cluster: Cluster, rng: random.Random) -> str:
    how = rng.choice(["SIGTERM", "SIGKILL"])
    if how == "SIGKILL":
        cluster.server.kill()
    else:
        proc = cluster.server._proc
        assert proc is not None
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        cluster.server._proc = None
    await anyio.sleep(rng.uniform(0.2, 2))
    cluster.server.start()
    return f"restart nats-server ({how})"


async def _kill_actor_job(cluster: Cluster, rng: random.Random) -> str:
    live = [j for j in cluster.actor_jobs if not await _finished(cluster.client, j)]
    if not live:
        return "no actor job to kill"
    job_id = rng.choice(live)
    try:
        await cluster.client.kill(job_id)
    except FlusterError as exc:
        return f"kill actor job {job_id} failed: {exc}"
    return f"kill actor job {job_id}"


async def _finished(client: ClusterClient, job_id: str) -> bool:
    try:
        return (await client.status(job_id)).finished
    except FlusterError:
        return True


# -- the workloads --------------------------------------------------------------------------------------


@dataclass
class Outcomes:
    jobs: dict[str, tuple[Path, bool]] = field(default_factory=dict)  # job id -> (markers, fails first)
    calls: list[tuple[float, str | None]] = field(default_factory=list)  # (time, error or None)
    tasks: list[tuple[int, concurrent.futures.Future[Any]]] = field(default_factory=list)
    chains: list[object] = field(default_factory=list)  # 5, or the typed error a chain ended with


async def submit_jobs(
    cluster: Cluster, outcomes: Outcomes, rng: random.Random, n: int, seconds: float, root: Path
) -> None:
    for i in range(n):
        markers = root / f"job-{i}"
        markers.mkdir()
        fail_first = i % 7 == 0
        job_id = await cluster.client.submit(
            f"chaos-{i}",
            Entrypoint.from_callable(chaos_job, str(markers), rng.uniform(0.3, 2.5), fail_first),
            resources=SMALL,
            max_retries_failure=1 if fail_first else 0,
        )
        outcomes.jobs[job_id] = (markers, fail_first)
        await anyio.sleep(seconds * 0.7 / n)


async def keep_actors(cluster: Cluster, stop: anyio.Event) -> None:
    """Two jobs serve actor ``soak-echo``; one that ends (killed) is replaced."""
    generation = 0
    live: list[str] = []
    while not stop.is_set():
        for job_id in list(live):
            try:
                if (await cluster.client.status(job_id)).finished:
                    live.remove(job_id)
            except FlusterError:
                pass
        while len(live) < 2:
            generation += 1
            try:
                job_id = await cluster.client.submit(
                    f"soak-echo-{generation}", Entrypoint.from_callable(serve_echo, "soak-echo"), resources=SMALL
                )
            except FlusterError:
                await anyio.sleep(1)
                continue
            live.append(job_id)
            cluster.actor_jobs.append(job_id)
        with anyio.move_on_after(1):
            await stop.wait()
    for job_id in live:
        try:
            await cluster.client.kill(job_id)
        except FlusterError:
            pass


async def call_actors(cluster: Cluster, outcomes: Outcomes, stop: anyio.Event) -> None:
    resolver = ClusterResolver(cluster.client, call_timeout=5)
    try:
        pool = await resolver.lookup("soak-echo")
        with anyio.fail_after(60):
            await pool.wait_for_size(1)
        i = 0
        while not stop.is_set():
            i += 1
            try:
                assert await pool.call().echo(i) == i
                outcomes.calls.append((time.time(), None))
            except Exception as exc:  # recorded: allowed inside fault windows only
                outcomes.calls.append((time.time(), repr(exc)))
                await anyio.sleep(0.2)
            await anyio.sleep(0.05)
    finally:
        await resolver.close()


async def run_tasks(cluster: Cluster, outcomes: Outcomes, stop: anyio.Event) -> None:
    config = WorkerPoolConfig(
        num_workers=2, resources=SMALL, max_retries=10, probe_interval=1.0, unreachable_timeout=20.0
    )
    async with WorkerPool(cluster.client, config) as pool:
        n = 0
        while not stop.is_set():
            for _ in range(10):
                outcomes.tasks.append((n, pool.submit(square, n)))
                n += 1
            with anyio.move_on_after(1.5):
                await stop.wait()
        with anyio.fail_after(300):
            await pool.shutdown(wait=True)


def run_chains(url: str, namespace: str, outcomes: Outcomes, stop: anyio.Event) -> None:
    from fluster.context import create_context

    with fluster.Client(url, namespace) as client:
        ctx = create_context("cluster", client=client, num_workers=1, resources=SMALL, max_retries=10)
        try:
            while not stop.is_set():
                a = ctx.run(inc, 1)
                b = ctx.run(inc, a)
                try:
                    outcomes.chains.append(ctx.get(ctx.run(add, a, b), timeout=240))
                except (TaskLost, FlusterError, TimeoutError) as exc:
                    outcomes.chains.append(exc)
                time.sleep(0.2)  # a chain now and then: the point is that each completes, not throughput
        finally:
            ctx.close()


# -- the soak -------------------------------------------------------------------------------------------


async def test_chaos_soak(tmp_path: Path, namespace: str, request: pytest.FixtureRequest) -> None:
    seconds = float(request.config.getoption("--chaos-seconds"))
    seed = int(request.config.getoption("--chaos-seed"))
    rng = random.Random(seed)
    (tmp_path / "nats").mkdir()
    server = NatsServer(store_dir=tmp_path / "nats")
    server.start()
    procs = Processes(server.url, namespace, tmp_path)
    pids_to_reap: list[int] = []
    try:
        async with ClusterClient.connect(server.url, namespace) as client:
            cluster = Cluster(server, procs, client)
            cluster.controllers = [procs.controller(), procs.controller()]
            for i in range(3):
                cluster.workers[f"w{i}"] = procs.worker(f"w{i}", "--cpu", "4")
            with anyio.fail_after(60):
                while len(await client.list_workers()) < 3:
                    await anyio.sleep(0.1)
            outcomes = Outcomes()
            stop = anyio.Event()
            n_jobs = max(40, int(150 * seconds / 180))
            async with anyio.create_task_group() as tg:
                tg.start_soon(keep_actors, cluster, stop)
                tg.start_soon(call_actors, cluster, outcomes, stop)
                tg.start_soon(run_tasks, cluster, outcomes, stop)
                tg.start_soon(anyio.to_thread.run_sync, run_chains, server.url, namespace, outcomes, stop)
                tg.start_soon(submit_jobs, cluster, outcomes, rng, n_jobs, seconds, tmp_path)
                await killer(cluster, rng, seconds)
                stop.set()
            print(f"\nchaos seed={seed} seconds={seconds:g}: faults injected:")
            for start, end, what in cluster.windows:
                print(f"  {end - start:5.1f}s  {what}")
            await _check_jobs(client, outcomes, pids_to_reap)
            _check_calls(outcomes, cluster.windows)
            _check_tasks(outcomes)
    finally:
        procs.stop_all()
        server.stop()
    with anyio.fail_after(30):  # nothing is left behind: every job process ended with its worker or lease
        while not all(gone(pid) for pid in pids_to_reap):
            await anyio.sleep(0.1)


async def _check_jobs(client: ClusterClient, outcomes: Outcomes, pids: list[int]) -> None:
    with anyio.fail_after(240):
        for job_id in outcomes.jobs:
            await client.wait(job_id)
    from fault_helpers import assert_no_overlap, attempts_ran

    states: dict[str, int] = {}
    for job_id, (markers, fail_first) in outcomes.jobs.items():
        status = await client.status(job_id)
        states[status.state.value] = states.get(status.state.value, 0) + 1
        assert status.state == JobState.SUCCEEDED, (job_id, status.state, status.error)
        ran = attempts_ran(markers)
        pids.extend(pid for _, _, pid in ran.values())
        # every side effect belongs to a recorded attempt, and attempts stay within the budgets
        assert len(ran) <= len(status.attempts) <= 1 + (1 if fail_first else 0) + 100, (job_id, sorted(ran))
        assert status.failure_count <= (1 if fail_first else 0), (job_id, status.failure_count)
        assert_no_overlap(markers)
    print(f"jobs: {len(outcomes.jobs)} acknowledged, final states {states}")


def _check_calls(outcomes: Outcomes, windows: list[tuple[float, float, str]]) -> None:
    failed = [(t, error) for t, error in outcomes.calls if error is not None]
    outside = [(t, error) for t, error in failed if not any(start <= t <= end + GRACE_S for start, end, _ in windows)]
    print(f"actor calls: {len(outcomes.calls)} made, {len(failed)} failed, all inside fault windows")
    assert outcomes.calls, "no actor call was made"
    assert not outside, f"actor calls failed outside fault windows: {outside[:5]}"


def _check_tasks(outcomes: Outcomes) -> None:
    lost = 0
    for n, future in outcomes.tasks:
        assert future.done(), f"task {n} never resolved"
        error = future.exception()
        if error is None:
            assert future.result() == n * n
        else:
            assert isinstance(error, TaskLost), (n, error)
            lost += 1
    chains_ok = sum(1 for c in outcomes.chains if c == 5)
    assert all(c == 5 or isinstance(c, FlusterError | TimeoutError) for c in outcomes.chains), outcomes.chains
    assert chains_ok, "no chain of context tasks completed"
    print(
        f"tasks: {len(outcomes.tasks)} resolved ({lost} lost past their retries); chains: {chains_ok} of "
        f"{len(outcomes.chains)} right"
    )
