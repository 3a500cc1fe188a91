"""Hostile and malformed input: every subject the protocol defines and every bucket get garbage, and each
message that once stopped the control plane is a regression test of its own. Every component still serves
afterwards (real controller, workers, actors and nats-server)."""

from __future__ import annotations

import sys
import time

import anyio
import cloudpickle
import msgpack
import nats
import pytest

from fluster import ClusterClient, Entrypoint, JobState
from fluster.actor import ActorServer, ClusterResolver
from fluster.bus.rpc import request
from fluster.errors import JobNotFound, ProtocolError
from fluster.protocol import calls
from fluster.protocol.codec import ERROR_HEADER, decode
from fluster.protocol.ids import MAX_JOB_ID
from fluster.protocol.messages import (
    ErrorInfo,
    Heartbeat,
    JobRequest,
    KillJob,
    KillJobReply,
    Payload,
    RegisterWorker,
    RegisterWorkerReply,
    StopJob,
    SubmitJob,
    SubmitJobReply,
    WorkerInfo,
    WorkerResources,
)
from fluster.protocol.values import ERROR

cloudpickle.register_pickle_by_value(sys.modules[__name__])

DEEP = b"\x91" * 5000 + b"\xc0"  # an array nested 5,000 deep
PAYLOADS = {
    "empty": b"",
    "garbage": b"\x00\xff\x13 not msgpack",
    "wrong schema": msgpack.packb({"foo": "bar", "n": [1, 2, 3]}),
    "a list": msgpack.packb([1, "two", None]),
    "deeply nested": DEEP,
    "oversized": b"\x01" * (6 << 20),  # within the server's max_payload, far past any message fluster sends
}


