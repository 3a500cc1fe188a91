"""Helpers for the security tests: a secured local cluster, and a "rogue" raw NATS connection under some
identity that records what the server refuses it (plain module: pytest replaces ``conftest`` by name)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import nats
from cluster_helpers import in_own_task
from nats.aio.client import Client as NATS

from fluster import ClusterClient, LocalCluster
from fluster.bus.options import ConnectOptions, nats_kwargs
from fluster.protocol.subjects import Subjects
from fluster.security.identity import apply_identity


@dataclass
class Rogue:
    """A raw connection and the server's refusals (``permissions violation for ...``) reported on it."""

    nc: NATS
    violations: list[str] = field(default_factory=list)

    async def refused(self, *fragments: str, timeout: float = 5.0) -> str:
        """Wait until the server has refused something whose message holds every fragment (case-insensitive)."""
        wanted = [f.lower() for f in fragments]
        with anyio.fail_after(timeout):
            while True:
                await self.nc.flush()
                found = next((v for v in self.violations if all(w in v.lower() for w in wanted)), None)
                if found is not None:
                    return found
                await anyio.sleep(0.02)  # the violation arrives as an async -ERR: poll the list it lands in

    def not_refused(self, *fragments: str) -> bool:
        wanted = [f.lower() for f in fragments]
        return not any(all(w in v.lower() for w in wanted) for v in self.violations)


@contextlib.asynccontextmanager
async def rogue(url: str, options: ConnectOptions) -> AsyncIterator[Rogue]:
    found = Rogue(nc=NATS())

    async def on_error(exc: Exception) -> None:
        found.violations.append(str(exc))

    found.nc = await nats.connect(url, error_cb=on_error, allow_reconnect=False, **nats_kwargs(apply_identity(options)))
    try:
        yield found
    finally:
        await found.nc.close()


@dataclass
class Secured:
    """A LocalCluster with authentication (the default), its client, and who is who in it."""

    cluster: LocalCluster
    client: ClusterClient

    @property
    def url(self) -> str:
        return self.cluster.url

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.cluster.namespace)

    @property
    def worker_ids(self) -> list[str]:
        return [w.worker_id for w in self.cluster.workers]

    def worker(self, index: int) -> ConnectOptions:
        """Credentials of worker ``index`` (a second key pair of the same identity: same name, same rights)."""
        assert self.cluster.auth is not None
        return self.cluster.auth.worker(self.worker_ids[index])

    @property
    def controller(self) -> ConnectOptions:
        assert self.cluster.auth is not None
        return self.cluster.auth.controller

    @property
    def client_options(self) -> ConnectOptions:
        assert self.cluster.auth is not None
        return self.cluster.auth.client


@contextlib.asynccontextmanager
async def secured_cluster(store_dir: Path, **kw: Any) -> AsyncIterator[Secured]:
    options: dict[str, Any] = dict(workers=2, cpu=2, memory="2g", heartbeat_interval=0.2, store_dir=store_dir)
    options.update(kw)
    cluster = LocalCluster(**options)
    async with in_own_task(cluster) as client:
        yield Secured(cluster, client)
