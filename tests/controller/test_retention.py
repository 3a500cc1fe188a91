"""Finished jobs are forgotten after the retention: the pure rule, and a real controller applying it."""

from __future__ import annotations

import sys

import anyio
import cloudpickle
import pytest
from cluster_helpers import eventually, local_cluster
from nats.aio.client import Client as NATS

from fluster.bus.blobs import get_blob
from fluster.bus.connection import connect
from fluster.client.cluster import ClusterClient
from fluster.controller.retention import expired
from fluster.controller.service import Controller, ControllerSettings
from fluster.errors import JobNotFound, ObjectLost
from fluster.protocol.messages import JobRecord, JobRequest, JobState, Payload
from fluster.protocol.subjects import result_object
from fluster.types import Entrypoint

cloudpickle.register_pickle_by_value(sys.modules[__name__])

HOUR_MS = 3600 * 1000


def record(job_id: str, state: JobState, finished_ms: int | None, parent: str | None = None) -> JobRecord:
    request = JobRequest(name=job_id.rsplit("/", 1)[-1], entrypoint=Payload(inline=b"", size=0), parent_id=parent)
    return JobRecord(
        job_id=job_id, token="t", request=request, state=state, submitted_at_ms=0, finished_at_ms=finished_ms
    )


def test_only_jobs_finished_before_the_cutoff_and_their_finished_families_expire() -> None:
    now = 10 * HOUR_MS
    jobs = {
        "old": record("old", JobState.SUCCEEDED, now - 3 * HOUR_MS),
        "recent": record("recent", JobState.FAILED, now - HOUR_MS // 2),
        "running": record("running", JobState.RUNNING, None),
        "parent": record("parent", JobState.KILLED, now - 5 * HOUR_MS),
        "parent/young": record("parent/young", JobState.KILLED, now - HOUR_MS // 4, parent="parent"),
        "p2": record("p2", JobState.SUCCEEDED, now - 5 * HOUR_MS),
        "p2/old": record("p2/old", JobState.SUCCEEDED, now - 4 * HOUR_MS, parent="p2"),
    }
    children = {"parent": {"parent/young"}, "p2": {"p2/old"}}
    assert sorted(expired(jobs, children, now, retention_s=3600)) == ["old", "p2", "p2/old"]
    assert expired(jobs, children, now, retention_s=100 * 3600) == []


def answer() -> int:
    return 42


async def test_a_controller_forgets_finished_jobs_after_the_retention(nats_url: str, namespace: str) -> None:
    settings = ControllerSettings(namespace=namespace, worker_timeout=5, finished_job_retention=1.0)
    nc: NATS = await connect(nats_url, name="test-controller")
    try:
        async with anyio.create_task_group() as tg:
            controller = Controller(nc, settings)
            await tg.start(controller.run)
            await forgets(controller, nats_url, namespace)
            tg.cancel_scope.cancel()
    finally:
        await nc.close()


async def forgets(controller: Controller, nats_url: str, namespace: str) -> None:
    async with local_cluster(nats_url, namespace, controller=False) as client:
        assert isinstance(client, ClusterClient)
        job_id = await client.submit("short", Entrypoint.from_callable(answer))
        assert await client.result(job_id, timeout=30) == 42
        assert job_id in controller.jobs

        async def forgotten() -> bool:
            return job_id not in controller.jobs

        await eventually(forgotten, 20, "the finished job to be forgotten")
        with pytest.raises(JobNotFound):
            await client.status(job_id)
        with pytest.raises(ObjectLost):
            await get_blob(client.assets.objects, result_object(job_id))
        assert [j.job_id for j in await client.list_jobs()] == []
