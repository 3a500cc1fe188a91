"""Multi-task jobs over plain data: the state of replicas and gangs as their tasks report, their budgets, the
stop-then rule (two attempts of a task never overlap; a gang restarts only once all of it stopped), and the
placement of gangs, ``group_by``, constraints, pending reasons and reservations."""

from __future__ import annotations

from test_book import place, report, submit, worker

from fluster.controller import records
from fluster.controller import state as st
from fluster.controller.book import Book
from fluster.controller.placement import Placer
from fluster.protocol.messages import JobRecord, JobState


def run_all(record: JobRecord) -> JobRecord:
    for task in range(record.request.replicas):
        nxt = st.apply_update(record, report(record, JobState.RUNNING, task))
        assert nxt is not None
        record = nxt
    return record


def gang(n: int = 3) -> JobRecord:
    record = submit("g", 1, 1, "1g", replicas=n, coschedule=True)
    record = st.assign_gang(record, [(i, f"w{i}", "i", f"h{i}") for i in range(n)], 2)
    return run_all(record)


def apply(record: JobRecord, state: JobState, task: int) -> JobRecord:
    nxt = st.apply_update(record, report(record, state, task))
    assert nxt is not None
    return nxt


def test_replicas_derive_the_job_state_from_their_tasks() -> None:
    record = submit("r", 1, 1, "1g", replicas=3)
    assert [t.index for t in record.tasks] == [0, 1, 2] and records.pending_units(record) == [0, 1, 2]
    record = st.assign(record, "w0", "i", 2, task=0)
    assert records.pending_units(record) == [1, 2]
    record = apply(record, JobState.RUNNING, 0)
    assert record.state == JobState.RUNNING and record.tasks[0].state == JobState.RUNNING
    for task in (1, 2):
        record = apply(st.assign(record, f"w{task}", "i", 3, task=task), JobState.RUNNING, task)
    record = apply(record, JobState.SUCCEEDED, 0)
    record = apply(record, JobState.SUCCEEDED, 2)
    assert record.state == JobState.RUNNING
    record = apply(record, JobState.SUCCEEDED, 1)
    assert record.state == JobState.SUCCEEDED and all(t.state == JobState.SUCCEEDED for t in record.tasks)


def test_an_independent_task_retries_on_its_own_budget() -> None:
    record = submit("r", 1, 1, "1g", replicas=2)  # max_retries_failure=1
    record = st.assign(st.assign(record, "w0", "i", 2, task=0), "w1", "i", 2, task=1)
    record = apply(record, JobState.FAILED, 1)
    assert record.tasks[1].state == JobState.PENDING and record.tasks[1].failure_count == 1
    assert record.failure_count == 0 and records.pending_units(record) == [1]
    record = st.assign(record, "w1", "i", 3, task=1)
    again = records.current_attempt(record, 1)
    first = records.current_attempt(record, 0)
    assert again is not None and again.attempt == 1 and first is not None and first.attempt == 0
    record = apply(record, JobState.FAILED, 1)  # the second failure is past the budget: the job fails...
    assert record.tasks[1].state == JobState.FAILED
    assert record.after_stop == JobState.FAILED and record.state != JobState.FAILED  # ...once task 0 stopped
    assert records.pending_units(record) == []
    record = apply(record, JobState.KILLED, 0)
    assert record.state == JobState.FAILED and record.error is not None and record.error.startswith("task 1:")
    assert record.tasks[0].state == JobState.KILLED


def test_max_task_failures_lets_the_others_finish() -> None:
    record = submit("r", 1, 1, "1g", replicas=3)
    record = record.model_copy(update={"request": record.request.model_copy(update={"max_task_failures": 1})})
    for task in range(3):
        record = st.assign(record, f"w{task}", "i", 2, task=task)
    record = apply(record, JobState.FAILED, 0)
    record = st.assign(record, "w0", "i", 6, task=0)
    record = apply(record, JobState.FAILED, 0)  # task 0 failed for good: one failure is allowed
    assert record.tasks[0].state == JobState.FAILED and record.after_stop is None
    record = apply(apply(record, JobState.SUCCEEDED, 1), JobState.SUCCEEDED, 2)
    assert record.state == JobState.SUCCEEDED


