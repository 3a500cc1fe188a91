"""Job state transitions (pure) — retries, budgets, stale reports, and resource release."""

from fluster.controller import records
from fluster.controller import state as st
from fluster.controller.book import Book
from fluster.protocol.messages import (
    JobRequest,
    JobState,
    JobUpdated,
    Payload,
    SubmitJob,
    WorkerInfo,
    WorkerResources,
)
from fluster.protocol.resources import ResourceSpec


def record(max_retries_failure: int = 0, max_retries_preemption: int = 100, cpu: float = 1) -> st.JobRecord:
    request = JobRequest(
        name="j",
        entrypoint=Payload(inline=b""),
        resources=ResourceSpec(cpu=cpu),
        max_retries_failure=max_retries_failure,
        max_retries_preemption=max_retries_preemption,
    )
    return st.new_record(SubmitJob(job_id="j", token="t", request=request), now_ms=1, seq=1)


def update(state: JobState, attempt: int = 0, worker: str = "w", incarnation: str = "i") -> JobUpdated:
    return JobUpdated(
        worker_id=worker,
        incarnation=incarnation,
        job_id="j",
        attempt=attempt,
        state=state,
        at_ms=5,
        exit_code=1 if state == JobState.FAILED else 0,
        error="boom" if state == JobState.FAILED else None,
    )


def test_success_path() -> None:
    r = st.assign(record(), "w", "i", 2)
    r = st.apply_update(r, update(JobState.RUNNING))
    assert r is not None and r.state == JobState.RUNNING
    r = st.apply_update(r, update(JobState.SUCCEEDED))
    assert r is not None and r.state == JobState.SUCCEEDED and r.finished_at_ms == 5


def test_failure_is_retried_while_budget_lasts() -> None:
    r = st.assign(record(max_retries_failure=1), "w", "i", 2)
    r = st.apply_update(r, update(JobState.FAILED))
    assert r is not None and r.state == JobState.PENDING and r.failure_count == 1 and records.is_pending(r)
    r = st.assign(r, "w", "i", 6)
    assert r.current is not None and r.current.attempt == 1
    r = st.apply_update(r, update(JobState.FAILED, attempt=1))
    assert r is not None and r.state == JobState.FAILED and r.failure_count == 2


def test_worker_loss_uses_the_preemption_budget_not_the_failure_budget() -> None:
    r = st.assign(record(max_retries_preemption=1), "w", "i", 2)
    r = st.lose_attempt(r, 3, "worker died")
    assert r is not None and r.state == JobState.PENDING and r.preemption_count == 1 and r.failure_count == 0
    r = st.lose_attempt(st.assign(r, "v", "k", 4), 5, "worker died")
    assert r is not None and r.state == JobState.WORKER_FAILED
    assert [a.state for a in r.attempts] == [JobState.WORKER_FAILED, JobState.WORKER_FAILED]


def test_stale_reports_are_ignored() -> None:
    r = st.assign(record(), "w", "i", 2)
    assert st.apply_update(r, update(JobState.RUNNING, attempt=1)) is None
    assert st.apply_update(r, update(JobState.RUNNING, worker="other")) is None
    assert st.apply_update(r, update(JobState.RUNNING, incarnation="old")) is None
    done = st.finish(r, JobState.KILLED, 3, "killed")
    assert st.apply_update(done, update(JobState.SUCCEEDED)) is None


def test_unrequested_kill_counts_as_failure() -> None:
    r = st.assign(record(), "w", "i", 2)
    r = st.apply_update(r, update(JobState.KILLED))
    assert r is not None and r.state == JobState.FAILED


def test_heartbeat_releases_resources_on_completion() -> None:
    info = WorkerInfo(
        worker_id="w",
        incarnation="i",
        hostname="h",
        pid=1,
        runtime="process",
        resources=WorkerResources(cpu=4, memory_bytes=8 << 30),
        registered_at_ms=0,
    )
    book = Book()
    book.add_worker(info, 0)
    book.put(record(cpu=3))
    r = st.assign(record(cpu=3), "w", "i", 2)
    book.put(r)
    assert book.workers["w"].supply.used_cpu == 3
    r = st.apply_update(r, update(JobState.SUCCEEDED))
    assert r is not None
    book.put(r)
    assert book.workers["w"].supply.used_cpu == 0 and "w" in book.freed


def test_dispatch_revert_only_undoes_an_unstarted_attempt() -> None:
    r = st.assign(record(), "w", "i", 2)
    assert st.revert_assignment(r, 0) is not None
    running = st.apply_update(r, update(JobState.RUNNING))
    assert running is not None and st.revert_assignment(running, 0) is None


def test_unschedulable_error_says_what_was_asked() -> None:
    r = record(cpu=100).model_copy(
        update={"request": record(cpu=100).request.model_copy(update={"scheduling_timeout_ms": 5000})}
    )
    assert "cpu=100" in records.unschedulable_error(r) and "5s" in records.unschedulable_error(r)
