"""Running sync code off the event loop (actor methods, task batches), and the one rule for when not to.

``ThreadRunner``: ``anyio.to_thread.run_sync`` wakes the event loop once per call (a self-pipe write each)
and costs ~50 us a call here. These threads hand their results back in batches: a finishing thread queues
its result and wakes the loop only when no wake-up is already pending, so a burst of calls costs one
wake-up, not one each.

``FastPath``: code seen to return within ``INLINE_MAX_S`` every time (``INLINE_AFTER`` runs in a row) runs on
the event loop instead, saving two thread hand-offs (~0.1-0.25 ms on a busy machine) per call; code that is
ever slower goes back to threads for good, so the loop (and the heartbeats on it) never stalls for long.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_Job = tuple[Callable[[], Any], asyncio.Future[Any]]

INLINE_AFTER = 5
INLINE_MAX_S = 0.0001
MAX_TRACKED = 10_000  # keys the fast path remembers (functions of a long-lived executor)


class FastPath:
    """Which keys (methods, functions) run inline: those seen fast ``INLINE_AFTER`` times and never slow."""

    def __init__(self) -> None:
        self._fast_runs: dict[Any, int] = {}
        self._slow: set[Any] = set()

    def inline(self, key: Any) -> bool:
        return self._fast_runs.get(key, 0) >= INLINE_AFTER and key not in self._slow

    def never(self, key: Any) -> None:
        """``key`` always runs in a thread (a coroutine function, say)."""
        self._slow.add(key)
        self._fast_runs.pop(key, None)

    def observe(self, key: Any, elapsed_s: float) -> None:
        if key in self._slow:
            return
        if elapsed_s >= INLINE_MAX_S:
            self.never(key)  # once slow, always in a thread: the loop must stay free
        elif len(self._fast_runs) < MAX_TRACKED:
            self._fast_runs[key] = self._fast_runs.get(key, 0) + 1


class ThreadRunner:
    """Up to ``size`` threads running sync callables for one actor; started lazily, stopped by ``close``."""

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._done: deque[tuple[asyncio.Future[Any], bool, Any]] = deque()
        self._lock = threading.Lock()
        self._wake_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn()`` in a thread and return its result (or raise its exception)."""
        loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            start_thread = self._idle == 0 and len(self._threads) < self._size
            if not start_thread:
                self._idle = max(0, self._idle - 1)
        if start_thread:
            thread = threading.Thread(target=self._work, name=f"actor-{self._name}", daemon=True)
            self._threads.append(thread)
            thread.start()
        self._jobs.put((fn, future))
        return await future

    def close(self) -> None:
        """Tell every thread to exit once its current call returns (a running call is not interrupted)."""
        for _ in self._threads:
            self._jobs.put(None)
        self._threads.clear()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, future = job
            try:
                outcome: tuple[asyncio.Future[Any], bool, Any] = (future, True, fn())
            except BaseException as exc:  # handed to the caller, which re-raises it
                outcome = (future, False, exc)
            with self._lock:
                self._done.append(outcome)
                self._idle += 1
                wake = not self._wake_pending
                self._wake_pending = True
            if wake and self._loop is not None:
                try:
                    self._loop.call_soon_threadsafe(self._deliver)
                except RuntimeError:  # the loop has closed: nobody is waiting any more
                    return

    def _deliver(self) -> None:
        with self._lock:
            done = list(self._done)
            self._done.clear()
            self._wake_pending = False
        for future, ok, value in done:
            if future.cancelled():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
