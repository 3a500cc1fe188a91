"""Keeping the garbage collector's cost per event flat as the controller's view grows.

The controller holds a few objects per job for as long as it knows the job (a day by default), so its heap
grows into the millions of objects; CPython's full collections scan all of them, and their cost per job grew
with the number of jobs held (measured: 11 µs a job at 10,000 jobs held, 41 µs at 80,000). Freezing moves the
objects alive now out of the collector's view (``gc.freeze``): what is replaced later is still freed by
reference counting (job records form no cycles). Cyclic garbage caught in a freeze would never be collected,
so every ``FULL_EVERY_S`` everything is unfrozen and collected once, then frozen again.

Young collections were the larger cost: the book's big containers are remade as they empty and refill (a
shape's pending dict and heap, the writers' queues), and a young container with thousands of entries is
traversed by every collection of its generation. In a run of ``bench/scale.py`` at 1,000 workers x 10,000
jobs (the jobs' share of the controller's CPU: 4.4 s), collections of generations 0 and 1 took 0.5 s with
CPython's threshold of 700 and a freeze every 10 s; freezing every second with the young threshold at
``YOUNG_THRESHOLD``, the collector took under 0.1 s of the same run. Nothing is lost by it: the controller
makes almost no cyclic garbage (a full collection after a run of 10,000 jobs found none beyond what start-up
left), and a burst of it still triggers a young collection once ``YOUNG_THRESHOLD`` containers are made
within a second.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Iterator

import anyio

log = logging.getLogger(__name__)

FREEZE_EVERY_S = 1.0
FULL_EVERY_S = 600.0
YOUNG_THRESHOLD = 50_000  # net container allocations that start a young collection (CPython's default: 700)


@contextlib.contextmanager
def tuned() -> Iterator[None]:
    """The collector as a controller that owns its process runs it: the young threshold raised and what is
    alive now frozen; both undone on leaving (``bench/jobs.py`` times the placement pass under it)."""
    threshold = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, *threshold[1:])
    gc.freeze()
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


async def keep_collections_cheap() -> None:
    """Run in the controller's task group for as long as it leads, where the controller has its process to
    itself (``ControllerSettings.owns_process``): it sets the collector's policy for the whole process."""
    last_full = time.monotonic()
    with tuned():
        while True:
            await anyio.sleep(FREEZE_EVERY_S)
            if time.monotonic() - last_full >= FULL_EVERY_S:
                started = time.perf_counter()
                gc.unfreeze()
                collected = gc.collect()
                last_full = time.monotonic()
                log.info(
                    "full collection: %d objects freed in %.0f ms (%d held)",
                    collected,
                    (time.perf_counter() - started) * 1000,
                    gc.get_freeze_count() + len(gc.get_objects(2)),
                )
            gc.freeze()
