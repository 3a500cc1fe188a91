"""Fixtures of the dashboard tests: a cluster with a dashboard per test (see ``dash_helpers``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from cluster_helpers import in_own_task
from dash_helpers import DashCluster, dash_cluster


@pytest.fixture
async def dash(nats_url: str, namespace: str) -> AsyncIterator[DashCluster]:
    async with in_own_task(dash_cluster(nats_url, namespace)) as cluster:
        yield cluster
