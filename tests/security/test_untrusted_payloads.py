"""What one process receives from another is never unpickled where it could run code with more rights than its
sender's: the worker parses (never unpickles) what its job wrote; a requester rebuilds an error reply by its
type name; and bytes in a store that others may write are checked against the digest the controller relayed."""

from __future__ import annotations

import pickle
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import cloudpickle
import pytest
from nats.aio.client import Client as NATS
from security_helpers import Secured, rogue, secured_cluster

from fluster import ClusterClient, Entrypoint, JobState, ResourceSpec
from fluster.bus.blobs import from_payload, store_entrypoint
from fluster.bus.rpc import request
from fluster.errors import JobFailed, ProtocolError, RemoteError, to_wire
from fluster.protocol.codec import ERROR_HEADERS, encode
from fluster.protocol.jobfiles import RESULT_FILE, call_entrypoint
from fluster.protocol.messages import Ack, Heartbeat

cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = pytest.mark.timeout(120)


class _Marker:
    """Unpickling this creates a file: whoever unpickles it runs code chosen by whoever pickled it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        return (Path.write_text, (Path(self.path), "ran"))


def write_a_crafted_result(marker: str) -> None:
    import os

    with open(RESULT_FILE, "wb") as f:  # the job runs in its work dir
        f.write(pickle.dumps(("ok", _Marker(marker))))
    os._exit(0)  # so that the bootstrap does not replace the file


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[Secured]:
    async with secured_cluster(tmp_path / "cluster", workers=1) as cluster:
        yield cluster


async def test_what_a_job_writes_as_its_result_runs_no_code_in_its_worker(secured: Secured, tmp_path: Path) -> None:
    marker = tmp_path / "worker-ran-the-jobs-pickle"
    job_id = await secured.client.submit("crafted", Entrypoint.from_callable(write_a_crafted_result, str(marker)))
    status = await secured.client.wait(job_id, timeout=60)
    assert status.state == JobState.SUCCEEDED and await secured.client.result(job_id) is None
    assert not marker.exists()


async def test_an_error_reply_is_not_unpickled_by_the_requester(nats_url: str, namespace: str, tmp_path: Path) -> None:
    marker = tmp_path / "requester-ran-the-pickle"
    info = to_wire(RuntimeError("no")).model_copy(update={"pickled": pickle.dumps(_Marker(str(marker)))})
    responder, caller = NATS(), NATS()
    await responder.connect(nats_url)
    await caller.connect(nats_url)
    try:

        async def answer(msg: object) -> None:
            await responder.publish(msg.reply, encode(info), headers=ERROR_HEADERS)  # type: ignore[attr-defined]

        subject = f"{namespace}.fake-worker"
        await responder.subscribe(subject, cb=answer)
        await responder.flush()
        with pytest.raises(RuntimeError, match="no"):  # a common builtin: its type, from its name
            await request(caller, subject, Heartbeat(worker_id="w", incarnation="i"), Ack, timeout=10)
        info = info.model_copy(update={"type_name": "evil.Type"})
        with pytest.raises(RemoteError, match="evil.Type"):
            await request(caller, subject, Heartbeat(worker_id="w", incarnation="i"), Ack, timeout=10)
    finally:
        await responder.close()
        await caller.close()
    assert not marker.exists()


async def test_a_replaced_entrypoint_is_refused_before_it_runs(client: ClusterClient) -> None:
    payload = await store_entrypoint(client.assets.objects, client.assets.entrypoints, "tok1", b"the real code")
    assert await from_payload(client.assets.objects, payload, client.assets.entrypoints) == b"the real code"
    await client.assets.entrypoints.put("tok1", b"someone else's code")
    with pytest.raises(ProtocolError, match="does not match its digest"):
        await from_payload(client.assets.objects, payload, client.assets.entrypoints)


def occupy(release: str) -> str:
    import time

    while not Path(release).exists():
        time.sleep(0.05)  # released by the test
    return "done"


async def test_another_client_cannot_swap_the_code_of_a_pending_job(secured: Secured, tmp_path: Path) -> None:
    client, release = secured.client, tmp_path / "release"
    first = await client.submit("first", Entrypoint.from_callable(occupy, str(release)), resources=ResourceSpec(cpu=2))
    victim = await client.submit("victim", Entrypoint.from_callable(lambda: "mine"), resources=ResourceSpec(cpu=2))
    record = await client._record(victim)
    token = record.request.entrypoint.entry
    assert token is not None
    swapped = call_entrypoint(lambda: "theirs", (), {})
    async with ClusterClient.connect(secured.url, client.namespace, options=secured.client_options) as other:
        await other.assets.entrypoints.put(token, swapped)  # a client may write entrypoints: it cannot forge them
    release.write_text("go")
    assert await client.result(first, timeout=60) == "done"
    with pytest.raises(JobFailed, match="does not match its digest"):
        await client.result(victim, timeout=60)


async def test_a_worker_may_not_write_objects_and_a_job_writes_its_own_large_result(secured: Secured) -> None:
    s = secured.subjects
    async with rogue(secured.url, secured.worker(0)) as r:
        await r.nc.publish(f"$O.{s.object_bucket}.M.cmVzdWx0cy9vdGhlcg", b"{}")
        await r.refused("publish", f"$o.{s.object_bucket}.m.")
    job_id = await secured.client.submit("big", Entrypoint.from_callable(lambda: b"r" * (1 << 20)))
    with anyio.fail_after(60):
        assert await secured.client.result(job_id, timeout=60) == b"r" * (1 << 20)
    record = await secured.client._record(job_id)
    assert record.result is not None and record.result.ref is not None and record.result.digest is not None
