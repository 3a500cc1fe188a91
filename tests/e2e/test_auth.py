"""Whole clusters on nats-servers that require credentials: TLS client certificates (every process started by
the CLI with natscli's flags and variables), user/password, an nkey and a JWT creds file (in-process). In each,
a job connects back and serves an actor that a client calls, and the job got no secret in its environment."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import cloudpickle
import pytest
from cli_helpers import fluster
from cluster_helpers import Processes, in_own_task
from nats_auth import (
    make_jwt_chain,
    make_tls_files,
    new_nkey,
    nkey_server_config,
    user_password_server_config,
)

from fluster import ClusterClient, Entrypoint, LocalCluster
from fluster.actor import ClusterResolver
from fluster.bus.options import ConnectOptions
from fluster.errors import ClusterUnavailable
from fluster.local.server import NatsServer

cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = pytest.mark.timeout(120)


def serve_environment_report(name: str, secret: str) -> None:
    """A job that connects back (from what its worker gave it) and serves what it can see of its secrets."""
    import os
    import stat

    import fluster
    from fluster.actor import ActorServer

    path = os.environ.get("FLUSTER_CONNECTION", "")
    report = {
        "url": os.environ["FLUSTER_URL"],
        "file_mode": oct(stat.S_IMODE(os.stat(path).st_mode)) if path else "",
        "secret_in_env": any(secret in value for value in os.environ.values()),
    }

    class Report:
        def get(self) -> dict[str, object]:
            return report

    async def main() -> None:
        async with fluster.ClusterClient.connect() as client:
            server = ActorServer(client)
            server.register(name, Report())
            async with server:
                await anyio.sleep_forever()

    fluster.run_async(main)


async def _call_the_job(client: ClusterClient, name: str, secret: str) -> dict[str, object]:
    job_id = await client.submit(name, Entrypoint.from_callable(serve_environment_report, name, secret))
    resolver = ClusterResolver(client)
    try:
        pool = await resolver.lookup(name)
        await pool.wait_for_size(1, timeout=60)
        report: dict[str, object] = await pool.call().get()
    finally:
        await resolver.close()
        await client.kill(job_id)
    return report


def test_a_cluster_on_a_server_that_requires_client_certificates(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    with NatsServer(store_dir=tmp_path / "nats", extra_config=tls.server_config()) as server:
        flags = ["--tlsca", str(tls.ca), "--tlscert", str(tls.client_cert), "--tlskey", str(tls.client_key)]
        procs = Processes(server.url, "default", tmp_path)
        try:
            procs.controller(*flags)
            procs.worker("tls-worker", *flags)
            options = ConnectOptions(tls_ca=str(tls.ca), tls_cert=str(tls.client_cert), tls_key=str(tls.client_key))

            async def check() -> dict[str, object]:
                async with ClusterClient.connect(server.url, "default", options=options) as client:
                    return await _call_the_job(client, "tls-report", str(tls.client_key))

            report = anyio.run(check)
            assert report["url"] == server.url and report["file_mode"] == "0o600"
            # the CLI takes natscli's variables too; without a client certificate the server refuses, and says so
            variables = {"FLUSTER_URL": server.url, "NATS_CA": str(tls.ca), "NATS_CERT": str(tls.client_cert)}
            listed = fluster("jobs", "--json", extra_env={**variables, "NATS_KEY": str(tls.client_key)}).ok()
            assert [j["job_id"] for j in json.loads(listed.out)] == ["tls-report"]
            refused = fluster("jobs", extra_env={"FLUSTER_URL": server.url, "NATS_CA": str(tls.ca)})
            assert refused.code == 3 and "TLS with NATS" in refused.error_line and "--tlscert" in refused.error_line
        finally:
            procs.stop_all()


@pytest.fixture(params=["user-password", "password-in-url", "nkey", "jwt-creds"])
async def secured_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[ClusterClient, str]]:
    kind = request.param
    url_credentials = ""
    if kind in ("user-password", "password-in-url"):
        secret = "pw-s3cret"
        config, options = user_password_server_config("ada", secret), ConnectOptions(user="ada", password=secret)
        if kind == "password-in-url":
            url_credentials, options = f"ada:{secret}@", ConnectOptions()
    elif kind == "nkey":
        key = new_nkey()
        secret = key.seed
        config, options = nkey_server_config(key.public), ConnectOptions(nkey_seed=key.seed)
    else:
        chain = make_jwt_chain()
        creds = tmp_path / "user.creds"
        creds.write_text(chain.creds)
        secret = chain.creds.split("-----BEGIN USER NKEY SEED-----\n")[1].split("\n")[0]
        config, options = chain.server_config, ConnectOptions(creds=str(creds))
    with NatsServer(store_dir=tmp_path / "nats", extra_config=config) as server:
        with pytest.raises(ClusterUnavailable, match="refused the credentials"):
            await ClusterClient.connect(server.url, "default", options=ConnectOptions())
        url = server.url.replace("nats://", f"nats://{url_credentials}")
        cluster = LocalCluster(url=url, options=options, workers=1, cpu=2, memory="2g", heartbeat_interval=0.2)
        async with in_own_task(cluster) as client:
            yield client, secret


async def test_a_cluster_on_a_server_that_requires_credentials(secured_cluster: tuple[ClusterClient, str]) -> None:
    client, secret = secured_cluster
    report = await _call_the_job(client, "creds-report", secret)
    assert report == {"url": client.url, "file_mode": "0o600", "secret_in_env": False}
    assert secret not in client.url
