"""The process runtime enforces a job's memory request, as Docker does: a job over it is killed and reported
out of memory; a job within it runs normally."""

from __future__ import annotations

import sys
import time

import cloudpickle

from fluster import ClusterClient, Entrypoint, JobState, ResourceSpec

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def hold(megabytes: int, seconds: float) -> int:
    block = b"x" * (megabytes << 20)  # touched pages: resident, unlike a calloc'd bytearray
    time.sleep(seconds)
    return len(block) >> 20


def hold_in_child(megabytes: int, seconds: float) -> int:
    import subprocess

    code = f"import time; block = b'x' * ({megabytes} << 20); time.sleep({seconds})"
    return subprocess.run([sys.executable, "-c", code]).returncode


async def test_a_job_over_its_memory_request_is_killed_as_out_of_memory(cluster: ClusterClient) -> None:
    limit = ResourceSpec(memory="64m")
    greedy = await cluster.submit("greedy", Entrypoint.from_callable(hold, 300, 30), limit)
    parent = await cluster.submit("greedy-child", Entrypoint.from_callable(hold_in_child, 300, 30), limit)
    modest = await cluster.submit("modest", Entrypoint.from_callable(hold, 8, 0), limit)
    for job_id in (greedy, parent):
        status = await cluster.wait(job_id, timeout=60)
        assert status.state == JobState.FAILED, status
        assert status.error is not None and "out of memory" in status.error and "limit of 64m" in status.error
    assert await cluster.result(modest, timeout=60) == 8
