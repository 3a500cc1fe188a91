"""Job state transitions and the controller's in-memory view. Pure: no NATS, no clocks (``now`` is passed in).

Each transition takes a ``JobRecord`` and returns the next one (or None when an event is stale), so the
service only has to persist what these functions return.
"""

from __future__ import annotations

from fluster.controller.scheduler import JobDemand
from fluster.protocol.messages import (
    AttemptRecord,
    JobRecord,
    JobState,
    JobUpdated,
    SubmitJob,
    evolve,
)
from fluster.protocol.resources import device_count, device_variant, parse_memory

ACTIVE_ATTEMPT = frozenset({JobState.PENDING, JobState.BUILDING, JobState.RUNNING})


def new_record(submit: SubmitJob, now_ms: int, seq: int) -> JobRecord:
    return JobRecord(job_id=submit.job_id, token=submit.token, request=submit.request, submitted_at_ms=now_ms, seq=seq)


def active_attempt(record: JobRecord) -> AttemptRecord | None:
    """The attempt currently assigned to a worker, if any."""
    current = record.current
    if current is None or record.state.is_terminal or current.state not in ACTIVE_ATTEMPT:
        return None
    return current


def is_pending(record: JobRecord) -> bool:
    return record.state == JobState.PENDING and active_attempt(record) is None


def queued_at_ms(record: JobRecord) -> int:
    """When the job (re-)entered the queue: its submit, or the end of its last attempt."""
    current = record.current
    if current is not None and current.finished_at_ms is not None:
        return current.finished_at_ms
    return record.submitted_at_ms


def assign(record: JobRecord, worker_id: str, incarnation: str, now_ms: int) -> JobRecord:
    attempt = AttemptRecord(
        attempt=len(record.attempts),
        worker_id=worker_id,
        incarnation=incarnation,
        state=JobState.PENDING,
        assigned_at_ms=now_ms,
    )
    return evolve(record, attempts=[*record.attempts, attempt])


def revert_assignment(record: JobRecord, attempt: int) -> JobRecord | None:
    """Undo an assignment whose dispatch failed (the attempt never started)."""
    current = record.current
    if current is None or current.attempt != attempt or current.state != JobState.PENDING:
        return None
    if record.state.is_terminal:
        return None
    return evolve(record, attempts=record.attempts[:-1])


def apply_update(record: JobRecord, update: JobUpdated) -> JobRecord | None:
    """Apply a worker's report about an attempt; None when it is stale (old attempt, other worker, finished job)."""
    current = active_attempt(record)
    if (
        current is None
        or current.attempt != update.attempt
        or current.worker_id != update.worker_id
        or current.incarnation != update.incarnation
    ):
        return None
    state = update.state
    if state in (JobState.BUILDING, JobState.RUNNING):
        attempt = evolve(
            current,
            **{
                "state": state,
                "started_at_ms": current.started_at_ms if state == JobState.BUILDING else update.at_ms,
            },
        )
        return _replace_current(
            record,
            attempt,
            {
                "state": state,
                "started_at_ms": record.started_at_ms or (update.at_ms if state == JobState.RUNNING else None),
            },
        )
    ended = evolve(
        current,
        **{
            "state": state,
            "finished_at_ms": update.at_ms,
            "exit_code": update.exit_code,
            "error": update.error,
        },
    )
    if state == JobState.SUCCEEDED:
        return _replace_current(
            record,
            ended,
            {
                "state": JobState.SUCCEEDED,
                "finished_at_ms": update.at_ms,
                "exit_code": update.exit_code,
                "error": None,
                "error_info": None,
                "result": update.result,
            },
        )
    if state == JobState.KILLED and record.kill_requested:
        return _replace_current(
            record,
            ended,
            {
                "state": JobState.KILLED,
                "finished_at_ms": update.at_ms,
                "exit_code": update.exit_code,
                "error": record.error or "killed by user",
            },
        )
    if state == JobState.PREEMPTED:
        return _lost(record, ended, update.at_ms, update.error or "preempted")
    # FAILED, or a KILLED nobody asked for: the job failed
    failures = record.failure_count + 1
    fields: dict[str, object] = {
        "failure_count": failures,
        "exit_code": update.exit_code,
        "error": update.error,
        "error_info": update.error_info,
    }
    if failures <= record.request.max_retries_failure:
        fields["state"] = JobState.PENDING
    else:
        fields.update(state=JobState.FAILED, finished_at_ms=update.at_ms)
    return _replace_current(record, evolve(ended, **{"state": JobState.FAILED}), fields)


def lose_attempt(record: JobRecord, now_ms: int, reason: str) -> JobRecord | None:
    """The worker running the current attempt died: WORKER_FAILED attempt, retried while the budget lasts."""
    current = active_attempt(record)
    if current is None:
        return None
    ended = evolve(current, **{"state": JobState.WORKER_FAILED, "finished_at_ms": now_ms, "error": reason})
    return _lost(record, ended, now_ms, reason)


def finish(record: JobRecord, state: JobState, now_ms: int, error: str | None) -> JobRecord:
    """End a job from the controller's side (KILLED, UNSCHEDULABLE); its active attempt ends with it."""
    attempts = list(record.attempts)
    current = active_attempt(record)
    if current is not None:
        attempts[-1] = evolve(current, **{"state": state, "finished_at_ms": now_ms, "error": error})
    return evolve(
        record,
        **{
            "state": state,
            "finished_at_ms": now_ms,
            "error": error,
            "attempts": attempts,
        },
    )


def unschedulable_error(record: JobRecord) -> str:
    timeout_s = (record.request.scheduling_timeout_ms or 0) / 1000
    return (
        f"no worker could take the job within its scheduling timeout ({timeout_s:g}s): it asked for "
        f"{record.request.resources.describe()}"
    )


def demand(record: JobRecord) -> JobDemand:
    resources = record.request.resources
    return JobDemand(
        job_id=record.job_id,
        cpu=resources.cpu,
        memory=parse_memory(resources.memory),
        device_type=resources.device.type,
        variant=device_variant(resources.device),
        count=device_count(resources.device),
        queued_at_ms=queued_at_ms(record),
        timeout_ms=record.request.scheduling_timeout_ms,
    )


def _lost(record: JobRecord, ended: AttemptRecord, now_ms: int, reason: str) -> JobRecord:
    preemptions = record.preemption_count + 1
    fields: dict[str, object] = {"preemption_count": preemptions, "error": reason}
    if preemptions <= record.request.max_retries_preemption:
        fields["state"] = JobState.PENDING
    else:
        fields.update(state=JobState.WORKER_FAILED, finished_at_ms=now_ms)
    return _replace_current(record, ended, fields)


def _replace_current(record: JobRecord, attempt: AttemptRecord, fields: dict[str, object]) -> JobRecord:
    return evolve(record, **{**fields, "attempts": [*record.attempts[:-1], attempt]})
