"""``BlockingWorkerPool``: what ``with WorkerPool(fluster.Client(...), config)`` gives: the pool without ``await``.

``submit``, ``map`` and ``status`` are the async pool's own (they never block); the rest forward through
the client's blocking portal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from anyio.from_thread import BlockingPortal

from fluster.pool.config import PoolStatus
from fluster.pool.future import TaskFuture
from fluster.pool.pool import WorkerPool


class BlockingWorkerPool:
    """The blocking face of a running ``WorkerPool``."""

    def __init__(self, portal: BlockingPortal, pool: WorkerPool) -> None:
        self._portal = portal
        self.pool = pool

    @property
    def pool_id(self) -> str:
        return self.pool.pool_id

    @property
    def size(self) -> int:
        return self.pool.size

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> TaskFuture[Any]:
        return self.pool.submit(fn, *args, **kwargs)

    def map(
        self,
        fn: Callable[[Any], Any],
        items: Iterable[Any],
        progress: bool | Callable[[int, int], None] = False,
    ) -> list[TaskFuture[Any]]:
        return self.pool.map(fn, items, progress)

    def status(self) -> PoolStatus:
        return self.pool.status()

    def wait_for_workers(self, n: int | None = None, timeout: float | None = 60.0) -> int:
        return self._portal.call(self.pool.wait_for_workers, n, timeout)

    def shutdown(self, wait: bool = True) -> None:
        self._portal.call(self.pool.shutdown, wait)
