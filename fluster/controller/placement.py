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

A gang is placed in one decision or not at all: it needs ``gang`` task slots among its candidates (with
``group_by``, all on workers that share one value of that label). A unit that has waited ``reserve_after``
and still cannot be placed reserves the workers it would use (oldest such unit first); other units are not
placed there, so a stream of small jobs cannot starve it.

Why a unit waits (``explain``) costs O(suitable workers), so it is not computed in the pass: a pass only
notes the shapes it found blocked, and ``explain_blocked`` explains them (never-explained shapes first), each
at most once per ``EXPLAIN_EVERY_S``, within ``EXPLAIN_LOOKS_PER_S`` looks at a worker per second. Without
that bound, a pass over 10,000 pending jobs of 112 shapes on 1,000 workers took 420 ms, 80% of it
explaining; with it the cost of explaining is at most ~20 ms of CPU a second whatever the fleet's size. A
starving unit that can never fit is likewise looked for reservable workers once per ``EXPLAIN_EVERY_S``.

Pure: the caller passes the times and commits each placement to the book before the next one is chosen.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterator

from fluster.controller import records as st
from fluster.controller.book import Book, Unit, WorkerEntry
from fluster.controller.scheduler import (
    JobDemand,
    Shape,
    SuitKey,
    WorkerSupply,
    headroom,
    how_many,
    suit_key,
    suits,
    suits_key,
)

MEMO_SHAPES = 64
EXPLAIN_EVERY_S = 5.0
EXPLAIN_LOOKS_PER_S = 20_000


