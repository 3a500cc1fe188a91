"""How one job looks from the terminal: its current attempt, ``fluster status JOB`` and its JSON form."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from fluster.cli import format as fmt
from fluster.protocol.messages import AttemptRecord, JobState
from fluster.protocol.observe import UsageRecord
from fluster.types import JobStatus


def current_attempt(status: JobStatus) -> AttemptRecord | None:
    """The attempt the job is on now: None while it waits for a new one (after a preemption, say)."""
    if not status.attempts:
        return None
    last = status.attempts[-1]
    if not status.state.is_terminal and (last.state.is_terminal or last.state == JobState.PREEMPTED):
        return None
    return last


def current_error(status: JobStatus, attempt: AttemptRecord | None) -> str:
    if status.state.is_terminal:
        text = status.error
    elif attempt is not None:
        text = attempt.error
    else:
        text = status.pending_reason
    return fmt.shorten(text, 70)


def status_dict(status: JobStatus) -> dict[str, Any]:
    fields = dataclasses.asdict(status)
    fields["state"] = status.state.value
    fields["resources"] = status.resources.model_dump(mode="json")
    fields["attempts"] = [attempt.model_dump(mode="json") for attempt in status.attempts]
    fields["tasks"] = [
        {
            **{f.name: getattr(t, f.name) for f in dataclasses.fields(t) if f.name != "attempts"},
            "state": t.state.value,
            "attempts": [attempt.model_dump(mode="json") for attempt in t.attempts],
        }
        for t in status.tasks
    ]
    return fields


def usage_fields(fields: dict[str, Any], usage: UsageRecord | None) -> dict[str, Any]:
    """A job's JSON form with its usage (``fluster.observe.usage``) under ``usage``."""
    fields["usage"] = usage.model_dump(mode="json") if usage is not None else None
    return fields


def usage_text(usage: UsageRecord | None) -> str:
    if usage is None:
        return "-"
    cpu = f"{usage.cpu_seconds:.1f}s CPU" if usage.final else f"cpu {usage.cpu_percent:.0f}%"
    return f"{cpu}, rss {fmt.size(usage.rss_bytes)} (peak {fmt.size(usage.peak_rss_bytes)})"


def usage_cell(usage: UsageRecord | None, attempt: AttemptRecord | None) -> str:
    """The usage column of ``fluster jobs``: the running attempt's CPU and memory."""
    if usage is None or attempt is None or usage.attempt != attempt.attempt or usage.final:
        return "-"
    return f"{usage.cpu_percent:.0f}% {fmt.size(usage.rss_bytes)}"


def print_usage(usage: UsageRecord | None) -> None:
    """The ``usage`` line of ``fluster status JOB``."""
    if usage is not None:
        label = "used" if usage.final else "using"
        print(f"{label:>10}: {usage_text(usage)} (attempt {usage.attempt}, {usage.processes} process(es))")


def print_status(status: JobStatus) -> None:
    """``fluster status JOB``: everything about one job, with its whole error."""
    now = time.time()
    lines = [
        ("job", status.job_id + (f" (child of {status.parent_id})" if status.parent_id else "")),
        ("state", status.state.value + (f", exit code {status.exit_code}" if status.exit_code is not None else "")),
        ("resources", status.resources.describe()),
        ("submitted", f"{fmt.timestamp(status.submitted_at_ms)} ({fmt.age(status.submitted_at_ms, now)})"),
        ("started", fmt.timestamp(status.started_at_ms)),
        ("finished", fmt.timestamp(status.finished_at_ms)),
        ("ran", fmt.span(status.started_at_ms, status.finished_at_ms, now)),
        ("failures", f"{status.failure_count} (preemptions: {status.preemption_count})"),
    ]
    if status.pending_reason and not status.state.is_terminal:
        lines.append(("waiting", status.pending_reason))
    for key, value in lines:
        print(f"{key:>10}: {value}")
    if status.error:
        print(f"{'error':>10}:")
        for line in status.error.rstrip().splitlines():
            print(f"    {line}")
    if status.error_traceback:
        print(f"{'traceback':>10}:")
        for line in status.error_traceback.rstrip().splitlines():
            print(f"    {line}")
    if status.tasks:
        rows = [
            [
                str(t.index),
                t.state.value,
                t.worker_id or "-",
                str(t.attempt),
                "-" if t.exit_code is None else str(t.exit_code),
                f"{t.failure_count}/{t.preemption_count}",
                fmt.shorten(t.error, 60),
            ]
            for t in status.tasks
        ]
        print()
        print(fmt.table(["TASK", "STATE", "WORKER", "ATTEMPT", "EXIT", "FAIL/PREEMPT", "ERROR"], rows))
    if status.attempts:
        multi = bool(status.tasks)
        rows = [
            [
                *([str(t.task)] if multi else []),
                str(t.attempt),
                t.worker_id,
                t.state.value,
                fmt.timestamp(t.started_at_ms),
                fmt.span(t.started_at_ms, t.finished_at_ms, now),
                "-" if t.exit_code is None else str(t.exit_code),
                fmt.shorten(t.error, 60),
            ]
            for t in status.attempts
        ]
        print()
        heads = ["ATTEMPT", "WORKER", "STATE", "STARTED", "RAN", "EXIT", "ERROR"]
        print(fmt.table(["TASK", *heads] if multi else heads, rows))
