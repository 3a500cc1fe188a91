"""Following a job from the outside: reading its KV record, waiting for it to finish (a watch, with a direct
read now and then), what its finished record gives the caller, and its output lines on the logs stream.

It only reads; the commands (submit, kill) and the connection are ``ClusterClient``'s.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import anyio
import cloudpickle
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from fluster.bus.assets import Assets
from fluster.bus.blobs import from_payload
from fluster.bus.kv import get_model, watch_model
from fluster.errors import FlusterTimeout, JobFailed, JobNotFound, Unschedulable, from_wire
from fluster.protocol.codec import decode
from fluster.protocol.ids import validate_job_id
from fluster.protocol.messages import JobRecord, JobState, LogLine, Payload
from fluster.protocol.subjects import Subjects

WATCH_RECHECK_S = 30.0  # a wait reads the job's record directly this often, besides watching it


async def read_record(assets: Assets, namespace: str, job_id: str) -> JobRecord:
    """The job's record as it is now.

    Raises:
        JobNotFound: no such job in ``namespace``.
    """
    validate_job_id(job_id)
    found = await get_model(assets.jobs, job_id, JobRecord)
    if found is None:
        raise JobNotFound(f"no job {job_id!r} in namespace {namespace!r}")
    return found[0]


async def wait_record(assets: Assets, namespace: str, job_id: str, timeout: float | None) -> JobRecord:
    """The job's record once it is finished.

    Raises:
        JobNotFound: no such job.
        FlusterTimeout: still not finished after ``timeout`` seconds.
    """
    validate_job_id(job_id)
    with anyio.move_on_after(timeout) as scope:
        while True:
            # A watch can go quiet for good (its consumer lost with a restarted server): every so often
            # the record is read directly, and the watch made anew.
            async with aclosing(watch_model(assets.jobs, job_id, JobRecord)) as records:
                with anyio.move_on_after(WATCH_RECHECK_S):
                    async for record in records:
                        if record is None:
                            raise JobNotFound(f"no job {job_id!r} in namespace {namespace!r}")
                        if record.state.is_terminal:
                            return record
            current = await read_record(assets, namespace, job_id)
            if current.state.is_terminal:
                return current
    assert scope.cancelled_caught
    raise FlusterTimeout(f"job {job_id} did not finish within {timeout:g}s")


async def finished_value(assets: Assets, job_id: str, record: JobRecord) -> Any:
    """What the finished job ``record`` gives its caller: its entrypoint's return value (for a job with tasks,
    every task's value in index order, None for one that failed within budget).

    Raises:
        Exception: the job's own exception, re-raised with the remote traceback as its ``__cause__``.
        Unschedulable: no worker could take the job in time.
        JobFailed: the job ended with no result (killed, worker lost, failed outside Python).
    """
    if record.state == JobState.SUCCEEDED:
        if record.tasks:
            return [await _value(assets, task.result) for task in record.tasks]
        return await _value(assets, record.result)
    if record.error_info is not None and record.state == JobState.FAILED:
        raise from_wire(record.error_info)
    cls = Unschedulable if record.state == JobState.UNSCHEDULABLE else JobFailed
    detail = f": {record.error}" if record.error else ""
    raise cls(
        f"job {job_id} ended {record.state.value}{detail}",
        job_id=job_id,
        state=record.state.value,
        error=record.error,
    )


async def follow_logs(
    js: JetStreamContext, assets: Assets, namespace: str, job_id: str, *, follow: bool, task: int | None
) -> AsyncGenerator[LogLine, None]:
    """The job's output lines from the start (``ClusterClient.logs``): with ``follow``, until the job has
    finished and its last line is read; with ``task``, only that task's."""
    validate_job_id(job_id)
    subject = Subjects(namespace).logs(job_id)
    last_seq = await _last_log_seq(js, assets, subject)
    if not follow and last_seq == 0:
        return
    sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    seen = 0
    try:
        while True:
            if not follow and seen >= last_seq:
                return
            try:
                msg = await sub.next_msg(timeout=0.25)
            except Exception as exc:
                if not _is_timeout(exc):
                    raise
                if follow and (await read_record(assets, namespace, job_id)).state.is_terminal:
                    if seen >= await _last_log_seq(js, assets, subject):
                        return
                continue
            seen = msg.metadata.sequence.stream
            try:
                line = decode(msg.data, LogLine)
            except Exception:
                continue
            if not line.final and (task is None or line.task == task):
                yield line
    finally:
        await sub.unsubscribe()


async def _value(assets: Assets, payload: Payload | None) -> Any:
    if payload is None:
        return None
    return cloudpickle.loads(await from_payload(assets.objects, payload))


async def _last_log_seq(js: JetStreamContext, assets: Assets, subject: str) -> int:
    try:
        msg = await js.get_last_msg(assets.logs_stream, subject)
    except NotFoundError:
        return 0
    return int(msg.seq or 0)


def _is_timeout(exc: BaseException) -> bool:
    import nats.errors

    return isinstance(exc, nats.errors.TimeoutError | TimeoutError)
