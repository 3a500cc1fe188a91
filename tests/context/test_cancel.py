"""Cancelling tasks (``ctx.cancel``, ``future.cancel()``) on every backend that runs tasks in the background:
threads, a real cluster (LocalCluster, executor jobs) and a real local Ray. A running task is told through
marker files it writes (the tests and the tasks share this machine's filesystem)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest
from cluster_helpers import context_on, local_cluster

from fluster.context import JobContext, create_context, get_job_context, job_context
from fluster.errors import TaskCancelled

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(params=["threads", "cluster", pytest.param("ray", marks=pytest.mark.ray)])
def ctx(request: pytest.FixtureRequest, namespace: str) -> Iterator[JobContext]:
    with context_on(request.param, request, namespace) as context, job_context(context):  # nested tasks see it
        yield context


def spin(marker: str) -> None:
    """Runs until cancelled, in short sleeps (each a bytecode boundary); says so in ``marker`` files (the
    first inside ``try``: the file shows as soon as it is created, and a cancel may land while it is written)."""
    try:
        Path(marker + ".started").write_text("")
        while True:
            time.sleep(0.01)
    finally:
        Path(marker + ".stopped").write_text("")


def sleep_long(marker: str) -> None:
    """One long C call: only a forced cancel stops it before it returns."""
    Path(marker + ".started").write_text("")
    time.sleep(3600)


def parent(marker: str) -> int:
    """Starts a child task (from the context it runs in) and waits for it."""
    child = get_job_context().run(spin, marker + "-child")
    Path(marker + ".started").write_text("")
    return get_job_context().get(child)  # type: ignore[no-any-return]


def square(x: int) -> int:
    return x * x


def wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


def test_cancelling_a_running_task_raises_in_its_thread(ctx: JobContext, tmp_path: Path) -> None:
    marker = str(tmp_path / "spin")
    future = ctx.run(spin, marker)
    wait_for(Path(marker + ".started"))
    assert ctx.cancel(future) is True
    with pytest.raises(TaskCancelled):
        ctx.get(future, timeout=30)
    wait_for(Path(marker + ".stopped"))  # the task itself stopped: its finally ran in its thread
    assert ctx.get(ctx.run(square, 7), timeout=60) == 49  # its executor (thread, process) serves on


def test_cancelling_a_finished_task_does_nothing_and_says_so(ctx: JobContext) -> None:
    future = ctx.run(square, 3)
    assert ctx.get(future, timeout=60) == 9
    assert ctx.cancel(future) is False
    assert future.cancel() is False
    assert ctx.get(future) == 9


def test_future_cancel_cancels_a_running_task(ctx: JobContext, tmp_path: Path) -> None:
    marker = str(tmp_path / "spin")
    future = ctx.run(spin, marker)
    wait_for(Path(marker + ".started"))
    assert future.cancel() is True
    with pytest.raises(TaskCancelled):
        future.result(timeout=30)
    wait_for(Path(marker + ".stopped"))


def test_recursive_cancel_cancels_the_tasks_it_started(ctx: JobContext, tmp_path: Path) -> None:
    marker = str(tmp_path / "parent")
    future = ctx.run(parent, marker)
    wait_for(Path(marker + ".started"), timeout=120)  # a cluster task's own context starts executors first
    wait_for(Path(marker + "-child.started"), timeout=120)
    assert ctx.cancel(future, recursive=True) is True
    with pytest.raises(TaskCancelled):
        ctx.get(future, timeout=30)
    wait_for(Path(marker + "-child.stopped"))


@pytest.mark.parametrize("backend", ["cluster", pytest.param("ray", marks=pytest.mark.ray)])
def test_force_cancel_kills_the_process_and_the_pool_goes_on(
    backend: str, request: pytest.FixtureRequest, namespace: str, tmp_path: Path
) -> None:
    if backend == "ray":
        request.getfixturevalue("ray_session")
        context: JobContext = create_context("ray", namespace=namespace)
        cluster = None
    else:
        nats_url = request.getfixturevalue("nats_url")
        cluster = local_cluster(nats_url, namespace)
        cluster.__enter__()
        context = create_context("cluster", url=nats_url, namespace=namespace)
    try:
        marker = str(tmp_path / "sleep")
        future = context.run(sleep_long, marker)
        wait_for(Path(marker + ".started"))
        assert context.cancel(future, force=True) is True
        with pytest.raises(TaskCancelled):
            context.get(future, timeout=30)
        assert context.get(context.run(square, 5), timeout=120) == 25  # the executor was replaced
    finally:
        context.close()
        if cluster is not None:
            cluster.__exit__(None, None, None)


def test_sync_context_tasks_are_finished_before_they_can_be_cancelled() -> None:
    with create_context("sync") as context:
        future = context.run(square, 4)
        assert context.cancel(future) is False
        assert context.get(future) == 16
