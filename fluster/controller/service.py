"""The controller's NATS shell: takes submissions, kills and worker reports, runs scheduling passes, dispatches.

Decisions live in ``scheduler`` and ``state`` (pure); this module receives messages, applies those functions
under one lock, persists every changed job record to the ``jobs`` KV bucket, and sends dispatches and stops.
On start it rebuilds its view from KV, so a restart loses nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskGroup, TaskStatus
from nats.aio.client import Client as NATS
from nats.js.errors import KeyWrongLastSequenceError
from pydantic import BaseModel

from fluster.bus.assets import Assets, ensure_assets
from fluster.bus.blobs import delete_blob
from fluster.bus.kv import get_model, snapshot
from fluster.bus.retry import with_retries
from fluster.bus.rpc import request, serve_requests
from fluster.controller import state as st
from fluster.controller.leader import LeaderLease
from fluster.controller.retention import expired
from fluster.controller.scheduler import find_assignments
from fluster.errors import FlusterError, JobAlreadyExists, JobNotFound, ProtocolError
from fluster.protocol.codec import encode
from fluster.protocol.ids import validate_job_id
from fluster.protocol.messages import (
    Ack,
    AttemptRecord,
    AttemptRef,
    DeregisterWorker,
    Heartbeat,
    HeartbeatReply,
    JobRecord,
    JobState,
    JobUpdated,
    KillJob,
    KillJobReply,
    RegisterWorker,
    RunJob,
    RunJobReply,
    StopJob,
    StopJobReply,
    SubmitJob,
    SubmitJobReply,
    WorkerInfo,
    now_ms,
)
from fluster.protocol.subjects import CONTROLLER_QUEUE, Subjects, entrypoint_object, result_object

log = logging.getLogger(__name__)

FORGET_INTERVAL_S = 60.0  # how often finished jobs past the retention are looked for

Req = TypeVar("Req", bound=BaseModel)


@dataclass(frozen=True)
class ControllerSettings:
    namespace: str = "default"
    worker_timeout: float = 10.0  # a worker silent this long is dead
    schedule_interval: float = 0.5  # the longest time between scheduling passes (scheduling timeouts)
    dispatch_timeout: float = 5.0
    kill_grace: float = 5.0  # SIGTERM → SIGKILL
    unhealthy_backoff: float = 5.0  # no dispatch to a worker this long after one failed
    missing_attempt_grace: float = 10.0  # an assigned attempt its worker does not know of is lost after this
    replicas: int | None = None  # JetStream replicas for the namespace's assets (3 on a 3-node NATS cluster)
    finished_job_retention: float | None = 24 * 3600.0  # finished jobs are forgotten after this (None: never)


class Controller:
    """``await tg.start(Controller(nc, settings).run)``: serves until cancelled."""

    def __init__(self, nc: NATS, settings: ControllerSettings | None = None) -> None:
        self.nc = nc
        self.settings = settings or ControllerSettings()
        self.subjects = Subjects(self.settings.namespace)
        self.jobs: dict[str, JobRecord] = {}
        self._active: dict[str, JobRecord] = {}  # the jobs not yet finished: what passes and heartbeats scan
        self.workers: dict[str, st.WorkerEntry] = {}
        self._children: dict[str, set[str]] = {}
        self._lock = anyio.Lock()
        self._wake = anyio.Event()
        self._assets: Assets | None = None
        self._tg: TaskGroup | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Wait for the controller lease (standby while another controller is active), then serve.

        Raises:
            LeadershipLost: another controller took over; this one stops acting at once.
        """
        self._assets = await ensure_assets(self.nc.jetstream(), self.subjects, self.settings.replicas)
        lease = LeaderLease(self.assets.leader, f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
        await lease.acquire()
        try:
            await self._serve_as_leader(lease, task_status)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await lease.release()

    async def _serve_as_leader(self, lease: LeaderLease, task_status: TaskStatus[None]) -> None:
        await self._load()
        handlers: list[tuple[str, Callable[[Any], Awaitable[None]]]] = [
            (self.subjects.submit, self._serve(SubmitJob, self._on_submit, "submit")),
            (self.subjects.kill, self._serve(KillJob, self._on_kill, "kill", concurrent=True)),
            (self.subjects.register, self._serve(RegisterWorker, self._on_register, "register")),
            (self.subjects.deregister, self._serve(DeregisterWorker, self._on_deregister, "deregister")),
            (self.subjects.heartbeat, self._serve(Heartbeat, self._on_heartbeat, "heartbeat")),
            (self.subjects.job_update, self._serve(JobUpdated, self._on_update, "job update")),
        ]
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for subject, handler in handlers:
                sub = await self.nc.subscribe(subject, queue=CONTROLLER_QUEUE)
                tg.start_soon(self._consume, sub, handler)
            await self.nc.flush()
            tg.start_soon(self._schedule_loop)
            tg.start_soon(self._liveness_loop)
            if self.settings.finished_job_retention:
                tg.start_soon(self._forget_loop, self.settings.finished_job_retention)
            tg.start_soon(lease.keep)
            log.info(
                "controller ready namespace=%s jobs=%d workers=%d",
                self.subjects.namespace,
                len(self.jobs),
                len(self.workers),
            )
            task_status.started()

    # -- plumbing ---------------------------------------------------------------------------------------

    @property
    def assets(self) -> Assets:
        assert self._assets is not None, "controller not started"
        return self._assets

    async def _load(self) -> None:
        self.jobs = await snapshot(self.assets.jobs, JobRecord)
        self._active = {job_id: r for job_id, r in self.jobs.items() if not r.state.is_terminal}
        for record in self.jobs.values():
            if record.request.parent_id:
                self._children.setdefault(record.request.parent_id, set()).add(record.job_id)
        now = time.monotonic()
        workers = await snapshot(self.assets.workers, WorkerInfo)
        self.workers = {wid: st.WorkerEntry(info=info, last_seen=now) for wid, info in workers.items()}

    def _serve(
        self,
        model: type[Req],
        handler: Callable[[Req], Awaitable[BaseModel | None]],
        what: str,
        concurrent: bool = False,
    ) -> Callable[[Any], Awaitable[None]]:
        async def handle(msg: Any) -> None:
            if concurrent and self._tg is not None:
                self._tg.start_soon(serve_requests, msg, model, handler, what)
            else:
                await serve_requests(msg, model, handler, what=what)

        return handle

    async def _consume(self, sub: Any, handler: Callable[[Any], Awaitable[None]]) -> None:
        async for msg in sub.messages:
            await handler(msg)

    def wake(self) -> None:
        self._wake.set()

    async def _commit(self, record: JobRecord) -> None:
        """Persist a changed record (under the lock); a job that just ended takes its children with it."""
        before = self.jobs.get(record.job_id)
        data = encode(record)
        await with_retries(lambda: self.assets.jobs.put(record.job_id, data), f"write job {record.job_id}")
        self.jobs[record.job_id] = record
        if record.state.is_terminal:
            self._active.pop(record.job_id, None)
        else:
            self._active[record.job_id] = record
        if record.state.is_terminal and (before is None or not before.state.is_terminal):
            log.info("job finished job_id=%s state=%s", record.job_id, record.state.value)
            children = [c for c in self._children.get(record.job_id, ()) if not self.jobs[c].state.is_terminal]
            if children and self._tg is not None:
                self._tg.start_soon(self._kill_many, children, f"parent job {record.job_id} ended")
        if before is None or before.state != record.state:
            self.wake()

    # -- clients ----------------------------------------------------------------------------------------

    async def _on_submit(self, msg: SubmitJob) -> SubmitJobReply:
        job_id = validate_job_id(msg.job_id)
        async with self._lock:
            existing = self.jobs.get(job_id)
            if existing is not None:
                if existing.token == msg.token:
                    return SubmitJobReply(job_id=job_id, created=False)
                raise JobAlreadyExists(
                    f"a job named {job_id!r} already exists in namespace {self.subjects.namespace!r} "
                    f"({existing.state.value}); choose another name"
                )
            parent = self.jobs.get(msg.request.parent_id) if msg.request.parent_id else None
            if parent is not None and parent.state.is_terminal:
                raise FlusterError(f"parent job {parent.job_id} has already ended ({parent.state.value})")
            record = st.new_record(msg, now_ms(), time.time_ns())
            try:
                await with_retries(lambda: self.assets.jobs.create(job_id, encode(record)), f"create job {job_id}")
            except KeyWrongLastSequenceError as exc:  # created already: by this submit's own timed-out try?
                found = await get_model(self.assets.jobs, job_id, JobRecord)
                if found is None or found[0].token != msg.token:
                    raise JobAlreadyExists(f"job {job_id!r} already exists") from exc
                record = found[0]
            self.jobs[job_id] = record
            self._active[job_id] = record
            if record.request.parent_id:
                self._children.setdefault(record.request.parent_id, set()).add(job_id)
            log.info("job submitted job_id=%s resources=%s", job_id, record.request.resources.describe())
            self.wake()
        return SubmitJobReply(job_id=job_id, created=True)

    async def _on_kill(self, msg: KillJob) -> KillJobReply:
        job_id = validate_job_id(msg.job_id)
        record = self.jobs.get(job_id)
        if record is None:
            raise JobNotFound(f"no job {job_id!r} in namespace {self.subjects.namespace!r}")
        if record.state.is_terminal:
            return KillJobReply(
                job_id=job_id,
                state=record.state,
                already_finished=True,
                message=f"job {job_id} had already finished ({record.state.value}); nothing to kill",
            )
        killed = await self._kill_many([job_id, *self._descendants(job_id)], msg.reason)
        final = self.jobs[job_id]
        return KillJobReply(
            job_id=job_id,
            state=final.state,
            already_finished=False,
            message=f"killed {len(killed)} job(s)",
            killed=killed,
        )

    def _descendants(self, job_id: str) -> list[str]:
        found: list[str] = []
        stack = [job_id]
        while stack:
            for child in self._children.get(stack.pop(), ()):
                found.append(child)
                stack.append(child)
        return found

    async def _kill_many(self, job_ids: list[str], reason: str) -> list[str]:
        """Kill jobs: pending ones at once, running ones through their workers (SIGTERM, grace, SIGKILL)."""
        stops: list[tuple[str, AttemptRecord]] = []
        killed: list[str] = []
        async with self._lock:
            for job_id in job_ids:
                record = self.jobs.get(job_id)
                if record is None or record.state.is_terminal:
                    continue
                killed.append(job_id)
                current = st.active_attempt(record)
                if current is None:
                    await self._commit(st.finish(record, JobState.KILLED, now_ms(), reason))
                else:
                    await self._commit(record.model_copy(update={"kill_requested": True, "error": reason}))
                    stops.append((job_id, current))
        async with anyio.create_task_group() as tg:
            for job_id, attempt in stops:
                tg.start_soon(self._stop_attempt, job_id, attempt)
        async with self._lock:
            for job_id, _ in stops:
                record = self.jobs[job_id]
                if not record.state.is_terminal:
                    await self._commit(st.finish(record, JobState.KILLED, now_ms(), record.error or reason))
        return killed

    async def _stop_attempt(self, job_id: str, attempt: AttemptRecord) -> None:
        grace = self.settings.kill_grace
        stop = StopJob(job_id=job_id, attempt=attempt.attempt, grace_ms=int(grace * 1000))
        try:
            await request(
                self.nc,
                self.subjects.worker_kill(attempt.worker_id),
                stop,
                StopJobReply,
                timeout=grace + 10,
                what=f"worker {attempt.worker_id}",
            )
        except FlusterError as exc:  # a worker that is gone has nothing left running
            log.warning("stop job_id=%s on worker=%s failed: %s", job_id, attempt.worker_id, exc)

    # -- workers ----------------------------------------------------------------------------------------

    async def _on_register(self, msg: RegisterWorker) -> Ack:
        info = msg.info
        async with self._lock:
            old = self.workers.get(info.worker_id)
            if (
                old is not None
                and old.info.incarnation != info.incarnation
                and (old.info.pid, old.info.hostname) != (info.pid, info.hostname)
                and time.monotonic() - old.last_seen < self.settings.worker_timeout
            ):
                raise FlusterError(
                    f"worker id {info.worker_id!r} is in use by a live worker (pid {old.info.pid} on "
                    f"{old.info.hostname}); give each worker its own --worker-id"
                )
            if old is not None and old.info.incarnation != info.incarnation:
                await self._lose_jobs_of(info.worker_id, f"worker {info.worker_id} restarted", old.info.incarnation)
            self.workers[info.worker_id] = st.WorkerEntry(info=info, last_seen=time.monotonic())
            data = encode(info)
            await with_retries(lambda: self.assets.workers.put(info.worker_id, data), "register worker")
            log.info(
                "worker registered worker_id=%s incarnation=%s cpu=%g memory=%d",
                info.worker_id,
                info.incarnation,
                info.resources.cpu,
                info.resources.memory_bytes,
            )
            self.wake()
        return Ack()

    async def _on_deregister(self, msg: DeregisterWorker) -> Ack:
        async with self._lock:
            entry = self.workers.get(msg.worker_id)
            if entry is not None and entry.info.incarnation == msg.incarnation:
                await self._remove_worker(msg.worker_id, f"worker {msg.worker_id} left the cluster")
        return Ack()

    async def _on_heartbeat(self, msg: Heartbeat) -> HeartbeatReply:
        entry = self.workers.get(msg.worker_id)
        if entry is None or entry.info.incarnation != msg.incarnation:
            return HeartbeatReply(status="reregister")
        entry.last_seen = time.monotonic()
        known = {(ref.job_id, ref.attempt) for ref in msg.running}
        kill: list[AttemptRef] = []
        for ref in msg.running:
            record = self.jobs.get(ref.job_id)
            current = st.active_attempt(record) if record is not None else None
            if current is None or current.attempt != ref.attempt or current.worker_id != msg.worker_id:
                kill.append(ref)
        # attempts assigned here that the worker has never heard of (a lost dispatch) are lost
        cutoff = now_ms() - int(self.settings.missing_attempt_grace * 1000)
        missing = [
            r
            for r in self._active.values()
            if (cur := st.active_attempt(r)) is not None
            and cur.worker_id == msg.worker_id
            and cur.incarnation == msg.incarnation
            and (r.job_id, cur.attempt) not in known
            and cur.assigned_at_ms < cutoff
        ]
        if missing:
            async with self._lock:
                for record in missing:
                    lost = st.lose_attempt(self.jobs[record.job_id], now_ms(), "the worker lost the attempt")
                    if lost is not None:
                        await self._commit(lost)
        return HeartbeatReply(status="ok", kill=kill)

    async def _on_update(self, msg: JobUpdated) -> Ack:
        async with self._lock:
            record = self.jobs.get(msg.job_id)
            updated = st.apply_update(record, msg) if record is not None else None
            if updated is None:
                return Ack(ok=False, message="stale report ignored")
            await self._commit(updated)
        return Ack()

    async def _remove_worker(self, worker_id: str, reason: str) -> None:
        entry = self.workers.pop(worker_id, None)
        await with_retries(lambda: self.assets.workers.delete(worker_id), "remove worker")
        if entry is not None:
            await self._lose_jobs_of(worker_id, reason, entry.info.incarnation)
        self.wake()

    async def _lose_jobs_of(self, worker_id: str, reason: str, incarnation: str) -> None:
        for record in list(self._active.values()):
            current = st.active_attempt(record)
            if current is not None and current.worker_id == worker_id and current.incarnation == incarnation:
                lost = st.lose_attempt(record, now_ms(), reason)
                if lost is not None:
                    log.warning("attempt lost job_id=%s worker=%s: %s", record.job_id, worker_id, reason)
                    await self._commit(lost)

    async def _liveness_loop(self) -> None:
        period = min(1.0, self.settings.worker_timeout / 4)
        while True:
            await anyio.sleep(period)
            now = time.monotonic()
            dead = [w for w, e in self.workers.items() if now - e.last_seen > self.settings.worker_timeout]
            if not dead:
                continue
            async with self._lock:
                for worker_id in dead:
                    entry = self.workers.get(worker_id)
                    if entry is not None and now - entry.last_seen > self.settings.worker_timeout:
                        log.warning(
                            "worker dead worker_id=%s (no heartbeat for %.1fs)",
                            worker_id,
                            now - entry.last_seen,
                        )
                        await self._remove_worker(worker_id, f"worker {worker_id} stopped heartbeating")

    async def _forget_loop(self, retention_s: float) -> None:
        """Forget finished jobs older than the retention (see ``fluster.controller.retention``)."""
        while True:
            await anyio.sleep(min(FORGET_INTERVAL_S, max(0.1, retention_s / 4)))
            try:
                async with self._lock:
                    for job_id in expired(self.jobs, self._children, now_ms(), retention_s):
                        await self._forget(job_id)
            except (FlusterError, OSError) as exc:  # JetStream briefly away: the next round tries again
                log.warning("forgetting finished jobs failed: %r", exc)

    async def _forget(self, job_id: str) -> None:
        record = self.jobs.get(job_id)
        await with_retries(lambda: self.assets.jobs.purge(job_id), f"forget job {job_id}")
        for name in (entrypoint_object(job_id), result_object(job_id)):
            await delete_blob(self.assets.objects, name)
        self.jobs.pop(job_id, None)
        self._children.pop(job_id, None)
        parent = record.request.parent_id if record is not None else None
        if parent is not None and parent in self._children:
            self._children[parent].discard(job_id)
        log.info("job forgotten job_id=%s (finished more than the retention ago)", job_id)

    # -- scheduling -------------------------------------------------------------------------------------

    async def _schedule_loop(self) -> None:
        while True:
            with anyio.move_on_after(self.settings.schedule_interval):
                await self._wake.wait()
            self._wake = anyio.Event()
            try:
                await self._schedule_pass()
            except (FlusterError, ProtocolError, OSError) as exc:
                log.exception("scheduling pass failed: %s", exc)

    async def _schedule_pass(self) -> None:
        dispatches: list[tuple[JobRecord, st.WorkerEntry]] = []
        async with self._lock:
            pending = sorted((r for r in self._active.values() if st.is_pending(r)), key=lambda r: r.seq)
            if not pending:
                return
            now = time.monotonic()
            result = find_assignments(
                [st.demand(r) for r in pending], st.supplies(self.workers, self._active, now), now_ms()
            )
            for job_id in result.timed_out:
                record = self.jobs[job_id]
                await self._commit(st.finish(record, JobState.UNSCHEDULABLE, now_ms(), st.unschedulable_error(record)))
            for job_id, worker_id in result.assignments:
                entry = self.workers[worker_id]
                record = st.assign(self.jobs[job_id], worker_id, entry.info.incarnation, now_ms())
                await self._commit(record)
                dispatches.append((record, entry))
        if dispatches and self._tg is not None:
            for record, entry in dispatches:
                self._tg.start_soon(self._dispatch, record, entry)

    async def _dispatch(self, record: JobRecord, entry: st.WorkerEntry) -> None:
        attempt = record.attempts[-1].attempt
        message = RunJob(
            job_id=record.job_id, attempt=attempt, incarnation=entry.info.incarnation, request=record.request
        )
        worker_id = entry.info.worker_id
        try:
            reply = await request(
                self.nc,
                self.subjects.worker_run(worker_id),
                message,
                RunJobReply,
                timeout=self.settings.dispatch_timeout,
                what=f"worker {worker_id}",
            )
            if reply.accepted:
                return
            reason = reply.reason
        except FlusterError as exc:
            reason = str(exc)
        log.warning("dispatch failed job_id=%s worker=%s: %s", record.job_id, worker_id, reason)
        async with self._lock:
            current = self.jobs.get(record.job_id)
            reverted = st.revert_assignment(current, attempt) if current is not None else None
            if reverted is not None:
                await self._commit(reverted)
            if worker_id in self.workers:
                self.workers[worker_id].unhealthy_until = time.monotonic() + self.settings.unhealthy_backoff
            self.wake()
