"""The executor jobs of a ``WorkerPool``: ``num_workers`` places, each kept filled by a live executor job.

A place submits an executor job, marks it ready once its actor serves, and when the job ends (SIGKILL, worker
lost, OOM) submits the next generation under a new name, until the pool stops. A submit that fails (no
controller for a while) is retried with backoff, and so is a job that ends before it ever served, so a job
that cannot start is not resubmitted in a tight loop. ``last_failure`` says what went wrong last, for the
error of a pool that never starts.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from fluster.bus import retry
from fluster.errors import FlusterTimeout, JobNotFound
from fluster.pool.config import WorkerPoolConfig
from fluster.pool.executor import serve_executor
from fluster.protocol.ids import JobId
from fluster.types import Entrypoint, JobStatus

if TYPE_CHECKING:
    from fluster.actor.resolver import ClusterResolver
    from fluster.client.cluster import ClusterClient

log = logging.getLogger(__name__)

BACKOFF_MAX_S = 30.0


class Executor:
    """One executor job as the pool sees it: readiness, batches in flight, and the replies it owes."""

    def __init__(self, name: str, job_id: JobId, slots: int) -> None:
        self.name = name
        self.job_id = job_id
        self.slots = slots
        self.ready = False
        self.served = False  # it was ready at some point
        self.in_flight = 0
        self.replies: set[asyncio.Future[Any]] = set()
        self.dead: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def alive(self) -> bool:
        return not self.dead.done()

    def kill(self) -> None:
        """Mark it dead; the batches it was running fail (their reply futures are cancelled) and are retried."""
        self.ready = False
        if not self.dead.done():
            self.dead.set_result(None)
        for reply in list(self.replies):
            reply.cancel()


class ExecutorFleet:
    """The executors of one pool; ``changed()`` is called whenever one becomes ready or goes away."""

    def __init__(
        self, client: ClusterClient, config: WorkerPoolConfig, pool_id: str, changed: Callable[[], None]
    ) -> None:
        self.client = client
        self.config = config
        self.pool_id = pool_id
        self.executors: dict[str, Executor] = {}
        self.stopping = False
        self.replaced = 0
        self.last_failure: str | None = None
        self._changed = changed
        self._ready_changed = asyncio.Event()

    def ready_count(self) -> int:
        return sum(1 for e in self.executors.values() if e.ready)

    async def wait_for(self, n: int, timeout: float | None) -> int:
        """Wait until at least ``n`` executors are ready; returns how many are.

        Raises:
            FlusterTimeout: fewer than ``n`` after ``timeout`` seconds.
        """
        with anyio.move_on_after(timeout):
            while self.ready_count() < n:
                self._ready_changed.clear()
                await self._ready_changed.wait()
            return self.ready_count()
        raise FlusterTimeout(f"pool {self.pool_id} has {self.ready_count()} of {n} executors after {timeout}s")

    async def keep(self, index: int, resolver: ClusterResolver) -> None:
        """Run executor ``index`` as a job, and replace the job each time it ends, until the fleet stops."""
        failures = 0
        for generation in itertools.count():
            if self.stopping:
                return
            name = f"{self.config.name_prefix}-{self.pool_id}-{index}-{generation}"
            try:
                job_id = await self.client.submit(
                    name,
                    Entrypoint.from_callable(serve_executor, name, self.config.slots),
                    resources=self.config.resources,
                    environment=self.config.environment,
                    max_retries_failure=0,
                    max_retries_preemption=0,  # the pool replaces a lost executor itself, under a new name
                )
            except (ValueError, TypeError):
                raise  # the pool's configuration is wrong: retrying cannot help
            except Exception as exc:  # no controller for a while, JetStream unavailable: try again later
                failures += 1
                self.last_failure = f"submitting executor {name} failed: {exc!r}"
                log.warning("pool=%s %s; retrying", self.pool_id, self.last_failure)
                await anyio.sleep(backoff(failures))
                continue
            executor = Executor(name, job_id, self.config.slots)
            self.executors[name] = executor
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._watch_ready, executor, resolver)
                    final = await self._until_ended(job_id)
                    tg.cancel_scope.cancel()
            finally:
                executor.kill()
                self.executors.pop(name, None)
                self._ready_changed.set()
                self._changed()
            if self.stopping:
                return
            detail = f": {final.error}" if final.error else ""
            self.last_failure = f"executor job {job_id} ended {final.state.value}{detail}"
            log.warning("executor lost pool=%s: %s", self.pool_id, self.last_failure)
            self.replaced += 1
            failures = 0 if executor.served else failures + 1
            if failures:  # it ended before serving: do not spin on a job that cannot start
                await anyio.sleep(backoff(failures))

    async def _until_ended(self, job_id: str) -> JobStatus:
        """The executor job's final status; a lost watch (JetStream restarting, say) is watched again, so
        nothing but the job's end (or the pool stopping) ends this."""
        for failures in itertools.count():
            try:
                return await self.client.wait(job_id)
            except JobNotFound:
                raise
            except Exception as exc:
                log.warning("pool=%s cannot watch executor job %s (%r); watching again", self.pool_id, job_id, exc)
                await anyio.sleep(backoff(failures))
        raise AssertionError("unreachable")

    async def _watch_ready(self, executor: Executor, resolver: ClusterResolver) -> None:
        for failures in itertools.count():
            try:
                actor = await resolver.lookup(executor.name)
                await actor.wait_for_size(1)
                break
            except Exception as exc:  # the endpoints bucket briefly missing or unreachable: look again
                log.warning("pool=%s cannot watch executor %s (%r); looking again", self.pool_id, executor.name, exc)
                await anyio.sleep(backoff(failures))
        executor.ready = executor.served = True
        self._ready_changed.set()
        self._changed()

    async def stop(self) -> None:
        """Replace nothing from now on, and kill every executor job."""
        self.stopping = True
        async with anyio.create_task_group() as tg:
            for executor in list(self.executors.values()):
                tg.start_soon(self.kill_job, executor.job_id)

    async def kill_job(self, job_id: str) -> None:
        try:
            await self.client.kill(job_id)
        except Exception as exc:  # already gone, or the controller is away: the job ends with its parent
            log.info("cannot kill executor job=%s: %r", job_id, exc)


def backoff(failures: int) -> float:
    return retry.backoff(failures, 0.5, BACKOFF_MAX_S)
