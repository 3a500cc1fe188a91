"""Serving behaviour: concurrency limits, payloads of any size, bad input, exclusive names."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest
from actors_for_tests import Calculator, Named, Tracker

from fluster.actor import ActorNameTaken, ActorServer, ClusterResolver
from fluster.client.cluster import ClusterClient
from fluster.errors import ProtocolError, from_wire
from fluster.local.server import NatsServer
from fluster.protocol.calls import decode_reply
from fluster.protocol.codec import decode
from fluster.protocol.messages import ErrorInfo
from fluster.protocol.subjects import actor_transfer_stream


async def _run_concurrently(n: int, call) -> list[int]:  # type: ignore[no-untyped-def]
    results: list[int] = []

    async def one() -> None:
        results.append(await call())

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
    return results


@pytest.mark.parametrize("method", ["work", "awork"])
async def test_calls_are_serial_by_default(server_client: ClusterClient, resolver: ClusterResolver, method: str):
    tracker = Tracker()
    server = ActorServer(server_client)
    server.register("t", tracker)
    async with server:
        pool = await resolver.lookup("t")
        await _run_concurrently(6, lambda: getattr(pool.call(), method)(0.05))
    assert tracker.peak == 1


@pytest.mark.parametrize("method", ["work", "awork"])
async def test_max_concurrency_runs_that_many_at_once(
    server_client: ClusterClient, resolver: ClusterResolver, method: str
):
    tracker = Tracker()
    server = ActorServer(server_client)
    server.register("t", tracker, max_concurrency=4)
    async with server:
        pool = await resolver.lookup("t")
        await _run_concurrently(12, lambda: getattr(pool.call(), method)(0.2))
    assert tracker.peak == 4


@pytest.fixture(scope="module")
def small_nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with NATS's default 1 MiB max_payload, where a 1 MiB argument cannot travel inline."""
    with NatsServer(store_dir=tmp_path_factory.mktemp("js1m"), max_payload=1024 * 1024) as server:
        yield server.url


@pytest.mark.parametrize(("size", "server_kind"), [(1024 * 1024 + 17, "small"), (9 * 1024 * 1024, "default")])
async def test_large_arguments_and_results_travel_through_the_object_store(
    request: pytest.FixtureRequest, namespace: str, size: int, server_kind: str
):
    url = request.getfixturevalue("small_nats_url" if server_kind == "small" else "nats_url")
    async with (
        ClusterClient.connect(url, namespace) as server_client,
        ClusterClient.connect(url, namespace) as client,
    ):
        await _large_round_trips(server_client, ClusterResolver(client), size)


async def _large_round_trips(server_client: ClusterClient, resolver: ClusterResolver, size: int) -> None:
    server = ActorServer(server_client)
    server.register("calc", Calculator())
    data = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    async with server:
        pool = await resolver.lookup("calc")
        assert await pool.call().size(data) == size
        assert await pool.call().make(size) == b"x" * size
        assert await pool.call().echo(data) == data
    # Every transfer is purged once read (the purge is asynchronous, so wait for it).
    stream = actor_transfer_stream(server_client.subjects)
    with anyio.fail_after(5):
        # JetStream has no event for "purged": poll the stream state under the timeout.
        while (await server_client.js.stream_info(stream)).state.messages:
            await anyio.sleep(0.05)


@pytest.mark.parametrize("garbage", [b"", b"\xff\xfe not msgpack", b"\x93\x01\x02\x03", b"\x93\xa3add\xc4\x03abc\xc0"])
async def test_garbage_on_actor_subject_gets_error_reply_and_server_keeps_serving(
    server_client: ClusterClient, client: ClusterClient, resolver: ClusterResolver, garbage: bytes
):
    server = ActorServer(server_client)
    server.register("calc", Calculator())
    async with server:
        reply = await client.nc.request(client.subjects.actor("calc"), garbage, timeout=5)
        status, data, _ = decode_reply(reply.data)
        error = from_wire(decode(data, ErrorInfo))
        assert status == 1
        assert isinstance(error, ProtocolError | Exception)
        await client.nc.publish(client.subjects.actor("calc"), garbage)  # and without a reply subject
        assert await (await resolver.lookup("calc")).call().add(1, 2) == 3


async def test_exclusive_registration_fails_while_a_live_endpoint_holds_the_name(
    nats_url: str, namespace: str, server_client: ClusterClient, resolver: ClusterResolver
):
    first = ActorServer(server_client)
    first.register("solo", Named("first"), exclusive=True)
    async with first, ClusterClient.connect(nats_url, namespace) as other:
        second = ActorServer(other)
        second.register("solo", Named("second"), exclusive=True)
        with pytest.raises(ActorNameTaken, match="'solo'"):
            async with second:
                pass
        shared = ActorServer(other)
        shared.register("solo", Named("shared"))  # a non-exclusive member cannot join an exclusive name
        with pytest.raises(ActorNameTaken, match="exclusively"):
            async with shared:
                pass
        pool = await resolver.lookup("solo")
        assert [e.endpoint_id for e in pool.endpoints] == [first.endpoints[0].endpoint_id]
    # once the holder stops, the name is free again
    again = ActorServer(server_client)
    again.register("solo", Named("again"), exclusive=True)
    async with again:
        assert await (await resolver.lookup("solo")).call().who() == "again"


async def test_exclusive_registration_fails_when_name_already_served(
    server_client: ClusterClient, client: ClusterClient
):
    plain = ActorServer(server_client)
    plain.register("svc", Named("plain"))
    async with plain:
        exclusive = ActorServer(client)
        exclusive.register("svc", Named("solo"), exclusive=True)
        with pytest.raises(ActorNameTaken, match="already served"):
            async with exclusive:
                pass
