"""The controller's job handlers: submit, kill, a worker's report, scheduling passes and dispatch, retention.

Each handler checks what it is told against what its sender may say, changes the term's view synchronously
(so handlers never interleave half-done), and awaits only the durability of what it changed before answering.
"""

from __future__ import annotations

import logging
import time
from typing import Literal

import anyio

from fluster.bus.blobs import delete_blob
from fluster.bus.rpc import request
from fluster.controller import records
from fluster.controller import state as st
from fluster.controller.serving import Later
from fluster.controller.term import Term
from fluster.errors import FlusterError, JobAlreadyExists, JobNotFound, LeadershipLost, ProtocolError
from fluster.protocol.codec import encode
from fluster.protocol.ids import JobId, child_job_id
from fluster.protocol.messages import (
    Ack,
    AttemptRecord,
    JobRecord,
    JobState,
    JobUpdated,
    KillJob,
    KillJobReply,
    StopJob,
    StopJobReply,
    SubmitJob,
    SubmitJobReply,
    evolve,
    now_ms,
)
from fluster.protocol.subjects import entrypoint_object, result_object

log = logging.getLogger(__name__)

FORGET_INTERVAL_S = 60.0  # how often finished jobs past the retention are looked for
_ACK = encode(Ack())  # encoded once: two acks a job


# -- clients --------------------------------------------------------------------------------------------


def on_submit(term: Term, msg: SubmitJob) -> SubmitJobReply | Later:
    """Create the job; the reply waits until its record is stored (an acknowledged submit is durable).

    Raises:
        ProtocolError: the job id is not the one the request's name and parent make.
        JobAlreadyExists: another submission holds the id.
        JobNotFound: the parent job does not exist.
        FlusterError: the parent has ended.
    """
    job_id, request_ = msg.job_id, msg.request
    expected = child_job_id(JobId(request_.parent_id), request_.name) if request_.parent_id else request_.name
    if job_id != expected:
        raise ProtocolError(f"job id {job_id!r} does not match its name and parent (expected {expected!r})")
    book = term.book
    existing = book.jobs.get(job_id)
    if existing is not None:
        if existing.token == msg.token:  # a retried submit: answer once its record is stored
            return Later(term.jobs_kv.written(job_id), SubmitJobReply(job_id=job_id, created=False))
        term.spawn(_drop_entrypoint(term, msg))
        raise JobAlreadyExists(
            f"a job named {job_id!r} already exists in namespace {term.subjects.namespace!r} "
            f"({existing.state.value}); choose another name"
        )
    if request_.parent_id:
        parent = book.jobs.get(request_.parent_id)
        if parent is None:
            raise JobNotFound(f"parent job {request_.parent_id!r} does not exist")
        if parent.state.is_terminal:
            raise FlusterError(f"parent job {parent.job_id} has already ended ({parent.state.value})")
    record = st.new_record(book.shared(msg), now_ms(), time.time_ns())
    written = term.commit(record)
    log.debug("job submitted job_id=%s", job_id)
    term.metrics.submits.value += 1
    return Later(written, SubmitJobReply(job_id=job_id, created=True))


async def on_kill(term: Term, msg: KillJob) -> KillJobReply:
    job_id = msg.job_id
    record = term.book.jobs.get(job_id)
    if record is None:
        raise JobNotFound(f"no job {job_id!r} in namespace {term.subjects.namespace!r}")
    if record.state.is_terminal:
        return KillJobReply(
            job_id=job_id,
            state=record.state,
            already_finished=True,
            message=f"job {job_id} had already finished ({record.state.value}); nothing to kill",
        )
    killed = await kill_many(term, [job_id, *term.book.descendants(job_id)], msg.reason)
    final = term.book.jobs[job_id]
    return KillJobReply(
        job_id=job_id,
        state=final.state,
        already_finished=False,
        message=f"killed {len(killed)} job(s)",
        killed=killed,
    )


