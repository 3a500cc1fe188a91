"""Per-attempt job identities: a job connects as itself (never as its worker), may do what a client may plus
serve and call actors, nothing of its worker's; its environment holds none of the worker's secrets; its
identity is renewed while it runs and is worthless soon after it ended. Actors, a WorkerPool and the context
API all work under these identities."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import cloudpickle
import pytest
from security_helpers import Secured, secured_cluster

from fluster import Entrypoint
from fluster.actor import ClusterResolver
from fluster.bus.connection import connect
from fluster.bus.options import ConnectOptions
from fluster.errors import ActorCallTimeout, ActorNotFound, ClusterUnavailable
from fluster.protocol.permissions import Role

cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = pytest.mark.timeout(120)

SECRET = "worker-secret-3f9c2a"


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[Secured]:
    async with secured_cluster(tmp_path / "cluster") as cluster:
        yield cluster


def inspect_self(secret: str) -> dict[str, Any]:
    """What a job can see of who it is, and what it may do with that."""
    import os

    import anyio
    import nats

    from fluster.bus.options import nats_kwargs
    from fluster.environ import job_env
    from fluster.security.identity import apply_identity, identity_of

    job = job_env()
    assert job is not None
    url, options = job.connect_options()
    identity = identity_of(options)
    connection = Path(os.environ["FLUSTER_CONNECTION"]).read_text()

    async def probe() -> list[str]:
        refused: list[str] = []

        async def on_error(exc: Exception) -> None:
            refused.append(str(exc))

        nc = await nats.connect(url, error_cb=on_error, **nats_kwargs(apply_identity(options)))
        prefix = f"fluster.{job.namespace}"
        await nc.subscribe(f"{prefix}.worker.{job.worker_id}.run")  # its worker's dispatches
        await nc.publish(f"{prefix}.ctl.heartbeat.{job.worker_id}", b"x")  # speaking for its worker
        await nc.flush()
        with anyio.move_on_after(5):
            while len(refused) < 2:
                await anyio.sleep(0.02)
        await nc.close()
        return refused

    return {
        "role": identity.role.value if identity else None,
        "url": os.environ["FLUSTER_URL"],
        "worker_id": job.worker_id,
        "secret_in_env": any(secret in value for value in os.environ.values()),
        "secret_in_connection": secret in connection,
        "path_and_home": bool(os.environ.get("PATH")) and bool(os.environ.get("HOME")),
        "refused": anyio.run(probe),
    }


def submit_child() -> int:
    import fluster

    with fluster.Client() as client:
        child = client.submit("child", lambda: 6 * 7)
        return int(client.result(child, timeout=60))


async def test_a_job_is_itself_not_its_worker_and_sees_none_of_the_workers_secrets(
    secured: Secured, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLUSTER_TEST_WORKER_TOKEN", SECRET)  # the in-process workers' environment
    job_id = await secured.client.submit("who", Entrypoint.from_callable(inspect_self, SECRET))
    seen = await secured.client.result(job_id, timeout=60)
    assert seen["role"] == Role.JOB.value
    assert "@" not in seen["url"] and seen["path_and_home"]
    assert not seen["secret_in_env"] and not seen["secret_in_connection"]
    worker = seen["worker_id"]
    assert any("subscription" in v and f"worker.{worker}.run" in v for v in seen["refused"]), seen["refused"]
    assert any("publish" in v and f"heartbeat.{worker}" in v for v in seen["refused"]), seen["refused"]
    # the worker's own credentials are not what the job got
    worker_creds = Path(str(secured.worker(0).creds)).read_text()
    assert worker_creds.split("-----BEGIN USER NKEY SEED-----")[1] not in str(seen)


async def test_a_job_may_submit_jobs_as_a_client_may(secured: Secured) -> None:
    job_id = await secured.client.submit("parent", Entrypoint.from_callable(submit_child))
    assert await secured.client.result(job_id, timeout=90) == 42


def serve_counter(name: str) -> None:
    import anyio

    import fluster
    from fluster.actor import ActorServer

    class Counter:
        def __init__(self) -> None:
            self.n = 0

        def add(self, k: int) -> int:
            self.n += k
            return self.n

        def big(self, size: int) -> bytes:
            return b"z" * size

    async def main() -> None:
        async with fluster.ClusterClient.connect() as client:
            server = ActorServer(client)
            server.register(name, Counter())
            async with server:
                await anyio.sleep_forever()

    fluster.run_async(main)


async def test_an_actor_served_by_a_job_answers_calls_large_values_included(secured: Secured) -> None:
    job_id = await secured.client.submit("counter", Entrypoint.from_callable(serve_counter, "counter"))
    resolver = ClusterResolver(secured.client)
    try:
        pool = await resolver.lookup("counter")
        await pool.wait_for_size(1, timeout=60)
        assert await pool.call().add(2) == 2
        assert await pool.call().add(3) == 5
        assert len(await pool.call().big(3 * 1024 * 1024)) == 3 * 1024 * 1024  # through the transfers stream
    finally:
        await resolver.close()
        await secured.client.kill(job_id)


def square(x: int) -> int:
    return x * x


def pool_in_a_job() -> list[int]:
    import fluster
    from fluster.pool import WorkerPool, WorkerPoolConfig

    with fluster.Client() as client, WorkerPool(client, WorkerPoolConfig(num_workers=1)) as tasks:
        return [f.result() for f in tasks.map(square, range(5))]


async def test_a_worker_pool_runs_from_inside_a_job(secured: Secured) -> None:
    # (from a client: the README's snippet runs on a default, authenticated LocalCluster, tests/test_readme.py)
    job_id = await secured.client.submit("pool-owner", Entrypoint.from_callable(pool_in_a_job))
    assert await secured.client.result(job_id, timeout=90) == [0, 1, 4, 9, 16]


def context_actor_in_a_job() -> tuple[int, int]:
    from fluster.context import create_context

    class Acc:
        def __init__(self) -> None:
            self.total = 0

        def add(self, x: int) -> int:
            self.total += x
            return self.total

    with create_context("cluster") as ctx:
        doubled = ctx.get(ctx.run(lambda x: 2 * x, ctx.put(20)))
        actor = ctx.create_actor(Acc)
        ctx.get(actor.add.remote(1))
        return doubled, ctx.get(actor.add.remote(doubled))


async def test_the_context_api_with_an_actor_runs_inside_a_job(secured: Secured) -> None:
    job_id = await secured.client.submit("ctx", Entrypoint.from_callable(context_actor_in_a_job))
    assert await secured.client.result(job_id, timeout=90) == (40, 41)


def copy_identity_and_serve(dest: str, name: str) -> None:
    import os
    import shutil

    shutil.copy(Path(os.environ["FLUSTER_CONNECTION"]).parent / "job.creds", dest)
    serve_counter(name)


async def test_a_jobs_identity_is_renewed_while_it_runs_and_refused_after_it_expired(tmp_path: Path) -> None:
    async with secured_cluster(tmp_path / "cluster", workers=1, job_identity_ttl=3.0) as secured:
        stolen = tmp_path / "stolen.creds"
        job_id = await secured.client.submit(
            "renewed", Entrypoint.from_callable(copy_identity_and_serve, str(stolen), "renewed")
        )
        resolver = ClusterResolver(secured.client)
        try:
            pool = await resolver.lookup("renewed")
            await pool.wait_for_size(1, timeout=60)

            async def add_one() -> int:
                # a call that lands in the moment the job's connection moves to its renewed identity (a
                # reconnect: milliseconds) finds no server, or loses its reply (docs/security.md); the next
                # one is answered
                with anyio.fail_after(10):
                    while True:
                        try:
                            return int(await pool.call(timeout=2).add(1))
                        except (ActorNotFound, ActorCallTimeout):
                            await anyio.sleep(0.05)

            total = 0
            with anyio.fail_after(60):  # well past two lifetimes of its identity, the job still answers
                start = anyio.current_time()
                while anyio.current_time() - start < 8:
                    total = await add_one()
                    await anyio.sleep(0.2)
            assert total >= 5
        finally:
            await resolver.close()
            await secured.client.kill(job_id)
        assert stolen.exists()
        with anyio.fail_after(30):  # the copy the job made is worthless once it expired
            while True:
                try:
                    nc = await connect(secured.url, "thief", ConnectOptions(creds=str(stolen)))
                except ClusterUnavailable as exc:
                    assert "refused the credentials" in str(exc)
                    break
                await nc.close()
                await anyio.sleep(0.2)  # until its JWT's expiry, which is all the test waits for


def gather_roles() -> list[tuple[int, str]]:
    import os

    from fluster.environ import job_env
    from fluster.gang import all_gather
    from fluster.security.identity import identity_of

    job = job_env()
    assert job is not None
    identity = identity_of(job.connect_options()[1])
    assert identity is not None
    return list(all_gather((int(os.environ["FLUSTER_TASK_INDEX"]), identity.name)))


async def test_each_task_of_a_gang_is_its_own_identity_and_they_gather(secured: Secured) -> None:
    from fluster import ResourceSpec

    one = ResourceSpec(cpu=1, memory="256m")
    job_id = await secured.client.submit("gang", gather_roles, resources=one, replicas=2, coschedule=True)
    status = await secured.client.wait(job_id, timeout=90)
    assert status.state.value == "SUCCEEDED", status.error
    first, second = await secured.client.result(job_id, timeout=30)  # each task's value: what it gathered
    assert first == second and [index for index, _ in first] == [0, 1]
    assert len({name for _, name in first}) == 2  # one identity per task
