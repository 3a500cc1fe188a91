"""Starvation's remedy: the oldest pending unit that has waited ``reserve_after`` and still cannot be placed
reserves the workers it would use (``WorkerEntry.reserved_for``), and other units are not placed there, so a
stream of small jobs cannot starve a big one or a gang. One reservation at a time; placement asks for it
(``consider``) when it finds a unit blocked, and ends it (``release``) when the unit is placed or gone.

Pure: the caller passes the times.
"""

from __future__ import annotations

from fluster.controller import records as st
from fluster.controller.book import Book, Unit, WorkerEntry
from fluster.controller.scheduler import JobDemand, WorkerSupply, how_many, suits

LOOK_EVERY_S = 5.0  # how often a starving unit that can never fit is looked for reservable workers
REMEMBERED = 256  # starving units remembered as having no reservable workers


class Reservation:
    def __init__(self, reserve_after_ms: int | None) -> None:
        self.reserve_after_ms = reserve_after_ms  # None: never reserve
        self.unit: Unit | None = None  # the starving unit workers are kept for
        self._looked: dict[Unit, float] = {}  # starving units with no reservable workers, when looked at

    def check(self, book: Book) -> None:
        """End a reservation whose unit no longer waits (placed elsewhere, killed, finished)."""
        if self.unit is not None and not book.is_pending(*self.unit):
            self.release(book)

    def consider(self, book: Book, unit: Unit, demand: JobDemand, now: float, now_ms: int) -> None:
        """``unit`` was found blocked: when nothing is reserved and it has waited ``reserve_after``, it keeps
        the workers it would use. O(workers), at most once per ``LOOK_EVERY_S`` for a unit that can never fit."""
        if self.reserve_after_ms is None or self.unit is not None:
            return
        record = book.jobs.get(unit[0])
        if record is None or now_ms - st.queued_at_ms(record, unit[1]) < self.reserve_after_ms:
            return
        if now - self._looked.get(unit, -LOOK_EVERY_S) < LOOK_EVERY_S:
            return
        workers = _target(book, demand)
        if workers is None:  # it can never fit: its explanation says so; reserving would only idle workers
            if len(self._looked) > REMEMBERED:
                self._looked.clear()
            self._looked[unit] = now
            return
        self._looked.pop(unit, None)
        self.unit = unit
        for worker_id in workers:
            book.workers[worker_id].reserved_for = unit

    def release(self, book: Book) -> None:
        """End the reservation: its workers take any unit again (``Book.freed``: their memos get them back)."""
        for worker_id, entry in book.workers.items():
            if entry.reserved_for == self.unit:
                entry.reserved_for = None
                book.freed[worker_id] = None
        self.unit = None


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