def test_a_gang_task_failing_stops_its_siblings_then_retries_whole() -> None:
    record = gang(3)
    assert record.state == JobState.RUNNING
    record = apply(record, JobState.FAILED, 1)
    assert record.failure_count == 1 and record.after_stop == JobState.PENDING
    assert record.error == "task 1: failed"
    assert not records.is_pending(record)  # not placed again while tasks 0 and 2 still run
    assert {a.task for a in records.active_attempts(record)} == {0, 2}
    record = apply(record, JobState.KILLED, 0)
    assert not records.is_pending(record)
    record = apply(record, JobState.KILLED, 2)
    assert record.state == JobState.PENDING and records.pending_units(record) == [0]
    stopped = [a for a in record.attempts if a.task == 0]
    assert stopped[0].error is not None and "stopped because task 1" in stopped[0].error
    record = st.assign_gang(record, [(i, f"w{i}", "i", None) for i in range(3)], 9)
    assert {a.attempt for a in record.attempts if a.assigned_at_ms == 9} == {1}
    record = run_all(record)
    for task in range(3):
        record = apply(record, JobState.SUCCEEDED, task)
    assert record.state == JobState.SUCCEEDED


def test_a_gang_losing_a_worker_pays_from_the_preemption_budget() -> None:
    record = gang(2)
    lost = st.lose_attempt(record, 5, "worker w0 died", task=0)
    assert lost is not None
    record = lost
    assert record.preemption_count == 1 and record.failure_count == 0
    record = apply(record, JobState.KILLED, 1)
    assert record.state == JobState.PENDING


def test_a_gang_out_of_budget_fails_once_stopped() -> None:
    record = gang(2)
    record = apply(record, JobState.FAILED, 0)  # budget 1: retried
    record = apply(record, JobState.KILLED, 1)
    record = run_all(st.assign_gang(record, [(0, "w0", "i", None), (1, "w1", "i", None)], 9))
    record = apply(record, JobState.FAILED, 1)
    assert record.after_stop == JobState.FAILED
    record = apply(record, JobState.KILLED, 0)
    assert record.state == JobState.FAILED and record.tasks[1].state == JobState.FAILED


def test_a_late_success_of_a_stopped_sibling_is_kept() -> None:
    record = apply(gang(2), JobState.FAILED, 0)
    record = apply(record, JobState.SUCCEEDED, 1)  # it finished before the stop reached it
    assert record.state == JobState.PENDING  # the gang still retries whole


def test_reports_for_unknown_tasks_and_old_attempts_are_stale() -> None:
    record = gang(2)
    bad = report(record, JobState.RUNNING, 1).model_copy(update={"task": 5})
    assert st.apply_update(record, bad) is None
    old = report(record, JobState.FAILED, 1).model_copy(update={"attempt": 7})
    assert st.apply_update(record, old) is None


def test_a_failed_dispatch_puts_an_unstarted_gang_back_whole() -> None:
    record = submit("g", 1, 1, "1g", replicas=2, coschedule=True)
    record = st.assign_gang(record, [(0, "w0", "i", None), (1, "w1", "i", None)], 2)
    back = st.revert_assignment(record, 0, task=1)
    assert back is not None and back.attempts == [] and records.pending_units(back) == [0]


def test_kill_ends_every_task() -> None:
    record = gang(3)
    killed = st.finish(record, JobState.KILLED, 5, "killed by user")
    assert killed.state == JobState.KILLED and all(t.state == JobState.KILLED for t in killed.tasks)
    assert all(a.state == JobState.KILLED for a in killed.attempts)


# -- placement ------------------------------------------------------------------------------------------


