"""``fluster.Client``: the blocking facade over ``ClusterClient`` for scripts and notebooks.

Each method forwards to the async client on a background event loop (a portal of ``fluster.blocking``);
nothing here reimplements behaviour.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

from anyio.from_thread import BlockingPortal

from fluster import blocking
from fluster.bus.options import ConnectOptions
from fluster.client.cluster import ClusterClient
from fluster.protocol.ids import JobId
from fluster.protocol.messages import JobState, KillJobReply, LogLine, WorkerInfo
from fluster.protocol.resources import ResourceSpec
from fluster.types import Constraints, Entrypoint, Environment, JobStatus


class Client:
    """``Client(url=None, namespace=None, options=None)``: the same methods as ``ClusterClient``, blocking."""

    def __init__(
        self, url: str | None = None, namespace: str | None = None, *, options: ConnectOptions | None = None
    ) -> None:
        owned, self._client = blocking.connect(url, namespace, options)
        self._owned: blocking.OwnedPortal | None = owned
        self._portal = owned.portal

    @classmethod
    def _from_async(cls, client: ClusterClient, portal: BlockingPortal) -> Client:
        """Wrap a client that lives on ``portal``'s loop (the portal is owned by the caller)."""
        self = cls.__new__(cls)
        self._owned = None
        self._portal = portal
        self._client = client
        return self

    @property
    def aio(self) -> ClusterClient:
        """The async client underneath (for use on ``portal``'s loop)."""
        return self._client

    @property
    def portal(self) -> BlockingPortal:
        return self._portal

    @property
    def namespace(self) -> str:
        return self._client.namespace

    @property
    def url(self) -> str:
        return self._client.url

    def submit(
        self,
        name: str,
        entrypoint: Entrypoint | Callable[..., Any],
        resources: ResourceSpec | None = None,
        environment: Environment | None = None,
        scheduling_timeout: float | None = None,
        max_retries_failure: int = 0,
        max_retries_preemption: int = 100,
        replicas: int = 1,
        coschedule: bool = False,
        group_by: str | None = None,
        constraints: Constraints | None = None,
        max_task_failures: int = 0,
    ) -> JobId:
        return self._portal.call(
            lambda: self._client.submit(
                name,
                entrypoint,
                resources,
                environment,
                scheduling_timeout,
                max_retries_failure,
                max_retries_preemption,
                replicas=replicas,
                coschedule=coschedule,
                group_by=group_by,
                constraints=constraints,
                max_task_failures=max_task_failures,
            )
        )

    def status(self, job_id: str) -> JobStatus:
        return self._portal.call(self._client.status, job_id)

    def wait(self, job_id: str, timeout: float | None = None) -> JobStatus:
        return self._portal.call(self._client.wait, job_id, timeout)

    def result(self, job_id: str, timeout: float | None = None) -> Any:
        return self._portal.call(self._client.result, job_id, timeout)

    def kill(self, job_id: str) -> KillJobReply:
        return self._portal.call(self._client.kill, job_id)

    def list_jobs(self, state: JobState | str | None = None, prefix: str | None = None) -> list[JobStatus]:
        return self._portal.call(self._client.list_jobs, state, prefix)

    def list_workers(self) -> list[WorkerInfo]:
        return self._portal.call(self._client.list_workers)

    def logs(self, job_id: str, follow: bool = False, task: int | None = None) -> Iterator[LogLine]:
        return blocking.iterate(self._portal, self._client.logs(job_id, follow, task))

    def close(self) -> None:
        owned, self._owned = self._owned, None
        if owned is not None:
            try:
                self._portal.call(self._client.close)
            finally:
                owned.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
