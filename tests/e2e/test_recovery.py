"""Recovery from lost state: a nats-server restart (memory assets gone, replies lost), a worker key missing at a
failover, corrupt records, deleted buckets, and actor requests naming transfers that never come."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import cloudpickle
import nats
import pytest
from cluster_helpers import Processes, in_own_task, local_cluster
from fault_helpers import attempts_ran, record_attempt

from fluster import ClusterClient, Entrypoint, JobState
from fluster.actor import ActorServer, ClusterResolver
from fluster.local.server import NatsServer
from fluster.pool import WorkerPool, WorkerPoolConfig
from fluster.protocol import calls
from fluster.protocol.resources import ResourceSpec
from fluster.protocol.values import EPHEMERAL, ERROR, ValueRef

cloudpickle.register_pickle_by_value(sys.modules[__name__])
import fault_helpers  # noqa: E402

cloudpickle.register_pickle_by_value(fault_helpers)

Eventually = Callable[..., Awaitable[None]]


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of this test's own, that it may kill and start again (same port, same store)."""
    (tmp_path / "nats").mkdir()
    server = NatsServer(store_dir=tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def slow_square(x: int) -> int:
    time.sleep(0.3)
    return x * x


class Echo:
    def echo(self, value: object) -> object:
        return value


async def test_tasks_and_actors_come_through_a_server_restart(own_server: NatsServer, namespace: str) -> None:
    """SIGKILL the only nats-server mid-run: replies in flight are lost, memory assets (endpoints, transfers)
    are gone. Every task still resolves once with its value, actors are found again, shutdown ends."""
    async with local_cluster(own_server.url, namespace, workers=2, cpu=4) as client:
        assert isinstance(client, ClusterClient)
        config = WorkerPoolConfig(num_workers=2, resources=ResourceSpec(cpu=1, memory="256m"), probe_interval=1.0)
        async with WorkerPool(client, config) as pool:
            await pool.wait_for_workers(2, timeout=60)
            futures = [pool.submit(slow_square, i) for i in range(24)]
            with anyio.fail_after(60):
                while sum(f.done() for f in futures) < 4:
                    await anyio.sleep(0.05)
            own_server.kill()
            await anyio.sleep(0.5)
            own_server.start()
            with anyio.fail_after(120):
                results = [await f for f in futures]
            assert results == [i * i for i in range(24)]
            executor = pool.status().job_ids[0]
            with anyio.fail_after(60):
                await pool.shutdown(wait=True)
        # the endpoints bucket (memory) was re-created, and actors publish into it again
        server = ActorServer(client)
        server.register("echo-after-restart", Echo())
        async with server:
            resolver = ClusterResolver(client, call_timeout=20)
            try:
                actor = await resolver.lookup("echo-after-restart")
                await actor.wait_for_size(1, timeout=30)
                assert await actor.call().echo(b"x" * (9 << 20)) == b"x" * (9 << 20)  # a transfer, too
            finally:
                await resolver.close()
        assert executor


async def test_a_job_whose_worker_key_vanished_is_retried_after_a_failover(
    processes: Processes, nats_url: str, namespace: str, tmp_path: Path, eventually_fn: Eventually
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    controller = processes.controller()
    async with in_own_task(local_cluster(nats_url, namespace, workers=1, controller=False)) as client:
        job_id = await client.submit("orphaned", Entrypoint.from_callable(record_attempt, str(markers), 600.0))
        await eventually_fn(lambda: _started(markers), 30, "the job")
        worker_id = (await client.list_workers())[0].worker_id
        # the controller died between removing the worker's key and losing its jobs
        await client.assets.workers.delete(worker_id)
        os.killpg(controller.pid, signal.SIGKILL)
        controller.wait()
        processes.controller()
        assert await client.result(job_id, timeout=90) == 1
        status = await client.status(job_id)
        assert status.attempts[0].state == JobState.WORKER_FAILED and len(attempts_ran(markers)) == 2


async def test_a_corrupt_job_record_is_restored_at_failover(
    processes: Processes, nats_url: str, namespace: str, tmp_path: Path, eventually_fn: Eventually
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    controller = processes.controller()
    async with in_own_task(local_cluster(nats_url, namespace, workers=1, controller=False)) as client:
        job_id = await client.submit("garbled", Entrypoint.from_callable(record_attempt, str(markers), 600.0))
        await eventually_fn(lambda: _running(client, job_id), 30, "the job to run")
        await client.assets.jobs.put(job_id, b"\x00 not a job record \xff")
        os.killpg(controller.pid, signal.SIGKILL)
        controller.wait()
        second = processes.controller()
        await eventually_fn(lambda: _running(client, job_id), 30, "the restored record")
        await eventually_fn(lambda: _logged(processes, second, "restored its last good revision"), 30, "the repair")
        status = await client.status(job_id)
        assert len(status.attempts) == 1 and len(attempts_ran(markers)) == 1  # not lost, not run again
        await client.kill(job_id)


async def test_garbage_over_the_lease_does_not_unseat_the_leader(
    processes: Processes, nats_url: str, namespace: str, eventually_fn: Eventually
) -> None:
    controller = processes.controller()
    async with in_own_task(local_cluster(nats_url, namespace, workers=1, controller=False)) as client:
        first = await client.submit("before", Entrypoint.from_callable(slow_square, 2))
        assert await client.result(first, timeout=60) == 4
        await client.assets.leader.put("controller", b"\xff garbage")

        async def rewritten() -> bool:
            entry = await client.assets.leader.get("controller")
            return entry.value is not None and f"-{controller.pid}-".encode() in entry.value

        await eventually_fn(rewritten, 30, "the leader to rewrite its lease")
        after = await client.submit("after", Entrypoint.from_callable(slow_square, 3))
        assert await client.result(after, timeout=60) == 9
        assert controller.poll() is None


async def test_deleted_buckets_are_recreated_and_refilled(cluster: ClusterClient, eventually_fn: Eventually) -> None:
    done = await cluster.submit("kept", Entrypoint.from_callable(slow_square, 5))
    assert await cluster.result(done, timeout=60) == 25
    js = cluster.js
    await js.delete_object_store(cluster.subjects.object_bucket)
    big = b"x" * (2 << 20)  # through the object store, whose bucket is gone
    job_id = await cluster.submit("large", Entrypoint.from_callable(len, big))
    assert await cluster.result(job_id, timeout=60) == len(big)
    await js.delete_key_value(cluster.subjects.jobs_bucket)
    # the controller's next write finds the bucket gone, re-creates it and writes back what it knows
    again = await cluster.submit("after-loss", Entrypoint.from_callable(slow_square, 6))
    assert await cluster.result(again, timeout=60) == 36

    async def refilled() -> bool:
        return {"kept", "large", "after-loss"} <= {s.job_id for s in await cluster.list_jobs()}

    await eventually_fn(refilled, 30, "the jobs bucket to be refilled")


async def test_requests_naming_missing_transfers_cannot_hold_an_actors_slots(
    client: ClusterClient, nats_url: str, namespace: str
) -> None:
    async with ClusterClient.connect(nats_url, namespace) as server_client:
        server = ActorServer(server_client)
        server.register("guarded", Echo(), max_concurrency=2)
        await _serve_guarded(client, server, nats_url)


async def _serve_guarded(client: ClusterClient, server: ActorServer, nats_url: str) -> None:
    async with server:
        resolver = ClusterResolver(client, call_timeout=30)
        raw = await nats.connect(nats_url)
        try:
            actor = await resolver.lookup("guarded")
            await actor.wait_for_size(1, timeout=30)
            subject = client.subjects.actor("guarded")
            bogus = [
                asyncio.ensure_future(
                    raw.request(
                        subject, calls.encode_request("echo", b"", ValueRef(f"nope{i}", 10, EPHEMERAL, 1)), timeout=30
                    )
                )
                for i in range(4)
            ]
            assert await actor.call().echo("still served") == "still served"
            assert not any(f.done() for f in bogus)  # they wait for transfers that will never come...
            for reply in await asyncio.gather(*bogus):  # ...and then fail, each with an error of its own
                assert calls.decode_reply(reply.data).status == ERROR
        finally:
            await raw.close()
            await resolver.close()


async def _started(markers: Path) -> bool:
    return bool(attempts_ran(markers))


async def _running(client: ClusterClient, job_id: str) -> bool:
    try:
        return (await client.status(job_id)).state == JobState.RUNNING
    except Exception:  # the record is garbage for now
        return False


async def _logged(processes: Processes, proc: object, text: str) -> bool:
    return text in processes.log(proc)  # type: ignore[arg-type]


async def test_a_full_disk_fails_large_values_clearly_and_loses_nothing(tmp_path: Path, namespace: str) -> None:
    from fluster.bus.blobs import put_blob
    from fluster.errors import FlusterError

    store = tmp_path / "small-disk"
    store.mkdir()
    server = NatsServer(store_dir=store, max_file_store=48 << 20)
    with server:
        async with local_cluster(server.url, namespace, workers=1) as client:
            assert isinstance(client, ClusterClient)
            before = await client.submit("before", Entrypoint.from_callable(slow_square, 7))
            assert await client.result(before, timeout=60) == 49
            stored: list[str] = []
            with pytest.raises(FlusterError, match="(?i)insufficient|storage|resources") as failure:
                for i in range(6):
                    await put_blob(client.assets.objects, f"blobs/filler-{i}", b"x" * (12 << 20))
                    stored.append(f"blobs/filler-{i}")
            assert "Traceback" not in str(failure.value)
            with pytest.raises(FlusterError):  # a large entrypoint cannot be stored either: the submit says so
                await client.submit("too-big", Entrypoint.from_callable(len, b"y" * (12 << 20)))
            # the operator frees space (a delete would write a tombstone, which a full disk refuses too)
            await client.js.purge_stream(f"OBJ_{client.subjects.object_bucket}")
            after = await client.submit("after", Entrypoint.from_callable(slow_square, 8))
            assert await client.result(after, timeout=60) == 64
            assert (await client.status(before)).state == JobState.SUCCEEDED
