"""A cluster with a dashboard for the dashboard tests: a controller, workers and a ``Dashboard`` (on a free
loopback port) in this process, with metrics and usage published every half second; and the jobs the tests
run (they wait on files the test writes, so a test decides when a job prints or ends, with no sleeps)."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import cloudpickle

from fluster.bus.connection import connect
from fluster.client.cluster import ClusterClient
from fluster.controller.service import Controller, ControllerSettings
from fluster.dashboard import Dashboard, DashboardSettings
from fluster.types import Entrypoint
from fluster.worker.agent import Worker
from fluster.worker.settings import WorkerSettings

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # job processes cannot import test modules

FAST = 0.5  # seconds between metrics snapshots and usage samples in these tests


@dataclasses.dataclass
class DashCluster:
    client: ClusterClient
    dashboard: Dashboard
    url: str  # the dashboard's
    workers: list[Worker]


@contextlib.asynccontextmanager
async def dash_cluster(nats_url: str, namespace: str, workers: int = 1) -> AsyncIterator[DashCluster]:
    nc = await connect(nats_url, name="dash-test")
    try:
        async with anyio.create_task_group() as tg:
            settings = ControllerSettings(namespace=namespace, worker_timeout=5.0, metrics_interval=FAST)
            await tg.start(Controller(nc, settings).run)
            started: list[Worker] = []
            for index in range(workers):
                wnc = await connect(nats_url, name=f"dash-test-w{index}")
                worker = Worker(
                    wnc,
                    WorkerSettings(
                        url=nats_url,
                        namespace=namespace,
                        worker_id=f"dw{index}-{namespace}",
                        cpu=2,
                        memory="4g",
                        heartbeat_interval=0.2,
                        metrics_interval=FAST,
                        usage_interval=FAST,
                        labels={"zone": f"z{index}"},
                    ),
                )
                started.append(worker)
                tg.start_soon(_close_on_exit, wnc)
                await tg.start(worker.run)
            dashboard = Dashboard(nc, DashboardSettings(namespace=namespace, port=0))
            url = await tg.start(dashboard.run)
            async with ClusterClient.connect(nats_url, namespace) as client:
                try:
                    yield DashCluster(client, dashboard, url, started)
                finally:
                    with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                        for worker in started:
                            await worker.drain(0.0)
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await nc.close()


async def _close_on_exit(nc: object) -> None:
    try:
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await nc.close()  # type: ignore[attr-defined]


def wait_for_file(path: str, timeout: float = 60.0) -> bool:
    """(Inside a job.) Whether ``path`` appeared within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def talk_when_told(go: str, done: str) -> str:
    """Print a line, then another when ``go`` exists, then end when ``done`` exists."""
    print("first line", flush=True)
    wait_for_file(go)
    print("a new line arrived", flush=True)
    wait_for_file(done)
    return "finished"


def burn_then_wait(done: str) -> int:
    """Use CPU and ~64 MiB until ``done`` exists."""
    block = bytearray(64 << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    total = 0
    while not Path(done).exists():
        total += sum(range(10_000))
    return len(block)


def spawn_child_and_wait(done: str) -> None:
    """Submit a child job (which waits for ``done`` too), then wait."""

    async def go() -> None:
        async with ClusterClient.connect() as client:
            await client.submit("kid", Entrypoint.from_callable(wait_for_file, done))

    anyio.run(go)
    wait_for_file(done)


class Greeter:
    def hello(self, name: str) -> str:
        return f"hello {name}"

    def fail(self) -> None:
        raise ValueError("no")


def serve_greeter(done: str) -> None:
    """Serve actor ``greeter`` until ``done`` exists."""
    from fluster.actor.server import ActorServer

    async def go() -> None:
        async with ClusterClient.connect() as client:
            server = ActorServer(client)
            server.register("greeter", Greeter())
            async with server:
                await anyio.to_thread.run_sync(wait_for_file, done)

    anyio.run(go)


def fail_loudly() -> None:
    raise RuntimeError("this job broke")
