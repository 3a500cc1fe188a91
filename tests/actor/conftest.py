"""Fixtures for the actor tests, on top of ``tests/conftest.py`` (``nats_url``, ``namespace``, ``client``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fluster.actor import ClusterResolver
from fluster.client.cluster import ClusterClient


@pytest.fixture
async def server_client(nats_url: str, namespace: str) -> AsyncIterator[ClusterClient]:
    """A second connection, for the serving side, so calls really cross the NATS server."""
    async with ClusterClient.connect(nats_url, namespace) as c:
        yield c


@pytest.fixture
async def resolver(client: ClusterClient) -> AsyncIterator[ClusterResolver]:
    r = ClusterResolver(client, call_timeout=20)
    yield r
    await r.close()
