"""Deadlines for futures: ``within(future, seconds, error)`` is ``future``'s outcome, or ``error()`` once
``seconds`` pass first (an actor call's timeout, on every backend). One daemon thread serves every deadline
of the process from a heap, so a call with a timeout costs no thread of its own. The call itself is not
stopped: as with Ray's ``get(timeout=)``, the caller stops waiting for it (a late reply is dropped).
"""

from __future__ import annotations

import concurrent.futures
import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from fluster.pool.future import TaskFuture, settle


class _Deadlines:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._changed = threading.Condition()
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def at(self, when: float, fire: Callable[[], None]) -> None:
        with self._changed:
            heapq.heappush(self._heap, (when, next(self._order), fire))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fluster-deadlines", daemon=True)
                self._thread.start()
            self._changed.notify()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._changed.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, fire = heapq.heappop(self._heap)
            fire()


_DEADLINES = _Deadlines()


def within(
    future: concurrent.futures.Future[Any], seconds: float, error: Callable[[], BaseException]
) -> TaskFuture[Any]:
    """A future of ``future``'s outcome, failed with ``error()`` if that has not come ``seconds`` from now."""
    out: TaskFuture[Any] = TaskFuture()

    def copy(done: concurrent.futures.Future[Any]) -> None:
        if done.cancelled():
            out.cancel()
        elif (exc := done.exception()) is not None:
            settle(out, error=exc)
        else:
            settle(out, done.result())

    def expire() -> None:
        if not out.done():
            settle(out, error=error())

    _DEADLINES.at(time.monotonic() + seconds, expire)
    future.add_done_callback(copy)
    return out