async def kill_many(term: Term, job_ids: list[str], reason: str) -> list[str]:
    """Kill jobs: pending ones at once, running ones through their workers (SIGTERM, grace, SIGKILL)."""
    book = term.book
    stops: list[tuple[str, AttemptRecord]] = []
    killed: list[str] = []
    writes = []
    for job_id in job_ids:
        record = book.jobs.get(job_id)
        if record is None or record.state.is_terminal:
            continue
        killed.append(job_id)
        running = records.active_attempts(record)
        if not running:
            writes.append(term.commit(st.finish(record, JobState.KILLED, now_ms(), reason)))
        else:
            writes.append(term.commit(evolve(record, kill_requested=True, error=reason)))
            stops.extend((job_id, current) for current in running)
    async with anyio.create_task_group() as tg:
        for job_id, attempt in stops:
            tg.start_soon(_stop_attempt, term, job_id, attempt, JobState.KILLED)
    for job_id in dict.fromkeys(job_id for job_id, _ in stops):
        record = book.jobs[job_id]
        if not record.state.is_terminal:  # its worker never reported the end: it is gone, or fenced
            writes.append(term.commit(st.finish(record, JobState.KILLED, now_ms(), record.error or reason)))
    for written in writes:
        await written
    return killed


async def stop_attempts(term: Term, job_id: str, attempts: list[AttemptRecord], reason: str) -> None:
    """Stop a job's running attempts because the job no longer needs them (a gang restarting, too many
    tasks failed); each attempt's report (or its worker's loss) then settles the job."""
    log.info("stopping %d attempt(s) of job_id=%s: %s", len(attempts), job_id, reason)
    async with anyio.create_task_group() as tg:
        for attempt in attempts:
            tg.start_soon(_stop_attempt, term, job_id, attempt, JobState.PREEMPTED)


async def _stop_attempt(
    term: Term, job_id: str, attempt: AttemptRecord, state: Literal[JobState.KILLED, JobState.PREEMPTED]
) -> None:
    grace = term.settings.kill_grace
    stop = StopJob(job_id=job_id, attempt=attempt.attempt, task=attempt.task, grace_ms=int(grace * 1000), state=state)
    try:
        await request(
            term.nc,
            term.subjects.worker_kill(attempt.worker_id),
            stop,
            StopJobReply,
            timeout=grace + 10,
            what=f"worker {attempt.worker_id}",
        )
    except FlusterError as exc:  # a worker that is gone has nothing left running (its lease ended it)
        log.warning("stop job_id=%s on worker=%s failed: %s", job_id, attempt.worker_id, exc)


async def _drop_entrypoint(term: Term, msg: SubmitJob) -> None:
    """A rejected submission's entrypoint (written by its submitter under its own token) is garbage."""
    await _delete_entrypoint(term, msg.request.entrypoint.entry, msg.request.entrypoint.ref)


# -- workers' reports -------------------------------------------------------------------------------------


def on_update(term: Term, msg: JobUpdated, sender: str) -> Ack | bytes | Later:
    """Apply a worker's report about an attempt assigned to it. The ack of an attempt's end waits until it
    is stored (so the worker's outbox retries a report the controller could not keep); that it started is
    acknowledged at once and stored lazily (a new leader that never saw it still has the attempt placed, and
    takes its end when it comes)."""
    if msg.worker_id != sender:
        raise ProtocolError(f"a report from worker {sender!r} cannot speak for worker {msg.worker_id!r}")
    record = term.book.jobs.get(msg.job_id)
    updated = st.apply_update(record, msg) if record is not None else None
    if updated is None:
        return Ack(ok=False, message="stale report ignored: the attempt is not assigned to this worker")
    if msg.state in (JobState.BUILDING, JobState.RUNNING):
        term.commit_lazily(updated)
        return _ACK
    return Later(term.commit(updated), _ACK)


# -- scheduling -----------------------------------------------------------------------------------------