class Placer:
    def __init__(self, reserve_after_ms: int | None = None) -> None:
        self.candidates: OrderedDict[Shape, dict[str, None]] = OrderedDict()
        self.suitable: dict[SuitKey, dict[str, None]] = {}  # the workers that could ever take such shapes
        self.blocked: set[Shape] = set()
        self.reasons: dict[Shape, str] = {}  # why a blocked shape's units wait
        self.unexplained: dict[Shape, Unit] = {}  # blocked shapes (their head unit) to explain
        self._explained_at: dict[Shape, float] = {}
        self._window = (float("-inf"), 0)  # (start, looks spent explaining since)
        self._looked_for_reserve: dict[Unit, float] = {}  # starving units with no reservable workers, when
        self.reserve_after_ms = reserve_after_ms
        self.reservation: Unit | None = None  # the starving unit workers are kept for
        self._unhealthy: list[tuple[float, str]] = []  # (until, worker id): workers to look at again then
        self._backing_off: dict[str, float] = {}  # worker id -> the until it is in the heap with

    def place(self, book: Book, now: float, now_ms: int = 0) -> Iterator[tuple[str, int, list[str]]]:
        """Yield ``(job id, unit, workers)`` for the units to start now, oldest first: a gang's task ``i`` goes
        to ``workers[i]``, an independent task's to ``workers[0]``. The caller must commit each placement to
        ``book`` (``book.put``) before asking for the next."""
        self._absorb(book, now)
        self._check_reservation(book)
        heap: list[tuple[int, int, Shape]] = []
        for shape in book.pending:
            if shape not in self.blocked:
                head = book.head(shape)
                if head is not None:
                    heap.append((head[0], head[1][1], shape))
        heapq.heapify(heap)
        while heap:
            seq, _, shape = heapq.heappop(heap)
            head = book.head(shape)
            if head is None:
                continue
            if head[0] != seq:  # the queue changed under us: go by its current head
                heapq.heappush(heap, (head[0], head[1][1], shape))
                continue
            unit = head[1]
            demand = book.demands[unit[0]]
            workers = self._fit(book, shape, demand, unit, now)
            if workers is None:
                self.blocked.add(shape)
                self.unexplained[shape] = unit
                self._maybe_reserve(book, unit, demand, now, now_ms)
                continue
            if self.reservation == unit:
                self._release(book)
            self._forget_reason(shape)
            yield unit[0], unit[1], workers
            after = book.head(shape)
            if after is not None:
                heapq.heappush(heap, (after[0], after[1][1], shape))

    def explain_blocked(self, book: Book, now: float) -> None:
        """Explain blocked shapes (``reasons``): never-explained ones first, each at most once per
        ``EXPLAIN_EVERY_S``, within ``EXPLAIN_LOOKS_PER_S`` (monotonic ``now``)."""
        start, looks = self._window
        if now - start >= 1.0:
            start, looks = now, 0
        fresh = [shape for shape in self.unexplained if shape not in self.reasons]
        due = [
            shape
            for shape in self.unexplained
            if shape in self.reasons and now - self._explained_at.get(shape, 0.0) >= EXPLAIN_EVERY_S
        ]
        for shape in fresh + due:
            if looks >= EXPLAIN_LOOKS_PER_S:
                break
            unit = self.unexplained.pop(shape)
            demand = book.demands.get(unit[0])
            if demand is None or shape not in self.blocked:
                continue
            suitable = self._suitable(book, shape)
            self.reasons[shape] = explain(book, demand, self.reservation, unit, suitable)
            self._explained_at[shape] = now
            looks += len(suitable) + 1
        self._window = (start, looks)

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
            book.freed.add(worker_id)
        if book.freed:
            live = [w for w in book.freed if w in book.workers]
            for key, suitable in self.suitable.items():  # (a re-registered worker may bring new labels)
                for worker_id in live:
                    if suits_key(key, book.workers[worker_id].supply):
                        suitable[worker_id] = None
                    else:
                        suitable.pop(worker_id, None)
            for shape, candidates in self.candidates.items():
                suitable = self.suitable[suit_key(shape)]
                for worker_id in live:
                    if worker_id in suitable:
                        candidates[worker_id] = None
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
            self._forget_reason(shape)
            if all(suit_key(other) != suit_key(shape) for other in self.candidates):
                self.suitable.pop(suit_key(shape), None)

    def _suitable(self, book: Book, shape: Shape) -> dict[str, None]:
        """The workers that could ever take ``shape``: O(workers) the first time its key is seen."""
        key = suit_key(shape)
        found = self.suitable.get(key)
        if found is None:
            found = self.suitable[key] = {w: None for w, e in book.workers.items() if suits_key(key, e.supply)}
        return found

    def _forget_reason(self, shape: Shape) -> None:
        self.reasons.pop(shape, None)
        self.unexplained.pop(shape, None)
        self._explained_at.pop(shape, None)

    def _fit(self, book: Book, shape: Shape, demand: JobDemand, unit: Unit, now: float) -> list[str] | None:
        """Workers for the unit's tasks (one each), or None when they cannot all be placed now."""
        candidates = self.candidates.get(shape)
        if candidates is None:
            candidates = self.candidates[shape] = dict(self._suitable(book, shape))
        needed = demand.gang
        chosen: list[str] = []
        groups: dict[str, list[str]] = {}
        dropped: list[str] = []
        found: list[str] | None = None
        for worker_id in candidates:
            entry = book.workers.get(worker_id)
            if entry is None:
                dropped.append(worker_id)
                continue
            if entry.unhealthy_until > now:
                dropped.append(worker_id)
                if self._backing_off.get(worker_id, 0.0) < entry.unhealthy_until:  # a backoff only grows
                    self._backing_off[worker_id] = entry.unhealthy_until
                    heapq.heappush(self._unhealthy, (entry.unhealthy_until, worker_id))
                continue
            if entry.reserved_for is not None and entry.reserved_for != unit:
                continue  # kept for an older unit (not dropped: the reservation ends)
            room = headroom(demand, entry.supply, needed)  # candidates suit the shape
            if room == 0:
                dropped.append(worker_id)
                continue
            if demand.group_by is None:
                chosen.extend([worker_id] * min(room, needed - len(chosen)))
                if len(chosen) >= needed:
                    found = chosen
                    break
            else:
                value = entry.info.labels.get(demand.group_by)
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

    def _check_reservation(self, book: Book) -> None:
        """Drop a reservation whose unit no longer waits (placed elsewhere, killed, finished)."""
        if self.reservation is not None and not book.is_pending(*self.reservation):
            self._release(book)

    def _maybe_reserve(self, book: Book, unit: Unit, demand: JobDemand, now: float, now_ms: int) -> None:
        """The oldest unit that has waited ``reserve_after`` keeps the workers it would use."""
        if self.reserve_after_ms is None or self.reservation is not None:
            return
        record = book.jobs.get(unit[0])
        if record is None or now_ms - st.queued_at_ms(record, unit[1]) < self.reserve_after_ms:
            return
        if now - self._looked_for_reserve.get(unit, -EXPLAIN_EVERY_S) < EXPLAIN_EVERY_S:
            return
        workers = _target(book, demand)
        if workers is None:  # it can never fit: its explanation says so; reserving would only idle workers
            if len(self._looked_for_reserve) > 4 * MEMO_SHAPES:
                self._looked_for_reserve.clear()
            self._looked_for_reserve[unit] = now
            return
        self._looked_for_reserve.pop(unit, None)
        self.reservation = unit
        for worker_id in workers:
            book.workers[worker_id].reserved_for = unit

    def _release(self, book: Book) -> None:
        for worker_id, entry in book.workers.items():
            if entry.reserved_for == self.reservation:
                entry.reserved_for = None
                book.freed.add(worker_id)
        self.reservation = None


