"""Chunked bytes on a stream subject: published pipelined (every ack gathered on one inbox, not one round trip
each) and read back by one ordered consumer, joined once. The object store (``blobs``) and the ephemeral value
store (``values``) both move their bytes with these; what the chunks mean is theirs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import anyio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from fluster.errors import FlusterError, FlusterTimeout, NoStream, ObjectLost

STALL_CHECK_S = 1.0  # a read whose chunks pause this long checks that the object still exists


async def publish_chunks(nc: NATS, subject: str, data: bytes, chunk: int, *, timeout: float, what: str) -> int:
    """Publish ``data`` to a stream subject in chunks, pipelined (one reply inbox), and wait for every ack.

    Returns the chunk count.

    Raises:
        FlusterError: the stream rejected a chunk.
        FlusterTimeout: not every chunk was acknowledged within ``timeout``.
    """
    count = (len(data) + chunk - 1) // chunk
    if count == 0:
        return 0
    acked = 0
    failure: list[str] = []
    done = asyncio.Event()

    async def on_ack(msg: Msg) -> None:
        nonlocal acked
        status = (msg.headers or {}).get("Status")
        if status or b'"error"' in msg.data:
            failure.append(f"status {status}" if status else msg.data.decode(errors="replace"))
            done.set()
        acked += 1
        if acked >= count:
            done.set()

    # A callback subscription: the acks are counted by nats-py's task for it while this task publishes.
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=on_ack)
    try:
        view = memoryview(data)
        for i in range(count):
            await nc.publish(subject, bytes(view[i * chunk : (i + 1) * chunk]), reply=inbox)
        with anyio.move_on_after(timeout):
            await done.wait()
    finally:
        await sub.unsubscribe()
    if failure:
        if failure[0] == "status 503":
            raise NoStream(f"{what} does not exist (no stream stores its subject)")
        raise FlusterError(f"{what} rejected a chunk: {failure[0]}")
    if acked < count:
        raise FlusterTimeout(f"{what} acknowledged {acked} of {count} chunks in {timeout:g}s")
    return count


async def read_chunks(
    js: JetStreamContext,
    subject: str,
    count: int,
    size: int,
    *,
    timeout: float,
    what: str,
    still_there: Callable[[], Awaitable[bool]] | None = None,
    first_timeout: float | None = None,
    key: str = "",
) -> bytes:
    """Read ``count`` chunks stored on ``subject`` (an ordered consumer: one stream of deliveries) and join them.
    Whenever chunks pause for a second, ``still_there()`` (if given) is asked whether they can still come.

    Raises:
        ObjectLost: ``still_there()`` said the chunks are gone (the error names ``key``).
        FlusterTimeout: no chunk arrived for ``timeout`` seconds.
        FlusterError: the chunks do not add up to ``size`` bytes.
    """
    parts: list[bytes] = []
    if count:
        sub = await js.subscribe(subject, ordered_consumer=True)
        try:
            waited = 0.0
            while len(parts) < count:
                limit = first_timeout if first_timeout is not None and not parts else timeout
                wait = min(STALL_CHECK_S, limit - waited) if still_there is not None else limit - waited
                try:
                    msg = await sub.next_msg(timeout=wait)
                except TimeoutError as exc:  # nats-py's TimeoutError subclasses the builtin
                    waited += wait
                    if still_there is not None and not await still_there():
                        raise ObjectLost(key, f"{what} was deleted while it was read") from exc
                    if waited >= limit:
                        raise FlusterTimeout(
                            f"{what}: chunk {len(parts) + 1} of {count} did not arrive within {limit:g}s"
                        ) from exc
                    continue
                waited = 0.0
                parts.append(msg.data)
        finally:
            with anyio.move_on_after(5, shield=True):
                await sub.unsubscribe()
    data = b"".join(parts)
    if len(data) != size:
        raise FlusterError(f"{what} is {len(data)} bytes, expected {size}")
    return data
