"""Helpers the tests share (plain module: pytest replaces ``conftest`` modules by name, so they live here)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest

from fluster.context import JobContext, create_context
from fluster.local.cluster import LocalCluster

T = TypeVar("T")


@contextlib.asynccontextmanager
async def in_own_task(cm: AbstractAsyncContextManager[T]) -> AsyncIterator[T]:
    """Enter and exit ``cm`` in one background task: pytest-asyncio runs a fixture's setup and teardown in
    different tasks, and a context holding a task group must be left by the task that entered it."""
    entered: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()

    async def hold() -> None:
        try:
            async with cm as value:
                entered.set_result(value)
                await stop.wait()
        except BaseException as exc:
            if not entered.done():
                entered.set_exception(exc)
            raise

    task = asyncio.ensure_future(hold())
    try:
        yield await entered
    finally:
        stop.set()
        await task


@contextlib.contextmanager
def context_on(kind: str, request: pytest.FixtureRequest, namespace: str) -> Iterator[JobContext]:
    """A context of ``kind`` for a test: ``ray`` on the session's Ray (which the context finds initialized),
    ``cluster`` on a LocalCluster in the test's namespace, the in-process kinds as they are."""
    if kind == "ray":
        request.getfixturevalue("ray_session")
        with create_context("ray", namespace=namespace) as context:
            yield context
        return
    if kind != "cluster":
        with create_context(kind) as context:  # type: ignore[arg-type]
            yield context
        return
    nats_url = request.getfixturevalue("nats_url")
    with local_cluster(nats_url, namespace), create_context("cluster", url=nats_url, namespace=namespace) as context:
        yield context


def local_cluster(nats_url: str, namespace: str, **kw: Any) -> LocalCluster:
    options: dict[str, Any] = dict(workers=2, cpu=2, memory="4g", heartbeat_interval=0.2, worker_timeout=5.0)
    options.update(kw)
    return LocalCluster(url=nats_url, namespace=namespace, **options)


class Processes:
    """Real fluster processes (``python -m fluster.cli ...``) that a test starts; all are killed at teardown."""

    def __init__(self, url: str, namespace: str, log_dir: Path) -> None:
        self.url, self.namespace, self.log_dir = url, namespace, log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, name: str = "proc", url: str | None = None) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}-{len(self.procs)}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "fluster.cli", *args, "--url", url or self.url, "--namespace", self.namespace],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "FLUSTER_LOG_LEVEL": "INFO"},
        )
        log.close()
        self.procs.append(proc)
        return proc

    def worker(self, worker_id: str, *extra: str, url: str | None = None) -> subprocess.Popen[bytes]:
        return self.start(
            "worker",
            "--worker-id",
            worker_id,
            "--cpu",
            "2",
            "--memory",
            "4g",
            "--heartbeat-interval",
            "0.2",
            *extra,
            name=worker_id,
            url=url,
        )

    def controller(self, *extra: str, url: str | None = None) -> subprocess.Popen[bytes]:
        return self.start("controller", "--worker-timeout", "3", *extra, name="controller", url=url)

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        """What a process started here has written so far."""
        index = self.procs.index(proc)
        return "".join(p.read_text(errors="replace") for p in self.log_dir.glob(f"*-{index}.log"))

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "condition") -> None:
    """Wait until ``check()`` is true, re-checking briefly; fail the test after ``timeout`` seconds."""
    with anyio.move_on_after(timeout):
        while not await check():
            await anyio.sleep(0.05)
        return
    pytest.fail(f"timed out after {timeout}s waiting for {what}")
