"""Values the tasks of a multi-task job exchange, without opening ports: ``all_gather``.

Inside a task, ``all_gather(value)`` returns every task's value in index order, once each task has made the
same call (the Nth call of each task meets the Nth of the others): for a coordinator's address, ranks, a
seed. Each value is a key of the namespace's ``gangs`` bucket, named by the job, its attempt, the call's
number and the task, so a retried gang never reads the values of its earlier attempt, and a task that calls
late still finds the others' values.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Any

import anyio
import cloudpickle

from fluster.environ import job_env, task_env
from fluster.errors import FlusterError, FlusterTimeout
from fluster.protocol.subjects import gang_key, gang_pattern

MAX_VALUE = 512 * 1024


class _Rounds:
    """How many all_gathers this task process has made: the number of its next one. (Process state by
    nature: the Nth call of each task meets the Nth of the others.)"""

    def __init__(self) -> None:
        self._count = itertools.count()
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            return next(self._count)


_ROUNDS = _Rounds()


def all_gather(value: Any, timeout: float = 300.0) -> list[Any]:
    """Every task's ``value``, in task index order (a blocking call, from a task's own code).

    Raises:
        FlusterError: not called inside a task of a fluster job, or the value is too large (512 KiB pickled).
        FlusterTimeout: not every task made the call within ``timeout`` seconds.
    """
    round_ = _ROUNDS.next()
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(all_gather_async(value, timeout, round_))
    raise FlusterError("all_gather blocks: from async code, await fluster.gang.all_gather_async(value)")


async def all_gather_async(value: Any, timeout: float = 300.0, round_: int | None = None) -> list[Any]:
    """``all_gather`` for async code (same semantics)."""
    from fluster.bus.kv import snapshot_bytes
    from fluster.client.cluster import ClusterClient

    job = job_env()
    if job is None:
        raise FlusterError("fluster.gang.all_gather is for the tasks of a fluster job (no FLUSTER_JOB_ID here)")
    index, n, _ = task_env()
    round_ = _ROUNDS.next() if round_ is None else round_
    data = cloudpickle.dumps(value)
    if len(data) > MAX_VALUE:
        raise FlusterError(
            f"all_gather values are for small things ({len(data)} bytes pickled; the limit is {MAX_VALUE})"
        )
    async with ClusterClient.connect() as client:
        kv = client.assets.gangs
        await kv.put(gang_key(job.job_id, job.attempt, round_, index), data)
        pattern = gang_pattern(job.job_id, job.attempt, round_)
        values: dict[int, bytes] = {}
        with anyio.move_on_after(timeout):
            while len(values) < n:
                found = await snapshot_bytes(kv, pattern)
                values = {int(key.rsplit(".", 1)[1]): raw for key, raw in found.items()}
                if len(values) < n:
                    await anyio.sleep(0.05)  # the others have not all called yet
        if len(values) < n:
            missing = sorted(set(range(n)) - set(values))
            raise FlusterTimeout(f"all_gather: tasks {missing} did not call within {timeout:g}s")
        return [cloudpickle.loads(values[i]) for i in range(n)]
