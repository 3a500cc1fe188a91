"""A job in a container connects back to its cluster from the connection file its worker wrote (the path the
job is given is where the container sees the file)."""

from __future__ import annotations

import sys

import cloudpickle
import pytest
from cluster_helpers import in_own_task

from fluster.local.cluster import LocalCluster
from fluster.types import Entrypoint

pytestmark = pytest.mark.docker
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _own_state() -> tuple[str, str]:
    import os

    import anyio

    from fluster import ClusterClient

    async def main() -> str:
        async with ClusterClient.connect() as client:  # no assert here: pytest rewrites it into its own calls
            job_id = client.job.job_id if client.job is not None else "not-in-a-job"
            return (await client.status(job_id)).state.value

    return os.environ["FLUSTER_CONNECTION"], anyio.run(main)


async def test_a_job_in_a_container_connects_back_with_its_connection_file(
    nats_url: str, namespace: str, base_image: str
) -> None:
    cluster = LocalCluster(url=nats_url, namespace=namespace, workers=1, cpu=2, memory="4g", runtime="docker")
    async with in_own_task(cluster) as client:
        job = await client.submit("connect-back", Entrypoint.from_callable(_own_state))
        assert await client.result(job, timeout=120) == ("/job/connection.json", "RUNNING")
