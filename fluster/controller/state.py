"""Job state transitions. Pure: no NATS, no clocks (``now`` is passed in).

Each transition takes a ``JobRecord`` and returns the next one (or None when an event is stale), so the
service only has to persist what these functions return.

A job has ``request.replicas`` tasks. A *gang* (``coschedule``, or a job of one task) is placed, failed and
retried as one unit under the job's budgets; independent tasks are placed and retried each on its own,
under budgets of their own, and the job fails once more than ``max_task_failures`` of them fail for good.
A single-task job keeps its task's state in the job itself (``tasks`` is empty), as it always has; a
multi-task job has a ``TaskRecord`` per task. Attempts of every task are in ``attempts``, each with its
task's index. When a task's failure ends (or restarts) a job whose other tasks still run, the job records
what it becomes in ``after_stop``, the controller stops those tasks, and the job takes that state once none
runs: two attempts of a task never overlap, and a gang restarts only once all of it has stopped.

What a record says (its active attempts, what waits, what it asks for) is read in ``records``.
"""

from __future__ import annotations

from collections.abc import Sequence

from fluster.controller.records import active_attempt, active_attempts, current_attempt
from fluster.protocol.messages import (
    AttemptRecord,
    JobRecord,
    JobRequest,
    JobState,
    JobUpdated,
    Payload,
    SubmitJob,
    TaskRecord,
    evolve,
)

ENDED_BADLY = frozenset({JobState.FAILED, JobState.WORKER_FAILED, JobState.KILLED, JobState.UNSCHEDULABLE})

# What new records and attempts are made from (``evolve``, not validated: every field comes from a message
# validated at its edge, or from the controller's clock). Validating the controller's own values again cost
# more than the transition: a new JobRecord 4-5 µs, an AttemptRecord 3-4 µs, against ~1 µs for ``evolve``.
BLANK_REQUEST = JobRequest(name="-", entrypoint=Payload())  # what blank messages carrying a request hold
_BLANK_RECORD = JobRecord(job_id="-", token="-", request=BLANK_REQUEST, submitted_at_ms=0)
_BLANK_ATTEMPT = AttemptRecord(attempt=0, worker_id="-", incarnation="-", state=JobState.PENDING, assigned_at_ms=0)


def new_record(submit: SubmitJob, now_ms: int, seq: int) -> JobRecord:
    n = submit.request.replicas
    tasks = [TaskRecord(index=i) for i in range(n)] if n > 1 else []
    return evolve(
        _BLANK_RECORD,
        job_id=submit.job_id,
        token=submit.token,
        request=submit.request,
        submitted_at_ms=now_ms,
        seq=seq,
        attempts=[],
        tasks=tasks,
    )


# -- placing --------------------------------------------------------------------------------------------


def assign(
    record: JobRecord, worker_id: str, incarnation: str, now_ms: int, task: int = 0, host: str | None = None
) -> JobRecord:
    """Place one task (of an independent job, or a single-task job) on a worker."""
    return assign_gang(record, [(task, worker_id, incarnation, host)], now_ms)


def assign_gang(record: JobRecord, placements: Sequence[tuple[int, str, str, str | None]], now_ms: int) -> JobRecord:
    """Place tasks ``(task, worker, incarnation, host)`` in one decision (a gang's tasks share the attempt
    number)."""
    placed = {p[0] for p in placements}
    number = 1 + max((a.attempt for a in record.attempts if a.task in placed), default=-1)
    new = [
        evolve(
            _BLANK_ATTEMPT,
            attempt=number,
            worker_id=worker_id,
            incarnation=incarnation,
            assigned_at_ms=now_ms,
            task=task,
            host=host,
        )
        for task, worker_id, incarnation, host in placements
    ]
    return evolve(record, attempts=[*record.attempts, *new], pending_reason=None)


def revert_assignment(record: JobRecord, attempt: int, task: int = 0) -> JobRecord | None:
    """Undo an assignment whose dispatch failed. A gang whose other tasks have not started is put back to
    wait whole; one of which some task started restarts (its budget for losses pays)."""
    current = current_attempt(record, task)
    if current is None or current.attempt != attempt or current.state != JobState.PENDING:
        return None
    if record.state.is_terminal:
        return None
    if record.request.replicas == 1 or not record.request.coschedule:
        return evolve(record, attempts=[a for a in record.attempts if a is not current])
    siblings = [a for a in record.attempts if a.attempt == attempt]
    if all(a.state == JobState.PENDING for a in siblings):
        return evolve(record, attempts=[a for a in record.attempts if a.attempt != attempt])
    return lose_attempt(record, current.assigned_at_ms, f"task {task}'s dispatch failed", task)