def sleep_then(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


class Echo:
    def echo(self, value: object) -> object:
        return value


async def still_serving(cluster: ClusterClient, name: str) -> None:
    job_id = await cluster.submit(name, Entrypoint.from_callable(sleep_then, 0, 7))
    assert await cluster.result(job_id, timeout=60) == 7


async def test_garbage_on_every_subject_with_and_without_a_reply(cluster: ClusterClient, nats_url: str) -> None:
    worker = (await cluster.list_workers())[0].worker_id
    s = cluster.subjects
    server = ActorServer(cluster)
    endpoint = server.register("target", Echo())
    subjects = [
        s.submit,
        s.kill,
        s.register(worker),
        s.deregister(worker),
        s.heartbeat(worker),
        s.job_update(worker),
        s.worker_run(worker),
        s.worker_kill(worker),
        s.actor("target"),
        s.actor_endpoint("target", endpoint),
    ]
    async with server:
        nc = await nats.connect(nats_url)
        try:
            for subject in subjects:
                for what, payload in PAYLOADS.items():
                    await nc.publish(subject, payload)  # fire-and-forget garbage must be survived too
                    reply = await nc.request(subject, payload, timeout=10)
                    if ".actor." in subject:  # actors answer in their own envelope
                        assert calls.decode_reply(reply.data).status == ERROR, (subject, what)
                        continue
                    assert reply.headers and reply.headers.get(ERROR_HEADER) == "1", (subject, what)
                    assert len(reply.data) < 300_000, (subject, what)  # bounded, whatever the request
                    assert "ProtocolError" in decode(reply.data, ErrorInfo).type_name, (subject, what)
            # garbage log lines and transfer chunks: readers skip or fail them, they do not hang
            await nc.publish(s.logs("no-such-job"), b"\xff garbage line")
        finally:
            await nc.drain()
        resolver = ClusterResolver(cluster, call_timeout=20)
        try:
            actor = await resolver.lookup("target")
            assert await actor.call().echo("ok") == "ok"
        finally:
            await resolver.close()
    await still_serving(cluster, "after-garbage")


async def test_garbage_in_every_bucket_is_survived(cluster: ClusterClient) -> None:
    assets = cluster.assets
    await assets.workers.put("ghost-worker", b"\xff not a worker")
    await assets.endpoints.put("ghost.actor", b"\xff not an endpoint")
    await assets.jobs.put("ghost-job", b"\xff not a job")
    assert "ghost-job" not in {j.job_id for j in await cluster.list_jobs()}
    assert "ghost-worker" not in {w.worker_id for w in await cluster.list_workers()}
    resolver = ClusterResolver(cluster, call_timeout=5)
    try:
        assert (await resolver.lookup("ghost")).size == 0
    finally:
        await resolver.close()
    # a job whose entrypoint is garbage, or gone before it runs, fails with a clear error; the worker goes on
    await assets.entrypoints.put("garbage-entry", b"\xff not a pickle")
    garbled = await _submit_raw(cluster, "garbled", Payload(entry="garbage-entry", size=15))
    vanished = await _submit_raw(cluster, "vanished", Payload(entry="no-such-entry", size=15))
    for job_id, why in ((garbled, "cannot load the job's entrypoint"), (vanished, "not found")):
        status = await cluster.wait(job_id, timeout=60)
        assert status.state == JobState.FAILED and why in (status.error or ""), status.error
    await still_serving(cluster, "after-bucket-garbage")


async def _submit_raw(cluster: ClusterClient, name: str, entrypoint: Payload) -> str:
    message = SubmitJob(job_id=name, token=f"token-{name}", request=JobRequest(name=name, entrypoint=entrypoint))
    reply = await request(cluster.nc, cluster.subjects.submit, message, SubmitJobReply, timeout=10)
    return reply.job_id


# -- the messages that once stopped the control plane ---------------------------------------------------


def _worker_info(worker_id: str) -> dict[str, object]:
    info = WorkerInfo(
        worker_id="placeholder",
        incarnation="abc",
        hostname="h",
        pid=1,
        runtime="process",
        resources=WorkerResources(cpu=1, memory_bytes=1 << 30),
        registered_at_ms=0,
    ).model_dump(mode="python")
    info["worker_id"] = worker_id
    return info


async def test_a_registration_with_a_bad_worker_id_is_refused(cluster: ClusterClient) -> None:
    """It used to be stored; dispatching to it raised outside the controller's error handling, and the whole
    cluster went down (the standby reloaded the ghost and died the same way)."""
    raw = msgpack.packb({"info": _worker_info("bad.id")}, use_bin_type=True)
    reply = await cluster.nc.request(cluster.subjects.register("bad"), raw, timeout=10)
    assert reply.headers and reply.headers.get(ERROR_HEADER) == "1"
    # and a worker cannot register (or heartbeat) under another worker's subject
    good = RegisterWorker(info=WorkerInfo.model_validate(_worker_info("honest")))
    with pytest.raises(ProtocolError, match="cannot speak for"):
        await request(cluster.nc, cluster.subjects.register("other"), good, RegisterWorkerReply, timeout=10)
    beat = Heartbeat(worker_id="honest", incarnation="abc")
    with pytest.raises(ProtocolError, match="cannot speak for"):
        await request(cluster.nc, cluster.subjects.heartbeat("other"), beat, RegisterWorkerReply, timeout=10)
    await still_serving(cluster, "after-bad-worker")


async def test_submissions_cannot_name_parents_that_do_not_exist_or_ids_that_do_not_match(
    cluster: ClusterClient,
) -> None:
    """Two submissions whose parents pointed at each other made a kill loop forever."""

    def submission(job_id: str, name: str, parent: str | None) -> SubmitJob:
        request_ = JobRequest(name=name, entrypoint=Payload(inline=b""), parent_id=parent)
        return SubmitJob(job_id=job_id, token="t" + job_id.replace("/", "-"), request=request_)

    with pytest.raises(JobNotFound, match="parent"):
        await request(cluster.nc, cluster.subjects.submit, submission("a/b", "b", "a"), SubmitJobReply, timeout=10)
    with pytest.raises(ProtocolError, match="does not match"):
        await request(cluster.nc, cluster.subjects.submit, submission("x", "x", "y"), SubmitJobReply, timeout=10)
    with pytest.raises(ProtocolError, match="does not match"):
        await request(cluster.nc, cluster.subjects.submit, submission("a", "b", None), SubmitJobReply, timeout=10)
    await still_serving(cluster, "after-cycles")


async def test_a_dispatch_with_a_bad_job_id_does_not_kill_the_worker(cluster: ClusterClient) -> None:
    worker = (await cluster.list_workers())[0].worker_id
    raw = msgpack.packb(
        {
            "job_id": "../../etc",
            "attempt": 0,
            "incarnation": "abc",
            "request": JobRequest(name="x", entrypoint=Payload(inline=b"")).model_dump(mode="python"),
        },
        use_bin_type=True,
    )
    reply = await cluster.nc.request(cluster.subjects.worker_run(worker), raw, timeout=10)
    assert reply.headers and reply.headers.get(ERROR_HEADER) == "1"
    await still_serving(cluster, "after-bad-dispatch")
    assert worker in {w.worker_id for w in await cluster.list_workers()}


async def test_a_stop_cannot_make_a_running_job_succeed(cluster: ClusterClient) -> None:
    """A StopJob with state=SUCCEEDED once made a killed 1 s attempt of a 30 s job SUCCEEDED."""
    job_id = await cluster.submit("not-done-yet", Entrypoint.from_callable(sleep_then, 30, 1))
    with anyio.fail_after(60):
        while (current := await cluster.status(job_id)).state != JobState.RUNNING:
            await anyio.sleep(0.05)
    assert current.worker_id is not None
    forged = msgpack.packb({**StopJob(job_id=job_id, attempt=0).model_dump(mode="python"), "state": "SUCCEEDED"})
    reply = await cluster.nc.request(cluster.subjects.worker_kill(current.worker_id), forged, timeout=10)
    assert reply.headers and reply.headers.get(ERROR_HEADER) == "1"
    assert (await cluster.status(job_id)).state == JobState.RUNNING
    await cluster.kill(job_id)
    assert (await cluster.status(job_id)).state == JobState.KILLED


async def test_names_too_long_for_a_subject_are_refused_at_the_edge(cluster: ClusterClient) -> None:
    """A 5,000-character name once passed validation; every subject built from it exceeded the server's
    control line, and the server kept cutting the controller's connection."""
    with pytest.raises(ValueError, match="limit"):
        await cluster.submit("n" * 5000, Entrypoint.from_callable(sleep_then, 0, 1))
    raw = msgpack.packb({"job_id": "n" * (MAX_JOB_ID + 1), "token": "t", "request": {}}, use_bin_type=True)
    reply = await cluster.nc.request(cluster.subjects.submit, raw, timeout=10)
    assert reply.headers and reply.headers.get(ERROR_HEADER) == "1"
    await still_serving(cluster, "after-long-name")


async def test_a_kill_naming_a_huge_id_gets_a_bounded_error_reply(cluster: ClusterClient) -> None:
    """A 7 MiB id once got no reply at all: the error reply, quoting it, exceeded max_payload."""
    raw = msgpack.packb({"job_id": "k" * (7 << 20)}, use_bin_type=True)
    reply = await cluster.nc.request(cluster.subjects.kill, raw, timeout=10)
    assert reply.headers and reply.headers.get(ERROR_HEADER) == "1"
    assert len(reply.data) < 300_000
    with pytest.raises(JobNotFound):
        await request(cluster.nc, cluster.subjects.kill, KillJob(job_id="nobody"), KillJobReply, timeout=10)
    await still_serving(cluster, "after-huge-kill")