async def schedule_loop(term: Term) -> None:
    """One pass per batch of changes (coalesced by ``term.wake``); none while nothing changed, except when
    a scheduling timeout or a worker's dispatch backoff falls due."""
    while True:
        timeout = _until_next_due(term)
        with anyio.move_on_after(timeout):
            await term.wake.wait()
        term.wake.clear()
        if not term.lease.valid():
            raise LeadershipLost("the controller lease lapsed")
        term.metrics.timed_pass(schedule_pass, term)


def schedule_pass(term: Term) -> None:
    book = term.book
    now = now_ms()
    for job_id in list(book.due_deadlines(now)):
        record = book.jobs[job_id]
        if not record.state.is_terminal:  # (a job re-indexed while it waited has more than one deadline entry)
            term.commit(st.finish(record, JobState.UNSCHEDULABLE, now, records.unschedulable_error(record)))
    mono = time.monotonic()
    for job_id, unit, workers in term.placer.place(book, mono, now):
        record = book.jobs[job_id]
        entries = [book.workers[w] for w in workers]
        if record.request.is_gang:
            placements = [(i, e.info.worker_id, e.info.incarnation, e.info.hostname) for i, e in enumerate(entries)]
            record = st.assign_gang(record, placements, now)
        else:
            e = entries[0]
            record = st.assign(record, e.info.worker_id, e.info.incarnation, now, task=unit, host=e.info.hostname)
        term.metrics.assigned(record.submitted_at_ms, record.attempts[-1].attempt, now)
        term.dispatch(record, term.commit(record))
    term.placer.explain_blocked(book, mono)
    _note_reasons(term)


REASONS_PER_PASS = 500  # pending jobs given a new pending reason per pass (each a lazy write)


def _note_reasons(term: Term) -> None:
    """Write why blocked shapes' jobs wait into their records (lazily, a bounded number per pass): clients
    read it from the job's record."""
    book, budget = term.book, REASONS_PER_PASS
    for shape, reason in term.placer.reasons.items():
        for job_id, _unit in list(book.pending.get(shape, {}))[:budget]:
            record = book.jobs[job_id]
            if record.pending_reason != reason:
                term.commit_lazily(evolve(record, pending_reason=reason))
                budget -= 1
        if budget <= 0:
            return


def _until_next_due(term: Term) -> float:
    waits = [term.settings.schedule_interval * 20]
    deadline = term.book.next_deadline_ms()
    if deadline is not None:
        waits.append(max(0.0, (deadline - now_ms()) / 1000))
    wake = term.placer.next_wake()
    if wake is not None:
        waits.append(max(0.0, wake - time.monotonic()))
    return min(waits)


# -- retention ------------------------------------------------------------------------------------------


async def forget_loop(term: Term, retention_s: float) -> None:
    """Forget finished jobs older than the retention (the rule of ``fluster.controller.retention``)."""
    while True:
        await anyio.sleep(min(FORGET_INTERVAL_S, max(0.1, retention_s / 4)))
        if not term.lease.valid():
            raise LeadershipLost("the controller lease lapsed")
        for job_id in term.book.expired(now_ms(), int(retention_s * 1000)):
            record = term.book.remove(job_id)
            term.packing.forget(job_id)
            term.jobs_kv.purge(job_id)
            if record is not None:
                term.spawn(_forget_objects(term, record))
                log.info("job forgotten job_id=%s (finished more than the retention ago)", job_id)


async def _forget_objects(term: Term, record: JobRecord) -> None:
    await _delete_entrypoint(term, record.request.entrypoint.entry, record.request.entrypoint.ref)
    for task in range(record.request.replicas):
        await delete_blob(term.assets.objects, result_object(record.job_id, task))


async def _delete_entrypoint(term: Term, entry: str | None, ref: str | None) -> None:
    try:
        if entry is not None:
            await term.assets.entrypoints.delete(entry)
        if ref is not None and ref.startswith(entrypoint_object("x")[:-1]):
            await delete_blob(term.assets.objects, ref)
    except Exception as exc:  # the object store's TTL removes it in the end
        log.info("cannot delete an entrypoint: %r", exc)
