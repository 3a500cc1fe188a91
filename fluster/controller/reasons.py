"""Why a pending unit waits, in words a user can act on (``explain``), and when to say it (``Reasons``): each
blocked shape at most once per ``EXPLAIN_EVERY_S``, within ``EXPLAIN_LOOKS_PER_S`` looks at a worker a second.

An explanation costs O(suitable workers), so a placement pass does not explain: it notes the shapes it found
blocked, and ``Reasons.explain_due`` explains them after it (never-explained shapes first). Without the bound,
a pass over 10,000 pending jobs of 112 shapes on 1,000 workers took 420 ms, 80% of it explaining; with it the
cost of explaining is at most a fixed share of a second's CPU whatever the fleet's size (~5 ms a pass in the
gang pass of bench/jobs.py once a look was written out, from ~45 ms).
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from fluster.controller import records as st
from fluster.controller.book import Book, Unit
from fluster.controller.scheduler import JobDemand, Shape, floor_of, headroom, suits, takes_none

EXPLAIN_EVERY_S = 5.0
EXPLAIN_LOOKS_PER_S = 20_000


class Reasons:
    """The reasons of blocked shapes (``reasons``) and the shapes still to explain (``unexplained``)."""

    def __init__(self) -> None:
        self.reasons: dict[Shape, str] = {}  # why a blocked shape's units wait
        self.unexplained: dict[Shape, Unit] = {}  # blocked shapes (their head unit) to explain
        self._explained_at: dict[Shape, float] = {}
        self._window = (float("-inf"), 0)  # (start, looks spent explaining since)

    def note(self, shape: Shape, unit: Unit) -> None:
        """``shape`` was found blocked, ``unit`` at its head."""
        self.unexplained[shape] = unit

    def forget(self, shape: Shape) -> None:
        """``shape``'s units no longer wait for the reason given (one was placed, or the memo is gone)."""
        if shape not in self.reasons and shape not in self.unexplained:  # (the common case: once a placement)
            return
        self.reasons.pop(shape, None)
        self.unexplained.pop(shape, None)
        self._explained_at.pop(shape, None)

    def explain_due(
        self,
        book: Book,
        now: float,
        blocked: set[Shape],
        suitable: Callable[[Shape], Collection[str]],
        reservation: Unit | None,
    ) -> None:
        """Explain the noted shapes still ``blocked``: never-explained ones first, each at most once per
        ``EXPLAIN_EVERY_S``, within ``EXPLAIN_LOOKS_PER_S`` (monotonic ``now``); ``suitable(shape)``: the
        workers that could ever take it."""
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
            if demand is None or shape not in blocked:
                continue
            workers = suitable(shape)
            self.reasons[shape] = explain(book, demand, reservation, unit, workers)
            self._explained_at[shape] = now
            looks += len(workers) + 1
        self._window = (start, looks)


def explain(
    book: Book, demand: JobDemand, reservation: Unit | None, unit: Unit, suitable_ids: Collection[str] | None = None
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
    floor = floor_of(demand.shape)
    cpu, memory, count = floor
    # written out, not ``how_many(demand, _empty(e))`` a worker: ~2.5 µs less a look, and an explanation
    # looks at every suitable worker (at most ``EXPLAIN_LOOKS_PER_S`` looks a second)
    fits_empty = [
        e
        for e in suitable
        if e.supply.cpu + 1e-9 >= cpu and e.supply.memory >= memory and e.supply.count >= count and e.supply.slots > 0
    ]
    if not fits_empty:
        largest = max(suitable, key=lambda e: (e.supply.cpu, e.supply.memory))
        return (
            f"no worker offers {ask} (the largest has cpu={largest.supply.cpu - largest.supply.used_cpu:g} free of "
            f"{largest.supply.cpu:g}, memory={_gib(largest.supply.memory - largest.supply.used_memory)} free of "
            f"{_gib(largest.supply.memory)})"
        )
    if demand.gang > 1:
        rooms = [(e, 0 if takes_none(e.supply, floor) else headroom(demand, e.supply, demand.gang)) for e in fits_empty]
        if demand.group_by:
            best: dict[str, int] = {}
            for e, room in rooms:
                value = e.info.labels.get(demand.group_by)
                if value is not None:
                    best[value] = best.get(value, 0) + room
            top = max(best.items(), key=lambda kv: kv[1]) if best else None
            where = f"the best {demand.group_by} ({top[0]}) has room for {top[1]}" if top else "no worker has the label"
            return f"gang of {demand.gang} with group_by={demand.group_by}: {where} now"
        room = sum(room for _, room in rooms)
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
