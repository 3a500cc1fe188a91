"""The Fray-shaped cluster API (on fluster and on Ray), and actor lifetimes seen from inside real jobs."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import cloudpickle
import pytest
from cluster_helpers import eventually, local_cluster

from fluster.actor import ClusterResolver
from fluster.client.blocking import Client
from fluster.client.cluster import ClusterClient
from fluster.context import ActorOptions, Cluster, JobRequest, Lifetime, RayCluster, create_context, get_job_context
from fluster.context.cluster import ClusterContext
from fluster.errors import ActorDied
from fluster.types import Entrypoint

cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Counter:
    def __init__(self) -> None:
        self.count = 0

    def incr(self) -> int:
        self.count += 1
        return self.count


def greet(name: str) -> str:
    print(f"hello {name}", flush=True)
    return name


def sleep_forever() -> None:
    time.sleep(600)


def create_actors_and_return() -> str:
    ctx = get_job_context()
    keeper = ctx.create_actor(Counter, options=ActorOptions(name="keeper", lifetime=Lifetime.DETACHED))
    temp = ctx.create_actor(Counter, options=ActorOptions(name="temp"))
    ctx.get([keeper.incr.remote(), temp.incr.remote(), ctx.run(len, "four")])
    return type(ctx).__name__


@pytest.fixture(params=["fluster", pytest.param("ray", marks=pytest.mark.ray)])
def fray(request: pytest.FixtureRequest, namespace: str) -> Iterator[Cluster | RayCluster]:
    """The same cluster API on a fluster LocalCluster and on the session's Ray (its jobs in this namespace)."""
    if request.param == "ray":
        session = request.getfixturevalue("ray_session")
        with RayCluster(session.address, namespace=namespace, python=sys.executable) as ray_cluster:
            yield ray_cluster
        return
    with local_cluster(request.getfixturevalue("nats_url"), namespace) as client:
        assert isinstance(client, Client)
        with Cluster(client=client) as cluster:
            yield cluster


def test_launch_monitor_poll_wait_for_a_callable(fray: Cluster | RayCluster) -> None:
    job_id = fray.launch(JobRequest(name="greet", entrypoint=Entrypoint.from_callable(greet, "fray")))
    assert "hello fray" in list(fray.monitor(job_id))
    info = fray.wait(job_id, timeout=30)
    assert info.status == "succeeded" and fray.poll(job_id).status == "succeeded"
    assert [j.job_id for j in fray.list_jobs()] == [job_id]


def test_launch_a_binary_and_terminate_a_running_job(fray: Cluster | RayCluster) -> None:
    binary = Entrypoint.from_binary(sys.executable, ["-c", "print('from a binary')"])
    job_id = fray.launch(JobRequest(name="binary", entrypoint=binary))
    assert list(fray.monitor(job_id)) == ["from a binary"]
    assert fray.wait(job_id, timeout=30).status == "succeeded"
    long = fray.launch(JobRequest(name="long", entrypoint=Entrypoint.from_callable(sleep_forever)))
    fray.terminate(long)
    assert fray.poll(long).status == "stopped"


def test_job_names_with_spaces_are_rejected() -> None:
    with pytest.raises(ValueError):
        JobRequest(name="has space", entrypoint=Entrypoint.from_callable(greet, "x"))


async def test_detached_actor_outlives_its_job_and_ephemeral_one_dies_with_it(cluster: ClusterClient) -> None:
    job_id = await cluster.submit("creator", Entrypoint.from_callable(create_actors_and_return))
    assert await cluster.result(job_id, timeout=60) == "ClusterContext"
    resolver = ClusterResolver(cluster, call_timeout=20)
    keeper = await resolver.lookup("keeper")
    assert keeper.size == 1 and keeper.endpoints[0].job_id and "/" not in keeper.endpoints[0].job_id
    assert await keeper.call().incr() == 2
    temp = await resolver.lookup("temp")

    async def temp_gone() -> bool:
        return not await temp.refresh()

    await eventually(temp_gone, 20, "the ephemeral actor to end with its job")
    await cluster.kill(keeper.endpoints[0].job_id)
    await resolver.close()


