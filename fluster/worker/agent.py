"""The worker: registers, heartbeats, accepts dispatches, runs attempts through a runtime, reports them.

Each attempt runs in ``fluster.worker.attempts``; its state reports go to the controller through an outbox
that retries until acknowledged (``fluster.worker.link``). Fencing: a worker
the controller declared dead is told to re-register by its next heartbeat; it then kills everything it
still runs and comes back under a new incarnation, so an attempt never runs twice at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskGroup, TaskStatus
from nats.aio.client import Client as NATS
from pydantic import BaseModel

from fluster.bus.assets import Assets, assets_when_ready, watch_reconnects
from fluster.bus.rpc import serve_requests
from fluster.logs import bind_context
from fluster.observe.components import WorkerMetrics
from fluster.observe.publish import publish_loop
from fluster.observe.usage import running_attempts, usage_loop
from fluster.protocol.ids import Incarnation, new_incarnation, new_worker_id
from fluster.protocol.messages import (
    JobState,
    RunJob,
    RunJobReply,
    StopJob,
    StopJobReply,
    WorkerInfo,
    now_ms,
)
from fluster.protocol.subjects import Subjects
from fluster.security.identity import may_create_assets
from fluster.worker.attempts import Attempt, AttemptRunner
from fluster.worker.job_identity import JobIdentities
from fluster.worker.lease import Lease
from fluster.worker.link import ControllerLink
from fluster.worker.runtime import (
    Runtime,
)
from fluster.worker.settings import WorkerSettings, make_runtime, resolve_labels, resolve_resources

log = logging.getLogger(__name__)

Req = TypeVar("Req", bound=BaseModel)

HEARTBEATS_IN_FLIGHT = 4


class Worker:
    """``await tg.start(Worker(nc, settings).run)``; ``await worker.drain()`` before cancelling to leave cleanly."""

    def __init__(self, nc: NATS, settings: WorkerSettings, runtime: Runtime | None = None) -> None:
        self.nc = nc
        self.settings = settings
        self.subjects = Subjects(settings.namespace)
        self.worker_id = settings.worker_id or new_worker_id()
        self.incarnation: Incarnation = new_incarnation()
        self.cache_dir = settings.cache_dir or Path(tempfile.gettempdir()) / "fluster-env-cache"
        self.resources = resolve_resources(settings)
        self.runtime: Runtime = runtime or make_runtime(settings, self.worker_id, self.cache_dir, self.resources)
        # unique per worker run: two workers with the same id (in two namespaces) never share a directory
        base = settings.work_dir or Path(tempfile.gettempdir())
        self.work_root = base / f"fluster-{settings.namespace}-{self.worker_id}-{self.incarnation}"
        self.link = ControllerLink(nc, self.subjects)
        self.identities = JobIdentities(nc, self.subjects, self.worker_id, settings.url, settings.connect)
        self.lease = Lease()
        self.metrics = WorkerMetrics(self.worker_id, lambda: len(self.attempts))
        self.runner = AttemptRunner(
            nc,
            settings,
            self.worker_id,
            self.runtime,
            self.link,
            self.identities,
            self.lease,
            self.metrics,
            lambda: self.assets,
            self.cache_dir,
            self.work_root,
        )
        self.attempts = self.runner.running  # (job id, task, attempt) -> what runs
        self._reincarnating = anyio.Lock()
        self._draining = False
        self._assets: Assets | None = None
        self._tg: TaskGroup | None = None
        self._run_sub: Any = None

    @property
    def info(self) -> WorkerInfo:
        return WorkerInfo(
            worker_id=self.worker_id,
            incarnation=self.incarnation,
            hostname=self.settings.address or socket.gethostname(),
            pid=os.getpid(),
            runtime=self.runtime.name,
            resources=self.resources,
            registered_at_ms=now_ms(),
            metadata=dict(self.settings.metadata),
            labels=resolve_labels(self.settings, self.resources, socket.gethostname()),
        )

    @property
    def assets(self) -> Assets:
        assert self._assets is not None, "worker not started"
        return self._assets

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        bind_context(worker_id=self.worker_id)
        create = may_create_assets(self.settings.connect)  # else the controller makes them: wait for it
        self._assets = await assets_when_ready(self.nc.jetstream(), self.subjects, create)
        watch_reconnects(self.nc, self._assets)
        self.work_root.mkdir(parents=True, exist_ok=True)
        await self.runtime.cleanup_stale()
        self._run_sub = await self.nc.subscribe(self.subjects.worker_run(self.worker_id))
        kill_sub = await self.nc.subscribe(self.subjects.worker_kill(self.worker_id))
        await self.nc.flush()
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._consume, self._run_sub, RunJob, self._on_run, "dispatch", False)
                tg.start_soon(self._consume, kill_sub, StopJob, self._on_stop, "stop", True)
                await self.link.register(self.info, self.lease)
                tg.start_soon(self._heartbeat_loop)
                tg.start_soon(self._lease_loop)
                tg.start_soon(self.link.run_outbox)
                tg.start_soon(
                    publish_loop, self.nc, self.subjects, self.metrics.registry, self.settings.metrics_interval
                )
                tg.start_soon(
                    usage_loop,
                    self.assets.usage,
                    self.worker_id,
                    lambda: running_attempts(self.attempts.values()),
                    self.settings.usage_interval,
                )
                tg.start_soon(self.identities.run)
                log.info(
                    "worker ready worker_id=%s runtime=%s cpu=%g memory=%d",
                    self.worker_id,
                    self.runtime.name,
                    self.resources.cpu,
                    self.resources.memory_bytes,
                )
                task_status.started()
        finally:
            with anyio.CancelScope(shield=True):
                for attempt in list(self.attempts.values()):
                    attempt.fenced = True
                    with anyio.move_on_after(self.settings.kill_grace + 2):
                        await self.runner.stop(attempt, JobState.PREEMPTED, 0.5)
            shutil.rmtree(self.work_root, ignore_errors=True)

    async def drain(self, grace: float = 0.0) -> None:
        """Leave the cluster cleanly: take no new jobs, let running ones finish within ``grace`` seconds, stop
        (and report as PREEMPTED, so they are retried elsewhere) the rest, flush reports, deregister."""
        self._draining = True
        if self._run_sub is not None:
            with contextlib.suppress(Exception):
                await self._run_sub.unsubscribe()
        with anyio.move_on_after(grace):
            while self.attempts:
                await next(iter(self.attempts.values())).done.wait()
        async with anyio.create_task_group() as tg:
            for attempt in list(self.attempts.values()):
                tg.start_soon(self.runner.stop, attempt, JobState.PREEMPTED, self.settings.kill_grace)
        await self.link.flushed(5)
        await self.link.deregister(self.worker_id, self.incarnation)
        log.info("worker drained worker_id=%s", self.worker_id)

    # -- messages ---------------------------------------------------------------------------------------

    async def _consume(
        self,
        sub: Any,
        model: type[Req],
        handler: Callable[[Req], Awaitable[BaseModel]],
        what: str,
        concurrent: bool,
    ) -> None:
        async for msg in sub.messages:
            if concurrent and self._tg is not None:
                self._tg.start_soon(serve_requests, msg, model, handler, what)
            else:
                await serve_requests(msg, model, handler, what=what)

    async def _on_run(self, msg: RunJob) -> RunJobReply:
        if self._draining:
            return RunJobReply(accepted=False, reason="worker is draining")
        if msg.incarnation != self.incarnation:
            return RunJobReply(accepted=False, reason=f"stale incarnation {msg.incarnation}")
        if not self.lease.valid():
            return RunJobReply(accepted=False, reason="the worker holds no lease (no recent answer from a controller)")
        key = (msg.job_id, msg.task, msg.attempt)
        if key in self.attempts:
            return RunJobReply(accepted=True, reason="already running")
        if len(self.attempts) >= self.resources.max_concurrent_jobs:
            return RunJobReply(accepted=False, reason="worker is full")
        attempt = Attempt(job_id=msg.job_id, attempt=msg.attempt, message=msg)
        self.attempts[key] = attempt
        assert self._tg is not None
        self._tg.start_soon(self.runner.run, attempt)
        return RunJobReply(accepted=True)

    async def _on_stop(self, msg: StopJob) -> StopJobReply:
        attempt = self.attempts.get((msg.job_id, msg.task, msg.attempt))
        if attempt is None:
            return StopJobReply(stopped=False, message="not running here")
        await self.runner.stop(attempt, msg.state, msg.grace_ms / 1000)
        return StopJobReply(stopped=True)

    # -- controller link --------------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        """A heartbeat every interval, whether or not the last one was answered: a reply that does not come
        (a paused controller still in the queue group takes some of them) must not delay the next one, or
        the controller that is alive would hear too little and declare this worker dead."""
        async with anyio.create_task_group() as beats:
            in_flight = anyio.Semaphore(HEARTBEATS_IN_FLIGHT)
            while True:
                await anyio.sleep(self.settings.heartbeat_interval)
                if in_flight.value == 0:
                    continue  # every earlier one still waits: skip this beat rather than pile up
                await in_flight.acquire()
                beats.start_soon(self._heartbeat, in_flight)

    async def _heartbeat(self, in_flight: anyio.Semaphore) -> None:
        try:
            known = {a.key for a in self.attempts.values() if not a.fenced}
            timeout = max(1.0, self.settings.heartbeat_interval * 2)
            incarnation = self.incarnation
            reply = await self.link.heartbeat(self.worker_id, incarnation, known, timeout, self.lease)
            self.metrics.heartbeat(reply is not None)
            self._renew_lifelines()
            if reply is None or incarnation != self.incarnation:
                return
            if reply.status == "reregister":
                async with self._reincarnating:
                    if incarnation == self.incarnation:  # not already done by another beat's reply
                        await self._reincarnate()
                return
            for ref in reply.kill:
                stale = self.attempts.get((ref.job_id, ref.task, ref.attempt))
                if stale is not None and not stale.fenced and self._tg is not None:
                    log.warning(
                        "stopping attempt the controller does not know job_id=%s attempt=%d",
                        ref.job_id,
                        ref.attempt,
                    )
                    stale.fenced = True
                    self._tg.start_soon(self.runner.stop, stale, JobState.KILLED, self.settings.kill_grace)
        finally:
            in_flight.release()

    def _renew_lifelines(self) -> None:
        for attempt in self.attempts.values():
            if attempt.lifeline is not None:
                attempt.lifeline.renew(self.lease.expires_at)

    async def _lease_loop(self) -> None:
        """Stop every attempt once the lease runs out (their lifelines end them too; this also covers a worker
        that is running but cut off): they are reported PREEMPTED, so they are retried elsewhere without
        spending their failure budget."""
        while True:
            await anyio.sleep(0.25)
            if self.lease.valid() or not self.attempts or self._tg is None:
                continue
            log.warning(
                "attempt lease ran out (no answer from a controller): stopping %d attempt(s)", len(self.attempts)
            )
            for attempt in list(self.attempts.values()):
                if attempt.stop_state is None:
                    attempt.stop_reason = "its worker lost contact with the controller (the attempt lease ran out)"
                    self._tg.start_soon(self.runner.stop, attempt, JobState.PREEMPTED, 0.0)

    async def _reincarnate(self) -> None:
        """The controller declared this worker dead: kill what still runs, then register anew.

        The incarnation changes first, so that dispatches sent to the old one (queued while this worker was
        paused, say) are refused from now on instead of starting beside their retries.
        """
        log.warning(
            "controller does not know this worker (declared dead?): killing %d attempt(s), re-registering",
            len(self.attempts),
        )
        self.incarnation = new_incarnation()
        self.lease.revoke()
        for attempt in self.attempts.values():
            attempt.fenced = True
        self.link.drop_pending()
        async with anyio.create_task_group() as tg:
            for attempt in list(self.attempts.values()):
                tg.start_soon(self.runner.stop, attempt, JobState.KILLED, 0.5)
        await self.link.register(self.info, self.lease)
