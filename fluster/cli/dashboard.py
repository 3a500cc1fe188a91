"""``fluster dashboard``: serve the read-only web dashboard of a cluster (any machine that reaches its NATS),
and the dashboard that ``fluster up`` starts beside its local cluster. Also ``--log-format`` for the
long-running commands."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator, Callable

import anyio

from fluster.bus.connection import connect
from fluster.cli import args as a
from fluster.cli.failures import INTERRUPTED
from fluster.cli.stopping import stop_signals
from fluster.dashboard.server import DEFAULT_PORT, Dashboard, DashboardSettings
from fluster.local.cluster import LocalCluster
from fluster.security.identity import may_create_assets

Sub = Callable[..., argparse.ArgumentParser]


def register(add: Sub) -> None:
    p = add("dashboard", "serve the cluster's web dashboard (read-only), JSON API and /metrics", _dashboard)
    add_dashboard_address(p, "--host", "--port")
    add_log_format(p)


def add_log_format(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="log records as readable text, or one JSON object a line for machines (default: %(default)s)",
    )


def add_dashboard_address(p: argparse.ArgumentParser, host_flag: str, port_flag: str) -> None:
    p.add_argument(
        host_flag,
        dest="dashboard_host",
        default="127.0.0.1",
        help="address to serve on; 0.0.0.0 lets other machines in (default: %(default)s, this machine only)",
    )
    p.add_argument(
        port_flag,
        dest="dashboard_port",
        type=_port,
        default=None,
        help=f"port to serve on, 0 for any free one (default: {DEFAULT_PORT} when free, else any free port)",
    )


async def _dashboard(args: argparse.Namespace) -> int:
    url, options = a.need_connection(args)
    nc = await connect(url, name="fluster-dashboard", options=options)
    settings = DashboardSettings(args.namespace, args.dashboard_host, args.dashboard_port)
    try:
        async with stop_signals("the dashboard") as stop, anyio.create_task_group() as tg:
            address = await tg.start(Dashboard(nc, settings, may_create_assets(options)).run)
            print(f"dashboard of namespace {args.namespace!r}: {address}", flush=True)
            await stop.requested.wait()
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await nc.close()
    return INTERRUPTED if stop.forced else 0


@contextlib.asynccontextmanager
async def up_dashboard(cluster: LocalCluster, args: argparse.Namespace) -> AsyncIterator[str | None]:
    """The dashboard of ``fluster up``'s cluster, while it runs: its address, or None with ``--no-dashboard``."""
    if args.no_dashboard:
        yield None
        return
    settings = DashboardSettings(args.namespace, args.dashboard_host, args.dashboard_port)
    nc = await connect(cluster.url, name="fluster-dashboard", options=cluster.options)
    try:
        async with anyio.create_task_group() as tg:
            yield await tg.start(Dashboard(nc, settings, may_create_assets(cluster.options)).run)
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await nc.close()


def _port(text: str) -> int:
    value = a.count(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, got {value}")
    return value
