"""The blocking facade: LocalCluster's ``with`` form and ``fluster.Client`` against a running cluster."""

from __future__ import annotations

import gc
import sys

import cloudpickle
import pytest

import fluster
from fluster import Entrypoint, JobState

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def square(x: int) -> int:
    print(f"squaring {x}")
    return x * x


def test_local_cluster_sync_runs_jobs_and_stops_everything() -> None:
    collector = gc.get_threshold()
    with fluster.LocalCluster(workers=1, cpu=2, memory="2g") as client:
        server = client.aio.nc.connected_url
        job_id = client.submit("square", Entrypoint.from_callable(square, 7))
        assert client.result(job_id, timeout=30) == 49
        assert client.status(job_id).state == JobState.SUCCEEDED
        assert [line.line for line in client.logs(job_id)] == ["squaring 7"]
        assert [s.job_id for s in client.list_jobs()] == [job_id]
        assert len(client.list_workers()) == 1
        assert client.kill(job_id).already_finished
        # the controller shares this process with the user's code: it leaves the collector alone
        assert gc.get_threshold() == collector and gc.get_freeze_count() == 0
        url = client.url
    assert server is not None
    with pytest.raises(fluster.ClusterUnavailable):
        fluster.Client(url)


def test_sync_client_against_an_async_cluster(nats_url: str, namespace: str) -> None:
    with fluster.LocalCluster(url=nats_url, namespace=namespace, workers=1, cpu=1, memory="1g"):
        with fluster.Client(nats_url, namespace) as client:
            job_id = client.submit("sq", Entrypoint.from_callable(square, 3))
            assert client.wait(job_id, timeout=30).state == JobState.SUCCEEDED
            assert client.result(job_id) == 9
            with pytest.raises(ValueError, match="bad sad"):
                client.submit("bad sad", square)
