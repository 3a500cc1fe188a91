"""Every attack of issue 12's table, against the default (authenticated) local cluster: what a worker, a
client or a job may try with its own identity, and the server refusing it (or the controller, where only it
can tell: a report about an attempt assigned to someone else)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import cloudpickle
import pytest
from nats.js.errors import NotFoundError
from security_helpers import Secured, rogue, secured_cluster

from fluster import ClusterClient, Entrypoint, JobState, ResourceSpec
from fluster.bus.rpc import request
from fluster.errors import PermissionDenied, ProtocolError
from fluster.protocol.messages import Ack, DeregisterWorker, JobUpdated, now_ms
from fluster.protocol.permissions import Streams

cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[Secured]:
    async with secured_cluster(tmp_path / "cluster") as cluster:
        yield cluster


def wait_for_file(path: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.05)  # a job waiting for its test to let it go: polling a file is all it has
    return "the real result"


def hold_cpus(seconds_cap: float, release: str) -> str:
    return wait_for_file(release, seconds_cap)


async def test_a_worker_may_not_submit_take_another_workers_dispatches_or_write_its_registry_key(
    secured: Secured,
) -> None:
    s, (w0, w1) = secured.subjects, secured.worker_ids
    async with rogue(secured.url, secured.worker(0)) as r:
        await r.nc.publish(s.submit, b"x")
        await r.nc.subscribe(s.worker_run(w1))
        await r.nc.subscribe(s.worker_kill(w1))
        await r.nc.publish(f"$KV.{s.workers_bucket}.{w1}", b"x")
        await r.refused("publish", s.submit)
        await r.refused("subscription", s.worker_run(w1))
        await r.refused("subscription", s.worker_kill(w1))
        await r.refused("publish", f"$KV.{s.workers_bucket}.{w1}")
    # through fluster's own API the refusal is a clear error, at once
    async with ClusterClient.connect(secured.url, s.namespace, options=secured.worker(0)) as as_worker:
        with pytest.raises(PermissionDenied, match=f"worker {w0!r}'s: a worker may not submit jobs"):
            await as_worker.submit("sneaky", Entrypoint.from_callable(print))


async def test_a_client_may_not_dispatch_or_report(secured: Secured) -> None:
    s, (w0, _) = secured.subjects, secured.worker_ids
    async with rogue(secured.url, secured.client_options) as r:
        await r.nc.publish(s.worker_run(w0), b"x")
        await r.nc.publish(s.job_update(w0), b"x")
        await r.nc.publish(s.heartbeat(w0), b"x")
        await r.refused("publish", s.worker_run(w0))
        await r.refused("publish", s.job_update(w0))
        await r.refused("publish", s.heartbeat(w0))


async def test_a_worker_may_not_capture_another_workers_dispatches_in_a_stream(
    secured: Secured, tmp_path: Path
) -> None:
    s, (_, w1) = secured.subjects, secured.worker_ids
    async with rogue(secured.url, secured.worker(0)) as r:
        js = r.nc.jetstream(timeout=1)
        with pytest.raises(TimeoutError):  # the server drops a refused API request: nobody answers it
            await js.add_stream(name="capture", subjects=[s.worker_run(w1)])
        await r.refused("publish", "$JS.API.STREAM.CREATE.capture")
    # and the dispatches still reach both workers: two jobs that each take a whole worker run side by side
    release, client = str(tmp_path / "release"), secured.client
    whole = ResourceSpec(cpu=2)
    ids = [
        await client.submit(f"whole-{i}", Entrypoint.from_callable(hold_cpus, 60, release), resources=whole)
        for i in range(2)
    ]
    with anyio.fail_after(60):
        while {(await client.status(j)).state for j in ids} != {JobState.RUNNING}:
            await anyio.sleep(0.05)
    assert {(await client.status(j)).worker_id for j in ids} == set(secured.worker_ids)
    Path(release).write_text("go")
    assert [await client.result(j, timeout=60) for j in ids] == ["the real result"] * 2


async def test_a_worker_may_not_purge_or_deregister_another_worker(secured: Secured) -> None:
    s, (w0, w1) = secured.subjects, secured.worker_ids
    streams = Streams.of(s)
    before = {w.worker_id: w.incarnation for w in await secured.client.list_workers()}
    async with rogue(secured.url, secured.worker(0)) as r:
        purge = json.dumps({"filter": f"$KV.{s.workers_bucket}.{w1}"}).encode()
        await r.nc.publish(f"$JS.API.STREAM.PURGE.{streams.workers}", purge, reply=r.nc.new_inbox())
        await r.nc.publish(s.deregister(w1), b"x")
        await r.refused("publish", f"$JS.API.STREAM.PURGE.{streams.workers}")
        await r.refused("publish", s.deregister(w1))
        # on its own subject, naming the other: the controller refuses to let it speak for worker-1
        forged = DeregisterWorker(worker_id=w1, incarnation=before[w1])
        with pytest.raises(ProtocolError, match=f"cannot speak for worker {w1!r}"):
            await request(r.nc, s.deregister(w0), forged, Ack, timeout=10)
    after = {w.worker_id: w.incarnation for w in await secured.client.list_workers()}
    assert after == before  # nobody re-registered, nothing was killed


async def test_a_worker_may_not_report_another_workers_job_done(secured: Secured, tmp_path: Path) -> None:
    s, client = secured.subjects, secured.client
    release = str(tmp_path / "release")
    job_id = await client.submit("long", Entrypoint.from_callable(hold_cpus, 60, release))
    with anyio.fail_after(60):
        while (status := await client.status(job_id)).state != JobState.RUNNING:
            await anyio.sleep(0.05)
    owner = status.worker_id
    assert owner is not None
    other_index = 1 - secured.worker_ids.index(owner)
    other = secured.worker_ids[other_index]
    attempt = status.attempts[-1]

    def forged(worker_id: str, incarnation: str) -> JobUpdated:
        return JobUpdated(
            worker_id=worker_id,
            incarnation=incarnation,
            job_id=job_id,
            attempt=attempt.attempt,
            state=JobState.SUCCEEDED,
            at_ms=now_ms(),
            result=None,
        )

    async with rogue(secured.url, secured.worker(other_index)) as r:
        await r.nc.publish(s.job_update(owner), b"x")  # the owner's subject: the server refuses
        await r.refused("publish", s.job_update(owner))
        with pytest.raises(ProtocolError, match="cannot speak for worker"):  # the owner's name on its own subject
            await request(r.nc, s.job_update(other), forged(owner, attempt.incarnation), Ack, timeout=10)
        incarnation = next(w.incarnation for w in await client.list_workers() if w.worker_id == other)
        ack = await request(r.nc, s.job_update(other), forged(other, incarnation), Ack, timeout=10)
        assert not ack.ok and "not assigned to this worker" in ack.message  # the controller checks the assignment
    assert (await client.status(job_id)).state == JobState.RUNNING
    Path(release).write_text("go")
    assert await client.result(job_id, timeout=60) == "the real result"


async def test_nobody_reads_replies_meant_for_others(secured: Secured) -> None:
    assert secured.cluster.auth is not None
    client_inbox = secured.cluster.auth.client_identity.inbox_prefix
    for options in (secured.worker(0), secured.client_options, secured.controller):
        async with rogue(secured.url, options) as r:
            await r.nc.subscribe("_INBOX.>")
            await r.nc.subscribe(">")
            await r.refused("subscription", "_inbox.>")
            await r.refused("subscription", '">"')
            if options is not secured.client_options:
                await r.nc.subscribe(f"{client_inbox}.>")
                await r.refused("subscription", client_inbox)


async def test_nobody_but_the_controller_deletes_or_creates_the_namespaces_streams(secured: Secured) -> None:
    streams = Streams.of(secured.subjects)
    for options in (secured.worker(0), secured.client_options):
        async with rogue(secured.url, options) as r:
            js = r.nc.jetstream(timeout=1)
            with pytest.raises(TimeoutError):
                await js.delete_stream(streams.jobs)
            await r.refused("publish", f"$JS.API.STREAM.DELETE.{streams.jobs}")
            with pytest.raises(TimeoutError):
                await js.purge_stream(streams.jobs)
            await r.refused("publish", f"$JS.API.STREAM.PURGE.{streams.jobs}")
    async with rogue(secured.url, secured.controller) as r:  # not even the controller deletes one
        with pytest.raises(TimeoutError):
            await r.nc.jetstream(timeout=1).delete_stream(streams.jobs)
        await r.refused("publish", f"$JS.API.STREAM.DELETE.{streams.jobs}")
    async with rogue(secured.url, secured.client_options) as r:
        info = await r.nc.jetstream().stream_info(streams.jobs)  # still there, and readable
        assert info.config.name == streams.jobs
        with pytest.raises((TimeoutError, NotFoundError)):
            await r.nc.jetstream(timeout=1).stream_info("KV_fluster_other_jobs")  # another namespace's: refused
