"""The ray backend beyond the shared context suite (test_context_api.py): Ray's options, actor lifetimes and
restarts, closing, and that fluster imports Ray only when asked to and Ray listens on loopback only."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import cloudpickle
import pytest
from ray_helpers import SESSION_MEMORY, RaySession, descendants, is_loopback, listening_addresses

from fluster import ResourceSpec
from fluster.context import ActorHandle, ActorOptions, JobContext, Lifetime, ObjectRef, TaskOptions, create_context
from fluster.errors import ActorDied

cloudpickle.register_pickle_by_value(sys.modules[__name__])
TIMEOUT_S = 60


class Counter:
    def __init__(self) -> None:
        self.count = 0

    def incr(self) -> int:
        self.count += 1
        return self.count


class Fragile:
    def __init__(self) -> None:
        self.calls = 0

    def bump(self) -> int:
        self.calls += 1
        return self.calls

    def crash(self) -> None:
        os._exit(1)

    def assigned(self) -> dict[str, float]:
        import ray

        return dict(ray.get_runtime_context().get_assigned_resources())


def assigned_resources() -> dict[str, float]:
    import ray

    return dict(ray.get_runtime_context().get_assigned_resources())


def put_and_return(value: object) -> ObjectRef:
    from fluster.context import get_job_context

    return get_job_context().put(value)


@pytest.fixture
def ctx(ray_session: RaySession, namespace: str) -> Iterator[JobContext]:
    with create_context("ray", namespace=namespace) as context:
        yield context


def test_importing_fluster_does_not_import_ray() -> None:
    code = (
        "import sys, fluster, fluster.context\n"
        "import fluster.context.ray_backend, fluster.context.ray_cluster, fluster.context.ray_jobs\n"
        "assert 'ray' not in sys.modules, 'importing fluster imported ray'\n"
        "assert fluster.context.RayCluster.__name__ == 'RayCluster'\n"  # the lazy export works...
        "assert 'ray' not in sys.modules\n"  # ...and Ray waits for a RayCluster (or RayContext) to be created
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=TIMEOUT_S)


@pytest.mark.ray
def test_ray_listens_on_loopback_only(ctx: JobContext, ray_session: RaySession) -> None:
    actor = ctx.create_actor(Counter)
    assert ctx.get([ctx.run(len, "abc"), actor.incr.remote()], timeout=TIMEOUT_S) == [3, 1]
    sockets = listening_addresses(descendants(os.getpid()))  # this process (Ray's driver) and all it started
    gcs_port = int(ray_session.address.rsplit(":", 1)[1])
    assert gcs_port in {port for _, _, port in sockets}
    assert len({pid for pid, _, _ in sockets}) > 3  # gcs, raylet, workers, agents: not just this process
    assert [s for s in sockets if not is_loopback(s[1])] == []


@pytest.mark.ray
def test_task_and_actor_resources_become_rays_including_custom_keys(ctx: JobContext) -> None:
    import ray

    # the session's Ray was started with create_context("ray", num_cpus=2, memory=..., resources=...)
    offered = ray.cluster_resources()
    assert (offered["CPU"], offered["memory"], offered["head_node"]) == (2.0, float(SESSION_MEMORY), 1.0)
    as_dict = TaskOptions(resources={"CPU": 1, "memory": 64 << 20, "head_node": 0.5})
    assert ctx.get(ctx.create_task(assigned_resources, options=as_dict), timeout=TIMEOUT_S) == {
        "CPU": 1.0,
        "memory": float(64 << 20),
        "head_node": 0.5,
    }
    as_spec = TaskOptions(resources=ResourceSpec(cpu=0.5, memory="32m"), max_retries=0)
    assert ctx.get(ctx.create_task(assigned_resources, options=as_spec), timeout=TIMEOUT_S) == {
        "CPU": 0.5,
        "memory": float(32 << 20),
    }
    pinned = ctx.create_actor(Fragile, options=ActorOptions(resources={"CPU": 0, "head_node": 0.001}))
    assert ctx.get(pinned.assigned.remote(), timeout=TIMEOUT_S) == {"head_node": 0.001}
    with pytest.raises(ValueError, match="resource 'CPU' must be a number >= 0"):
        ctx.create_task(len, "x", options=TaskOptions(resources={"CPU": -1}))


@pytest.mark.ray
def test_ephemeral_actors_end_with_their_context_and_detached_ones_stay(
    ray_session: RaySession, namespace: str
) -> None:
    import ray

    with create_context("ray", namespace=namespace) as first:
        keeper = first.create_actor(Counter, options=ActorOptions(name="keeper", lifetime=Lifetime.DETACHED))
        temp = first.create_actor(Counter, options=ActorOptions(name="temp", get_if_exists=True))
        assert first.get([keeper.incr.remote(), temp.incr.remote()], timeout=TIMEOUT_S) == [1, 1]
    with create_context("ray", namespace=namespace) as second:
        again = second.create_actor(Counter, options=ActorOptions(name="keeper", get_if_exists=True))
        assert second.get(again.incr.remote(), timeout=TIMEOUT_S) == 2  # the same object, still alive
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while _actor_exists("temp", namespace) and time.monotonic() < deadline:
            time.sleep(0.05)  # Ray frees the name of a killed actor asynchronously
        assert not _actor_exists("temp", namespace)
        assert _actor_exists("keeper", namespace)  # the second context only found it: it did not kill it
    finally:
        ray.kill(ray.get_actor("keeper", namespace=namespace))


@pytest.mark.ray
def test_an_actor_is_restarted_up_to_max_restarts(ctx: JobContext) -> None:
    actor = ctx.create_actor(Fragile, options=ActorOptions(max_restarts=1))
    assert ctx.get(actor.bump.remote(), timeout=TIMEOUT_S) == 1
    with pytest.raises(ActorDied, match="the actor died"):
        ctx.get(actor.crash.remote(), timeout=TIMEOUT_S)
    assert _once_restarted(ctx, actor) == 1  # a new instance
    with pytest.raises(ActorDied):
        ctx.get(actor.crash.remote(), timeout=TIMEOUT_S)
    with pytest.raises(ActorDied):  # no restarts left
        ctx.get(actor.bump.remote(), timeout=TIMEOUT_S)
    with pytest.raises(ValueError, match="max_restarts must be -1"):
        ctx.create_actor(Fragile, options=ActorOptions(max_restarts=-2))


def _once_restarted(ctx: JobContext, actor: ActorHandle) -> int:
    """``bump``'s answer from the restarted actor: Ray fails calls made while it restarts (``max_task_retries``
    is 0), so ask again until it answers."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            return int(ctx.get(actor.bump.remote(), timeout=TIMEOUT_S))
        except ActorDied as exc:
            if "restarting" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.ray
