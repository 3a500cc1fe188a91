"""Running one attempt of a job on this worker, from its dispatch to its report: read (and check) its
entrypoint, prepare its environment, start it through the runtime with its own identity and lifeline, stream
its lines to the logs stream, read its outcome (``fluster.protocol.jobfiles``) and report it.

The result goes into the report inline up to the inline limit (``fluster.protocol.values.inline_limit``), else
into the object store, written as the job's own identity (a worker's may not write objects).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
from nats.aio.client import Client as NATS

from fluster.bus.assets import Assets
from fluster.bus.blobs import from_payload, to_payload
from fluster.environ import task_env_vars
from fluster.logs import bind_context
from fluster.observe.components import WorkerMetrics
from fluster.protocol.codec import decode, encode
from fluster.protocol.jobfiles import ENTRYPOINT_FILE, LIFELINE_ENDED_FILE, RESULT_FILE, read_outcome
from fluster.protocol.messages import ErrorInfo, JobState, JobUpdated, LogLine, Payload, RunJob, now_ms
from fluster.protocol.subjects import Subjects, result_object
from fluster.protocol.values import OK, inline_limit
from fluster.security.signing import Verifier
from fluster.worker.job_connection import job_connection_env
from fluster.worker.job_identity import JobIdentities
from fluster.worker.lease import Lease
from fluster.worker.link import ControllerLink
from fluster.worker.runtime import AttemptSpec, ExitInfo, Lifeline, RunningAttempt, Runtime
from fluster.worker.settings import WorkerSettings

log = logging.getLogger(__name__)


@dataclass
class Attempt:
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


class AttemptRunner:
    """Runs the attempts of one worker; ``running`` holds those not yet reported, by (job id, task, attempt)."""

    def __init__(
        self,
        nc: NATS,
        settings: WorkerSettings,
        worker_id: str,
        runtime: Runtime,
        link: ControllerLink,
        identities: JobIdentities,
        lease: Lease,
        metrics: WorkerMetrics,
        assets: Callable[[], Assets],
        cache_dir: Path,
        work_root: Path,
    ) -> None:
        self.nc, self.settings, self.worker_id, self.runtime = nc, settings, worker_id, runtime
        self.link, self.identities, self.lease, self.metrics = link, identities, lease, metrics
        self.subjects = Subjects(settings.namespace)
        self.cache_dir, self.work_root = cache_dir, work_root
        self.running: dict[tuple[str, int, int], Attempt] = {}
        self._assets = assets
        self._environments: Any = None

    async def stop(self, attempt: Attempt, state: JobState, grace: float) -> None:
        if attempt.stop_state is None:
            attempt.stop_state = state
        if attempt.running is not None:
            await attempt.running.stop(grace)
        else:
            attempt.scope.cancel()
        await attempt.done.wait()

    async def run(self, attempt: Attempt) -> None:
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
                entrypoint = await from_payload(self._assets().objects, request_.entrypoint, self._assets().entrypoints)
                (workdir / ENTRYPOINT_FILE).write_bytes(entrypoint)
                lifeline = Lifeline(workdir, self.lease.expires_at)
                attempt.lifeline = lifeline
                python_path, cwd = await self._prepare_environment(attempt)
                identity = await self.identities.issue(attempt.key, attempt.message.incarnation, workdir)
                env = {
                    **request_.environment.env_vars,
                    **job_connection_env(
                        self.settings.url, self.settings, workdir, job_id, attempt.attempt, self.worker_id, identity
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
                self.running.pop(attempt.key, None)
                self.identities.forget(attempt.key)
                attempt.done.set()
                if lifeline is not None:
                    lifeline.close()
                shutil.rmtree(workdir, ignore_errors=True)

    async def _prepare_environment(self, attempt: Attempt) -> tuple[list[Path], Path | None]:
        env = attempt.message.request.environment
        if not env.pip_packages and not env.workspace and not env.extras:
            return [], None
        if self._environments is None:
            from fluster.worker.environments import EnvironmentCache

            self._environments = EnvironmentCache(self.cache_dir, self._assets().objects)
        if self._environments.needs_build(env):
            self._report(attempt, JobState.BUILDING)

        async def emit(line: str) -> None:
            await self._publish_log(attempt, "system", line)

        prepared = await self._environments.prepare(env, emit)
        return list(prepared.python_path), prepared.cwd

    async def _follow(self, attempt: Attempt, running: RunningAttempt) -> ExitInfo:
        async for stream, line in running.lines():
            await self._publish_log(attempt, stream, line)
        return await running.wait()

    async def _outcome(self, attempt: Attempt, workdir: Path, exit_info: ExitInfo) -> JobUpdated:
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
        if outcome is not None and outcome.status == OK:
            payload = await self._store_result(attempt, outcome.data)
            return self._update(attempt, JobState.SUCCEEDED, exit_code=exit_info.exit_code, result=payload)
        if outcome is not None:
            info = decode(outcome.data, ErrorInfo)
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

    async def _store_result(self, attempt: Attempt, value: bytes) -> Payload:
        """The result inline, or written to the object store as the job's own identity when it has one (this
        worker's identity may not write objects)."""
        name = result_object(attempt.job_id, attempt.message.task)
        if len(value) <= inline_limit(self.nc.max_payload):
            return await to_payload(self._assets().objects, name, value)
        async with self.identities.connection(attempt.key) as job_nc:
            objects = self._assets().objects
            if job_nc is not None:
                objects = await job_nc.jetstream().object_store(self.subjects.object_bucket)
            return await to_payload(objects, name, value)

    def _update(
        self,
        attempt: Attempt,
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

    def _report(self, attempt: Attempt, state: JobState) -> None:
        if not attempt.fenced:
            self.link.report(self._update(attempt, state))

    async def _publish_log(
        self, attempt: Attempt, stream: Literal["stdout", "stderr", "system"], line: str, final: bool = False
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
