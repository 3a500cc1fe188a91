"""A worker's line to the controller: registration, heartbeats, and an outbox of job reports that retries each
report, in order, until the controller acknowledges it (so a controller restart loses no report)."""

from __future__ import annotations

import itertools
import logging
import time

import anyio
from nats.aio.client import Client as NATS

from fluster.bus.retry import backoff
from fluster.bus.rpc import request
from fluster.errors import FlusterError, NobodyListening, WorkerIdInUse
from fluster.protocol.messages import (
    Ack,
    AttemptRef,
    DeregisterWorker,
    Heartbeat,
    HeartbeatReply,
    JobUpdated,
    RegisterWorker,
    RegisterWorkerReply,
    WorkerInfo,
)
from fluster.protocol.subjects import Subjects
from fluster.worker.lease import Lease

log = logging.getLogger(__name__)

CONTROLLER = "the controller"
REPORT_TIMEOUT_S = 2.0


class ControllerLink:
    def __init__(self, nc: NATS, subjects: Subjects) -> None:
        self._nc = nc
        self._subjects = subjects
        self._outbox: list[JobUpdated] = []
        self._wake = anyio.Event()

    def report(self, update: JobUpdated) -> None:
        """Queue a report; ``run_outbox`` delivers it after every earlier one."""
        self._outbox.append(update)
        self._wake.set()

    def pending(self) -> set[tuple[str, int, int]]:
        """The attempts with reports not yet acknowledged (the controller must still count them as known)."""
        return {(u.job_id, u.task, u.attempt) for u in self._outbox}

    def drop_pending(self) -> None:
        self._outbox.clear()

    async def flushed(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until every queued report is acknowledged."""
        with anyio.move_on_after(timeout):
            while self._outbox:  # noqa: ASYNC110 - run_outbox empties it; a bounded wait at shutdown only
                await anyio.sleep(0.02)

    async def run_outbox(self) -> None:
        failures = 0
        while True:
            if not self._outbox:
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            update = self._outbox[0]
            try:
                await request(
                    self._nc, self._subjects.job_update(update.worker_id), update, Ack, timeout=5, what=CONTROLLER
                )
            except FlusterError as exc:
                log.debug("report not delivered, retrying: %s", exc)
                await anyio.sleep(backoff(failures))
                failures += 1
                continue
            failures = 0
            if self._outbox and self._outbox[0] is update:
                self._outbox.pop(0)

    async def register(self, info: WorkerInfo, lease: Lease) -> None:
        """Register, retrying until a controller acknowledges (it may not be up yet); the reply's lease grant
        goes into ``lease``.

        Raises:
            WorkerIdInUse: the controller refused the id: a live worker uses it (no retry would help).
        """
        for attempt in itertools.count():
            sent = time.monotonic()
            try:
                reply = await request(
                    self._nc,
                    self._subjects.register(info.worker_id),
                    RegisterWorker(info=info),
                    RegisterWorkerReply,
                    timeout=5,
                    what=CONTROLLER,
                )
                lease.granted(sent, reply.lease_ms)
                return
            except FlusterError as exc:
                raise_if_id_taken(exc)
                log.info("registration not acknowledged, retrying: %s", exc)
                await anyio.sleep(backoff(attempt, 0.05, 2.0))

    async def heartbeat(
        self, worker_id: str, incarnation: str, known: set[tuple[str, int, int]], timeout: float, lease: Lease
    ) -> HeartbeatReply | None:
        """One heartbeat listing the attempts this worker knows of; its answer renews ``lease``. None when no
        controller answered."""
        beat = Heartbeat(
            worker_id=worker_id,
            incarnation=incarnation,
            running=[AttemptRef(job_id=j, task=t, attempt=a) for j, t, a in sorted(known | self.pending())],
        )
        sent = time.monotonic()
        try:
            reply = await request(
                self._nc, self._subjects.heartbeat(worker_id), beat, HeartbeatReply, timeout=timeout, what=CONTROLLER
            )
        except NobodyListening:
            lease.no_controller(sent)
            return None
        except FlusterError as exc:
            log.debug("heartbeat not answered: %s", exc)
            return None
        if reply.status == "ok":
            lease.granted(sent, reply.lease_ms)
        return reply

    async def deregister(self, worker_id: str, incarnation: str) -> None:
        try:
            await request(
                self._nc,
                self._subjects.deregister(worker_id),
                DeregisterWorker(worker_id=worker_id, incarnation=incarnation),
                Ack,
                timeout=2,
                what=CONTROLLER,
            )
        except FlusterError as exc:
            log.info("deregistration not acknowledged: %s", exc)


def raise_if_id_taken(exc: FlusterError) -> None:
    """The controller refused the id (it sends ``WorkerIdInUse``, rebuilt here as its own type): stop."""
    if isinstance(exc, WorkerIdInUse):
        raise exc
