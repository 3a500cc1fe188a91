"""Calls, results, errors and context injection against a real nats-server."""

from __future__ import annotations

import traceback

import anyio
import anyio.lowlevel
import pytest
from actors_for_tests import Boom, Calculator, Frontend

from fluster.actor import (
    ActorCallTimeout,
    ActorClient,
    ActorNotFound,
    ActorServer,
    ClusterResolver,
    UnknownActorMethod,
)
from fluster.client.cluster import ClusterClient


async def test_sync_and_async_methods_return_values(server_client: ClusterClient, resolver: ClusterResolver):
    server = ActorServer(server_client)
    server.register("calc", Calculator())
    async with server:
        pool = await resolver.lookup("calc")
        assert pool.size == 1
        assert await pool.call().add(2, b=3) == 5
        assert await pool.call().mul(4, 5) == 20
        assert await pool.call().echo({"k": [1, 2, None]}) == {"k": [1, 2, None]}
        assert await ActorClient(resolver, "calc").add(1, 1) == 2


async def test_sync_methods_can_run_on_the_event_loop(server_client: ClusterClient, resolver: ClusterResolver):
    server = ActorServer(server_client)
    server.register("calc", Calculator(), threaded=False)
    async with server:
        pool = await resolver.lookup("calc")
        assert await pool.call().add(2, 3) == 5
        with pytest.raises(Boom):
            await pool.call().fail("inline")


async def test_exception_type_preserved_with_remote_traceback(server_client: ClusterClient, resolver: ClusterResolver):
    server = ActorServer(server_client)
    server.register("calc", Calculator())
    async with server:
        pool = await resolver.lookup("calc")
        with pytest.raises(Boom, match="bad input") as info:
            await pool.call().fail("bad input")
        remote = info.value.remote_traceback  # type: ignore[attr-defined]
        assert "in fail" in remote and "raise Boom(message)" in remote
        assert "raise Boom(message)" in "".join(traceback.format_exception(info.value))


async def test_unknown_method_names_actor_and_method(server_client: ClusterClient, resolver: ClusterResolver):
    server = ActorServer(server_client)
    server.register("calc", Calculator())
    async with server:
        pool = await resolver.lookup("calc")
        with pytest.raises(UnknownActorMethod, match=r"'calc'.*'nope'"):
            await pool.call().nope()
        with pytest.raises(UnknownActorMethod, match="_private"):  # private methods are not served
            await resolver.call(server_client.subjects.actor("calc"), "calc", "_private", (), {}, 5)


async def test_no_server_gives_actor_not_found_at_once(resolver: ClusterResolver):
    with anyio.fail_after(2):
        with pytest.raises(ActorNotFound, match="ghost"):
            await ActorClient(resolver, "ghost").anything()


async def test_slow_call_times_out_naming_actor_and_method(server_client: ClusterClient, resolver: ClusterResolver):
    server = ActorServer(server_client)
    server.register("calc", Calculator())
    async with server:
        pool = await resolver.lookup("calc")
        with pytest.raises(ActorCallTimeout, match=r"calc\.slow") as info:
            await pool.call(timeout=0.2).slow(0.8)
        assert isinstance(info.value, TimeoutError)


async def test_actor_calls_another_actor_through_its_context(server_client: ClusterClient, resolver: ClusterResolver):
    server = ActorServer(server_client)
    server.register("calc", Calculator())
    frontend_id = server.register("front", Frontend())
    async with server:
        front = await resolver.lookup("front")
        assert await front.call().ask(20, 22) == ("front", 42)
        assert await front.call().whoami(7) == ("front", frontend_id, 7)


async def test_namespaces_isolate_actors_of_the_same_name(nats_url: str, server_client: ClusterClient):
    server = ActorServer(server_client)
    server.register("calc", Calculator())
    async with server, ClusterClient.connect(nats_url, server_client.namespace + "x") as other:
        other_resolver = ClusterResolver(other)
        assert (await other_resolver.lookup("calc")).size == 0
        with pytest.raises(ActorNotFound):
            await ActorClient(other_resolver, "calc").add(1, 2)
        await other_resolver.close()


async def test_send_now_puts_a_call_on_the_wire_without_awaiting(
    server_client: ClusterClient, resolver: ClusterResolver
):
    server = ActorServer(server_client)
    server.register("calc", Calculator())
    async with server:
        subject = resolver.client.subjects.actor("calc")
        await ActorClient(resolver, "calc").add(1, 1)  # the reply subscription exists from here on
        pending = resolver.send_now(subject, "add", (2, 3), {}, None)
        assert pending is not None
        assert resolver.send_now(subject, "add", (4, 5), {}, None) is None  # one direct write per iteration
        big = b"x" * resolver.client.nc.max_payload
        await anyio.lowlevel.checkpoint()
        assert resolver.send_now(subject, "echo", (big,), {}, None) is None  # large arguments take `send`
        assert await resolver.result(pending, "calc", "add", None) == 5
