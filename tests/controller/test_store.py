"""The controller's pipelined KV writer against a real nats-server: per-key order, coalescing, durability
futures, lazy writes, values encoded when sent, a lost acknowledgement, the lease fence, and a bucket
deleted under it."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from fluster.bus.assets import ensure_assets
from fluster.bus.connection import connect
from fluster.controller import store
from fluster.controller.store import KvWriter
from fluster.errors import LeadershipLost
from fluster.protocol.subjects import Subjects


@pytest.fixture
async def assets(nats_url: str, namespace: str):  # type: ignore[no-untyped-def]
    nc = await connect(nats_url, "store-test")
    try:
        yield nc, await ensure_assets(nc.jetstream(), Subjects(namespace))
    finally:
        await nc.close()


async def _run(writer: KvWriter):  # type: ignore[no-untyped-def]
    task = asyncio.ensure_future(writer.run())
    await asyncio.sleep(0)
    return task


async def test_many_writes_land_in_order_per_key_and_each_future_completes(assets, namespace: str) -> None:  # type: ignore[no-untyped-def]
    nc, a = assets
    writer = KvWriter(nc, Subjects(namespace).jobs_bucket, lambda: True, a.repair)
    task = await _run(writer)
    try:
        futures = [writer.put(f"k{i % 50}", str(i).encode()) for i in range(5000)]
        with anyio.fail_after(60):
            await asyncio.gather(*futures)
        for k in range(50):
            assert (await a.jobs.get(f"k{k}")).value == str(4950 + k).encode()  # the newest value of each key
        lazy = writer.put_lazily("lazy", b"1")
        assert lazy is None
        with anyio.fail_after(10):
            while True:
                try:
                    if (await a.jobs.get("lazy")).value == b"1":
                        break
                except Exception:
                    pass
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_nothing_is_sent_once_the_lease_lapses(assets, namespace: str) -> None:  # type: ignore[no-untyped-def]
    nc, a = assets
    holding = [True]
    writer = KvWriter(nc, Subjects(namespace).jobs_bucket, lambda: holding[0], a.repair)
    task = await _run(writer)
    await writer.put("before", b"1")
    holding[0] = False
    late = writer.put("after", b"2")
    with pytest.raises(LeadershipLost):
        await late
    with pytest.raises(LeadershipLost):
        await task
    with pytest.raises(Exception):  # noqa: B017 - the key was never written
        await a.jobs.get("after")


async def test_a_deleted_bucket_is_recreated_and_the_write_lands(assets, namespace: str) -> None:  # type: ignore[no-untyped-def]
    nc, a = assets
    subjects = Subjects(namespace)
    writer = KvWriter(nc, subjects.jobs_bucket, lambda: True, a.repair)
    task = await _run(writer)
    try:
        await writer.put("k", b"1")
        await nc.jetstream().delete_key_value(subjects.jobs_bucket)
        with anyio.fail_after(30):
            await writer.put("k", b"2")
        assert (await a.jobs.get("k")).value == b"2"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_value_is_encoded_once_when_sent_and_never_when_superseded(assets, namespace: str) -> None:  # type: ignore[no-untyped-def]
    nc, a = assets
    writer = KvWriter(nc, Subjects(namespace).jobs_bucket, lambda: True, a.repair)
    encoded: list[str] = []

    def value(text: str):  # type: ignore[no-untyped-def]
        return lambda: encoded.append(text) or text.encode()

    writer.put_lazily("k", value("started"))  # superseded before it is sent
    done = writer.put("k", value("ended"))
    task = await _run(writer)
    try:
        with anyio.fail_after(30):
            await done
        assert encoded == ["ended"] and (await a.jobs.get("k")).value == b"ended"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_each_lazy_value_waits_its_own_while(assets, namespace: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A key made lazy late in another key's wait is not sent with it: it waits its own ``LAZY_S``, so the
    change that follows it (a short job's end) still supersedes it."""
    monkeypatch.setattr(store, "LAZY_S", 1.0)
    nc, a = assets
    writer = KvWriter(nc, Subjects(namespace).jobs_bucket, lambda: True, a.repair)
    encoded: list[str] = []

    def value(text: str):  # type: ignore[no-untyped-def]
        return lambda: encoded.append(text) or text.encode()

    task = await _run(writer)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        writer.put_lazily("a", value("a started"))
        with anyio.fail_after(10):
            while loop.time() < started + 0.8:  # "b" starts 0.8 s into a's wait
                await asyncio.sleep(0.01)
        writer.put_lazily("b", value("b started"))
        with anyio.fail_after(10):
            while "a started" not in encoded:  # a's wait is over: it is sent, and b is not
                await asyncio.sleep(0.01)
        done = writer.put("b", value("b ended"))
        with anyio.fail_after(30):
            await done
        assert encoded == ["a started", "b ended"]
        assert (await a.jobs.get("a")).value == b"a started" and (await a.jobs.get("b")).value == b"b ended"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_write_whose_ack_is_lost_is_sent_again(nats_url: str, namespace: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(store, "ACK_TIMEOUT_S", 0.4)
    nc = await connect(nats_url, "store-test")
    seen: list[bytes] = []

    async def flaky_stream(msg) -> None:  # type: ignore[no-untyped-def]
        seen.append(msg.data)  # a stand-in for JetStream that loses its first acknowledgement
        if len(seen) > 1:
            await nc.publish(msg.reply, b'{"stream":"s","seq":1}')

    bucket = f"lossy{namespace}"
    sub = await nc.subscribe(f"$KV.{bucket}.>", cb=flaky_stream)
    writer = KvWriter(nc, bucket, lambda: True, lambda: asyncio.sleep(0))
    task = await _run(writer)
    try:
        with anyio.fail_after(30):
            await writer.put("k", b"v")
        assert seen == [b"v", b"v"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sub.unsubscribe()
        await nc.close()
