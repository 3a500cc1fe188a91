"""The controller's incremental view (``Book``) and placement (``Placer``) against from-scratch oracles, over
random event sequences: the indexes always equal a recompute from the records, and after every pass no
pending job fits any worker (the memo of candidate workers never hides one that fits)."""

from __future__ import annotations

import random

import pytest

from fluster.controller import records
from fluster.controller import state as st
from fluster.controller.book import Book
from fluster.controller.placement import Placer
from fluster.controller.retention import expired
from fluster.controller.scheduler import how_many
from fluster.protocol.messages import (
    Constraint,
    JobRecord,
    JobRequest,
    JobState,
    JobUpdated,
    Payload,
    SubmitJob,
    WorkerInfo,
    WorkerResources,
)
from fluster.protocol.resources import ResourceSpec

SHAPES = [(1, "1g"), (2, "1g"), (1, "4g"), (4, "8g"), (0.5, "512m")]


def submit(
    job_id: str,
    seq: int,
    cpu: float,
    memory: str,
    parent: str | None = None,
    replicas: int = 1,
    coschedule: bool = False,
    zone: str | None = None,
    group_by: str | None = None,
) -> JobRecord:
    request = JobRequest(
        name=job_id.rsplit("/", 1)[-1],
        entrypoint=Payload(inline=b""),
        resources=ResourceSpec(cpu=cpu, memory=memory),
        max_retries_failure=1,
        max_retries_preemption=2,
        parent_id=parent,
        replicas=replicas,
        coschedule=coschedule,
        group_by=group_by if coschedule else None,
        constraints=[Constraint(label="zone", values=[zone])] if zone else [],
    )
    return st.new_record(SubmitJob(job_id=job_id, token="t", request=request), now_ms=seq, seq=seq)


def worker(
    worker_id: str, incarnation: str, cpu: float, memory: int, slots: int = 3, labels: dict[str, str] | None = None
) -> WorkerInfo:
    return WorkerInfo(
        worker_id=worker_id,
        incarnation=incarnation,
        hostname="h",
        pid=1,
        runtime="process",
        resources=WorkerResources(cpu=cpu, memory_bytes=memory, max_concurrent_jobs=slots),
        registered_at_ms=0,
        labels=labels or {},
    )


def report(record: JobRecord, state: JobState, task: int = 0) -> JobUpdated:
    current = records.current_attempt(record, task)
    assert current is not None
    return JobUpdated(
        worker_id=current.worker_id,
        incarnation=current.incarnation,
        job_id=record.job_id,
        attempt=current.attempt,
        state=state,
        at_ms=1000,
        task=task,
    )


def place(book: Book, placer: Placer, now: float) -> list[str]:
    """One pass, each placement committed before the next is chosen (as the controller does)."""
    placed = []
    for job_id, unit, workers in placer.place(book, now):
        record = book.jobs[job_id]
        if record.request.is_gang:
            tasks = [(i, w, book.workers[w].info.incarnation, None) for i, w in enumerate(workers)]
            book.put(st.assign_gang(record, tasks, 10))
        else:
            book.put(st.assign(record, workers[0], book.workers[workers[0]].info.incarnation, 10, task=unit))
        placed.append(job_id)
    placer.explain_blocked(book, now)
    return placed


def assert_consistent(book: Book) -> None:
    assert book.indexes() == book.recompute().indexes()
    for entry in book.workers.values():
        s = entry.supply
        assert s.used_cpu <= s.cpu + 1e-9 and s.used_memory <= s.memory and s.used_slots <= s.slots


def assert_complete(book: Book, now: float) -> None:
    """Nothing pending could be placed on the healthy workers right now (a gang: not all of it)."""
    for shape, units in book.pending.items():
        for job_id, unit in units:
            demand = book.demands[job_id]
            rooms: dict[object, int] = {}
            for entry in book.workers.values():
                if entry.unhealthy_until > now or (entry.reserved_for not in (None, (job_id, unit))):
                    continue
                group = entry.info.labels.get(demand.group_by) if demand.group_by else "all"
                if group is None:
                    continue
                rooms[group] = rooms.get(group, 0) + how_many(demand, entry.supply, demand.gang)
            assert all(room < demand.gang for room in rooms.values()), (job_id, unit, shape, rooms)


