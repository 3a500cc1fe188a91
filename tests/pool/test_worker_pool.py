"""WorkerPool against a real LocalCluster: executors are real job processes on in-process workers."""

from __future__ import annotations

import os
import pickle
import signal
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from cluster_helpers import eventually, local_cluster

from fluster.bus.blobs import delete_blob, put_blob
from fluster.bus.values import ReadCache
from fluster.client.cluster import ClusterClient
from fluster.errors import ClusterUnavailable, FlusterTimeout, ObjectLost, TaskLost
from fluster.pool import WorkerPool, WorkerPoolConfig
from fluster.protocol.resources import ResourceSpec
from fluster.protocol.values import ValueRef

cloudpickle.register_pickle_by_value(sys.modules[__name__])

ONE_CPU = ResourceSpec(cpu=1, memory="256m")


class Boom(ValueError):
    pass


def add(a: int, b: int = 0, *, scale: int = 1) -> int:
    return (a + b) * scale


def explode(n: int) -> None:
    raise Boom(f"boom {n}")


def complex_value(n: int) -> dict[str, object]:
    return {"n": n, "items": [(i, str(i)) for i in range(n)], "nested": {"set": {1, 2}, "bytes": b"x" * n}}


def pid_after_marker(marker: str) -> int:
    """The first attempt records its pid and hangs (to be SIGKILLed); a retry returns at once."""
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        import time

        time.sleep(60)
    return os.getpid()


def count_attempts(marker: str) -> int:
    path = Path(marker)
    attempts = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(attempts))
    raise Boom(f"attempt {attempts}")


async def test_submit_with_args_kwargs_closures_and_complex_returns(cluster: ClusterClient) -> None:
    offset = 100

    def closure(x: int) -> int:
        return x + offset

    async with WorkerPool(cluster, WorkerPoolConfig(num_workers=2, resources=ONE_CPU)) as pool:
        assert await pool.submit(add, 1, 2, scale=3) == 9
        assert await pool.submit(add, 1, b=4) == 5
        assert await pool.submit(closure, 1) == 101
        assert await pool.submit(lambda: "lambda") == "lambda"
        assert await pool.submit(complex_value, 3) == complex_value(3)


async def test_map_keeps_item_order_and_reports_progress(
    cluster: ClusterClient, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[tuple[int, int]] = []
    async with WorkerPool(cluster, WorkerPoolConfig(num_workers=2, resources=ONE_CPU)) as pool:
        await pool.wait_for_workers(2, timeout=30)
        futures = pool.map(lambda x: x * x, range(200), progress=lambda done, total: seen.append((done, total)))
        assert [await f for f in futures] == [x * x for x in range(200)]
        assert seen[-1] == (200, 200)
        status = pool.status()
        assert status.completed >= 200 and status.ready == 2
        drawn = pool.map(add, range(50), progress=True)  # a text bar on stderr
        assert [await f for f in drawn] == list(range(50))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("map add [")]
    assert lines[-1].startswith("map add [==============================] 50/50 100%"), lines


async def test_user_exception_is_delivered_with_its_type_and_not_retried(
    cluster: ClusterClient, tmp_path: Path
) -> None:
    marker = str(tmp_path / "attempts")
    async with WorkerPool(cluster, WorkerPoolConfig(num_workers=2, resources=ONE_CPU, max_retries=3)) as pool:
        with pytest.raises(Boom, match="boom 7") as info:
            await pool.submit(explode, 7)
        assert "explode" in str(info.value.__cause__)  # the remote traceback
        with pytest.raises(Boom):
            await pool.submit(count_attempts, marker)
        assert Path(marker).read_text() == "1"
        assert await pool.submit(add, 2, 2) == 4  # the executor that raised still serves


async def test_task_of_a_killed_executor_is_retried_elsewhere_and_pool_size_restored(
    cluster: ClusterClient, tmp_path: Path
) -> None:
    marker = tmp_path / "first-pid"
    async with WorkerPool(cluster, WorkerPoolConfig(num_workers=2, resources=ONE_CPU, max_retries=2)) as pool:
        await pool.wait_for_workers(2, timeout=30)
        future = pool.submit(pid_after_marker, str(marker))
        await eventually(lambda: _has_text(marker), 30, "the first attempt to start")
        first_pid = int(marker.read_text())
        os.kill(first_pid, signal.SIGKILL)
        assert await future != first_pid
        status = pool.status()
        assert status.retried == 1
        await pool.wait_for_workers(2, timeout=30)
        assert pool.status().replaced >= 1


async def test_task_fails_with_task_lost_when_retries_are_exhausted(cluster: ClusterClient, tmp_path: Path) -> None:
    marker = tmp_path / "first-pid"
    async with WorkerPool(cluster, WorkerPoolConfig(num_workers=1, resources=ONE_CPU, max_retries=0)) as pool:
        future = pool.submit(pid_after_marker, str(marker))
        await eventually(lambda: _has_text(marker), 30, "the task to start")
        os.kill(int(marker.read_text()), signal.SIGKILL)
        with pytest.raises(TaskLost):
            await future