def test_close_cancels_running_tasks_and_frees_their_cpus(ray_session: RaySession, namespace: str) -> None:
    with create_context("ray", namespace=namespace) as first:
        sleepers = [first.run(time.sleep, 600) for _ in range(2)]  # both of the session's CPUs
        first.wait(sleepers, num_returns=2, timeout=0.5)
    assert all(s.cancelled() for s in sleepers)
    with create_context("ray", namespace=namespace) as second:
        assert second.get(second.run(len, "free"), timeout=TIMEOUT_S) == 4


@pytest.mark.ray
def test_a_ref_put_inside_a_task_can_be_read_by_its_caller(ctx: JobContext) -> None:
    ref = ctx.get(ctx.run(put_and_return, {"made": "in a task"}), timeout=TIMEOUT_S)
    assert isinstance(ref, ObjectRef)
    assert ctx.get(ref) == {"made": "in a task"}
    assert ctx.get(ctx.run(len, ref), timeout=TIMEOUT_S) == 1


@pytest.mark.ray
def test_init_options_while_ray_runs_and_bad_names_are_value_errors(ctx: JobContext) -> None:
    with pytest.raises(ValueError, match=r"Ray is already initialized in this process, so \['num_cpus'\]"):
        create_context("ray", num_cpus=4)
    with pytest.raises(ValueError, match="actor name"):
        ctx.create_actor(Counter, options=ActorOptions(name="has space"))


def _actor_exists(name: str, namespace: str) -> bool:
    import ray

    try:
        ray.get_actor(name, namespace=namespace)
    except ValueError:
        return False
    return True


DRIVER = """
import sys
from fluster.context import create_context
with create_context("ray", **eval(sys.argv[1])) as ctx:
    print(ctx.get(ctx.run(sum, [1, 2, 3]), timeout=60))
"""


@pytest.mark.ray
def test_a_context_in_another_process_joins_the_running_ray_through_ray_address(ray_session: RaySession) -> None:
    env = dict(os.environ, RAY_ADDRESS=ray_session.address)  # the test env: loopback settings and Ray's token
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, "{}"], env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["6"]
