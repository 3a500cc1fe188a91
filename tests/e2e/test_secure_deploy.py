"""A cluster of machines set up as docs/security.md says: the shipped deploy/nats/secure.conf (JWT identities,
TLS), an identity store from ``fluster creds init``, and a controller, a worker and a client each running as
its own process with its own credentials from ``fluster creds``. A job runs and serves an actor as its own
identity, and the server holds every role to its part."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import anyio
import cloudpickle
import pytest
from cli_helpers import fluster
from cluster_helpers import Processes, eventually
from security_helpers import rogue

from fluster import ClusterClient, Entrypoint
from fluster.actor import ClusterResolver
from fluster.bus.connection import connect
from fluster.bus.natscontext import load_context
from fluster.bus.options import ConnectOptions
from fluster.controller.service import Controller, ControllerSettings
from fluster.errors import ClusterUnavailable
from fluster.local.server import find_nats_server, free_port
from fluster.protocol.permissions import Role
from fluster.protocol.subjects import Subjects
from fluster.security.store import AuthStore
from fluster.security.tls import make_tls_files

cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = pytest.mark.timeout(180)
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "nats"


@contextlib.contextmanager
def shipped_server(etc: Path, port: int) -> Iterator[None]:
    """deploy/nats/secure.conf as an operator would install it in ``etc`` (here on loopback, a free port)."""
    text = (DEPLOY / "secure.conf").read_text().replace("/etc/fluster", str(etc)).replace("/var/lib/fluster", str(etc))
    text = text.replace('listen: "0.0.0.0:4222"', f'listen: "127.0.0.1:{port}"').replace(
        'http: "127.0.0.1:8222"', f'http: "127.0.0.1:{free_port()}"'
    )
    (etc / "secure.conf").write_text(text)
    with open(etc / "nats.log", "wb") as log:
        proc = subprocess.Popen([find_nats_server(), "-c", str(etc / "secure.conf")], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (etc / "nats.log").read_text()
                time.sleep(0.02)  # readiness of a subprocess: there is no event to wait on
        yield
    finally:
        proc.terminate()
        proc.wait(10)


async def _said(procs: Processes, proc: subprocess.Popen[bytes], text: str) -> bool:
    return text in procs.log(proc)


def report_identity(name: str) -> None:
    import anyio

    import fluster
    from fluster.actor import ActorServer
    from fluster.environ import job_env
    from fluster.security.identity import identity_of

    job = job_env()
    assert job is not None
    identity = identity_of(job.connect_options()[1])

    class Report:
        def get(self) -> tuple[str, str]:
            assert identity is not None
            return identity.role.value, identity.inbox_prefix

    async def main() -> None:
        async with fluster.ClusterClient.connect() as client:
            server = ActorServer(client)
            server.register(name, Report())
            async with server:
                await anyio.sleep_forever()

    fluster.run_async(main)


async def test_a_secure_cluster_of_processes_on_the_shipped_config(tmp_path: Path) -> None:
    etc, port = tmp_path / "etc", free_port()
    url = f"tls://127.0.0.1:{port}"
    fluster("creds", "init", str(etc / "auth"), "--url", url).ok()
    ca = str(make_tls_files(etc / "tls").ca)  # in production: certificates for the server's names
    issued = etc / "auth" / "creds" / "default"
    out = tmp_path / "issued"
    fluster(
        "creds", "worker", "--store", str(etc / "auth"), "--worker-id", "box-1", "--url", url, "--out", str(out)
    ).ok()
    fluster("creds", "client", "--store", str(etc / "auth"), "--name", "ada", "--url", url, "--out", str(out)).ok()
    procs = Processes(url, "default", tmp_path)
    with shipped_server(etc, port):
        try:
            tls = ("--tlsca", ca)
            issuer = str(issued / "job-issuer.json")
            controller = procs.controller(
                "--context", str(issued / "controller.context.json"), "--job-issuer", issuer, *tls
            )
            worker = procs.start(
                "worker", "--context", str(out / "worker-box-1.context.json"), "--cpu", "2", *tls, name="w"
            )
            await eventually(lambda: _said(procs, controller, "controller serving"), 30, "the controller")
            await eventually(lambda: _said(procs, worker, "worker box-1 serving"), 30, "the worker")
            ada_context = str(out / "client-ada.context.json")
            ran = fluster("run", "--context", ada_context, *tls, "--", "echo", "hi", timeout=90)
            assert ran.ok().out.strip() == "hi"

            _, ada = load_context(str(out / "client-ada.context.json"), {})
            ada = ConnectOptions(creds=ada.creds, inbox_prefix=ada.inbox_prefix, tls_ca=ca)
            async with ClusterClient.connect(url, "default", options=ada) as client:
                job_id = await client.submit("who", Entrypoint.from_callable(report_identity, "who"))
                resolver = ClusterResolver(client)
                try:
                    pool = await resolver.lookup("who")
                    await pool.wait_for_size(1, timeout=60)
                    role, inbox = await pool.call().get()
                finally:
                    await resolver.close()
                    await client.kill(job_id)
                assert role == "job" and inbox.startswith("_INBOX_default.job.")
                assert [w.worker_id for w in await client.list_workers()] == ["box-1"]

            s = Subjects("default")
            _, worker = load_context(str(out / "worker-box-1.context.json"), {})
            async with rogue(url, ConnectOptions(creds=worker.creds, tls_ca=ca)) as r:
                await r.nc.subscribe(s.worker_run("box-2"))
                await r.nc.publish(s.submit, b"x")
                await r.refused("subscription", s.worker_run("box-2"))
                await r.refused("publish", s.submit)
            with pytest.raises(ClusterUnavailable, match="refused the credentials"):
                await connect(url, "stranger", ConnectOptions(tls_ca=ca))
        finally:
            procs.stop_all()


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as reply:
            return bool(json.loads(reply.read()).get("status") == "ok")
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def shipped_cluster(etc: Path) -> Iterator[tuple[str, list[int]]]:
    """deploy/nats/secure-cluster-n{1,2,3}.conf installed in ``etc``, on free loopback ports: (URL, monitors)."""
    clients, routes, monitors = ([free_port() for _ in range(3)] for _ in range(3))
    procs = []
    try:
        for i in range(3):
            n = i + 1
            text = (DEPLOY / f"secure-cluster-n{n}.conf").read_text().replace("/etc/fluster", str(etc))
            text = text.replace("/var/lib/fluster", str(etc)).replace(f'"0.0.0.0:1422{n}"', f'"127.0.0.1:{clients[i]}"')
            text = text.replace(f'"127.0.0.1:1822{n}"', f'"127.0.0.1:{monitors[i]}"')
            text = text.replace(f'"0.0.0.0:1622{n}"', f'"127.0.0.1:{routes[i]}"')
            for j in range(3):
                text = text.replace(f"nats-route://127.0.0.1:1622{j + 1}", f"nats-route://127.0.0.1:{routes[j]}")
            (etc / f"n{n}.conf").write_text(text)
            with open(etc / f"n{n}.log", "wb") as log:
                procs.append(
                    subprocess.Popen([find_nats_server(), "-c", str(etc / f"n{n}.conf")], stdout=log, stderr=log)
                )
        yield ",".join(f"nats://127.0.0.1:{port}" for port in clients), monitors
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


async def test_the_shipped_three_node_config_forms_a_cluster_over_mutual_tls(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    store = AuthStore.open(etc / "auth")
    ca = str(make_tls_files(etc / "tls").ca)
    with shipped_cluster(etc) as (url, monitors):
        for port in monitors:  # healthy: routes up over TLS and a JetStream meta leader elected
            await eventually(lambda port=port: anyio.to_thread.run_sync(_healthy, port), 60, "a healthy node")
        files = store.write_issued(store.issue(Role.CONTROLLER, "controller"), etc / "creds", None, ca)
        nc = await connect(url, "controller", ConnectOptions(creds=str(files.creds), tls_ca=ca))
        try:
            controller = Controller(nc, ControllerSettings(replicas=3, job_issuer=store.job_issuer()))
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    await tg.start(controller.run)  # every bucket and stream made with 3 replicas
                    info = await nc.jetstream().stream_info(controller.assets.logs_stream)
                    assert info.config.num_replicas == 3
                    tg.cancel_scope.cancel()
        finally:
            await nc.close()