async def test_submit_after_shutdown_raises_and_shutdown_kills_the_jobs(cluster: ClusterClient) -> None:
    async with WorkerPool(cluster, WorkerPoolConfig(num_workers=2, resources=ONE_CPU)) as pool:
        await pool.wait_for_workers(2, timeout=30)
        job_ids = pool.status().job_ids
        pending = pool.submit(add, 1, 1)
        await pool.shutdown(wait=True)
        assert pending.result(timeout=0) == 2
        with pytest.raises(RuntimeError):
            pool.submit(add, 1, 1)
    for job_id in job_ids:
        assert (await cluster.status(job_id)).state.is_terminal


async def _has_text(path: Path) -> bool:
    return path.exists() and bool(path.read_text())


def test_blocking_pool_through_a_sync_client(nats_url: str, namespace: str) -> None:
    with local_cluster(nats_url, namespace) as client:
        with WorkerPool(client, WorkerPoolConfig(num_workers=2, resources=ONE_CPU)) as pool:
            assert pool.wait_for_workers(2, timeout=30) == 2
            futures = pool.map(add, range(20))
            assert [f.result(timeout=30) for f in futures] == list(range(20))
            assert pool.submit(add, 1, 2).result(timeout=30) == 3
            pool.shutdown()
            with pytest.raises(RuntimeError):
                pool.submit(add, 1)


def flaky_submits(cluster: ClusterClient, failures: int) -> tuple[ClusterClient, list[int]]:
    """A client on the same connection whose first ``failures`` submits fail as in a controller outage."""
    client = ClusterClient(cluster.nc, cluster.url, cluster.namespace, cluster.assets, None)
    calls = [0]
    real_submit = client.submit

    async def submit(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] <= failures:
            raise ClusterUnavailable("no controller answered (injected outage)")
        return await real_submit(*args, **kwargs)

    client.submit = submit  # type: ignore[method-assign]
    return client, calls


async def test_failed_executor_submits_are_retried(cluster: ClusterClient) -> None:
    client, calls = flaky_submits(cluster, failures=2)
    async with WorkerPool(client, WorkerPoolConfig(num_workers=1, resources=ONE_CPU)) as pool:
        assert await pool.submit(add, 2, 3) == 5
    assert calls[0] == 3


async def test_a_pool_that_cannot_start_says_why(cluster: ClusterClient) -> None:
    client, _ = flaky_submits(cluster, failures=1_000)
    config = WorkerPoolConfig(num_workers=1, resources=ONE_CPU, startup_timeout=2)
    with pytest.raises(FlusterTimeout, match="the last failure: submitting executor .*injected outage"):
        async with WorkerPool(client, config):
            pass


def append_and_count(values: list[int]) -> int:
    values.append(1)  # each task gets its own copy of a stored argument: this must not leak into the next
    return len(values)


async def test_stored_arguments_are_read_by_the_executor_and_cached(cluster: ClusterClient) -> None:
    data = pickle.dumps(list(range(200_000)))
    await put_blob(cluster.assets.objects, "blobs/shared-arg", data)
    ref = ValueRef("blobs/shared-arg", len(data))
    async with WorkerPool(cluster, WorkerPoolConfig(num_workers=1, resources=ONE_CPU)) as pool:
        assert await pool.submit(append_and_count, ref) == 200_001
        await delete_blob(cluster.assets.objects, "blobs/shared-arg")
        # the executor kept the bytes: the deleted object still serves this executor, a fresh copy per use
        assert [await f for f in [pool.submit(append_and_count, ref) for _ in range(3)]] == [200_001] * 3
        with pytest.raises(ObjectLost, match="no longer in the object store"):
            await pool.submit(len, ValueRef("blobs/never-stored", 10))


def test_the_blob_cache_keeps_the_most_recently_used_within_its_limit() -> None:
    cache = ReadCache(limit=10)
    cache.put("a", b"1234")
    cache.put("b", b"5678")
    assert cache.get("a") == b"1234"  # a is now the most recent
    cache.put("c", b"90ab")  # over the limit: b goes
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (b"1234", None, b"90ab")
    cache.put("huge", b"x" * 11)
    assert cache.get("huge") is None


def note(path: str, word: str) -> str:
    with open(path, "a") as f:
        f.write(word + "\n")
    return word


async def test_a_task_cancelled_while_queued_never_runs(cluster: ClusterClient, tmp_path: Path) -> None:
    log = str(tmp_path / "ran")
    gate = tmp_path / "gate"
    async with WorkerPool(cluster, WorkerPoolConfig(num_workers=1, resources=ONE_CPU)) as pool:
        blocker = pool.submit(wait_for_file, str(gate))  # holds the only executor's only slot
        queued = [pool.submit(note, log, f"cancelled-{i}") for i in range(5)]
        assert all(f.cancel() for f in queued)
        gate.write_text("go")
        assert await blocker == "go"
        assert await pool.submit(note, log, "after") == "after"
        assert Path(log).read_text().split() == ["after"]
        assert pool.status().queued == 0


def wait_for_file(path: str) -> str:
    import time

    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)
    with open(path) as f:
        return f.read()
