"""Pools: balancing over members, broadcast, waiting for members, and endpoints leaving."""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter
from contextlib import AsyncExitStack, aclosing
from pathlib import Path

import anyio
import pytest
from actors_for_tests import Boom, Named

from fluster.actor import (
    ActorNameTaken,
    ActorNotFound,
    ActorPool,
    ActorServer,
    ClusterResolver,
    EndpointRecord,
    registry,
)
from fluster.bus.kv import watch_model
from fluster.client.cluster import ClusterClient
from fluster.environ import job_env_vars
from fluster.errors import FlusterTimeout

HERE = Path(__file__).parent


async def test_pool_of_three_uses_every_member(nats_url: str, namespace: str, resolver: ClusterResolver):
    async with AsyncExitStack() as stack:
        for i in range(3):
            member = await stack.enter_async_context(ClusterClient.connect(nats_url, namespace))
            server = ActorServer(member)
            server.register("svc", Named(f"m{i}"))
            await stack.enter_async_context(server)
        pool = await resolver.lookup("svc")
        assert pool.size == 3
        seen = Counter([await pool.call().who() for _ in range(60)])
        assert set(seen) == {"m0", "m1", "m2"}, seen


async def test_broadcast_gives_one_result_per_member_including_errors(
    nats_url: str, namespace: str, resolver: ClusterResolver
):
    async with AsyncExitStack() as stack:
        for i, fail in enumerate([False, False, True]):
            member = await stack.enter_async_context(ClusterClient.connect(nats_url, namespace))
            server = ActorServer(member)
            server.register("svc", Named(f"m{i}", fail=fail))
            await stack.enter_async_context(server)
        pool = await resolver.lookup("svc")
        result = await pool.broadcast().who()
        assert len(result) == 3
        outcomes = await result.wait_all()
        assert sorted(r.value for r in outcomes if r.ok) == ["m0", "m1"]
        errors = [r.error for r in outcomes if not r.ok]
        assert len(errors) == 1 and isinstance(errors[0], Boom)
        assert {r.endpoint.endpoint_id for r in outcomes} == {e.endpoint_id for e in pool.endpoints}
        with pytest.raises(Boom):
            next(r for r in outcomes if not r.ok).result()

        first = await (await pool.broadcast().who()).wait_any()
        assert first.endpoint.endpoint_id in {e.endpoint_id for e in pool.endpoints}
        streamed = [r async for r in (await pool.broadcast().who()).as_completed()]
        assert len(streamed) == 3


async def test_broadcast_to_no_members_is_empty(resolver: ClusterResolver):
    pool = await resolver.lookup("nobody")
    result = await pool.broadcast().who()
    assert await result.wait_all() == []
    with pytest.raises(ActorNotFound):
        await result.wait_any()


async def test_wait_for_size_wakes_when_servers_appear(nats_url: str, namespace: str, resolver: ClusterResolver):
    pool = await resolver.lookup("svc")
    assert pool.size == 0
    async with anyio.create_task_group() as tg, AsyncExitStack() as stack:
        woke = anyio.Event()

        async def waiter() -> None:
            await pool.wait_for_size(2, timeout=10)
            woke.set()

        tg.start_soon(waiter)
        for i in range(2):
            assert not woke.is_set()
            member = await stack.enter_async_context(ClusterClient.connect(nats_url, namespace))
            server = ActorServer(member)
            server.register("svc", Named(f"m{i}"))
            await stack.enter_async_context(server)
        with anyio.fail_after(5):
            await woke.wait()
        assert pool.size == 2


async def test_wait_for_size_times_out_cleanly(resolver: ClusterResolver):
    pool = await resolver.lookup("svc")
    with anyio.fail_after(5), pytest.raises(FlusterTimeout, match="'svc' has 0 endpoint"):
        await pool.wait_for_size(1, timeout=0.3)


async def test_endpoint_gone_after_server_stops(server_client: ClusterClient, resolver: ClusterResolver):
    server = ActorServer(server_client)
    server.register("svc", Named("m0"))
    async with server:
        assert (await resolver.lookup("svc")).size == 1
    pool = await resolver.lookup("svc")
    assert pool.size == 0
    with pytest.raises(ActorNotFound):
        await pool.call().who()


SERVE_SCRIPT = """
import sys, anyio
sys.path.insert(0, {here!r})
from actors_for_tests import Named
from fluster.actor import ActorServer
from fluster.client.cluster import ClusterClient

async def main():
    async with ClusterClient.connect({url!r}, {ns!r}) as client:
        server = ActorServer(client)
        server.register("svc", Named("child"), exclusive={exclusive})
        await server.serve()

anyio.run(main)
"""


async def test_endpoint_of_a_job_expires_after_sigkill_of_its_process(
    nats_url: str, namespace: str, resolver: ClusterResolver
):
    script = SERVE_SCRIPT.format(here=str(HERE), url=nats_url, ns=namespace, exclusive=False)
    # Run it as a worker runs a job, so the endpoint records its job as its owner.
    env = dict(os.environ, **job_env_vars(nats_url, namespace, "job-7", 0, "worker-1"))
    proc = await anyio.open_process([sys.executable, "-c", script], stdout=None, stderr=None, env=env)
    try:
        pool = await resolver.lookup("svc")
        (endpoint,) = await pool.wait_for_size(1, timeout=20)
        assert (endpoint.job_id, endpoint.worker_id) == ("job-7", "worker-1")
        assert await pool.call().who() == "child"
        proc.send_signal(signal.SIGKILL)
        with anyio.fail_after(5):
            await proc.wait()
        with anyio.fail_after(15):  # the bucket TTL (6 s) plus the server's expiry scan
            await _until_no_endpoints(pool)
        with pytest.raises(ActorNotFound):
            await pool.call().who()
    finally:
        if proc.returncode is None:
            proc.kill()
        with anyio.move_on_after(5, shield=True):
            await proc.wait()
        await proc.aclose()


async def test_exclusive_name_is_free_again_after_its_holder_is_sigkilled(
    nats_url: str, namespace: str, server_client: ClusterClient, resolver: ClusterResolver
):
    script = SERVE_SCRIPT.format(here=str(HERE), url=nats_url, ns=namespace, exclusive=True)
    proc = await anyio.open_process([sys.executable, "-c", script], stdout=None, stderr=None)
    try:
        pool = await resolver.lookup("svc")
        await pool.wait_for_size(1, timeout=20)
        taken = ActorServer(server_client)
        taken.register("svc", Named("second"), exclusive=True)
        with pytest.raises(ActorNameTaken):
            async with taken:
                pass
        proc.send_signal(signal.SIGKILL)
        with anyio.fail_after(15):  # the claim key expires by the bucket TTL, like the endpoint
            async for holder in watch_model(server_client.assets.endpoints, "svc", EndpointRecord):
                if holder is None:
                    break
        again = ActorServer(server_client)
        again.register("svc", Named("second"), exclusive=True)
        async with again:
            assert await (await resolver.lookup("svc")).call().who() == "second"
    finally:
        if proc.returncode is None:
            proc.kill()
        with anyio.move_on_after(5, shield=True):
            await proc.wait()
        await proc.aclose()


async def _until_no_endpoints(pool: ActorPool) -> None:
    changes = registry.watch(pool.resolver.client.assets.endpoints, pool.name)
    async with aclosing(changes):
        async for current in changes:
            if not current:
                return
