"""The running of one batch on a ``WorkerPool``'s executor and what its failure means, and the cancelling of a
task in flight; which executor gets which batch is ``fluster.pool.dispatch``.

An executor whose job ends (SIGKILL, worker lost) fails its in-flight batches as infrastructure failures: each
task is retried on another executor up to ``max_retries`` times, then fails with ``TaskLost``. A user
exception is delivered to the future and never retried.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from fluster.actor import tracked
from fluster.errors import ActorCallTimeout, ActorNotFound, TaskLost
from fluster.pool.executor import CANCEL_METHOD, RUN_METHOD
from fluster.protocol.tasks import decode_outcomes
from fluster.protocol.values import value_of

if TYPE_CHECKING:
    from fluster.actor.resolver import Pending
    from fluster.pool.dispatch import Dispatcher, PoolTask
    from fluster.pool.fleet import Executor

log = logging.getLogger(__name__)

EWMA_WEIGHT = 0.2
CANCEL_TIMEOUT_S = 10.0


async def run_batch(
    d: Dispatcher, executor: Executor, batch: list[PoolTask], call_id: str, payload: bytes, started: Pending | None
) -> None:
    try:
        if not batch:
            return
        assert d.resolver is not None
        subject = d.client.subjects.actor(executor.name)
        try:
            if started is None:
                pending = await d.resolver.send(subject, RUN_METHOD, (payload,), {}, None, call_id)
            else:
                pending = started
            if not executor.alive:
                pending.future.cancel()
            executor.replies.add(pending.future)
            try:
                reply = await tracked.result(
                    d.resolver,
                    pending,
                    subject,
                    executor.name,
                    RUN_METHOD,
                    ((payload,), {}),
                    call_id,
                    d.config.probe_interval,
                    d.config.unreachable_timeout,
                    raw=True,
                )
            finally:
                executor.replies.discard(pending.future)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if executor.alive or (current is not None and current.cancelling()):
                raise  # the pool is stopping
            lost(d, batch, f"executor {executor.name} (job {executor.job_id}) died")
            return
        except ActorNotFound:  # never delivered, so not an attempt; the executor is going away
            for task in batch:
                task.attempts -= 1
            retire(d, executor)
            d.requeue(batch)
            return
        except ActorCallTimeout as exc:  # it answers nothing, not even probes: give up on it
            retire(d, executor)
            lost(d, batch, f"executor {executor.name} stopped answering: {exc}")
            return
        except Exception as exc:
            lost(d, batch, f"executor {executor.name} failed: {exc!r}")
            return
        try:
            elapsed, outcomes = decode_outcomes(reply, len(batch))
        except Exception as exc:  # not what an executor sends: the batch is lost, not the pool
            lost(d, batch, f"executor {executor.name} sent a malformed reply: {exc}")
            return
        per_task = elapsed / len(batch)
        d.task_seconds = (
            per_task if d.task_seconds is None else (1 - EWMA_WEIGHT) * d.task_seconds + EWMA_WEIGHT * per_task
        )
        for task, outcome in zip(batch, outcomes, strict=True):
            try:
                value = value_of(outcome)
            except Exception as exc:
                d.finish(task, exc)
            else:
                d.finish(task, None, value)
    finally:
        for task in batch:
            task.where = None
        executor.in_flight -= 1
        d.pump()


def lost(d: Dispatcher, batch: list[PoolTask], why: str) -> None:
    retry = [t for t in batch if t.attempts <= d.config.max_retries]
    for task in batch:
        if task.attempts > d.config.max_retries:
            d.finish(task, TaskLost(f"task lost after {task.attempts} attempt(s): {why}"))
    d.counts["retried"] += len(retry)
    d.requeue(retry)


def retire(d: Dispatcher, executor: Executor) -> None:
    """Stop sending to an executor and kill its job; the fleet replaces it."""
    executor.kill()
    assert d.batches is not None
    d.batches.create_task(d.fleet.kill_job(executor.job_id))


def stop_running(d: Dispatcher, task: PoolTask, force: bool, recursive: bool) -> None:
    if task.where is None or d.batches is None:
        return  # queued (skipped by pump), or finished meanwhile
    executor, call_id, index = task.where
    if force:  # its executor's job is killed and replaced; the other tasks it ran are retried
        if executor.alive:
            retire(d, executor)
        return
    subject = d.client.subjects.actor(executor.name)
    d.batches.create_task(_send_cancel(d, subject, executor, call_id, index, recursive))


async def _send_cancel(
    d: Dispatcher, subject: str, executor: Executor, batch_id: str, index: int, recursive: bool
) -> None:
    assert d.resolver is not None
    try:
        await d.resolver.call(subject, executor.name, CANCEL_METHOD, (batch_id, index, recursive), {}, CANCEL_TIMEOUT_S)
    except Exception as exc:  # the executor is going away, or busy beyond reach: its result is dropped anyway
        log.warning("cannot cancel task %s/%d on executor %s: %r", batch_id, index, executor.name, exc)


def drop_reply(pending: Pending, _: object) -> None:
    pending.future.cancel()  # done already (the usual case): nothing happens
