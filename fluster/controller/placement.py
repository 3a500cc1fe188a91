"""Incremental FIFO placement over a ``Book``: each pass places pending jobs, in submission order across
shapes, on workers they fit (``scheduler.fits``), skipping what fits nowhere (a big job never blocks small ones).

Cost: a pass is O(pending shapes + workers whose headroom changed + jobs placed), amortized, not O(all jobs ×
all workers). Jobs of one shape fit the same workers, so each shape keeps a memo of the workers that might
still fit it (``candidates``). A worker that does not fit is dropped from the memo when it is looked at, and
comes back only when its headroom grows (a job released, a registration: ``Book.freed``) or its dispatch
backoff ends. Every drop is paid for by an earlier insertion, so the work of finding workers is bounded by the
changes to capacity. A shape whose memo ran dry is blocked: later jobs of that shape cost nothing until a
worker is freed. Memos are kept for ``MEMO_SHAPES`` recently used shapes, so a shape whose queue empties and
refills (the usual case under a steady stream of submits) does not rebuild its memo (O(workers)) each time.

Pure: the caller passes the times and commits each placement to the book before the next one is chosen.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterator

from fluster.controller.book import Book
from fluster.controller.scheduler import JobDemand, Shape, fits

MEMO_SHAPES = 64


class Placer:
    def __init__(self) -> None:
        self.candidates: OrderedDict[Shape, dict[str, None]] = OrderedDict()
        self.blocked: set[Shape] = set()
        self._unhealthy: list[tuple[float, str]] = []  # (until, worker id): workers to look at again then
        self._backing_off: dict[str, float] = {}  # worker id -> the until it is in the heap with

    def place(self, book: Book, now: float) -> Iterator[tuple[str, str]]:
        """Yield ``(job id, worker id)`` for the jobs to start now, oldest first; the caller must commit each
        assignment to ``book`` (``book.put``) before asking for the next."""
        self._absorb(book, now)
        heap: list[tuple[int, Shape]] = []
        for shape in book.pending:
            if shape not in self.blocked:
                head = book.head(shape)
                if head is not None:
                    heap.append((head[0], shape))
        heapq.heapify(heap)
        while heap:
            seq, shape = heapq.heappop(heap)
            head = book.head(shape)
            if head is None:
                continue
            if head[0] != seq:  # the queue changed under us: go by its current head
                heapq.heappush(heap, (head[0], shape))
                continue
            job_id = head[1]
            worker_id = self._fit(book, shape, book.demands[job_id], now)
            if worker_id is None:
                self.blocked.add(shape)
                continue
            yield job_id, worker_id
            after = book.head(shape)
            if after is not None:
                heapq.heappush(heap, (after[0], shape))

    def next_wake(self) -> float | None:
        """When a worker's dispatch backoff ends (monotonic seconds), if any is waited for."""
        return self._unhealthy[0][0] if self._unhealthy else None

    def forget_worker(self, worker_id: str) -> None:
        for candidates in self.candidates.values():
            candidates.pop(worker_id, None)

    # -- internals ------------------------------------------------------------------------------------

    def _absorb(self, book: Book, now: float) -> None:
        """Take in what changed since the last pass: new shapes, freed workers, ended backoffs."""
        while self._unhealthy and self._unhealthy[0][0] <= now:
            until, worker_id = heapq.heappop(self._unhealthy)
            if self._backing_off.get(worker_id) == until:
                del self._backing_off[worker_id]
            book.freed.add(worker_id)
        for shape in book.new_shapes:
            if shape not in self.candidates:
                self.candidates[shape] = dict.fromkeys(book.workers)
            self.blocked.discard(shape)
        book.new_shapes.clear()
        if book.freed:
            live = [w for w in book.freed if w in book.workers]
            for shape, candidates in self.candidates.items():
                for worker_id in live:
                    candidates[worker_id] = None
                self.blocked.discard(shape)
            book.freed.clear()
        for shape in book.pending:
            if shape in self.candidates:
                self.candidates.move_to_end(shape)
        while len(self.candidates) > MEMO_SHAPES:
            shape, _ = self.candidates.popitem(last=False)
            if shape in book.pending:  # still in use: keep it (rare: more pending shapes than the cap)
                self.candidates[shape] = _
                break
            self.blocked.discard(shape)

    def _fit(self, book: Book, shape: Shape, demand: JobDemand, now: float) -> str | None:
        candidates = self.candidates.get(shape)
        if candidates is None:
            candidates = self.candidates[shape] = dict.fromkeys(book.workers)
        dropped: list[str] = []
        found: str | None = None
        for worker_id in candidates:
            entry = book.workers.get(worker_id)
            if entry is None:
                dropped.append(worker_id)
            elif entry.unhealthy_until > now:
                dropped.append(worker_id)
                if self._backing_off.get(worker_id, 0.0) < entry.unhealthy_until:  # a backoff only grows
                    self._backing_off[worker_id] = entry.unhealthy_until
                    heapq.heappush(self._unhealthy, (entry.unhealthy_until, worker_id))
            elif fits(demand, entry.supply):
                found = worker_id
                break
            else:
                dropped.append(worker_id)
        for worker_id in dropped:
            del candidates[worker_id]
        return found
