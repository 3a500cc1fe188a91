"""deploy/nats/auth.conf works: a controller, a worker and a client, each with its own user and subject
permissions, run a job end to end, and the server refuses a worker that tries another worker's dispatches or
submits a job."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import cloudpickle
import nats
import pytest
from cluster_helpers import in_own_task

from fluster import ClusterClient, Entrypoint
from fluster.bus.connection import connect
from fluster.controller.service import Controller, ControllerSettings
from fluster.local.server import NatsServer
from fluster.worker.agent import Worker
from fluster.worker.settings import WorkerSettings

cloudpickle.register_pickle_by_value(sys.modules[__name__])

AUTH = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "auth.conf"
PASSWORDS = {"$CONTROLLER_PASSWORD": "ctl-secret", "$WORKER1_PASSWORD": "w1-secret", "$CLIENT_PASSWORD": "cl-secret"}


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[str]:
    text = AUTH.read_text()
    for placeholder, password in PASSWORDS.items():
        text = text.replace(placeholder, password)
    server = NatsServer(store_dir=tmp_path, extra_config=text)
    with server:
        yield f"127.0.0.1:{server.port}"


def double(x: int) -> int:
    return 2 * x


async def test_roles_run_a_job_and_a_worker_cannot_take_another_workers_dispatches(secured: str) -> None:
    async def run_controller() -> None:
        nc = await connect(f"nats://controller:ctl-secret@{secured}", "controller")
        try:
            await Controller(nc, ControllerSettings(namespace="default")).run()
        finally:
            with anyio.CancelScope(shield=True):
                await nc.close()

    worker_url = f"nats://worker-1:w1-secret@{secured}"
    async with in_own_task(_serving(run_controller, worker_url)):
        async with ClusterClient.connect(f"nats://client:cl-secret@{secured}", "default") as client:
            job_id = await client.submit("doubled", Entrypoint.from_callable(double, 21))
            assert await client.result(job_id, timeout=60) == 42

        violations: list[str] = []

        async def on_error(exc: Exception) -> None:
            violations.append(str(exc))

        rogue = await nats.connect(worker_url, error_cb=on_error)
        try:
            await rogue.subscribe("fluster.default.worker.worker-2.run")
            await rogue.publish("fluster.default.ctl.submit", b"x")
            await rogue.flush()
            for _ in range(100):
                if len(violations) >= 2:
                    break
                await asyncio.sleep(0.05)
        finally:
            await rogue.close()
        assert any("subscription" in v and "worker-2" in v for v in violations), violations
        assert any("publish" in v and "ctl.submit" in v for v in violations), violations


class _serving:
    """The controller and one worker (user worker-1) running until the block ends."""

    def __init__(self, run_controller: object, worker_url: str) -> None:
        self._run_controller = run_controller
        self._worker_url = worker_url

    async def __aenter__(self) -> None:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._run_controller)  # type: ignore[arg-type]
        self._nc = await connect(self._worker_url, "worker-1")
        await self._tg.start(
            Worker(self._nc, WorkerSettings(url=self._worker_url, worker_id="worker-1", cpu=1, memory="1g")).run
        )

    async def __aexit__(self, *exc: object) -> None:
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)
        await self._nc.close()
