"""``up`` / ``down``: a local cluster (nats-server, controller, workers, dashboard) in the foreground or
detached, and stopping the ones ``up`` started. The controller and worker on their own are ``daemons``'."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import anyio

from fluster.cli import args as a
from fluster.cli import local_state
from fluster.cli.dashboard import add_dashboard_address, add_log_format, up_dashboard
from fluster.cli.failures import INTERRUPTED
from fluster.cli.stopping import stop_signals
from fluster.environ import default_namespace
from fluster.local.cluster import LocalCluster

Sub = Callable[..., argparse.ArgumentParser]


def register(add_plain: Sub) -> None:
    p = add_plain("up", "run a local cluster (nats-server, controller, workers); --detach for the background", _up)
    p.add_argument("--workers", type=a.count, default=2, help="workers to start (default: %(default)s)")
    p.add_argument("--cpu", type=a.cpu, default=None, help="CPUs each worker offers (default: probe the machine)")
    p.add_argument("--memory", type=a.memory, default=None, help="memory each worker offers, e.g. 8g (default: probe)")
    p.add_argument(
        "--port",
        type=a.port,
        default=None,
        help=f"NATS port (default: {local_state.DEFAULT_PORT} when free, else any free port)",
    )
    p.add_argument(
        "--namespace",
        default=default_namespace() or "default",
        help="fluster namespace (default: $FLUSTER_NAMESPACE or 'default')",
    )
    p.add_argument(
        "--runtime",
        choices=["process", "docker"],
        default="process",
        help="how workers run jobs (default: %(default)s)",
    )
    p.add_argument(
        "--store-dir",
        default=None,
        metavar="DIR",
        help="JetStream directory, created when missing and kept (default: a temporary one, removed at exit)",
    )
    p.add_argument("--detach", action="store_true", help="run in the background; `fluster down` stops it")
    p.add_argument("--no-dashboard", action="store_true", help="start no dashboard (see `fluster dashboard`)")
    add_dashboard_address(p, "--dashboard-host", "--dashboard-port")
    add_log_format(p)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address nats-server listens on (default: %(default)s; another needs the credentials up generates)",
    )
    p.add_argument("--tls", action="store_true", help="TLS for every connection, with a CA generated in the store dir")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="no authentication: any local process could run code on the workers (refused off loopback)",
    )

    p = add_plain("down", "stop the local cluster(s) that `fluster up` started", _down)
    p.add_argument("--port", type=a.port, default=None, help="only the cluster on this port (default: every one)")


async def _up(args: argparse.Namespace) -> int:
    if args.detach:
        return await anyio.to_thread.run_sync(local_state.start_detached, args.argv)
    port = local_state.choose_port(args.port)
    cluster = LocalCluster(
        workers=args.workers,
        cpu=args.cpu,
        memory=args.memory,
        namespace=args.namespace,
        runtime=args.runtime,
        store_dir=args.store_dir,
        port=port,
        host=args.host,
        tls=args.tls,
        insecure=args.insecure,
    )
    async with stop_signals("the local cluster") as stop, cluster, up_dashboard(cluster, args) as dashboard:
        auth = cluster.auth.store.directory if cluster.auth is not None else None
        state = local_state.record(
            cluster.url, port, args.namespace, args.store_dir, dashboard, cluster.client_context, auth
        )
        try:
            if args.port is None and port != local_state.DEFAULT_PORT:
                print(f"port {local_state.DEFAULT_PORT} is in use: nats-server took port {port}")
            print(f"fluster is up: {args.workers} worker(s), namespace {args.namespace!r}")
            if cluster.server is not None:
                server = cluster.server
                print(f"nats-server: config {server.store_dir / 'nats-server.conf'}, log {server.log_file}")
            print(f"export FLUSTER_URL={cluster.url}")
            if cluster.client_context is not None:
                print(
                    f"credentials: {cluster.client_context} (commands here find them for this URL; "
                    "`fluster creds worker|client` issues more)"
                )
            else:
                print("no authentication (--insecure): any process on this machine can submit jobs")
            if dashboard:
                print(f"dashboard: {dashboard}")
            print("press Ctrl-C (or run `fluster down`) to stop", flush=True)
            await stop.requested.wait()
        finally:
            local_state.forget(state)
    return INTERRUPTED if stop.forced else 0


async def _down(args: argparse.Namespace) -> int:
    return await anyio.to_thread.run_sync(local_state.stop_recorded, args.port)
