"""What a job record says: its tasks' current and active attempts, what waits to be placed and since when,
what one unit needs (``demand``), and the text that describes a request. Pure: no NATS, no clocks.

Transitions (``state``) and the indexes (``book``, ``placement``) read records through these; they change when
the record's shape changes, not when the rules of a transition do.
"""

from __future__ import annotations

from fluster.controller.scheduler import JobDemand
from fluster.protocol.messages import AttemptRecord, JobRecord, JobState
from fluster.protocol.resources import device_count, device_variant, parse_memory

ACTIVE_ATTEMPT = frozenset({JobState.PENDING, JobState.BUILDING, JobState.RUNNING})

# -- reading a record -----------------------------------------------------------------------------------


def current_attempt(record: JobRecord, task: int = 0) -> AttemptRecord | None:
    """The latest attempt of ``task`` (running or not)."""
    attempts = record.attempts
    if attempts and attempts[-1].task == task:  # always so for a single-task job: called ~15 times a job
        return attempts[-1]
    for attempt in reversed(attempts):
        if attempt.task == task:
            return attempt
    return None


def active_attempt(record: JobRecord, task: int = 0) -> AttemptRecord | None:
    """The attempt of ``task`` currently assigned to a worker, if any."""
    current = current_attempt(record, task)
    if current is None or record.state.is_terminal or current.state not in ACTIVE_ATTEMPT:
        return None
    return current


def active_attempts(record: JobRecord) -> list[AttemptRecord]:
    """Every task's attempt currently assigned to a worker."""
    if record.state.is_terminal:
        return []
    if record.request.replicas == 1:
        current = active_attempt(record, 0)
        return [current] if current is not None else []
    latest: dict[int, AttemptRecord] = {}
    for attempt in record.attempts:
        latest[attempt.task] = attempt
    return [a for a in latest.values() if a.state in ACTIVE_ATTEMPT]


def task_state(record: JobRecord, task: int) -> JobState:
    return record.tasks[task].state if record.tasks else record.state


def pending_units(record: JobRecord) -> list[int]:
    """What waits to be placed: ``[0]`` for a gang (all its tasks at once), else the index of every task
    that waits (independent tasks)."""
    if record.state.is_terminal or record.after_stop is not None or record.kill_requested:
        return []
    if record.request.is_gang:
        return [0] if record.state == JobState.PENDING and not active_attempts(record) else []
    running = {a.task for a in active_attempts(record)}
    return [t.index for t in record.tasks if t.state == JobState.PENDING and t.index not in running]


def is_pending(record: JobRecord) -> bool:
    return bool(pending_units(record))


def queued_at_ms(record: JobRecord, unit: int = 0) -> int:
    """When a unit (re-)entered the queue: the job's submit, or the end of its last attempt."""
    tasks = range(record.request.replicas) if record.request.is_gang else [unit]
    ended = [a.finished_at_ms for t in tasks if (a := current_attempt(record, t)) is not None and a.finished_at_ms]
    return max(ended) if ended else record.submitted_at_ms


# -- what a unit asks for ------------------------------------------------------------------------------


def unschedulable_error(record: JobRecord) -> str:
    timeout_s = (record.request.scheduling_timeout_ms or 0) / 1000
    why = f"; {record.pending_reason}" if record.pending_reason else ""
    return (
        f"no worker could take the job within its scheduling timeout ({timeout_s:g}s): it asked for "
        f"{describe_request(record)}{why}"
    )


def describe_request(record: JobRecord) -> str:
    request = record.request
    text = request.resources.describe()
    if request.replicas > 1:
        text = f"{request.replicas} tasks of {text}" + (" coscheduled" if request.coschedule else "")
        if request.group_by:
            text += f" within one {request.group_by}"
    if request.constraints:
        text += " where " + ", ".join(describe_constraint(c.label, c.op, c.values) for c in request.constraints)
    return text


def describe_constraint(label: str, op: str, values: list[str] | tuple[str, ...]) -> str:
    if op == "exists":
        return f"{label} is set"
    if op == "not_in":
        return f"{label} not in {{{', '.join(values)}}}"
    return f"{label}={values[0]}" if len(values) == 1 else f"{label} in {{{', '.join(values)}}}"


def demand(record: JobRecord, unit: int = 0) -> JobDemand:
    """What one unit needs: one task's resources and constraints, and (a gang) how many tasks at once."""
    request = record.request
    resources = request.resources
    constraints = tuple((c.label, c.op, tuple(c.values)) for c in request.constraints)
    return JobDemand(
        job_id=record.job_id,
        cpu=resources.cpu,
        memory=parse_memory(resources.memory),
        device_type=resources.device.type,
        variant=device_variant(resources.device),
        count=device_count(resources.device),
        queued_at_ms=queued_at_ms(record, unit),
        timeout_ms=request.scheduling_timeout_ms,
        constraints=constraints,
        gang=request.replicas if request.is_gang else 1,
        group_by=request.group_by if request.is_gang else None,
    )
