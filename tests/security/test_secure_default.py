"""Secure by default: ``fluster up`` and ``LocalCluster`` require the credentials they generate, commands on the
same machine find them for the cluster's URL (the README's commands work as written), other machines get
theirs from ``fluster creds``, an unauthenticated cluster never listens beyond loopback, and TLS works end to
end when asked for."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import cloudpickle
import pytest
from cli_helpers import env, fluster
from security_helpers import secured_cluster

from fluster import ClusterClient, Entrypoint, LocalCluster
from fluster.actor import ClusterResolver
from fluster.bus.connection import connect
from fluster.bus.options import ConnectOptions
from fluster.errors import ClusterUnavailable, ConfigurationError
from fluster.local.server import free_port

cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("secure-up")
    state = {"FLUSTER_STATE_DIR": str(root / "state")}
    port = free_port()
    started = fluster("up", "--detach", "--port", str(port), "--workers", "1", "--cpu", "4", extra_env=state).ok()
    assert f"export FLUSTER_URL=nats://127.0.0.1:{port}" in started.out
    try:
        yield {**state, "FLUSTER_URL": f"nats://127.0.0.1:{port}"}
    finally:
        fluster("down", extra_env=state).ok()


async def test_the_default_up_refuses_connections_without_its_credentials(up: dict[str, str]) -> None:
    with pytest.raises(ClusterUnavailable, match="refused the credentials"):
        await connect(up["FLUSTER_URL"], "stranger", ConnectOptions())
    refused = fluster("jobs", extra_env={"FLUSTER_URL": up["FLUSTER_URL"]})  # no state dir: no credentials found
    assert refused.code == 3 and "refused the credentials" in refused.error_line


def test_the_readme_commands_work_unchanged_on_the_default_up(up: dict[str, str], tmp_path: Path) -> None:
    ran = fluster("run", "--", "sh", "-c", "echo hello from a job", extra_env=up, cwd=tmp_path).ok()
    assert "hello from a job" in ran.out
    assert "sh-" in fluster("jobs", extra_env=up).ok().out
    example = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=150,
        env=env(up),
    )
    assert example.returncode == 0, example.stderr
    assert "flaky raised its own exception type" in example.stdout


def test_the_quickstart_runs_on_its_own_authenticated_local_cluster() -> None:
    example = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=150,
        env=env(),
    )
    assert example.returncode == 0, example.stderr
    assert "'loss':" in example.stdout


def test_up_issues_credentials_for_another_machine(up: dict[str, str], tmp_path: Path) -> None:
    issued = fluster(
        "creds", "client", "--name", "ada", "--url", up["FLUSTER_URL"], "--out", str(tmp_path), extra_env=up
    ).ok()
    context = tmp_path / "client-ada.context.json"
    assert str(context) in issued.out and stat.S_IMODE(context.stat().st_mode) == 0o600
    assert json.loads(context.read_text())["inbox_prefix"] == "_INBOX_default.client.ada"
    elsewhere = {"FLUSTER_STATE_DIR": str(tmp_path / "no-state-here")}  # as on a machine that did not run up
    copied = tmp_path / "other-machine"
    copied.mkdir()
    for name in ("client-ada.context.json", "client-ada.creds"):  # the two files, copied anywhere, work
        shutil.copy(tmp_path / name, copied / name)
    (tmp_path / "cwd").mkdir()
    context = copied / "client-ada.context.json"
    listed = fluster("jobs", "--json", "--context", str(context), extra_env=elsewhere, cwd=tmp_path / "cwd").ok()
    assert isinstance(json.loads(listed.out), list)
    worker = fluster("creds", "worker", "--worker-id", "box-2", "--out", str(tmp_path), extra_env=up).ok()
    assert "fluster worker --context worker-box-2.context.json" in worker.out
    # a worker identity may not pose as another worker
    wrong = fluster(
        "worker", "--context", str(tmp_path / "worker-box-2.context.json"), "--url", up["FLUSTER_URL"],
        "--worker-id", "box-3", extra_env=elsewhere,
    )  # fmt: skip
    assert wrong.code == 5 and "for worker 'box-2', not worker 'box-3'" in wrong.error_line


def test_an_unauthenticated_cluster_never_listens_beyond_loopback() -> None:
    refused = fluster("up", "--insecure", "--host", "0.0.0.0")
    assert refused.code == 5
    assert "refusing to listen on 0.0.0.0 without authentication" in refused.error_line
    assert "Drop --insecure" in refused.error_line
    with pytest.raises(ConfigurationError, match="without authentication"):
        LocalCluster(insecure=True, host="10.1.2.3")


async def test_an_insecure_local_cluster_is_open_on_loopback_only(tmp_path: Path) -> None:
    async with LocalCluster(workers=1, insecure=True, store_dir=tmp_path / "open") as client:
        assert client.options.creds is None
        nc = await connect(client.url, "anyone", ConnectOptions())
        await nc.close()
        assert await client.result(await client.submit("open", lambda: 1), timeout=60) == 1


def serve_tls_report(name: str) -> None:
    import json

    import fluster
    from fluster.actor import ActorServer

    connection = json.loads(open(os.environ["FLUSTER_CONNECTION"]).read())

    class Report:
        def get(self) -> dict[str, object]:
            return connection

    async def main() -> None:
        async with fluster.ClusterClient.connect() as client:
            server = ActorServer(client)
            server.register(name, Report())
            async with server:
                await anyio.sleep_forever()

    fluster.run_async(main)


async def test_tls_end_to_end(tmp_path: Path) -> None:
    async with secured_cluster(tmp_path / "tls-cluster", workers=1, tls=True) as secured:
        assert secured.cluster.auth is not None and secured.cluster.auth.tls is not None
        job_id = await secured.client.submit("tls-report", Entrypoint.from_callable(serve_tls_report, "tls-report"))
        resolver = ClusterResolver(secured.client)
        try:
            pool = await resolver.lookup("tls-report")
            await pool.wait_for_size(1, timeout=60)
            report = await pool.call().get()
        finally:
            await resolver.close()
            await secured.client.kill(job_id)
        assert report["tls_ca"] == "tls-ca.pem" and report["creds"] == "job.creds"  # the job connected over TLS
        plain = ConnectOptions(creds=secured.client_options.creds)  # the right identity, without TLS
        with pytest.raises(ClusterUnavailable):
            await connect(secured.url, "plain", plain)
        async with ClusterClient.connect(secured.url, options=secured.client_options) as again:
            assert [w.worker_id for w in await again.list_workers()] == secured.worker_ids