def _target(book: Book, demand: JobDemand) -> list[str] | None:
    """The workers a starving unit would use once they free up: the best group (or all workers) whose empty
    capacity holds it, most free first. O(workers): only when a unit starts starving."""
    groups: dict[str | None, list[WorkerEntry]] = {}
    for entry in book.workers.values():
        if entry.reserved_for is not None or not suits(demand, entry.supply):
            continue
        if how_many(demand, _empty(entry), demand.gang) == 0:
            continue
        key = entry.info.labels.get(demand.group_by) if demand.group_by else None
        if demand.group_by and key is None:
            continue
        groups.setdefault(key, []).append(entry)
    for entries in sorted(groups.values(), key=len, reverse=True):
        entries.sort(key=lambda e: e.supply.used_cpu)
        chosen: list[str] = []
        for entry in entries:
            room = how_many(demand, _empty(entry), demand.gang - len(chosen))
            chosen.extend([entry.info.worker_id] * room)
            if len(chosen) >= demand.gang:
                return sorted(set(chosen))
    return None


def _empty(entry: WorkerEntry) -> WorkerSupply:
    """The worker's supply with nothing running on it."""
    s = entry.supply
    return WorkerSupply(
        worker_id=s.worker_id,
        cpu=s.cpu,
        memory=s.memory,
        device_type=s.device_type,
        variant=s.variant,
        count=s.count,
        slots=s.slots,
        labels=s.labels,
    )


def explain(
    book: Book, demand: JobDemand, reservation: Unit | None, unit: Unit, suitable_ids: dict[str, None] | None = None
) -> str:
    """Why a unit waits, in words a user can act on. O(suitable workers) (``suitable_ids``: the workers that
    could ever take it, when known; else every worker is looked at)."""
    if not book.workers:
        return "no worker is registered"
    if suitable_ids is None:
        suitable = [e for e in book.workers.values() if suits(demand, e.supply)]
    else:
        suitable = [e for w in suitable_ids if (e := book.workers.get(w)) is not None]
    if not suitable:
        return _no_match(book, demand)
    ask = _ask(demand)
    fits_empty = [e for e in suitable if how_many(demand, _empty(e), 1) >= 1]
    if not fits_empty:
        largest = max(suitable, key=lambda e: (e.supply.cpu, e.supply.memory))
        return (
            f"no worker offers {ask} (the largest has cpu={largest.supply.cpu - largest.supply.used_cpu:g} free of "
            f"{largest.supply.cpu:g}, memory={_gib(largest.supply.memory - largest.supply.used_memory)} free of "
            f"{_gib(largest.supply.memory)})"
        )
    if demand.gang > 1:
        if demand.group_by:
            best: dict[str, int] = {}
            for e in fits_empty:
                value = e.info.labels.get(demand.group_by)
                if value is not None:
                    best[value] = best.get(value, 0) + how_many(demand, e.supply, demand.gang)
            top = max(best.items(), key=lambda kv: kv[1]) if best else None
            where = f"the best {demand.group_by} ({top[0]}) has room for {top[1]}" if top else "no worker has the label"
            return f"gang of {demand.gang} with group_by={demand.group_by}: {where} now"
        room = sum(how_many(demand, e.supply, demand.gang) for e in fits_empty)
        return f"gang of {demand.gang} of {ask}: room for {room} now"
    if reservation is not None and reservation != unit:
        return f"waiting for capacity: workers are reserved for older job {reservation[0]}"
    return f"waiting for capacity: the {len(fits_empty)} worker(s) that fit {ask} are busy"


def _no_match(book: Book, demand: JobDemand) -> str:
    for label, op, values in demand.constraints:
        known = sorted(book.labels.get(label, {}))
        if not known:
            return f"no worker has a {label} label (needed: {st.describe_constraint(label, op, values)})"
        if op in ("eq", "in") and not set(values) & set(known):
            return f"no worker matches {st.describe_constraint(label, op, values)} ({label}s: {', '.join(known)})"
    devices = sorted({f"{e.supply.device_type}:{e.supply.variant}" for e in book.workers.values()})
    wanted = demand.device_type + (f":{demand.variant}" if demand.variant else "")
    return f"no worker matches {wanted} and the constraints (workers offer {', '.join(devices)})"


def _ask(demand: JobDemand) -> str:
    text = f"cpu={demand.cpu:g}, memory={_gib(demand.memory)}"
    if demand.count:
        text += f", {demand.device_type}={demand.count}"
    return text


def _gib(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:g}g"
