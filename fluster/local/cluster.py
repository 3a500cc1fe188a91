"""``LocalCluster``: a whole cluster on this machine (nats-server, a controller, N workers) for scripts and tests.

The nats-server is a subprocess; the controller and workers run in this process, on the event loop of
``async with`` (or, for ``with``, on a background thread's loop). Everything it started stops on exit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType

import anyio
from anyio.abc import TaskGroup

from fluster import blocking
from fluster.bus.connection import connect
from fluster.bus.options import ConnectOptions, split_url
from fluster.client.blocking import Client
from fluster.client.cluster import ClusterClient
from fluster.controller.service import Controller, ControllerSettings
from fluster.local.server import NatsServer
from fluster.security.issuer import DEFAULT_TTL_S
from fluster.security.local import LocalAuth, is_loopback, local_auth, refuse_open_bind
from fluster.worker.agent import Worker
from fluster.worker.settings import WorkerSettings

log = logging.getLogger(__name__)


class LocalCluster:
    """A cluster on this machine: ``async with LocalCluster() as client`` gives a ``ClusterClient``,
    ``with LocalCluster() as client`` a blocking ``Client``."""

    def __init__(
        self,
        workers: int = 2,
        cpu: float | None = None,
        memory: str | None = None,
        namespace: str = "default",
        runtime: str = "process",
        url: str | None = None,
        max_concurrent_jobs: int = 10,
        heartbeat_interval: float = 0.5,
        worker_timeout: float = 5.0,
        store_dir: str | Path | None = None,
        controller: bool = True,
        options: ConnectOptions | None = None,
        port: int | None = None,
        insecure: bool = False,
        tls: bool = False,
        host: str = "127.0.0.1",
        job_identity_ttl: float = DEFAULT_TTL_S,
        trusted_keys: frozenset[str] = frozenset(),
    ) -> None:
        """``url``: use the NATS server(s) there (with ``options``' credentials and TLS) instead of starting one;
        ``port``: the port of the server it starts (default: a free one).

        The server it starts requires authentication: identities for the controller, each worker and the
        client are generated into its store dir (``<store>/auth``), and each job gets its own
        (docs/security.md). ``insecure=True`` starts it without (refused on a ``host`` other than loopback);
        ``tls=True`` adds TLS with a generated CA (needs ``cryptography``). ``trusted_keys``: its workers run
        only jobs signed by one of these keys (``fluster.security.signing``).

        Raises:
            ConfigurationError: ``insecure`` with a non-loopback ``host``.
        """
        self.n_workers = workers
        self.namespace = namespace
        self._external_url: str | None = None
        self.options = options or ConnectOptions()
        if insecure and url is None:
            refuse_open_bind(host)
        self._insecure, self._tls, self._host, self._ttl = insecure, tls, host, job_identity_ttl
        self.auth: LocalAuth | None = None  # the identities of the server it started (None: insecure or external)
        self.client_context: Path | None = None  # the client's natscli context (url, creds, inbox prefix)
        if url:  # credentials written in the URL join the options, so no URL this cluster hands out carries them
            self._external_url, in_url = split_url(url)
            self.options = in_url.merged(self.options)
        self._port = port
        self._store_dir = store_dir
        self._with_controller = controller
        # worker ids are unique per cluster, so two local clusters on one machine never share work dirs or containers
        cluster_id = uuid.uuid4().hex[:6]
        self._worker_settings = [
            WorkerSettings(
                url="",
                namespace=namespace,
                connect=self.options,
                worker_id=f"local-{cluster_id}-{index}",
                cpu=cpu,
                memory=memory,
                runtime=runtime,
                max_concurrent_jobs=max_concurrent_jobs,
                heartbeat_interval=heartbeat_interval,
                trusted_submitters=trusted_keys,
            )
            for index in range(workers)
        ]
        self._controller_settings = ControllerSettings(namespace=namespace, worker_timeout=worker_timeout)
        self.server: NatsServer | None = None
        self.controller: Controller | None = None
        self.workers: list[Worker] = []
        self._stack: contextlib.AsyncExitStack | None = None
        self._owned: blocking.OwnedPortal | None = None
        self._sync_client: Client | None = None
        self._sync_cm: AbstractContextManager[ClusterClient] | None = None

    @property
    def url(self) -> str:
        if self._external_url:
            return self._external_url
        assert self.server is not None, "cluster not started"
        return self.server.url

    # -- async ------------------------------------------------------------------------------------------

    async def __aenter__(self) -> ClusterClient:
        self._stack = contextlib.AsyncExitStack()
        try:
            return await self._stack.enter_async_context(self._run())
        except BaseException:
            await self._stack.aclose()
            raise

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._stack is not None
        await self._stack.aclose()

    @contextlib.asynccontextmanager
    async def _run(self) -> AsyncIterator[ClusterClient]:
        with self._nats_server():
            own = self.auth.controller if self.auth is not None else self.options
            nc = await connect(self.url, name="fluster-local", options=own)
            try:
                async with anyio.create_task_group() as tg:
                    if self._with_controller:
                        settings = self._controller_settings
                        if self.auth is not None:
                            settings = dataclasses.replace(settings, job_issuer=self.auth.job_issuer)
                        self.controller = Controller(nc, settings)
                        await tg.start(self.controller.run)
                    await self._start_workers(tg)
                    client = await ClusterClient.connect(self.url, self.namespace, options=self.options)
                    try:
                        yield client
                    finally:
                        with anyio.CancelScope(shield=True):
                            await client.close()
                            with anyio.move_on_after(10):
                                async with anyio.create_task_group() as drains:
                                    for worker in self.workers:
                                        drains.start_soon(worker.drain, 0.0)
                        tg.cancel_scope.cancel()
            finally:
                with anyio.CancelScope(shield=True):
                    await nc.close()

    async def _start_workers(self, tg: TaskGroup) -> None:
        for settings in self._worker_settings:
            assert settings.worker_id is not None
            options = self.auth.worker(settings.worker_id) if self.auth is not None else self.options
            wnc = await connect(self.url, name=f"fluster-{settings.worker_id}", options=options)
            worker = Worker(wnc, dataclasses.replace(settings, url=self.url, connect=options))
            self.workers.append(worker)
            tg.start_soon(_close_on_exit, wnc)
            await tg.start(worker.run)

    @contextlib.contextmanager
    def _nats_server(self) -> Iterator[None]:
        if self._external_url:
            yield
            return
        self.server = NatsServer(store_dir=self._store_dir, port=self._port, host=self._host)
        if not self._insecure:
            # the TLS certificate's names besides loopback: the address it listens on, or this host's name
            everywhere = self._host in ("0.0.0.0", "::")
            hosts = () if is_loopback(self._host) else (socket.gethostname(),) if everywhere else (self._host,)
            self.auth = local_auth(self.server.store_dir, self.namespace, self._tls, hosts, self._ttl)
            self.server.extra_config = self.auth.server_config
            self.options = self.auth.client
        self.server.start()
        try:
            if self.auth is not None:
                self.client_context = self.auth.write_client_context(self.server.url)
            yield
        finally:
            self.server.stop()

    # -- sync -------------------------------------------------------------------------------------------

    def __enter__(self) -> Client:
        owned = self._owned = blocking.OwnedPortal()
        try:
            # one task must enter and exit the cluster's task group: the portal runs the whole context in one
            self._sync_cm, client = blocking.entered(owned.portal, self._run())
        except BaseException:
            owned.close()
            raise
        self._sync_client = Client._from_async(client, owned.portal)
        return self._sync_client

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._owned is not None and self._sync_cm is not None
        try:
            self._sync_cm.__exit__(exc_type, exc, tb)
        finally:
            self._owned.close()


async def _close_on_exit(nc: object) -> None:
    try:
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await nc.close()  # type: ignore[attr-defined]
