"""Incremental FIFO placement over a ``Book``: each pass places pending units (a gang: all of a job's tasks at
once; or one independent task), in submission order across shapes, on workers they fit (``scheduler.fits``),
skipping what fits nowhere (a big job never blocks small ones), and explains what it cannot place.

Cost: a pass is O(pending shapes + workers whose headroom changed + units placed), amortized, not O(all jobs
× all workers). Units of one shape fit the same workers, so each shape keeps a memo of the workers that might
still fit it (``candidates``). A worker that does not fit is dropped from the memo when it is looked at, and
comes back only when its headroom grows (a job released, a registration: ``Book.freed``) or its dispatch
backoff ends. Every drop is paid for by an earlier insertion. A memo starts from, and is refilled only
with, the workers that could ever take the shape (device and constraints: ``suitable``, one set per such
key shared by every shape with it), so a zone-constrained shape never looks at other zones' workers: that
halved the first pass over 10,000 jobs with constraints on 1,000 labelled workers. A shape whose memo ran
dry is blocked: later units of that shape cost nothing until a worker is freed. Memos are kept for
``MEMO_SHAPES`` recently used shapes, so a shape whose queue empties and refills does not rebuild its memo
(O(workers)) each time.

Most looks are at a worker with no room left for the shape (in the gang pass of bench/jobs.py, ~64k of
them: 1,000 workers x 112 shapes, each dropped once by each), so that test is written out in ``_fit``.
Dropping a filled worker from every memo at once instead (a dict pop per memo, when it can take no task of
any memo's shape) was tried and measured: no faster, since a pop costs about what such a look does.

A gang is placed in one decision or not at all: it needs ``gang`` task slots among its candidates (with
``group_by``, all on workers that share one value of that label). A starving unit reserves the workers it
would use (``fluster.controller.reservation``); why a unit waits is said by ``fluster.controller.reasons``,
after the pass and within a budget.

Measured (bench/jobs.py's gang pass: the first pass over 10,000 pending jobs, 10% gangs of 8, on 1,000
labelled workers, each placement committed): a median of ~85 ms (wall and CPU alike), from ~175-186 ms,
in paired runs while the shared 2-core machine was quiet; explaining went from ~40 ms to ~4 ms of it.
About 60% of what is left is committing the ~2,500 placements (``state.assign``, ``Book.put``), not choosing.

Pure: the caller passes the times and commits each placement to the book before the next one is chosen.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterator

from fluster.controller.book import Book, Unit, WorkerEntry
from fluster.controller.reasons import Reasons
from fluster.controller.reservation import Reservation
from fluster.controller.scheduler import (
    JobDemand,
    Shape,
    SuitKey,
    floor_of,
    headroom,
    suit_key,
    suits_key,
)

MEMO_SHAPES = 64


class Placer:
    def __init__(self, reserve_after_ms: int | None = None) -> None:
        # memos hold the workers' entries, which saves a look-up a look (~5% of a pass); a stale one is ``gone``
        self.candidates: OrderedDict[Shape, dict[str, WorkerEntry]] = OrderedDict()
        self.suitable: dict[SuitKey, dict[str, WorkerEntry]] = {}  # the workers that could ever take such shapes
        self.blocked: set[Shape] = set()
        self.why = Reasons()
        self.reserved = Reservation(reserve_after_ms)
        self._unhealthy: list[tuple[float, str]] = []  # (until, worker id): workers to look at again then
        self._backing_off: dict[str, float] = {}  # worker id -> the until it is in the heap with

    def place(self, book: Book, now: float, now_ms: int = 0) -> Iterator[tuple[str, int, list[str]]]:
        """Yield ``(job id, unit, workers)`` for the units to start now, oldest first: a gang's task ``i`` goes
        to ``workers[i]``, an independent task's to ``workers[0]``. The caller must commit each placement to
        ``book`` (``book.put``) before asking for the next."""
        self._absorb(book, now)
        self.reserved.check(book)
        heap: list[tuple[int, int, Shape, str]] = []  # each shape's head: (seq, task, shape, job id)
        for shape in book.pending:
            if shape not in self.blocked:
                head = book.head(shape)
                if head is not None:
                    heap.append((head[0], head[1][1], shape, head[1][0]))
        heapq.heapify(heap)
        while heap:
            seq, task, shape, job_id = heapq.heappop(heap)
            queue = book.queues.get(shape)
            if not queue or queue[0] != (seq, task, job_id) or book.pending[shape].get((job_id, task)) != seq:
                head = book.head(shape)  # the queue changed under us: go by its current head
                if head is not None:
                    heapq.heappush(heap, (head[0], head[1][1], shape, head[1][0]))
                continue
            unit = (job_id, task)
            demand = book.demands[job_id]
            workers = self._fit(book, shape, demand, unit, now)
            if workers is None:
                self.blocked.add(shape)
                self.why.note(shape, unit)
                self.reserved.consider(book, unit, demand, now, now_ms)
                continue
            if self.reserved.unit == unit:
                self.reserved.release(book)
            self.why.forget(shape)
            yield unit[0], unit[1], workers
            after = book.head(shape)  # (it leaves the queue's top clean: the check above needs no second look)
            if after is not None:
                heapq.heappush(heap, (after[0], after[1][1], shape, after[1][0]))

    def explain_blocked(self, book: Book, now: float) -> None:
        """Explain the shapes the passes found blocked, within the budget of ``fluster.controller.reasons``
        (monotonic ``now``)."""
        self.why.explain_due(book, now, self.blocked, lambda shape: self._suitable(book, shape), self.reserved.unit)

    @property
    def reasons(self) -> dict[Shape, str]:
        """Why each blocked shape's units wait."""
        return self.why.reasons

    @property
    def reservation(self) -> Unit | None:
        """The starving unit workers are kept for."""
        return self.reserved.unit

    def next_wake(self) -> float | None:
        """When a worker's dispatch backoff ends (monotonic seconds), if any is waited for."""
        return self._unhealthy[0][0] if self._unhealthy else None

    def forget_worker(self, worker_id: str) -> None:
        for candidates in self.candidates.values():
            candidates.pop(worker_id, None)
        for suitable in self.suitable.values():
            suitable.pop(worker_id, None)

    def reason(self, demand: JobDemand) -> str | None:
        return self.reasons.get(demand.shape)

    # -- internals ------------------------------------------------------------------------------------

    def _absorb(self, book: Book, now: float) -> None:
        """Take in what changed since the last pass: new shapes, freed workers, ended backoffs."""
        while self._unhealthy and self._unhealthy[0][0] <= now:
            until, worker_id = heapq.heappop(self._unhealthy)
            if self._backing_off.get(worker_id) == until:
                del self._backing_off[worker_id]
            book.freed[worker_id] = None
        if book.freed:
            live = [w for w in book.freed if w in book.workers]
            for key, suitable in self.suitable.items():  # (a re-registered worker may bring new labels)
                for worker_id in live:
                    entry = book.workers[worker_id]
                    if suits_key(key, entry.supply):
                        suitable[worker_id] = entry
                    else:
                        suitable.pop(worker_id, None)
            for shape, candidates in self.candidates.items():
                suitable = self.suitable[suit_key(shape)]
                for worker_id in live:
                    if worker_id in suitable:
                        candidates[worker_id] = suitable[worker_id]
                    else:  # re-registered with labels or a device the shape does not take
                        candidates.pop(worker_id, None)
                self.blocked.discard(shape)
            book.freed.clear()
        for shape in book.new_shapes:
            if shape not in self.candidates:
                self.candidates[shape] = dict(self._suitable(book, shape))
            self.blocked.discard(shape)
        book.new_shapes.clear()
        for shape in book.pending:
            if shape in self.candidates:
                self.candidates.move_to_end(shape)
        while len(self.candidates) > MEMO_SHAPES:
            shape, kept = self.candidates.popitem(last=False)
            if shape in book.pending:  # still in use: keep it (rare: more pending shapes than the cap)
                self.candidates[shape] = kept
                break
            self.blocked.discard(shape)
            self.why.forget(shape)
            if all(suit_key(other) != suit_key(shape) for other in self.candidates):
                self.suitable.pop(suit_key(shape), None)

    def _suitable(self, book: Book, shape: Shape) -> dict[str, WorkerEntry]:
        """The workers that could ever take ``shape``: O(workers) the first time its key is seen."""
        key = suit_key(shape)
        found = self.suitable.get(key)
        if found is None:
            found = self.suitable[key] = {w: e for w, e in book.workers.items() if suits_key(key, e.supply)}
        return found

    def _fit(self, book: Book, shape: Shape, demand: JobDemand, unit: Unit, now: float) -> list[str] | None:
        """Workers for the unit's tasks (one each), or None when they cannot all be placed now."""
        candidates = self.candidates.get(shape)
        if candidates is None:
            candidates = self.candidates[shape] = dict(self._suitable(book, shape))
        needed = demand.gang
        cpu, memory, count = floor_of(shape)
        group_by = demand.group_by
        chosen: list[str] = []
        groups: dict[str, list[str]] = {}
        dropped: list[str] = []
        found: list[str] | None = None
        for worker_id, entry in candidates.items():
            if entry.gone:
                dropped.append(worker_id)
                continue
            s = entry.supply
            # ``takes_none`` written out: the loop's one test for most looks (a call costs as much again)
            if (
                s.cpu - s.used_cpu + 1e-9 < cpu
                or s.memory - s.used_memory < memory
                or s.count - s.used_count < count
                or s.used_slots >= s.slots
            ):
                if entry.unhealthy_until > now:
                    self._back_off(worker_id, entry.unhealthy_until)
                if entry.reserved_for is None or entry.reserved_for == unit or entry.unhealthy_until > now:
                    dropped.append(worker_id)
                continue  # a reserved worker is not dropped: the reservation ends
            if entry.unhealthy_until > now:
                dropped.append(worker_id)
                self._back_off(worker_id, entry.unhealthy_until)
                continue
            if entry.reserved_for is not None and entry.reserved_for != unit:
                continue  # kept for an older unit (not dropped: the reservation ends)
            if needed == 1 and group_by is None:  # most units: one task, anywhere
                found = [worker_id]
                break
            room = headroom(demand, s, needed)  # candidates suit the shape
            if group_by is None:
                chosen.extend([worker_id] * min(room, needed - len(chosen)))
                if len(chosen) >= needed:
                    found = chosen
                    break
            else:
                value = entry.info.labels.get(group_by)
                if value is None:
                    dropped.append(worker_id)  # never in any group
                    continue
                group = groups.setdefault(value, [])
                group.extend([worker_id] * min(room, needed - len(group)))
                if len(group) >= needed:
                    found = group
                    break
        for worker_id in dropped:
            del candidates[worker_id]
        return found

    def _back_off(self, worker_id: str, until: float) -> None:
        """Look at ``worker_id`` again when its dispatch backoff ends (``until``)."""
        if self._backing_off.get(worker_id, 0.0) < until:  # a backoff only grows
            self._backing_off[worker_id] = until
            heapq.heappush(self._unhealthy, (until, worker_id))
