"""Where a ``ClusterClient`` connects: the URL, credentials and namespace from its arguments, else from the job
it runs in, else from the environment; and ``Connecting``, what ``ClusterClient.connect`` returns.

It does not connect; ``ClusterClient`` does, with what this resolves.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from fluster.bus.connection import HOW_TO_START
from fluster.bus.options import ConnectOptions, split_url
from fluster.environ import JobEnv, default_connection, default_namespace, job_env
from fluster.errors import ClusterUnavailable

if TYPE_CHECKING:
    from fluster.client.cluster import ClusterClient


def resolve_target(
    url: str | None, namespace: str | None, options: ConnectOptions | None
) -> tuple[str, str, ConnectOptions, JobEnv | None]:
    """The URL (without credentials), namespace and options to connect with, and the job this process runs
    (None unless it is one of that namespace's).

    Raises:
        ClusterUnavailable: no URL is configured.
    """
    job = job_env()
    if options is None and job is not None and url in (None, job.url):
        url, options = job.connect_options()
    elif options is None:
        url, options = default_connection(url)
    if not url:
        raise ClusterUnavailable(f"no cluster URL: set FLUSTER_URL or NATS_URL, or {HOW_TO_START}")
    url, in_url = split_url(url)
    options = in_url.merged(options)
    namespace = namespace or (job.namespace if job else None) or default_namespace() or "default"
    if job is not None and job.namespace != namespace:
        job = None
    return url, namespace, options, job


class Connecting:
    """What ``ClusterClient.connect`` returns: awaitable, and an async context manager that closes the client."""

    def __init__(self, open_client: Callable[[], Coroutine[Any, Any, ClusterClient]]) -> None:
        self._open = open_client
        self._client: ClusterClient | None = None

    def __await__(self) -> Generator[Any, None, ClusterClient]:
        return self._open().__await__()

    async def __aenter__(self) -> ClusterClient:
        self._client = await self._open()
        return self._client

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client is not None:
            await self._client.close()