@pytest.mark.parametrize("seed", range(25))
def test_incremental_view_equals_a_recompute_over_random_events(seed: int) -> None:
    rng = random.Random(seed)
    book, placer = Book(), Placer()
    seq = 0
    now = 0.0
    incarnations: dict[str, int] = {}
    for step in range(400):
        now += 0.1
        event = rng.random()
        if event < 0.3:
            seq += 1
            cpu, memory = rng.choice(SHAPES)
            parents = [j for j, r in book.jobs.items() if not r.state.is_terminal and "/" not in j]
            parent = rng.choice(parents) if parents and rng.random() < 0.2 else None
            job_id = f"{parent}/c{seq}" if parent else f"j{seq}"
            replicas = rng.choice([1, 1, 1, 2, 3])
            book.put(
                submit(
                    job_id,
                    seq,
                    cpu,
                    memory,
                    parent,
                    replicas=replicas,
                    coschedule=rng.random() < 0.5,
                    zone=rng.choice([None, None, "a", "b"]),
                    group_by=rng.choice([None, "slice"]),
                )
            )
        elif event < 0.4:
            wid = f"w{rng.randrange(6)}"
            incarnations[wid] = incarnations.get(wid, 0) + 1
            labels = {"zone": rng.choice("ab"), "slice": rng.choice(["s1", "s2"])}
            info = worker(wid, f"i{incarnations[wid]}", rng.choice([2, 4, 8]), rng.choice([4, 16]) << 30, 3, labels)
            book.add_worker(info, now)
            for (job_id, task), p in list(book.active_on(wid).items()):  # the new incarnation loses the old
                if p.incarnation != f"i{incarnations[wid]}":
                    lost = st.lose_attempt(book.jobs[job_id], 20, "restarted", task)
                    if lost is not None:
                        book.put(lost)
        elif event < 0.45 and book.workers:
            wid = rng.choice(sorted(book.workers))
            book.remove_worker(wid)
            placer.forget_worker(wid)
            for job_id, task in list(book.active_on(wid)):
                lost = st.lose_attempt(book.jobs[job_id], 20, "dead", task)
                if lost is not None:
                    book.put(lost)
        elif event < 0.5 and book.workers:
            wid = rng.choice(sorted(book.workers))
            entry = book.workers[wid]  # a dispatch failed: a backoff that only grows, as the controller sets it
            entry.unhealthy_until = max(entry.unhealthy_until, now + rng.choice([0.2, 1.0]))
        elif event < 0.8:
            running = [(r, a.task) for r in book.jobs.values() for a in records.active_attempts(r)]
            if running:
                record, task = rng.choice(running)
                state = rng.choice([JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.PREEMPTED])
                updated = st.apply_update(record, report(record, state, task))
                if updated is not None:
                    book.put(updated)
        elif event < 0.85:
            live = [r for r in book.jobs.values() if not r.state.is_terminal]
            if live:
                record = rng.choice(live)
                book.put(st.finish(record, JobState.KILLED, 30, "killed"))
        else:
            place(book, placer, now)
            assert_complete(book, now)
        if step % 7 == 0:
            assert_consistent(book)
    place(book, placer, now + 10)
    assert_complete(book, now + 10)
    assert_consistent(book)


def test_placement_is_fifo_and_skips_what_does_not_fit() -> None:
    book, placer = Book(), Placer()
    book.add_worker(worker("w", "i", cpu=4, memory=8 << 30, slots=10), 0)
    book.put(submit("big", 1, 8, "1g"))
    for i in range(2, 7):
        book.put(submit(f"small{i}", i, 1, "1g"))
    assert place(book, placer, 0) == ["small2", "small3", "small4", "small5"]
    assert book.is_pending("big") and book.is_pending("small6")
    # nothing changed: the blocked shapes cost nothing and place nothing
    assert place(book, placer, 0) == []
    # a job ends: its worker is freed, and the oldest job that now fits goes there
    done = st.apply_update(book.jobs["small2"], report(book.jobs["small2"], JobState.SUCCEEDED))
    assert done is not None
    book.put(done)
    assert place(book, placer, 0) == ["small6"]


def test_a_pass_looks_only_at_changed_workers() -> None:
    """With every worker full, a new job of a blocked shape costs no look at any worker."""
    book, placer = Book(), Placer()
    for w in range(200):
        book.add_worker(worker(f"w{w}", "i", cpu=1, memory=4 << 30, slots=1), 0)
    for j in range(200):
        book.put(submit(f"j{j}", j, 1, "1g"))
    assert len(place(book, placer, 0)) == 200
    book.put(submit("late", 1000, 1, "1g"))
    assert place(book, placer, 0) == []
    assert placer.candidates[book.demands["late"].shape] == {}  # every full worker dropped once, not re-read


def test_retention_from_the_heap_matches_the_rule() -> None:
    hour = 3600 * 1000
    now = 10 * hour

    def ended(job_id: str, state: JobState, finished: int | None, parent: str | None = None) -> JobRecord:
        record = submit(job_id, len(job_id), 1, "1g", parent)
        return record.model_copy(update={"state": state, "finished_at_ms": finished})

    records = [
        ended("old", JobState.SUCCEEDED, now - 3 * hour),
        ended("recent", JobState.FAILED, now - hour // 2),
        ended("running", JobState.RUNNING, None),
        ended("parent", JobState.KILLED, now - 5 * hour),
        ended("parent/young", JobState.KILLED, now - hour // 4, parent="parent"),
        ended("p2", JobState.SUCCEEDED, now - 5 * hour),
        ended("p2/old", JobState.SUCCEEDED, now - 4 * hour, parent="p2"),
    ]
    book = Book()
    for record in records:
        book.put(record)
    rule = sorted(expired(book.jobs, book.children, now, retention_s=3600))
    assert sorted(book.expired(now, hour)) == rule == ["old", "p2", "p2/old"]
    # kept for its family until its young child has expired too
    assert sorted(book.expired(now + hour, hour)) == ["parent", "parent/young", "recent"]
    assert book.expired(now + 2 * hour, hour) == []
