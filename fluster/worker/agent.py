"""The worker: registers, heartbeats, accepts dispatches, runs attempts through a runtime, reports them.

Logs go line by line to the logs stream, return values into the job record (or the object store when
large), state reports to the controller through an outbox that retries until acknowledged. Fencing: a worker
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio
from anyio.abc import TaskGroup, TaskStatus
from nats.aio.client import Client as NATS
from pydantic import BaseModel

from fluster.bus.assets import Assets, assets_when_ready, watch_reconnects
from fluster.bus.blobs import from_payload, to_payload
from fluster.bus.rpc import serve_requests
from fluster.environ import task_env_vars
from fluster.logs import bind_context
from fluster.observe.components import WorkerMetrics
from fluster.observe.publish import publish_loop
from fluster.observe.usage import running_attempts, usage_loop
from fluster.protocol.codec import encode
from fluster.protocol.ids import Incarnation, new_incarnation, new_worker_id
from fluster.protocol.messages import (
    ErrorInfo,
    JobState,
    JobUpdated,
    LogLine,
    Payload,
    RunJob,
    RunJobReply,
    StopJob,
    StopJobReply,
    WorkerInfo,
    now_ms,
)
from fluster.protocol.subjects import Subjects, result_object
from fluster.security.identity import may_create_assets
from fluster.security.signing import Verifier
from fluster.worker.job_connection import job_connection_env
from fluster.worker.job_identity import JobIdentities
from fluster.worker.lease import Lease
from fluster.worker.link import ControllerLink
from fluster.worker.runtime import (
    ENTRYPOINT_FILE,
    LIFELINE_ENDED_FILE,
    RESULT_FILE,
    AttemptSpec,
    ExitInfo,
    Lifeline,
    RunningAttempt,
    Runtime,
    read_outcome,
)
from fluster.worker.settings import WorkerSettings, make_runtime, resolve_labels, resolve_resources

log = logging.getLogger(__name__)

Req = TypeVar("Req", bound=BaseModel)

RESULT_INLINE_LIMIT = 64 * 1024
HEARTBEATS_IN_FLIGHT = 4  # larger return values go to the object store, not into the job record


@dataclass
class _Attempt:
    job_id: str
    attempt: int
    message: RunJob
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    running: RunningAttempt | None = None
    stop_state: JobState | None = None  # set when the worker was told to stop it (KILLED, PREEMPTED)
    stop_reason: str | None = None
    lifeline: Lifeline | None = None
    fenced: bool = False  # the controller no longer counts this attempt: report nothing
    done: anyio.Event = field(default_factory=anyio.Event)

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.job_id, self.message.task, self.attempt)


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
        self.attempts: dict[tuple[str, int, int], _Attempt] = {}  # (job id, task, attempt)
        self.link = ControllerLink(nc, self.subjects)
        self.identities = JobIdentities(nc, self.subjects, self.worker_id, settings.url, settings.connect)
        self.lease = Lease()
        self._reincarnating = anyio.Lock()
        self._draining = False
        self._assets: Assets | None = None
        self._tg: TaskGroup | None = None
        self._run_sub: Any = None
        self._environments: Any = None
        self.metrics = WorkerMetrics(self.worker_id, lambda: len(self.attempts))

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
                        await self._stop(attempt, JobState.PREEMPTED, 0.5)
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
                tg.start_soon(self._stop, attempt, JobState.PREEMPTED, self.settings.kill_grace)
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
        attempt = _Attempt(job_id=msg.job_id, attempt=msg.attempt, message=msg)
        self.attempts[key] = attempt
        assert self._tg is not None
        self._tg.start_soon(self._run_attempt, attempt)
        return RunJobReply(accepted=True)

    async def _on_stop(self, msg: StopJob) -> StopJobReply:
        attempt = self.attempts.get((msg.job_id, msg.task, msg.attempt))
        if attempt is None:
            return StopJobReply(stopped=False, message="not running here")
        await self._stop(attempt, msg.state, msg.grace_ms / 1000)
        return StopJobReply(stopped=True)

    async def _stop(self, attempt: _Attempt, state: JobState, grace: float) -> None:
        if attempt.stop_state is None:
            attempt.stop_state = state
        if attempt.running is not None:
            await attempt.running.stop(grace)
        else:
            attempt.scope.cancel()
        await attempt.done.wait()

    # -- attempts ---------------------------------------------------------------------------------------

    async def _run_attempt(self, attempt: _Attempt) -> None:
        job_id, request_ = attempt.job_id, attempt.message.request
        bind_context(job_id=job_id, attempt=attempt.attempt)  # this task's log records name the attempt
        task = attempt.message.task
        workdir = self.work_root / job_id.replace("/", "__") / f"task-{task}-attempt-{attempt.attempt}"
        update: JobUpdated | None = None
        lifeline: Lifeline | None = None
        try:
            with attempt.scope:
                workdir.mkdir(parents=True, exist_ok=True)
                if self.settings.trusted_submitters:  # before anything of the job is read, let alone unpickled
                    Verifier(self.settings.trusted_submitters).check_job(job_id, request_)
                entrypoint = await from_payload(self.assets.objects, request_.entrypoint, self.assets.entrypoints)
                (workdir / ENTRYPOINT_FILE).write_bytes(entrypoint)
                lifeline = Lifeline(workdir, self.lease.expires_at)
                attempt.lifeline = lifeline
                python_path, cwd = await self._prepare_environment(attempt)
                identity = await self.identities.issue(attempt.key, attempt.message.incarnation, workdir)
                env = {
                    **request_.environment.env_vars,
                    **job_connection_env(
                        self._job_url(), self.settings, workdir, job_id, attempt.attempt, self.worker_id, identity
                    ),
                    **task_env_vars(task, request_.replicas, attempt.message.task_hosts),
                }
                spec = AttemptSpec(
                    job_id=job_id,
                    attempt=attempt.attempt,
                    workdir=workdir,
                    env=env,
                    resources=request_.resources,
                    environment=request_.environment,
                    python_path=python_path,
                    cwd=cwd,
                )
                attempt.running = await self.runtime.start(spec)
            if attempt.running is not None:
                if attempt.stop_state is not None:
                    await attempt.running.stop(0)
                self._report(attempt, JobState.RUNNING)
                self.metrics.attempts.value += 1
                exit_info = await self._follow(attempt, attempt.running)
                update = await self._outcome(attempt, workdir, exit_info)
            else:
                update = self._update(attempt, attempt.stop_state or JobState.KILLED, error="stopped before start")
        except Exception as exc:  # a failure of the worker's own steps (bundle, install, runtime) fails the attempt
            log.warning("attempt failed to run job_id=%s: %r", job_id, exc)
            await self._publish_log(attempt, "system", f"fluster: {exc}")
            update = self._update(attempt, attempt.stop_state or JobState.FAILED, error=str(exc))
        finally:
            with anyio.CancelScope(shield=True):
                await self._publish_log(attempt, "system", "", final=True)
                if update is not None and not attempt.fenced:
                    self.link.report(update)
                self.attempts.pop(attempt.key, None)
                self.identities.forget(attempt.key)
                attempt.done.set()
                if lifeline is not None:
                    lifeline.close()
                shutil.rmtree(workdir, ignore_errors=True)

    async def _prepare_environment(self, attempt: _Attempt) -> tuple[list[Path], Path | None]:
        env = attempt.message.request.environment
        if not env.pip_packages and not env.workspace and not env.extras:
            return [], None
        if self._environments is None:
            from fluster.worker.environments import EnvironmentCache

            self._environments = EnvironmentCache(self.cache_dir, self.assets.objects)
        if self._environments.needs_build(env):
            self._report(attempt, JobState.BUILDING)

        async def emit(line: str) -> None:
            await self._publish_log(attempt, "system", line)

        prepared = await self._environments.prepare(env, emit)
        return list(prepared.python_path), prepared.cwd

    async def _follow(self, attempt: _Attempt, running: RunningAttempt) -> ExitInfo:
        async for stream, line in running.lines():
            await self._publish_log(attempt, stream, line)
        return await running.wait()

    async def _outcome(self, attempt: _Attempt, workdir: Path, exit_info: ExitInfo) -> JobUpdated:
        ended = workdir / LIFELINE_ENDED_FILE
        if attempt.stop_state is None and ended.exists():  # its lease ran out: lost, not failed
            attempt.stop_state = JobState.PREEMPTED
            attempt.stop_reason = f"stopped by its lifeline: {ended.read_text(errors='replace')[:500]}"
        if attempt.stop_state is not None:
            return self._update(
                attempt,
                attempt.stop_state,
                exit_code=exit_info.exit_code,
                error=attempt.stop_reason or f"stopped ({attempt.stop_state.value.lower()})",
            )
        outcome = read_outcome(workdir / RESULT_FILE)
        if exit_info.oom_killed or exit_info.error:
            return self._update(attempt, JobState.FAILED, exit_code=exit_info.exit_code, error=exit_info.error)
        if outcome is not None and outcome[0] == "ok":
            payload = await self._store_result(attempt, outcome[1])
            return self._update(attempt, JobState.SUCCEEDED, exit_code=exit_info.exit_code, result=payload)
        if outcome is not None and outcome[0] == "err":
            info = ErrorInfo.model_validate(outcome[1])
            return self._update(
                attempt,
                JobState.FAILED,
                exit_code=exit_info.exit_code,
                error=f"{info.type_name.rsplit('.', 1)[-1]}: {info.message}",
                error_info=info,
            )
        if exit_info.exit_code == 0:
            return self._update(attempt, JobState.SUCCEEDED, exit_code=0)
        code = exit_info.exit_code
        reason = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        return self._update(attempt, JobState.FAILED, exit_code=code, error=f"job process ended: {reason}")

    async def _store_result(self, attempt: _Attempt, value: bytes) -> Payload:
        """The result inline, or written to the object store as the job's own identity when it has one (this
        worker's identity may not write objects)."""
        name = result_object(attempt.job_id, attempt.message.task)
        if len(value) <= RESULT_INLINE_LIMIT:
            return await to_payload(self.assets.objects, name, value, limit=RESULT_INLINE_LIMIT)
        async with self.identities.connection(attempt.key) as job_nc:
            objects = self.assets.objects
            if job_nc is not None:
                objects = await job_nc.jetstream().object_store(self.subjects.object_bucket)
            return await to_payload(objects, name, value, limit=RESULT_INLINE_LIMIT)

    def _update(
        self,
        attempt: _Attempt,
        state: JobState,
        *,
        exit_code: int | None = None,
        error: str | None = None,
        error_info: ErrorInfo | None = None,
        result: Payload | None = None,
    ) -> JobUpdated:
        return JobUpdated(
            worker_id=self.worker_id,
            incarnation=attempt.message.incarnation,
            job_id=attempt.job_id,
            attempt=attempt.attempt,
            task=attempt.message.task,
            state=state,
            at_ms=now_ms(),
            exit_code=exit_code,
            error=error,
            error_info=error_info,
            result=result,
        )

    def _report(self, attempt: _Attempt, state: JobState) -> None:
        if not attempt.fenced:
            self.link.report(self._update(attempt, state))

    async def _publish_log(
        self, attempt: _Attempt, stream: Literal["stdout", "stderr", "system"], line: str, final: bool = False
    ) -> None:
        message = LogLine(
            at_ms=now_ms(),
            stream=stream,
            attempt=attempt.attempt,
            line=line,
            final=final,
            task=attempt.message.task,
        )
        subject = self.subjects.logs(attempt.job_id)
        self.metrics.log_lines.value += 1
        try:
            if final:
                # acknowledged: once the stream stored the last line, it stored every line before it (one
                # connection, one stream, in order), so the attempt's logs are complete before it is reported
                await self.nc.jetstream().publish(subject, encode(message), timeout=10)
            else:
                await self.nc.publish(subject, encode(message))
        except Exception as exc:  # a log line is not worth failing a job for
            log.warning("log publish failed job_id=%s: %r", attempt.job_id, exc)

    def _job_url(self) -> str:
        return self.settings.url

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
                    self._tg.start_soon(self._stop, stale, JobState.KILLED, self.settings.kill_grace)
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
                    self._tg.start_soon(self._stop, attempt, JobState.PREEMPTED, 0.0)

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
                tg.start_soon(self._stop, attempt, JobState.KILLED, 0.5)
        await self.link.register(self.info, self.lease)
