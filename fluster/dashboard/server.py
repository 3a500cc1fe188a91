"""``Dashboard``: connects the view's feeds, binds the HTTP port (loopback unless told otherwise) and serves
the app with uvicorn on the running event loop, until cancelled.

``await tg.start(Dashboard(nc, settings).run)`` returns the dashboard's URL once its view holds every
bucket's records and its socket listens, so a caller (``fluster up``, a test) never waits and hopes.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
import uvicorn
from anyio.abc import TaskStatus
from nats.aio.client import Client as NATS

from fluster.bus.assets import assets_when_ready, watch_reconnects
from fluster.dashboard.app import build_app
from fluster.dashboard.feeds import Feeds
from fluster.dashboard.view import ClusterView
from fluster.logs import bind_context
from fluster.protocol.subjects import Subjects

log = logging.getLogger(__name__)

DEFAULT_PORT = 8265  # Ray's dashboard port: where people coming from Ray look first
STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class DashboardSettings:
    namespace: str = "default"
    host: str = "127.0.0.1"  # loopback: other machines reach it only when the operator says so
    port: int | None = DEFAULT_PORT  # 0: any free port; None: DEFAULT_PORT when free, else any free port


class Dashboard:
    def __init__(self, nc: NATS, settings: DashboardSettings | None = None, create_assets: bool = True) -> None:
        """``create_assets=False``: its identity may not create the namespace's streams (a fluster client's):
        it waits for the controller to."""
        self.nc = nc
        self._create_assets = create_assets
        self.settings = settings or DashboardSettings()
        self.subjects = Subjects(self.settings.namespace)
        self.view = ClusterView(self.settings.namespace)
        self.url: str | None = None

    async def run(self, *, task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED) -> None:
        bind_context(component="dashboard")
        assets = await assets_when_ready(self.nc.jetstream(), self.subjects, self._create_assets)
        watch_reconnects(self.nc, assets)
        stopping = anyio.Event()
        app = build_app(self.view, self.nc, self.subjects, stopping)
        config = uvicorn.Config(
            app,
            log_config=None,  # the process's logging is the CLI's to configure
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=1,
        )
        server = _Server(config)
        served = anyio.Event()
        async with anyio.create_task_group() as tg:
            await tg.start(Feeds(self.nc, self.subjects, assets, self.view).run)
            sock = _bind_port(self.settings.host, self.settings.port)
            host, port = sock.getsockname()[:2]
            self.url = f"http://{_url_host(host)}:{port}"
            tg.start_soon(_serve, server, sock, served)
            log.info("dashboard serving namespace=%s url=%s", self.settings.namespace, self.url)
            task_status.started(self.url)
            try:
                await anyio.sleep_forever()
            finally:
                stopping.set()
                self.view.changes.close()
                server.should_exit = True
                with anyio.CancelScope(shield=True), anyio.move_on_after(STOP_TIMEOUT_S):
                    await served.wait()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (``port`` 0: a free one).

    Raises:
        OSError: the port is taken, or the host is not an address of this machine.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_port(host: str, port: int | None) -> socket.socket:
    if port is not None:
        return bind(host, port)
    try:
        return bind(host, DEFAULT_PORT)
    except OSError:
        log.info("port %d is in use: the dashboard takes a free port", DEFAULT_PORT)
        return bind(host, 0)


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers: the process that runs the dashboard owns its signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve(server: _Server, sock: socket.socket, served: anyio.Event) -> None:
    # shielded: a stop sets ``should_exit`` and lets uvicorn close its connections, rather than cutting it off
    with anyio.CancelScope(shield=True):
        try:
            await server.serve(sockets=[sock])
        finally:
            sock.close()
            served.set()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
