"""Optional payload signing: workers with trusted keys run only jobs signed by one of them, and actor servers
with trusted keys answer only signed calls; an unsigned, untrusted or altered payload is refused before
anything of it is unpickled."""

from __future__ import annotations

import pickle
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import cloudpickle
import pytest
from cluster_helpers import in_own_task, local_cluster

from fluster import ClusterClient, Entrypoint
from fluster.actor import ActorServer, ClusterResolver
from fluster.bus.blobs import store_entrypoint
from fluster.bus.rpc import request
from fluster.errors import JobFailed, UntrustedPayload
from fluster.protocol.ids import new_token
from fluster.protocol.messages import EnvironmentSpec, JobRequest, SubmitJob, SubmitJobReply
from fluster.security.signing import Signer, Verifier, new_signing_key

cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = pytest.mark.timeout(120)


class _Marker:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        return (Path.write_text, (Path(self.path), "ran"))


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Signer, Signer]:
    return new_signing_key(tmp_path / "team.nk"), new_signing_key(tmp_path / "stranger.nk")


@pytest.fixture
async def signed_cluster(nats_url: str, namespace: str, keys: tuple[Signer, Signer]) -> AsyncIterator[ClusterClient]:
    team, _ = keys
    async with in_own_task(local_cluster(nats_url, namespace, workers=1, trusted_keys=frozenset({team.public}))) as c:
        yield c


async def test_a_worker_runs_signed_jobs_and_refuses_the_others(
    signed_cluster: ClusterClient, keys: tuple[Signer, Signer]
) -> None:
    client = signed_cluster
    team, stranger = keys
    client.signer = team
    assert await client.result(await client.submit("signed", lambda: "ran"), timeout=60) == "ran"
    client.signer = None
    with pytest.raises(JobFailed, match="is not signed"):
        await client.result(await client.submit("unsigned", lambda: "ran"), timeout=60)
    client.signer = stranger
    with pytest.raises(JobFailed, match="does not trust"):
        await client.result(await client.submit("stranger", lambda: "ran"), timeout=60)


async def test_an_altered_signed_job_is_refused(signed_cluster: ClusterClient, keys: tuple[Signer, Signer]) -> None:
    client, (team, _) = signed_cluster, keys
    token = new_token()
    entry = await store_entrypoint(
        client.assets.objects, client.assets.entrypoints, token, Entrypoint.from_callable(print).to_bytes()
    )
    signed = team.sign_job("altered", JobRequest(name="altered", entrypoint=entry))
    altered = signed.model_copy(update={"environment": EnvironmentSpec(env_vars={"LD_PRELOAD": "/tmp/evil.so"})})
    message = SubmitJob(job_id="altered", token=token, request=altered)
    await request(client.nc, client.subjects.submit, message, SubmitJobReply, timeout=10)
    with pytest.raises(JobFailed, match="does not match its signature"):
        await client.result("altered", timeout=60)


class Echo:
    def echo(self, value: object) -> str:
        return "echoed"


async def test_an_actor_server_answers_only_signed_calls(
    client: ClusterClient, keys: tuple[Signer, Signer], tmp_path: Path
) -> None:
    team, stranger = keys
    marker = tmp_path / "server-unpickled-it"
    client.verifier = Verifier(frozenset({team.public}))
    server = ActorServer(client)
    server.register("echo", Echo())
    async with server:
        resolver = ClusterResolver(client)
        try:
            pool = await resolver.lookup("echo")
            await pool.wait_for_size(1, timeout=30)
            client.signer = team
            assert await pool.call().echo(1) == "echoed"
            assert await pool.call().echo(b"x" * (2 << 20)) == "echoed"  # large arguments go through a transfer
            for signer, match in ((None, "is not signed"), (stranger, "does not trust")):
                client.signer = signer
                with pytest.raises(UntrustedPayload, match=match):
                    await pool.call().echo(_Marker(str(marker)))
        finally:
            await resolver.close()
    assert not marker.exists()


def serve_echo() -> None:
    import anyio

    import fluster

    async def main() -> None:
        async with fluster.ClusterClient.connect() as client:
            server = ActorServer(client)
            server.register("job-echo", Echo())
            async with server:
                await anyio.sleep_forever()

    fluster.run_async(main)


async def test_actors_served_by_jobs_require_signed_calls_where_workers_require_signed_jobs(
    signed_cluster: ClusterClient, keys: tuple[Signer, Signer]
) -> None:
    client, (team, _) = signed_cluster, keys
    client.signer = team
    job_id = await client.submit("echo-server", Entrypoint.from_callable(serve_echo))
    resolver = ClusterResolver(client)
    try:
        pool = await resolver.lookup("job-echo")
        await pool.wait_for_size(1, timeout=60)
        assert await pool.call().echo(pickle.dumps(1)) == "echoed"
        client.signer = None
        with pytest.raises(UntrustedPayload, match="is not signed"):
            await pool.call().echo(1)
    finally:
        await resolver.close()
        await client.kill(job_id)
