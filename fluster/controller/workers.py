"""The controller's worker handlers: registration, heartbeats, leaving, and deciding that a worker is dead.

A worker speaks on subjects that end in its own id; each handler first checks that the message names the
same worker (server permissions then let a worker speak only for itself). A heartbeat costs O(that worker's
jobs): it records the worker as alive the moment it is handled, and reconciles the attempts it reports with
those placed on it. Liveness is judged only when the controller is known to be caught up (see
``liveness_loop``), so a busy or paused controller never declares a live worker dead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import anyio

from fluster.controller import state as st
from fluster.controller.serving import Later
from fluster.controller.term import Term
from fluster.errors import LeadershipLost, ProtocolError, WorkerIdInUse
from fluster.protocol.codec import encode
from fluster.protocol.messages import (
    Ack,
    AttemptRef,
    DeregisterWorker,
    Heartbeat,
    HeartbeatReply,
    RegisterWorker,
    RegisterWorkerReply,
    now_ms,
)

log = logging.getLogger(__name__)

_REREGISTER = HeartbeatReply(status="reregister")


def on_register(term: Term, msg: RegisterWorker, sender: str) -> Later:
    """Register a worker (a new incarnation loses the attempts of the old one); the ack waits until its
    registry key is stored.

    Raises:
        WorkerIdInUse: another live worker (another process) uses the same id.
    """
    info = msg.info
    _check_sender(info.worker_id, sender)
    book = term.book
    old = book.workers.get(info.worker_id)
    if (
        old is not None
        and old.info.incarnation != info.incarnation
        and (old.info.pid, old.info.hostname) != (info.pid, info.hostname)
        and time.monotonic() - old.last_seen < term.settings.worker_timeout
    ):
        raise WorkerIdInUse(
            f"worker id {info.worker_id!r} is in use by a live worker (pid {old.info.pid} on "
            f"{old.info.hostname}); give each worker its own --worker-id"
        )
    book.add_worker(info, time.monotonic())
    term.orphans.pop(info.worker_id, None)
    term.lose_placements(info.worker_id, f"worker {info.worker_id} restarted", keep_incarnation=info.incarnation)
    written = term.workers_kv.put(info.worker_id, encode(info))
    term.wake.set()
    log.info(
        "worker registered worker_id=%s incarnation=%s cpu=%g memory=%d",
        info.worker_id,
        info.incarnation,
        info.resources.cpu,
        info.resources.memory_bytes,
    )
    return Later(written, RegisterWorkerReply(lease_ms=term.attempt_lease_ms))


def on_deregister(term: Term, msg: DeregisterWorker, sender: str) -> Ack | Later:
    _check_sender(msg.worker_id, sender)
    entry = term.book.workers.get(msg.worker_id)
    if entry is not None and entry.info.incarnation == msg.incarnation:
        return Later(remove_worker(term, msg.worker_id, f"worker {msg.worker_id} left the cluster"), Ack())
    return Ack()


def on_heartbeat(term: Term, msg: Heartbeat, sender: str) -> HeartbeatReply | bytes:
    """O(the attempts this worker reports + those placed on it)."""
    _check_sender(msg.worker_id, sender)
    entry = term.book.workers.get(msg.worker_id)
    if entry is None or entry.info.incarnation != msg.incarnation:
        return _REREGISTER
    entry.last_seen = time.monotonic()
    term.metrics.heartbeats.value += 1
    placed = term.book.active_on(msg.worker_id)
    if not msg.running and not placed:  # an idle worker: most heartbeats at scale
        return term.heartbeat_ok
    kill: list[AttemptRef] = []
    reported: set[tuple[str, int, int]] = set()
    for ref in msg.running:
        reported.add((ref.job_id, ref.task, ref.attempt))
        placement = placed.get((ref.job_id, ref.task))
        if placement is None or placement.attempt != ref.attempt or placement.incarnation != msg.incarnation:
            kill.append(ref)
    # attempts placed here that the worker has never heard of (a lost dispatch) are lost
    now = now_ms()
    cutoff = now - int(term.settings.missing_attempt_grace * 1000)
    missing = [
        unit
        for unit, p in placed.items()
        if p.incarnation == msg.incarnation and (*unit, p.attempt) not in reported and p.assigned_at_ms < cutoff
    ]
    for job_id, task in missing:
        lost = st.lose_attempt(term.book.jobs[job_id], now, "the worker lost the attempt", task)
        if lost is not None:
            term.commit(lost)
    if not kill:
        return term.heartbeat_ok
    return HeartbeatReply(status="ok", kill=kill, lease_ms=term.attempt_lease_ms)


def remove_worker(term: Term, worker_id: str, reason: str) -> asyncio.Future[None]:
    """The worker is gone: its attempts are lost (and retried) now; the future completes once its registry
    key is deleted."""
    if term.book.remove_worker(worker_id) is not None:
        term.placer.forget_worker(worker_id)
    term.lose_placements(worker_id, reason)
    term.wake.set()
    return term.workers_kv.delete(worker_id)


async def liveness_loop(term: Term, heartbeats: Any) -> None:
    """Declare dead the workers silent for longer than the timeout, judged only when the controller is
    caught up: after a round trip to the server (every heartbeat it sent before has been read) with no
    heartbeat waiting to be handled. A round that follows a pause of the controller itself (its own loop
    late by more than a few periods) judges nothing."""
    timeout = term.settings.worker_timeout
    period = min(1.0, timeout / 4)
    last = time.monotonic()
    while True:
        await anyio.sleep(period)
        now = time.monotonic()
        late, last = now - last, now
        if not term.lease.valid():
            raise LeadershipLost("the controller lease lapsed")
        if late > 3 * period:
            log.warning("controller loop was held up %.1fs: not judging worker liveness this round", late)
            continue
        try:
            await term.nc.flush(timeout=max(1, int(timeout / 2)))
        except Exception as exc:  # cannot reach the server: it cannot tell us who is alive either
            log.warning("liveness: no round trip to NATS (%r); not judging", exc)
            continue
        if heartbeats.pending_msgs:
            continue  # heartbeats are waiting to be handled: judge once they are
        now = time.monotonic()
        for worker_id, entry in list(term.book.workers.items()):
            silent = now - entry.last_seen
            if silent > timeout:
                log.warning("worker dead worker_id=%s (no heartbeat for %.1fs)", worker_id, silent)
                remove_worker(term, worker_id, f"worker {worker_id} stopped heartbeating")
        for worker_id, deadline in list(term.orphans.items()):
            if now >= deadline and worker_id not in term.book.workers:
                del term.orphans[worker_id]
                term.lose_placements(worker_id, f"worker {worker_id} is not registered")


def _check_sender(worker_id: str, sender: str) -> None:
    if worker_id != sender:
        raise ProtocolError(f"a message on worker {sender!r}'s subject cannot speak for worker {worker_id!r}")