class Sleepy:
    def nap(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds


def test_a_call_in_flight_fails_with_actor_died_when_the_actor_dies(nats_url: str, namespace: str) -> None:
    with local_cluster(nats_url, namespace), create_context("cluster", url=nats_url, namespace=namespace) as ctx:
        assert isinstance(ctx, ClusterContext)
        actor = ctx.create_actor(Sleepy, options=ActorOptions(name="sleepy"))
        assert ctx.get(actor.nap.remote(0)) == 0
        call = actor.nap.remote(120)
        assert actor.job_id is not None
        ctx.client.kill(actor.job_id)
        with pytest.raises(ActorDied, match="sleepy.nap: the actor died before answering .* ended KILLED"):
            ctx.get(call, timeout=30)
        with pytest.raises(ActorDied):
            ctx.get(actor.nap.remote(0), timeout=30)
        again = ctx.create_actor(Sleepy, options=ActorOptions(name="sleepy", get_if_exists=True))
        assert again.job_id != actor.job_id and ctx.get(again.nap.remote(0), timeout=30) == 0


def square(x: int) -> int:
    return x * x


def sum_of_squares(n: int) -> int:
    ctx = get_job_context()  # inside an executor: a cluster context of that executor's job
    return sum(ctx.get([ctx.run(square, i) for i in range(n)]))


def context_kind() -> str:
    return type(get_job_context()).__name__


@pytest.mark.parametrize("backend", ["cluster", pytest.param("ray", marks=pytest.mark.ray)])
def test_a_task_can_run_tasks_of_its_own(backend: str, request: pytest.FixtureRequest, namespace: str) -> None:
    if backend == "ray":
        request.getfixturevalue("ray_session")
        with create_context("ray", namespace=namespace) as ctx:
            assert ctx.get(ctx.run(sum_of_squares, 5), timeout=60) == 30
            assert ctx.get(ctx.run(context_kind), timeout=60) == "RayContext"  # a task's own context
        return
    nats_url = request.getfixturevalue("nats_url")
    with local_cluster(nats_url, namespace), create_context("cluster", url=nats_url, namespace=namespace) as ctx:
        assert ctx.get(ctx.run(sum_of_squares, 5), timeout=60) == 30


class Phoenix:
    """Knows its process; ``nap`` writes a marker first, so a test knows the call is running."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def pid(self) -> int:
        import os

        return os.getpid()

    def nap(self, seconds: float) -> int:
        import os
        from pathlib import Path

        Path(self.marker).write_text(str(os.getpid()))
        time.sleep(seconds)
        return os.getpid()


def _kill_mid_call(ctx: ClusterContext, actor: object, marker: str) -> tuple[int, object]:
    """Start a 5 s call and SIGKILL the actor's process while it runs; its old pid and the call's future."""
    import os
    import signal
    from pathlib import Path

    Path(marker).unlink(missing_ok=True)
    pid = ctx.get(actor.pid.remote(), timeout=60)  # type: ignore[attr-defined]
    call = actor.nap.remote(5)  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while not Path(marker).exists():  # the call runs
        assert time.monotonic() < deadline, "the call never started"
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return pid, call


def test_a_restarted_actor_serves_again_and_a_call_in_flight_is_retried(
    nats_url: str, namespace: str, tmp_path: object
) -> None:
    marker = f"{tmp_path}/running"
    with local_cluster(nats_url, namespace), create_context("cluster", url=nats_url, namespace=namespace) as ctx:
        assert isinstance(ctx, ClusterContext)
        actor = ctx.create_actor(Phoenix, marker, options=ActorOptions(max_restarts=1, max_task_retries=1))
        pid, call = _kill_mid_call(ctx, actor, marker)
        assert ctx.get(call, timeout=120) != pid  # sent again, answered by the restarted actor
        assert actor.restarts() == 1
        pid, call = _kill_mid_call(ctx, actor, marker)  # no restart left: the job ends, and so does the call
        with pytest.raises(ActorDied, match="nap: the actor died"):
            ctx.get(call, timeout=120)


def test_a_call_in_flight_is_not_retried_without_max_task_retries(
    nats_url: str, namespace: str, tmp_path: object
) -> None:
    marker = f"{tmp_path}/running"
    with local_cluster(nats_url, namespace), create_context("cluster", url=nats_url, namespace=namespace) as ctx:
        assert isinstance(ctx, ClusterContext)
        actor = ctx.create_actor(Phoenix, marker, options=ActorOptions(name="phoenix", max_restarts=-1))
        pid, call = _kill_mid_call(ctx, actor, marker)
        with pytest.raises(ActorDied, match="restarting, but max_task_retries=0"):
            ctx.get(call, timeout=120)
        assert ctx.get(actor.pid.remote(), timeout=120) != pid  # the next call waits for the restarted actor
        assert actor.restarts() == 1
