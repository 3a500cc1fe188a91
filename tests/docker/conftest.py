"""Fixtures for the docker runtime and environment tests: a real dockerd, real pip, and the session's
nats-server (``nats_url`` from ``tests/conftest.py``).

Docker tests skip with a visible reason when no daemon answers, except in CI (``CI`` set), where they fail:
``.ci/docker.sh`` starts dockerd and builds the base image there.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docker
import docker.errors
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.object_store import ObjectStore

from fluster.protocol.subjects import LABEL_WORKER, Subjects
from fluster.worker.docker_runtime import DockerRuntime, connect_docker
from fluster.worker.image import DEFAULT_IMAGE, build_base_image


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = connect_docker()
    except docker.errors.DockerException as exc:
        reason = f"no Docker daemon reachable ({exc}); run .ci/docker.sh to start one"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the docker tests: {reason}")
        pytest.skip(reason)
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(docker_client: docker.DockerClient) -> str:
    build_base_image(DEFAULT_IMAGE, client=docker_client)  # a no-op when it exists
    return DEFAULT_IMAGE


@pytest.fixture(scope="session")
def runtime_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by all runtime tests: fluster's own files for containers are copied there once."""
    return tmp_path_factory.mktemp("runtime-cache")


@pytest.fixture
async def runtime(
    docker_client: docker.DockerClient, base_image: str, runtime_cache: Path
) -> AsyncIterator[DockerRuntime]:
    worker_id = f"test-{uuid.uuid4().hex[:8]}"
    yield DockerRuntime(worker_id, runtime_cache, base_image, client=docker_client)
    leftovers = docker_client.containers.list(all=True, filters={"label": f"{LABEL_WORKER}={worker_id}"})
    for container in leftovers:
        container.remove(force=True)
    assert not leftovers, "a test left containers behind"


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_url)
    yield client
    await client.drain()


@pytest.fixture
async def objects(nc: NATS) -> ObjectStore:
    namespace = f"t{uuid.uuid4().hex[:10]}"
    return await nc.jetstream().create_object_store(Subjects(namespace).object_bucket)