# -- reports --------------------------------------------------------------------------------------------


def apply_update(record: JobRecord, update: JobUpdated) -> JobRecord | None:
    """Apply a worker's report about an attempt; None when it is stale (old attempt, other worker, finished job)."""
    task = update.task
    if task >= record.request.replicas:
        return None
    current = active_attempt(record, task)
    if (
        current is None
        or current.attempt != update.attempt
        or current.worker_id != update.worker_id
        or current.incarnation != update.incarnation
    ):
        return None
    state = update.state
    if state in (JobState.BUILDING, JobState.RUNNING):
        started = current.started_at_ms if state == JobState.BUILDING else update.at_ms
        attempt = evolve(current, state=state, started_at_ms=started)
        record = _replace(record, current, attempt)
        if record.tasks:
            record = _set_task(record, task, state=state, started_at_ms=record.tasks[task].started_at_ms or started)
            return _derive(record, update.at_ms)
        job_started = record.started_at_ms or (update.at_ms if state == JobState.RUNNING else None)
        return evolve(record, state=state, started_at_ms=job_started)
    reported = state if state != JobState.KILLED or record.kill_requested else JobState.FAILED
    ended = evolve(current, state=reported, finished_at_ms=update.at_ms, exit_code=update.exit_code, error=update.error)
    if record.after_stop is not None and state != JobState.SUCCEEDED:  # a sibling stopped: say why
        ended = evolve(ended, error=f"stopped because {record.error}")
    record = _replace(record, current, ended)
    if state == JobState.SUCCEEDED and record.after_stop is None:  # done before any stop reached it
        return _succeeded(record, task, update)
    if record.after_stop is not None or record.kill_requested:  # stopping for a restart, a failure, a kill
        return _settle(record, task, reported, update.at_ms)
    if state == JobState.PREEMPTED:
        return _fault(record, task, update.at_ms, update.error or "preempted", lost=True)
    return _fault(record, task, update.at_ms, update.error or "failed", lost=False, update=update)


def lose_attempt(record: JobRecord, now_ms: int, reason: str, task: int = 0) -> JobRecord | None:
    """The worker running ``task``'s current attempt died: a WORKER_FAILED attempt, retried (the task, or its
    whole gang) while the budget for losses lasts."""
    current = active_attempt(record, task)
    if current is None:
        return None
    ended = evolve(current, state=JobState.WORKER_FAILED, finished_at_ms=now_ms, error=reason)
    record = _replace(record, current, ended)
    if record.after_stop is not None or record.kill_requested:
        return _settle(record, task, JobState.WORKER_FAILED, now_ms)
    return _fault(record, task, now_ms, reason, lost=True)


def finish(record: JobRecord, state: JobState, now_ms: int, error: str | None) -> JobRecord:
    """End a job from the controller's side (KILLED, UNSCHEDULABLE); its active attempts end with it."""
    ending = {id(a) for a in active_attempts(record)}
    attempts = [
        evolve(a, state=state, finished_at_ms=now_ms, error=error) if id(a) in ending else a for a in record.attempts
    ]
    tasks = [
        t if t.state.is_terminal else evolve(t, state=state, finished_at_ms=now_ms, error=error) for t in record.tasks
    ]
    return evolve(
        record,
        state=state,
        finished_at_ms=now_ms,
        error=error,
        attempts=attempts,
        tasks=tasks,
        after_stop=None,
        pending_reason=None,
    )


# -- internals ------------------------------------------------------------------------------------------


def _replace(record: JobRecord, old: AttemptRecord, new: AttemptRecord) -> JobRecord:
    return evolve(record, attempts=[new if a is old else a for a in record.attempts])


def _set_task(record: JobRecord, task: int, **fields: object) -> JobRecord:
    tasks = list(record.tasks)
    tasks[task] = evolve(tasks[task], **fields)
    return evolve(record, tasks=tasks)


def _succeeded(record: JobRecord, task: int, update: JobUpdated) -> JobRecord:
    if not record.tasks:  # a single task: the job
        return evolve(
            record,
            state=JobState.SUCCEEDED,
            finished_at_ms=update.at_ms,
            exit_code=update.exit_code,
            error=None,
            error_info=None,
            result=update.result,
        )
    record = _set_task(
        record,
        task,
        state=JobState.SUCCEEDED,
        finished_at_ms=update.at_ms,
        exit_code=update.exit_code,
        error=None,
        result=update.result,
    )
    return _derive(record, update.at_ms)


