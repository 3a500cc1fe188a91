"""One term of leadership: the in-memory view, the writers that persist it, and the tasks a term spawns.

A term starts when a controller takes the lease and ends when it loses it (or stops): nothing of it survives
into the next term, which reloads from KV. Every change to a job goes through ``commit``: the book changes at
once (so the next event sees it), the record goes to the jobs writer, and the returned future completes once
it is stored. Tasks a term spawns (dispatches, kills, stops) run in its task group behind a guard: an
exception in one is logged, never allowed to end the term, and a term that ends cancels them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from nats.aio.client import Client as NATS

from fluster.bus.assets import Assets
from fluster.bus.blobs import put_blob
from fluster.bus.kv import latest_valid, snapshot
from fluster.controller import records
from fluster.controller import state as st
from fluster.controller.book import Book
from fluster.controller.leader import LeaderLease
from fluster.controller.packing import RequestBytes
from fluster.controller.placement import Placer
from fluster.controller.settings import ControllerSettings
from fluster.controller.store import KvWriter
from fluster.errors import LeadershipLost
from fluster.observe.components import ControllerMetrics
from fluster.protocol.codec import encode
from fluster.protocol.messages import AttemptRecord, HeartbeatReply, JobRecord, WorkerInfo, now_ms
from fluster.protocol.subjects import Subjects, quarantine_object

log = logging.getLogger(__name__)


class Term:
    def __init__(
        self, nc: NATS, settings: ControllerSettings, subjects: Subjects, assets: Assets, lease: LeaderLease
    ) -> None:
        self.nc = nc
        self.settings = settings
        self.subjects = subjects
        self.assets = assets
        self.lease = lease
        self.book = Book()
        reserve = settings.reserve_after
        self.placer = Placer(int(reserve * 1000) if reserve is not None else None)
        self.jobs_kv = KvWriter(nc, subjects.jobs_bucket, lease.valid, assets.repair)
        self.packing = RequestBytes()  # encodes what jobs_kv sends, each active job's request packed once
        self.workers_kv = KvWriter(nc, subjects.workers_bucket, lease.valid, assets.repair)
        self.wake = asyncio.Event()
        # a heartbeat's usual answer, encoded once (encoding it was ~5 µs of an idle heartbeat's ~25)
        self.attempt_lease_ms = int(settings.attempt_lease_s * 1000)
        self.heartbeat_ok = encode(HeartbeatReply(status="ok", lease_ms=self.attempt_lease_ms))
        self.started = time.monotonic()
        self.metrics = ControllerMetrics("term")  # the controller's own, set by the service
        self.orphans: dict[str, float] = {}  # worker id -> when its placements are lost if it never comes back
        # kills jobs (the children of a job that ended); set by the service to ``jobs.kill_many``
        self.cascade: Callable[[list[str], str], Coroutine[Any, Any, object]] | None = None
        # stops running attempts of a job that waits for them (``after_stop``); set by the service
        self.stop_attempts: Callable[[str, list[AttemptRecord], str], Coroutine[Any, Any, object]] | None = None
        self._stopping: set[tuple[str, int, int]] = set()
        # sends an attempt once its assignment is stored; set by the service to ``Dispatcher.after``
        self.dispatch: Callable[[JobRecord, asyncio.Future[None]], None] = _no_dispatch
        self._tasks: asyncio.TaskGroup | None = None
        self._spawned: set[asyncio.Task[None]] = set()

    # -- changing jobs --------------------------------------------------------------------------------

    def commit(self, record: JobRecord) -> asyncio.Future[None]:
        """Make ``record`` current (in memory at once) and persist it; the future completes once it is stored.

        A job that just ended takes its unfinished children with it.
        """
        self._apply(record)
        return self.jobs_kv.put(record.job_id, partial(self.packing.record, record))

    def commit_lazily(self, record: JobRecord) -> None:
        """``commit`` for a change nobody waits on (an attempt that started): stored within a moment, together
        with the next change of the job if that comes first."""
        self._apply(record)
        self.jobs_kv.put_lazily(record.job_id, partial(self.packing.record, record))

    def _apply(self, record: JobRecord) -> None:
        if not self.lease.valid():
            raise LeadershipLost("the controller lease lapsed: it no longer changes jobs")
        old = self.book.put(record)
        if record.state.is_terminal and (old is None or not old.state.is_terminal):
            log.debug("job finished job_id=%s state=%s", record.job_id, record.state.value)
            children = [c for c in self.book.children.get(record.job_id, ()) if not self.book.jobs[c].state.is_terminal]
            if children and self.cascade is not None:
                self.spawn(self.cascade(children, f"parent job {record.job_id} ended"))
        if record.after_stop is not None and self.stop_attempts is not None:
            running = [
                a for a in records.active_attempts(record) if (record.job_id, a.task, a.attempt) not in self._stopping
            ]
            if running:  # the job waits for these to stop (a gang restarting, too many tasks failed)
                self._stopping.update((record.job_id, a.task, a.attempt) for a in running)
                self.spawn(self.stop_attempts(record.job_id, running, record.error or "stopping the job's tasks"))
        if old is None or old.state != record.state or records.is_pending(record):
            self.wake.set()

    def lose_placements(self, worker_id: str, reason: str, keep_incarnation: str | None = None) -> int:
        """Every active attempt placed on ``worker_id`` (except those of ``keep_incarnation``) is lost and
        retried while its budget lasts. O(that worker's jobs)."""
        lost = 0
        for (job_id, task), placement in list(self.book.active_on(worker_id).items()):
            if placement.incarnation == keep_incarnation:
                continue
            record = st.lose_attempt(self.book.jobs[job_id], now_ms(), reason, task)
            if record is not None:
                log.warning("attempt lost job_id=%s task=%d worker=%s: %s", job_id, task, worker_id, reason)
                self.commit(record)
                lost += 1
        return lost

    # -- tasks ----------------------------------------------------------------------------------------

    def bind(self, tasks: asyncio.TaskGroup) -> None:
        self._tasks = tasks

    def bind_ended(self) -> None:
        self._tasks = None
        self.jobs_kv.stop(LeadershipLost("the term has ended"))
        self.workers_kv.stop(LeadershipLost("the term has ended"))

    def spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        """Run ``coro`` in the term's task group; its failure is logged and ends nothing."""
        guarded = _guarded(coro)
        try:
            if self._tasks is None:
                raise RuntimeError("no task group")
            task = self._tasks.create_task(guarded)
        except RuntimeError:  # the term's task group is gone or shutting down
            guarded.close()
            coro.close()
            raise LeadershipLost("the term has ended") from None
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)

    # -- loading --------------------------------------------------------------------------------------

    async def load(self) -> None:
        """Rebuild the view from KV: workers first (so attempts count against their workers), then jobs.

        A record that does not decode is repaired from the key's history (its newest good revision) or,
        when it has none, quarantined in the object store and removed, never silently dropped.
        """
        now = time.monotonic()
        bad_workers: dict[str, bytes] = {}
        for info in (await snapshot(self.assets.workers, WorkerInfo, corrupt=bad_workers)).values():
            self.book.add_worker(info, now)
        for key, data in bad_workers.items():  # the worker re-registers at its next heartbeat
            await self._quarantine(self.subjects.workers_bucket, key, data)
            self.workers_kv.delete(key)
        bad_jobs: dict[str, bytes] = {}
        records = await snapshot(self.assets.jobs, JobRecord, corrupt=bad_jobs)
        for key, data in bad_jobs.items():
            repaired = await latest_valid(self.assets.jobs, key, JobRecord)
            if repaired is not None and repaired.job_id == key:
                log.error("job record %s was corrupt: restored its last good revision", key)
                records[key] = repaired
                self.jobs_kv.put(key, encode(repaired))
            else:
                await self._quarantine(self.subjects.jobs_bucket, key, data)
                self.jobs_kv.purge(key)
        for record in sorted(records.values(), key=lambda r: r.seq):
            self.book.put(record)
        self._reconcile_placements(now)

    def _reconcile_placements(self, now: float) -> None:
        """Attempts whose worker is registered under another incarnation are lost now; attempts on a worker
        that is not registered at all are lost if it has not come back within the worker timeout."""
        for worker_id in list(self.book.placed):
            entry = self.book.workers.get(worker_id)
            if entry is None:
                self.orphans[worker_id] = now + self.settings.worker_timeout
            else:
                self.lose_placements(
                    worker_id, f"worker {worker_id} restarted", keep_incarnation=entry.info.incarnation
                )

    async def _quarantine(self, bucket: str, key: str, data: bytes) -> None:
        name = quarantine_object(bucket, key)
        try:
            await put_blob(self.assets.objects, name, data)
            log.error("quarantined an undecodable value of %s key %s as object %s", bucket, key, name)
        except Exception as exc:  # the record is lost either way; say so loudly
            log.error("cannot quarantine %s key %s (%d bytes): %r", bucket, key, len(data), exc)

    async def rewrite_all(self, recreated: set[str]) -> None:
        """A bucket this term writes was re-created empty (deleted, or lost with its server): write back
        what the view holds, so the next leader finds it."""
        if self.subjects.jobs_bucket in recreated:
            log.error("the jobs bucket was re-created: rewriting %d job records", len(self.book.jobs))
            for record in self.book.jobs.values():
                self.jobs_kv.put(record.job_id, encode(record))
        if self.subjects.workers_bucket in recreated:
            for worker_id, entry in self.book.workers.items():
                self.workers_kv.put(worker_id, encode(entry.info))


def _no_dispatch(record: JobRecord, written: asyncio.Future[None]) -> None:
    raise LeadershipLost("this term dispatches nothing")


async def _guarded(coro: Coroutine[Any, Any, object]) -> None:
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except LeadershipLost as exc:
        log.info("controller task stopped: %s", exc)
    except Exception:
        log.exception("controller task failed")
