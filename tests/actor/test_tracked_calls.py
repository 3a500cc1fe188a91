"""Tracked calls: a call with an id runs once however often it is sent, a lost reply is fetched by a probe,
and calls dropped by a slow consumer are noticed and sent again (real server, real drops)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter

import anyio
import nats
import pytest

from fluster.actor import ActorServer, ClusterResolver, tracked
from fluster.client.cluster import ClusterClient
from fluster.protocol import calls as wire
from fluster.protocol.values import dumps_args


class Counting:
    """Counts how often each value was handled (a duplicate execution shows up as a count of 2)."""

    def __init__(self) -> None:
        self.seen: Counter[object] = Counter()
        self._lock = threading.Lock()

    def work(self, value: object, seconds: float = 0.0) -> object:
        with self._lock:
            self.seen[value] += 1
        time.sleep(seconds)
        return value


async def test_calls_dropped_by_a_slow_consumer_are_sent_again_and_run_once(
    client: ClusterClient, server_client: ClusterClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fluster.actor.tracked")
    actor = Counting()
    server = ActorServer(server_client)
    server.register("slow-consumer", actor, max_concurrency=1, max_pending_calls=2)
    async with server:
        resolver = ClusterResolver(client, call_timeout=30)
        try:
            pool = await resolver.lookup("slow-consumer")
            await pool.wait_for_size(1, timeout=30)
            subject = client.subjects.actor("slow-consumer")
            with anyio.fail_after(90):
                results = await asyncio.gather(
                    *(
                        tracked.call(resolver, subject, "slow-consumer", "work", (i, 0.05), {}, probe_s=0.5)
                        for i in range(20)
                    )
                )
        finally:
            await resolver.close()
    assert results == list(range(20))
    assert set(actor.seen.values()) == {1}  # every call ran exactly once
    assert "never arrived: sending it again" in caplog.text  # calls were really dropped, and sent again


async def test_a_lost_reply_is_fetched_by_a_probe_and_a_copy_does_not_run_again(
    client: ClusterClient, server_client: ClusterClient, nats_url: str
) -> None:
    actor = Counting()
    server = ActorServer(server_client)
    server.register("forgetful", actor)
    async with server:
        raw = await nats.connect(nats_url)
        try:
            subject = client.subjects.actor("forgetful")
            resolver = ClusterResolver(client, call_timeout=30)
            pool = await resolver.lookup("forgetful")
            await pool.wait_for_size(1, timeout=30)
            args = dumps_args(("once",), {})
            # the reply goes to a subject nobody listens on: lost
            await raw.publish(subject, wire.encode_request("work", args, None, "call-1"), reply="nobody.listens")
            with anyio.fail_after(30):
                while True:
                    probe = await raw.request(subject, wire.encode_request(wire.PROBE, b"", None, "call-1"), timeout=5)
                    if wire.decode_reply(probe.data).status != wire.RUNNING:
                        break
                    await anyio.sleep(0.05)
            assert await resolver.decode(probe) == "once"
            copy = await raw.request(subject, wire.encode_request("work", args, None, "call-1"), timeout=5)
            assert await resolver.decode(copy) == "once"
            unknown = await raw.request(subject, wire.encode_request(wire.PROBE, b"", None, "call-2"), timeout=5)
            assert wire.decode_reply(unknown.data).status == wire.UNKNOWN
            await resolver.close()
        finally:
            await raw.close()
    assert actor.seen["once"] == 1
