"""Placement's shortcuts against from-scratch oracles, over random books: the written-out explanation
(``fluster.controller.reasons.explain``) says what the plain one (``how_many`` over empty copies of every
worker) says."""

from __future__ import annotations

import random

import pytest
from test_book import SHAPES, submit, worker

from fluster.controller import records
from fluster.controller import state as st
from fluster.controller.book import Book, Unit
from fluster.controller.reasons import explain
from fluster.controller.scheduler import JobDemand, WorkerSupply, how_many, suits


@pytest.mark.parametrize("seed", range(20))
def test_the_written_out_explanation_says_what_the_plain_one_says(seed: int) -> None:
    rng = random.Random(seed)
    book = Book()
    for w in range(rng.randrange(1, 12)):
        labels = {"zone": rng.choice("ab"), "slice": rng.choice(["s1", "s2", "s3"])}
        if rng.random() < 0.2:
            del labels["slice"]
        info = worker(f"w{w}", "i", rng.choice([1, 2, 4, 8]), rng.choice([1, 4, 16]) << 30, rng.choice([1, 3]), labels)
        book.add_worker(info, 0)
    for j in range(40):
        cpu, memory = rng.choice([*SHAPES, (16, "1g"), (1, "64g")])
        record = submit(
            f"j{j}",
            j,
            cpu,
            memory,
            replicas=rng.choice([1, 2, 3, 5]),
            coschedule=rng.random() < 0.5,
            zone=rng.choice([None, "a", "b", "c"]),
            group_by=rng.choice([None, "slice", "rack"]),
        )
        book.put(record)
        if rng.random() < 0.5:  # some of it runs, so that workers are partly used
            for unit in records.pending_units(record):
                demand = book.demands[record.job_id]
                fit = [w for w, e in book.workers.items() if how_many(demand, e.supply, 1)]
                if fit:
                    tasks = range(record.request.replicas) if record.request.is_gang else [unit]
                    tasks_on = [(t, rng.choice(fit), "i", None) for t in tasks]
                    book.put(st.assign_gang(book.jobs[record.job_id], tasks_on, 1))
                    break
    reservation: Unit | None = rng.choice([None, ("j0", 0)])
    for job_id, demand in book.demands.items():
        unit = (job_id, 0)
        expected = _plain_explain(book, demand, reservation, unit)
        suitable = {w: None for w, e in book.workers.items() if suits(demand, e.supply)}
        assert explain(book, demand, reservation, unit, suitable) == expected
        assert explain(book, demand, reservation, unit) == expected


def _plain_explain(book: Book, demand: JobDemand, reservation: Unit | None, unit: Unit) -> str:
    """The explanation as first written: ``how_many`` over an empty copy of every suitable worker."""
    from fluster.controller.reasons import _ask, _gib, _no_match

    if not book.workers:
        return "no worker is registered"
    suitable = [e for e in book.workers.values() if suits(demand, e.supply)]
    if not suitable:
        return _no_match(book, demand)
    ask = _ask(demand)
    fits_empty = [e for e in suitable if how_many(demand, _empty(e.supply), 1) >= 1]
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


def _empty(s: WorkerSupply) -> WorkerSupply:
    return WorkerSupply(s.worker_id, s.cpu, s.memory, s.device_type, s.variant, s.count, s.slots, labels=s.labels)
