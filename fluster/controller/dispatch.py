"""Dispatch: each assignment goes to its worker once it is stored, pipelined, with no task per dispatch.

An attempt is sent only after its assignment is durable, so a new leader knows of every attempt that may
run. The write's done-callback queues the attempt; one task sends the queue's attempts on a reply mux (one
publish each, replies routed by token, timeouts in shared buckets) and each reply's callback settles its
attempt: taken, or undone and its worker backed off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from functools import partial

from nats.aio.msg import Msg

from fluster.bus.mux import NoResponders, ReplyMux, ReplyTimeout
from fluster.bus.rpc import decode_reply
from fluster.controller import records
from fluster.controller import state as st
from fluster.controller.term import Term
from fluster.errors import LeadershipLost
from fluster.protocol.messages import (
    AttemptRecord,
    JobRecord,
    JobState,
    RunJob,
    RunJobReply,
    evolve,
    now_ms,
)

log = logging.getLogger(__name__)

# what dispatches are made from (``evolve``): every field is the stored record's, validated when it came in;
# validating them again cost ~2.8 µs a dispatch against ~1.3
_BLANK_RUN = RunJob(job_id="-", attempt=0, incarnation="-", request=st.BLANK_REQUEST)


class Dispatcher:
    def __init__(self, term: Term) -> None:
        self._term = term
        self._mux = ReplyMux(term.nc)
        self._ready: deque[tuple[JobRecord, AttemptRecord]] = deque()
        self._wake = asyncio.Event()

    def after(self, record: JobRecord, written: asyncio.Future[None]) -> None:
        """Send ``record``'s new attempts (a gang's, or one task's) once ``written`` (their assignment) completes."""
        written.add_done_callback(partial(self._written, record))

    async def run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._ready:
                    await self._send(self._ready.popleft())
        finally:
            await self._mux.close()

    def _written(self, record: JobRecord, written: asyncio.Future[None]) -> None:
        if written.cancelled() or written.exception() is not None:
            return  # not stored (the term is ending): nothing may run it
        newest = record.attempts[-1].assigned_at_ms
        for attempt in record.attempts:
            if attempt.assigned_at_ms == newest and attempt.state == JobState.PENDING:
                self._ready.append((record, attempt))
        self._wake.set()

    async def _send(self, item: tuple[JobRecord, AttemptRecord]) -> None:
        record, current = item
        message = evolve(
            _BLANK_RUN,
            job_id=record.job_id,
            attempt=current.attempt,
            incarnation=current.incarnation,
            request=record.request,
            task=current.task,
            task_hosts=task_hosts(record, current.attempt),
        )
        subject = self._term.subjects.worker_run(current.worker_id)
        try:
            data = self._term.packing.dispatch(message)
            future = await self._mux.send(subject, data, self._term.settings.dispatch_timeout)
        except Exception as exc:  # the connection is closing
            self._failed(record, current, f"cannot send the dispatch: {exc!r}")
            return
        future.add_done_callback(partial(self._answered, record, current))

    def _answered(self, record: JobRecord, current: AttemptRecord, future: asyncio.Future[Msg]) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if isinstance(error, NoResponders):
            reason = "nothing answers its dispatch subject"
        elif isinstance(error, ReplyTimeout):
            reason = f"no answer within {self._term.settings.dispatch_timeout:g}s"
        elif error is not None:
            reason = repr(error)
        else:
            try:
                reply = decode_reply(future.result(), RunJobReply)
            except Exception as exc:  # an error reply, or one that does not decode
                reason = f"it answered with an error: {exc}"
            else:
                if reply.accepted:
                    current = record.attempts[-1]
                    self._term.metrics.dispatch.observe(max(0, now_ms() - current.assigned_at_ms) / 1000)
                    return
                reason = reply.reason
        self._failed(record, current, reason)

    def _failed(self, record: JobRecord, current: AttemptRecord, reason: str) -> None:
        """The worker did not take the attempt: undo the assignment, back the worker off for a while."""
        term = self._term
        log.warning(
            "dispatch failed job_id=%s task=%d worker=%s: %s", record.job_id, current.task, current.worker_id, reason
        )
        latest = term.book.jobs.get(record.job_id)
        reverted = st.revert_assignment(latest, current.attempt, current.task) if latest is not None else None
        try:
            if reverted is not None:
                term.commit(reverted)
        except LeadershipLost:
            return
        entry = term.book.workers.get(current.worker_id)
        if entry is not None:
            entry.unhealthy_until = time.monotonic() + term.settings.unhealthy_backoff
        term.wake.set()


def task_hosts(record: JobRecord, attempt: int) -> list[str]:
    """The host of every task, in index order, as far as known when this attempt is sent (all of a gang's;
    of independent tasks, those placed so far, "" for the rest)."""
    n = record.request.replicas
    if n == 1:
        return [a.host or ""] if (a := records.current_attempt(record, 0)) is not None else []
    hosts = [""] * n
    for a in record.attempts:
        if a.state in records.ACTIVE_ATTEMPT and (not record.request.coschedule or a.attempt == attempt):
            hosts[a.task] = a.host or ""
    return hosts
