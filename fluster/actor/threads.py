"""Running an actor's sync methods in worker threads, with cheap hand-offs back to the event loop.

``anyio.to_thread.run_sync`` wakes the event loop once per call (a self-pipe write each) and costs ~50 us a
call here. These threads hand their results back in batches: a finishing thread queues its result and
wakes the loop only when no wake-up is already pending, so a burst of calls costs one wake-up, not one each.
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
