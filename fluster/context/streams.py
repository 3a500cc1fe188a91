"""``TaskStream``: what a generator task or actor method gives its caller, an iterator of futures, one per
item, in order, as the items are produced (Ray's ``ObjectRefGenerator``).

Each ``next()`` returns a done future (``ctx.get`` it, or ``.result()``); an exception in the generator is
the last future's, after the items before it. Where the items come from is the backend's: pulled from the
server that drives the generator (cluster: ``fluster.actor.streams``, with back-pressure: the generator runs
at most a window of items ahead, plus the chunk being fetched), Ray's own streaming generator, or, in process,
the generator itself (run one item at a time in the consumer's thread).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from fluster.pool.future import settled
from fluster.protocol.streams import STREAM_WINDOW, StreamHandle
from fluster.protocol.values import Outcome, value_of

if TYPE_CHECKING:
    from fluster.actor.resolver import ClusterResolver

Item = tuple[Any, BaseException | None]  # a value, or the generator's exception
Fetch = Callable[[], tuple[list[Item], bool]]  # the next items, and whether the stream has ended


class TaskStream(Iterator[concurrent.futures.Future[Any]]):
    """Iterate for each item's (done) future; ``close()`` gives the rest up. ``timeout`` bounds each wait
    for the next item (``TimeoutError``)."""

    def __init__(self, started: concurrent.futures.Future[Any], open_fetch: Callable[[Any], Fetch]) -> None:
        self._started = started  # the call: its value is what ``open_fetch`` makes a source of items of
        self._open = open_fetch
        self._fetch: Fetch | None = None
        self._items: deque[Item] = deque()
        self._ended = False
        self._lock = threading.Lock()
        self.timeout: float | None = None
        self.close_hook: Callable[[], None] | None = None

    def __iter__(self) -> TaskStream:
        return self

    def __next__(self) -> concurrent.futures.Future[Any]:
        with self._lock:
            while not self._items:
                if self._ended:
                    raise StopIteration
                if self._fetch is None:
                    try:
                        self._fetch = self._open(self._started.result(self.timeout))
                    except BaseException as exc:  # the call itself failed: the stream is that error
                        self._ended = True
                        return settled(None, exc)
                    self.close_hook = getattr(self._fetch, "close", None)
                items, self._ended = self._fetch()
                self._items.extend(items)
            value, error = self._items.popleft()
            return settled(value, error)

    def close(self) -> None:
        with self._lock:
            self._ended = True
            self._items.clear()
            hook, self.close_hook = self.close_hook, None
        if hook is not None:
            hook()

    def __del__(self) -> None:
        if not self._ended and self.close_hook is not None:
            try:
                self.close_hook()
            except Exception:  # interpreter shutdown
                pass


class LocalItems:
    """Items of a generator (sync or async) in this process, one per fetch, run in the caller's thread."""

    def __init__(self, gen: Any) -> None:
        self._gen = gen
        self._loop = asyncio.new_event_loop() if inspect.isasyncgen(gen) else None
        self._done = False

    def __call__(self) -> tuple[list[Item], bool]:
        if self._done:
            return [], True
        if not inspect.isgenerator(self._gen) and self._loop is None:  # not a generator after all: one item
            self._done = True
            return [(self._gen, None)], True
        try:
            if self._loop is not None:
                value = self._loop.run_until_complete(self._gen.__anext__())
            else:
                value = next(self._gen)
        except (StopIteration, StopAsyncIteration):
            self.close()
            return [], True
        except Exception as exc:
            self.close()
            return [(None, exc)], True
        return [(value, None)], False

    def close(self) -> None:
        """Close the generator (its ``finally`` clauses run now)."""
        self._done = True
        if self._loop is not None:
            if not self._loop.is_closed():
                self._loop.run_until_complete(self._gen.aclose())
                self._loop.close()
        elif inspect.isgenerator(self._gen):
            self._gen.close()


class RemoteItems:
    """Items pulled from the server that drives the generator, a window at a time, the next pull started
    as soon as a chunk arrives (so the consumer rarely waits a round trip). A server that is gone ends the
    stream with that error (``ActorNotFound``, ``ActorCallTimeout``) after the items that came."""

    def __init__(self, resolver: ClusterResolver, loop: asyncio.AbstractEventLoop, handle: StreamHandle) -> None:
        self._resolver = resolver
        self._loop = loop
        self._handle = handle
        self._pending: concurrent.futures.Future[tuple[list[Outcome], bool]] | None = None
        self._ended = False

    def _start(self) -> concurrent.futures.Future[tuple[list[Outcome], bool]]:
        from fluster.actor.streams import pull

        return asyncio.run_coroutine_threadsafe(pull(self._resolver, self._handle, STREAM_WINDOW), self._loop)

    def __call__(self) -> tuple[list[Item], bool]:
        running = self._pending or self._start()
        try:
            outcomes, ended = running.result()
        except Exception as exc:
            self._pending, self._ended = None, True
            return [(None, exc)], True
        self._ended = ended
        self._pending = None if ended else self._start()
        items: list[Item] = []
        for outcome in outcomes:
            try:
                items.append((value_of(outcome), None))
            except Exception as exc:
                items.append((None, exc))
        return items, ended

    def close(self) -> None:
        """Tell the server the rest is not wanted (else it closes the stream once idle)."""
        from fluster.actor.streams import give_up

        if not self._ended:
            self._ended = True
            if self._loop.is_closed():
                return  # the context has closed: its server closes the stream once idle
            telling = give_up(self._resolver, self._handle)
            try:
                asyncio.run_coroutine_threadsafe(telling, self._loop)
            except RuntimeError:  # the loop stopped meanwhile
                telling.close()


GENERATOR_FLAGS = inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR


def is_streaming(fn: Any) -> bool:
    """Whether calling ``fn`` gives a generator (sync or async): its call is streamed. Asked once per task:
    a plain function's code flags answer in ~0.1 us; ``inspect.isgeneratorfunction`` and
    ``isasyncgenfunction`` (which unwrap partials and methods) cost ~3 us a task together, 15% of the
    caller's CPU in 20,000 no-op tasks."""
    code = getattr(fn, "__code__", None)
    if code is not None:
        return bool(code.co_flags & GENERATOR_FLAGS)
    target = getattr(fn, "func", fn)  # a functools.partial, a bound method
    return inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target)
