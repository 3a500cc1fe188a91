"""On a 3-node NATS cluster with replicas 3, losing one NATS server loses no job and stops nothing for long."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import cloudpickle
import pytest
from cluster_helpers import in_own_task, local_cluster

from fluster import ClusterClient, Entrypoint, JobState
from fluster.bus.connection import connect
from fluster.controller.service import Controller, ControllerSettings
from fluster.local.server import NatsCluster
from fluster.protocol.subjects import kv_stream, object_stream

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    with NatsCluster(3, store_dir=tmp_path) as cluster:
        yield cluster


def triple(x: int) -> int:
    return 3 * x


async def _ready(url: str) -> None:
    """Wait until the cluster's JetStream has a meta leader (a fresh cluster elects one within seconds)."""
    nc = await connect(url, "probe")
    try:
        with anyio.fail_after(60):
            while True:
                try:
                    await nc.jetstream().account_info()
                    return
                except Exception:  # noqa: BLE001 - "JetStream not ready" comes in several types
                    await anyio.sleep(0.2)
    finally:
        await nc.close()


async def test_losing_one_of_three_nats_servers_loses_no_job(nats_cluster: NatsCluster, namespace: str) -> None:
    url = nats_cluster.url
    await _ready(url)

    async def run_controller() -> None:
        nc = await connect(url, "controller")
        try:
            await Controller(nc, ControllerSettings(namespace=namespace, worker_timeout=5, replicas=3)).run()
        finally:
            with anyio.CancelScope(shield=True):
                await nc.close()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_controller)
        async with in_own_task(local_cluster(url, namespace, worker_timeout=5.0, controller=False)) as client:
            before = await client.submit("before", Entrypoint.from_callable(triple, 1))
            assert await client.result(before, timeout=60) == 3
            info = await client.js.stream_info(f"KV_{client.subjects.jobs_bucket}")
            assert info.config.num_replicas == 3
            await _replicated(client)

            nats_cluster.servers[0].kill()

            after = await _submit_retrying(client, "after")
            assert await client.result(after, timeout=90) == 6
            assert (await client.status(before)).state == JobState.SUCCEEDED  # the record survived
        tg.cancel_scope.cancel()


async def _replicated(client: ClusterClient) -> None:
    """Wait until the streams a submit and its job use have 3 replicas, both followers caught up: a bucket a
    worker created first (with one replica) is raised to 3 by the controller, and a server killed before its
    followers caught up takes the stream with it (it failed 1 run in 4 so, on main as it was)."""
    subjects = client.subjects
    buckets = (subjects.jobs_bucket, subjects.entrypoints_bucket, subjects.leader_bucket, subjects.workers_bucket)
    streams = [kv_stream(bucket) for bucket in buckets] + [object_stream(subjects.object_bucket)]
    with anyio.fail_after(60):
        for stream in streams:
            while True:
                info = await client.js.stream_info(stream)
                peers = info.cluster.replicas if info.cluster is not None else None
                if info.config.num_replicas == 3 and peers and len(peers) == 2 and all(p.current for p in peers):
                    break
                await anyio.sleep(0.2)


async def _submit_retrying(client: ClusterClient, name: str) -> str:
    # JetStream elects new stream leaders for a few seconds after a server dies; submit retries by itself
    return await client.submit(name, Entrypoint.from_callable(triple, 2))
