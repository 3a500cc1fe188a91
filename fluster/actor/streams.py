"""Streamed results on the serving side (``Streams``: the generators one server drives, by stream id) and
the calling side (``pull``). The wire is ``fluster.protocol.streams``.

A sync generator runs in a thread of its own (its body may block), handing each item's outcome to the
server's event loop through a queue bounded by the window; an async generator runs as a task on the loop.
Items are pickled where they are produced, so a value that cannot be pickled fails the stream there, with
its type named, instead of the reply. A pull drains what is ready, up to ``want`` items and about one
message's worth of bytes: a larger item goes alone, and the actor layer sends it through the value store
like any large reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Generator
from typing import TYPE_CHECKING, Any

from fluster.protocol.streams import (
    MAX_STREAM_ID,
    PULL_WAIT_S,
    STREAM_CLOSE,
    STREAM_IDLE_S,
    STREAM_NEXT,
    STREAM_WINDOW,
    StreamHandle,
    decode_chunk,
    encode_chunk,
)
from fluster.protocol.tasks import Encoded
from fluster.protocol.values import Outcome, failure, ok

if TYPE_CHECKING:
    from fluster.actor.resolver import ClusterResolver

log = logging.getLogger(__name__)

PUT_POLL_S = 1.0  # how often a producer waiting for room checks that its stream is still wanted
CHUNK_BYTES = 256 * 1024  # a pull answers about this much at most (a larger item goes alone)


def is_stream(value: Any) -> bool:
    return inspect.isgenerator(value) or inspect.isasyncgen(value)


class _Stream:
    """Produced items not yet pulled. The producer appends (waiting while ``window`` are there), a pull
    takes; the one cross-thread wake-up is for a pull that waits, not one per item: handing each item to
    the loop on its own (``run_coroutine_threadsafe`` per item) streamed ~4,600 items/s here, below Ray."""

    __slots__ = ("items", "ended", "closed", "pulled", "task", "cond", "waiter", "room", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.items: deque[Outcome] = deque()
        self.ended = False  # the producer has put its last item
        self.closed = False  # given up: the producer stops
        self.pulled = time.monotonic()
        self.task: asyncio.Task[None] | None = None
        self.cond = threading.Condition()
        self.waiter: asyncio.Event | None = None  # a pull waiting for items (on the loop)
        self.room: asyncio.Event | None = None  # an async producer waiting for room
        self._loop = loop

    def idle(self, now: float) -> bool:
        return now - self.pulled > STREAM_IDLE_S

    def put(self, outcome: Outcome | None, window: int, on_loop: bool) -> bool:
        """Append an item (None: the end), waiting for room in a thread; False when given up."""
        with self.cond:
            while not on_loop and len(self.items) >= window and not self.closed:
                if not self.cond.wait(PUT_POLL_S) and self.idle(time.monotonic()):
                    log.info("closing a stream nobody pulled for %ss", STREAM_IDLE_S)
                    self.closed = True
            if self.closed:
                return False
            if outcome is None:
                self.ended = True
            else:
                self.items.append(outcome)
            waiter, self.waiter = self.waiter, None
        if waiter is not None:
            if on_loop:
                waiter.set()
            else:
                with contextlib.suppress(RuntimeError):  # the loop has stopped
                    self._loop.call_soon_threadsafe(waiter.set)
        return True

    def take(self, want: int) -> tuple[list[Outcome], bool]:
        """What is there, up to ``want`` items and about ``CHUNK_BYTES``; whether that is the end."""
        taken: list[Outcome] = []
        size = 0
        with self.cond:
            while self.items and len(taken) < want and (not taken or size + len(self.items[0].data) <= CHUNK_BYTES):
                item = self.items.popleft()
                taken.append(item)
                size += len(item.data)
            ended = self.ended and not self.items
            self.cond.notify()
            room, self.room = self.room, None
        if room is not None:
            room.set()
        return taken, ended

    def wait_for_items(self) -> asyncio.Event | None:
        """An event set when items (or the end) come; None when there are some already."""
        with self.cond:
            if self.items or self.ended:
                return None
            self.waiter = asyncio.Event()
            return self.waiter


class Streams:
    """The generators one server streams; ``open`` from any thread, the rest on the server's loop."""

    def __init__(self, window: int = STREAM_WINDOW) -> None:
        self._window = window
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def open(self, gen: Generator[Any, Any, Any] | AsyncGenerator[Any, Any], subject: str) -> StreamHandle:
        """Start driving ``gen``; the handle a caller pulls its items with."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("this server is not serving: it cannot stream a generator")
        stream_id = uuid.uuid4().hex
        stream = _Stream(loop)
        now = time.monotonic()
        with self._lock:
            for key, old in list(self._streams.items()):  # streams whose caller went away (amortized: per open)
                if old.idle(now):
                    self._drop(key, old)
            self._streams[stream_id] = stream
        if inspect.isasyncgen(gen):
            loop.call_soon_threadsafe(self._start_async, stream, gen)
        else:
            thread = threading.Thread(target=self._produce, args=(stream, gen), daemon=True, name="stream")
            thread.start()
        return StreamHandle(subject, stream_id)

    async def next(self, stream_id: str, want: int) -> Encoded:
        """A chunk (``fluster.protocol.streams``): up to ``want`` items, waiting up to ``PULL_WAIT_S`` for
        the first, and whether the stream has ended."""
        if not isinstance(stream_id, str) or len(stream_id) > MAX_STREAM_ID or not isinstance(want, int):
            raise TypeError(f"{STREAM_NEXT}(stream_id: str, want: int)")
        stream = self._streams.get(stream_id)
        if stream is None:
            raise LookupError(f"no stream {stream_id!r} here: it ended, or went unread for {STREAM_IDLE_S:g}s")
        stream.pulled = time.monotonic()
        waiter = stream.wait_for_items()
        if waiter is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.wait(), PULL_WAIT_S)
        items, ended = stream.take(max(1, want))
        if ended:
            with self._lock:
                self._streams.pop(stream_id, None)
        stream.pulled = time.monotonic()
        return Encoded(encode_chunk(items, ended))

    def close(self, stream_id: str) -> bool:
        """Give a stream up (its generator is closed); False when there is no such stream."""
        with self._lock:
            stream = self._streams.get(stream_id)
            if stream is None:
                return False
            self._drop(stream_id, stream)
        return True

    def close_all(self) -> None:
        with self._lock:
            for key, stream in list(self._streams.items()):
                self._drop(key, stream)

    def _drop(self, key: str, stream: _Stream) -> None:
        self._streams.pop(key, None)
        with stream.cond:
            stream.closed = True
            stream.cond.notify_all()
        if stream.task is not None and self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(stream.task.cancel)

    # -- producing -------------------------------------------------------------------------------------

    def _produce(self, stream: _Stream, gen: Generator[Any, Any, Any]) -> None:
        """Drive a sync generator in this thread; each item waits for room in the window."""
        try:
            for item in gen:
                if not stream.put(_outcome(item), self._window, on_loop=False):
                    gen.close()  # given up: its finally clauses run here
                    return
        except Exception as exc:
            stream.put(failure(exc), self._window, on_loop=False)
        stream.put(None, self._window, on_loop=False)

    def _start_async(self, stream: _Stream, gen: AsyncGenerator[Any, Any]) -> None:
        stream.task = asyncio.get_running_loop().create_task(self._produce_async(stream, gen))

    async def _produce_async(self, stream: _Stream, gen: AsyncGenerator[Any, Any]) -> None:
        try:
            async for item in gen:
                while len(stream.items) >= self._window and not stream.closed:
                    room = stream.room = asyncio.Event()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(room.wait(), PUT_POLL_S)
                    if stream.idle(time.monotonic()):
                        stream.closed = True
                if not stream.put(_outcome(item), self._window, on_loop=True):
                    await gen.aclose()
                    return
        except asyncio.CancelledError:
            await gen.aclose()
            raise
        except Exception as exc:
            stream.put(failure(exc), self._window, on_loop=True)
        stream.put(None, self._window, on_loop=True)


def _outcome(item: Any) -> Outcome:
    try:
        return ok(item)
    except Exception as exc:
        return failure(TypeError(f"a streamed item of type {type(item).__name__} cannot be pickled: {exc}"))


async def pull(resolver: ClusterResolver, handle: StreamHandle, want: int) -> tuple[list[Outcome], bool]:
    """The next items of a stream (see ``Streams.next``), from the server that drives it.

    Raises:
        ActorNotFound / ActorCallTimeout: that server is gone (its items with it).
    """
    chunk = await resolver.call(
        handle.subject, "stream", STREAM_NEXT, (handle.stream_id, want), {}, PULL_WAIT_S + 30.0, raw=True
    )
    return decode_chunk(chunk)


async def give_up(resolver: ClusterResolver, handle: StreamHandle) -> None:
    """Tell the server the rest of the stream is not wanted (best effort: else it closes it when idle)."""
    try:
        await resolver.call(handle.subject, "stream", STREAM_CLOSE, (handle.stream_id,), {}, 5.0)
    except Exception as exc:
        log.debug("cannot close stream %s: %r", handle.stream_id, exc)
