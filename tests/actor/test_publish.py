"""``fluster.bus.publish.Publisher`` against a real nats-server: direct writes keep every message, in order."""

from __future__ import annotations

import asyncio

import anyio
import nats
import pytest

from fluster.bus.publish import Publisher


async def _collect(nc: nats.NATS, subject: str, count: int) -> tuple[asyncio.Future[None], list[bytes]]:
    received: list[bytes] = []
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def on_msg(msg: nats.aio.msg.Msg) -> None:
        received.append(msg.data)
        if len(received) == count and not done.done():
            done.set_result(None)

    await nc.subscribe(subject, cb=on_msg)
    await nc.flush()
    return done, received


async def test_direct_and_buffered_publishes_arrive_in_order(nats_url: str, namespace: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        subject = f"{namespace}.publish"
        done, received = await _collect(nc, subject, 300)
        publisher = Publisher(nc)
        sent = []
        for burst in range(30):
            await nc.publish(subject, b"plain-%d" % burst)  # left pending for the flusher
            for i in range(9):
                data = b"%d-%d" % (burst, i)
                sent.append(data)
                await publisher.publish(subject, data)
            await asyncio.sleep(0)  # a new loop iteration: the next burst starts with a direct write
        with anyio.fail_after(10):
            await done
        assert [d for d in received if not d.startswith(b"plain")] == sent
        plain = [d for d in received if d.startswith(b"plain")]
        assert plain == [b"plain-%d" % burst for burst in range(30)]
        # each plain message was pending when its burst's direct write came, so it went out first
        assert [received.index(b"plain-%d" % burst) for burst in range(30)] == [10 * b for b in range(30)]
    finally:
        await nc.close()


async def test_first_publish_of_an_iteration_is_written_at_once_and_the_rest_are_buffered(
    nats_url: str, namespace: str
) -> None:
    nc = await nats.connect(nats_url)
    try:
        publisher = Publisher(nc)
        assert publisher.publish_now(f"{namespace}.a", b"one")
        assert nc.pending_data_size == 0  # on the socket, not in nats-py's buffer
        assert not publisher.publish_now(f"{namespace}.a", b"two")  # same iteration: the caller buffers
        await asyncio.sleep(0)
        assert publisher.publish_now(f"{namespace}.a", b"three")
    finally:
        await nc.close()


async def test_publisher_declines_what_nc_publish_must_handle(nats_url: str, namespace: str) -> None:
    nc = await nats.connect(nats_url)
    publisher = Publisher(nc)
    assert not publisher.publish_now(f"{namespace}.bad subject", b"x")
    assert not publisher.publish_now(f"{namespace}.ok", b"x" * (nc.max_payload + 1))
    await nc.close()
    assert not publisher.publish_now(f"{namespace}.ok", b"x")
    with pytest.raises(nats.errors.ConnectionClosedError):
        await publisher.publish(f"{namespace}.ok", b"x")