def _fault(
    record: JobRecord, task: int, now_ms: int, reason: str, *, lost: bool, update: JobUpdated | None = None
) -> JobRecord:
    """``task``'s attempt ended badly (failed, or lost with its worker): retry, or give up, per the budgets."""
    request = record.request
    info = update.error_info if update is not None else None
    exit_code = update.exit_code if update is not None else None
    if request.is_gang:
        counter = "preemption_count" if lost else "failure_count"
        used = getattr(record, counter) + 1
        budget = request.max_retries_preemption if lost else request.max_retries_failure
        gives_up = JobState.WORKER_FAILED if lost else JobState.FAILED
        why = reason if request.replicas == 1 else f"task {task}: {reason}"
        fields: dict[str, object] = {counter: used, "error": why}
        if not lost:
            fields.update(exit_code=exit_code, error_info=info)
        record = evolve(record, **fields)
        if record.tasks:
            record = _set_task(record, task, state=gives_up, exit_code=exit_code, error=reason, error_info=info)
        return _stop_then(record, JobState.PENDING if used <= budget else gives_up, now_ms)
    # an independent task: its own budgets
    current = record.tasks[task]
    counter = "preemption_count" if lost else "failure_count"
    used = getattr(current, counter) + 1
    budget = request.max_retries_preemption if lost else request.max_retries_failure
    fields = {counter: used, "error": reason, "exit_code": exit_code, "error_info": info}
    if used <= budget:
        fields["state"] = JobState.PENDING
    else:
        fields.update(state=JobState.WORKER_FAILED if lost else JobState.FAILED, finished_at_ms=now_ms)
    return _derive(_set_task(record, task, **fields), now_ms)


def _stop_then(record: JobRecord, then: JobState, now_ms: int) -> JobRecord:
    """The job becomes ``then`` once none of its attempts runs (at once when none does)."""
    return _settle(evolve(record, after_stop=then), None, None, now_ms)


def _settle(record: JobRecord, task: int | None, ended: JobState | None, now_ms: int) -> JobRecord:
    """An attempt ended while the job was stopping: once none runs, the job takes the state it waited for
    (a gang waits again whole; a killed job is KILLED). A task stopped on the way shows KILLED."""
    if task is not None and record.tasks and ended is not None and not record.tasks[task].state.is_terminal:
        stopped = JobState.SUCCEEDED if ended == JobState.SUCCEEDED else JobState.KILLED
        record = _set_task(record, task, state=stopped, finished_at_ms=now_ms)
    if active_attempts(record):
        return record
    then = record.after_stop
    if record.kill_requested:
        then = JobState.KILLED
    if then is None:
        return _derive(record, now_ms)
    if then == JobState.PENDING:  # a gang's retry: every task waits again
        tasks = [evolve(t, state=JobState.PENDING, finished_at_ms=None) for t in record.tasks]
        return evolve(record, state=JobState.PENDING, after_stop=None, tasks=tasks)
    tasks = [t if t.state.is_terminal else evolve(t, state=then, finished_at_ms=now_ms) for t in record.tasks]
    return evolve(record, state=then, finished_at_ms=now_ms, after_stop=None, tasks=tasks)


def _derive(record: JobRecord, now_ms: int) -> JobRecord:
    """A multi-task job's state from its tasks'."""
    if not record.tasks:
        return record
    tasks = record.tasks
    failed = sum(1 for t in tasks if t.state in ENDED_BADLY)
    limit = 0 if record.request.coschedule else record.request.max_task_failures
    if failed > limit:
        first = next(t for t in tasks if t.state in ENDED_BADLY)
        record = evolve(record, error=f"task {first.index}: {first.error}", error_info=first.error_info)
        return _stop_then(record, JobState.FAILED, now_ms) if record.after_stop is None else record
    if all(t.state.is_terminal for t in tasks):
        return evolve(record, state=JobState.SUCCEEDED, finished_at_ms=now_ms, error=None)
    states = {t.state for t in tasks}
    state = (
        JobState.RUNNING
        if JobState.RUNNING in states
        else JobState.BUILDING
        if JobState.BUILDING in states
        else JobState.PENDING
    )
    started = min((t.started_at_ms for t in tasks if t.started_at_ms), default=None)
    return evolve(record, state=state, started_at_ms=record.started_at_ms or started)