def test_a_gang_is_placed_in_one_decision_or_not_at_all() -> None:
    book, placer = Book(), Placer()
    for w in range(2):
        book.add_worker(worker(f"w{w}", "i", cpu=1, memory=4 << 30, slots=1), 0)
    book.put(submit("g", 1, 1, "1g", replicas=3, coschedule=True))
    assert place(book, placer, 0) == []
    assert book.jobs["g"].attempts == []
    assert placer.reason(book.demands["g"]) == "gang of 3 of cpu=1, memory=1g: room for 2 now"
    book.add_worker(worker("w2", "i", cpu=1, memory=4 << 30, slots=1), 0)
    assert place(book, placer, 0) == ["g"]
    assert sorted(a.worker_id for a in book.jobs["g"].attempts) == ["w0", "w1", "w2"]


def test_group_by_keeps_a_gang_on_one_label_value() -> None:
    book, placer = Book(), Placer()
    for w, s in enumerate(["a", "b", "b", "a", "b"]):
        book.add_worker(worker(f"w{w}", "i", cpu=1, memory=4 << 30, slots=1, labels={"slice": s}), 0)
    book.put(submit("g", 1, 1, "1g", replicas=3, coschedule=True, group_by="slice"))
    assert place(book, placer, 0) == ["g"]
    assert sorted(a.worker_id for a in book.jobs["g"].attempts) == ["w1", "w2", "w4"]
    book.put(submit("h", 2, 1, "1g", replicas=3, coschedule=True, group_by="slice"))
    assert place(book, placer, 0) == []
    assert placer.reason(book.demands["h"]) == "gang of 3 with group_by=slice: the best slice (a) has room for 2 now"


def test_constraints_steer_and_their_miss_is_explained() -> None:
    book, placer = Book(), Placer()
    book.add_worker(worker("wa", "i", cpu=4, memory=8 << 30, labels={"zone": "a"}), 0)
    book.add_worker(worker("wb", "i", cpu=4, memory=8 << 30, labels={"zone": "b"}), 0)
    book.put(submit("ja", 1, 1, "1g", zone="b"))
    book.put(submit("jc", 2, 1, "1g", zone="c"))
    assert place(book, placer, 0) == ["ja"]
    assert book.jobs["ja"].attempts[0].worker_id == "wb"
    assert placer.reason(book.demands["jc"]) == "no worker matches zone=c (zones: a, b)"


def test_a_starving_gang_reserves_workers_against_a_stream_of_small_jobs() -> None:
    book, placer = Book(), Placer(reserve_after_ms=100)
    for w in range(2):
        book.add_worker(worker(f"w{w}", "i", cpu=1, memory=4 << 30, slots=1), 0)
    book.put(submit("s0", 1, 1, "1g"))
    for job in place(book, placer, 0):
        book.put(apply(book.jobs[job], JobState.RUNNING, 0))
    book.put(submit("g", 2, 1, "1g", replicas=2, coschedule=True))
    seq = 3
    running = ["s0"]
    for _ in range(5):  # small jobs keep arriving; each one that ends frees a worker
        book.put(submit(f"s{seq}", seq, 1, "1g"))
        seq += 1
        placed = []
        for job_id, unit, workers in placer.place(book, 0, now_ms=1000):
            record = book.jobs[job_id]
            if record.request.is_gang:
                book.put(st.assign_gang(record, [(i, w, "i", None) for i, w in enumerate(workers)], 10))
            else:
                book.put(st.assign(record, workers[0], "i", 10, task=unit))
            placed.append(job_id)
        if "g" in placed:
            break
        for job in placed:
            running.append(job)
        if running:
            done = running.pop(0)
            record = book.jobs[done]
            record = apply(record, JobState.RUNNING, 0) if record.state == JobState.PENDING else record
            book.put(apply(record, JobState.SUCCEEDED, 0))
    assert book.jobs["g"].attempts, "the gang was starved by the small jobs"
    waiting = [j for j in book.jobs if j.startswith("s") and book.is_pending(j)]
    assert waiting, "small jobs kept running on reserved capacity"
