"""The blocking facade over the async actor API, for scripts: the same calls without ``await``.

Every method forwards to the async object through one ``anyio.from_thread`` blocking portal (an event loop in
a background thread); nothing here re-implements behaviour.

::

    with fluster.actor.sync.connect(url) as actors:
        pool = actors.lookup("inference")
        pool.wait_for_size(3, timeout=30)
        prediction = pool.call().predict([1, 2, 3])
        results = {r.endpoint.endpoint_id: r.value for r in pool.broadcast().predict([1]).wait_all()}
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from functools import partial
from types import TracebackType
from typing import Any, Literal

from anyio.from_thread import BlockingPortal, start_blocking_portal

from fluster.actor.broadcast import BroadcastResult, EndpointResult
from fluster.actor.pool import DEFAULT_CALL_TIMEOUT_S, ActorClient, ActorPool, ClusterResolver
from fluster.actor.server import ActorServer
from fluster.client.cluster import ClusterClient
from fluster.client.sync import Client
from fluster.protocol.actor_messages import EndpointRecord
from fluster.protocol.ids import EndpointId


def connect(
    url: str | None = None, namespace: str | None = None, call_timeout: float | None = DEFAULT_CALL_TIMEOUT_S
) -> SyncActors:
    """Connect to a cluster (as ``ClusterClient.connect`` does) and return the blocking actor API.

    Raises:
        ClusterUnavailable: nothing answers at the URL.
    """
    portal_cm = start_blocking_portal(backend="asyncio")
    portal = portal_cm.__enter__()
    try:
        client = portal.call(_connect, url, namespace)
    except BaseException as exc:
        portal_cm.__exit__(type(exc), exc, exc.__traceback__)
        raise
    return SyncActors(portal, ClusterResolver(client, call_timeout=call_timeout), portal_cm)


class SyncActors:
    """A resolver and server factory usable without ``await``; close it (or use ``with``) when done."""

    def __init__(
        self,
        portal: BlockingPortal,
        resolver: ClusterResolver,
        owned_portal: AbstractContextManager[BlockingPortal] | None = None,
        owns_client: bool = True,
    ) -> None:
        self.portal = portal
        self.resolver = resolver
        self._owned_portal = owned_portal
        self._owns_client = owns_client

    @classmethod
    def from_client(cls, client: Client, call_timeout: float | None = DEFAULT_CALL_TIMEOUT_S) -> SyncActors:
        """Actors over an open ``fluster.Client``, sharing its connection and event loop (closing this
        object leaves the client open)."""
        return cls(client.portal, ClusterResolver(client.aio, call_timeout=call_timeout), owns_client=False)

    def lookup(self, name: str) -> SyncPool:
        return SyncPool(self.portal, self.portal.call(self.resolver.lookup, name))

    def actor(self, name: str, timeout: float | None = DEFAULT_CALL_TIMEOUT_S) -> Any:
        """One actor, called directly: ``actors.actor("counter").incr(1)``."""
        return _SyncMethods(self.portal, ActorClient(self.resolver, name, timeout))

    def server(self) -> SyncActorServer:
        return SyncActorServer(self.portal, ActorServer(self.resolver.client, self.resolver))

    def close(self) -> None:
        """Close the connection, and the event loop thread when this object started it."""
        try:
            self.portal.call(self.resolver.close)
            if self._owns_client:
                self.portal.call(self.resolver.client.close)
        finally:
            if self._owned_portal is not None:
                self._owned_portal.__exit__(None, None, None)

    def __enter__(self) -> SyncActors:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class SyncPool:
    """``ActorPool`` without ``await``."""

    def __init__(self, portal: BlockingPortal, pool: ActorPool) -> None:
        self._portal = portal
        self.pool = pool

    @property
    def size(self) -> int:
        return self.pool.size

    @property
    def endpoints(self) -> list[EndpointRecord]:
        return self.pool.endpoints

    def refresh(self) -> list[EndpointRecord]:
        return self._portal.call(self.pool.refresh)

    def wait_for_size(self, n: int, timeout: float | None = None) -> list[EndpointRecord]:
        """See ``ActorPool.wait_for_size``."""
        return self._portal.call(self.pool.wait_for_size, n, timeout)

    def call(self, timeout: float | None | Literal["default"] = "default") -> Any:
        return _SyncMethods(self._portal, self.pool.call(timeout))

    def broadcast(self, timeout: float | None | Literal["default"] = "default") -> Any:
        """``pool.broadcast().method(*args)`` returns a ``SyncBroadcast``."""
        return _SyncMethods(
            self._portal,
            self.pool.broadcast(timeout),
            lambda result: SyncBroadcast(self._portal, result),
        )


class SyncBroadcast:
    """``BroadcastResult`` without ``await``."""

    def __init__(self, portal: BlockingPortal, result: BroadcastResult) -> None:
        self._portal = portal
        self.result = result
        self.endpoints = result.endpoints

    def __len__(self) -> int:
        return len(self.result)

    def wait_all(self) -> list[EndpointResult]:
        return self._portal.call(self.result.wait_all)

    def wait_any(self) -> EndpointResult:
        return self._portal.call(self.result.wait_any)

    def as_completed(self) -> Iterator[EndpointResult]:
        futures = [self._portal.start_task_soon(self.result.wait_one, i) for i in range(len(self.result))]
        for future in concurrent.futures.as_completed(futures):
            yield future.result()


class SyncActorServer:
    """``ActorServer`` without ``await``: ``register`` then ``serve()`` (blocks) or ``with server:``."""

    def __init__(self, portal: BlockingPortal, server: ActorServer) -> None:
        self._portal = portal
        self.server = server
        self._context: AbstractContextManager[ActorServer] | None = None

    def register(
        self,
        name: str,
        obj: object,
        max_concurrency: int = 1,
        exclusive: bool = False,
        metadata: dict[str, str] | None = None,
        threaded: bool = True,
    ) -> EndpointId:
        return self.server.register(name, obj, max_concurrency, exclusive, metadata, threaded)

    def serve(self) -> None:
        """Serve until the process is interrupted."""
        self._portal.call(self.server.serve)

    def __enter__(self) -> SyncActorServer:
        self._context = self._portal.wrap_async_context_manager(self.server)
        self._context.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        context, self._context = self._context, None
        if context is not None:
            context.__exit__(exc_type, exc, tb)


class _SyncMethods:
    """``proxy.method(*args)`` runs the async proxy's method in the portal and returns its result."""

    def __init__(self, portal: BlockingPortal, methods: Any, wrap: Callable[[Any], Any] | None = None) -> None:
        self._portal = portal
        self._methods = methods
        self._wrap = wrap

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_"):
            raise AttributeError(method)
        call = getattr(self._methods, method)

        def blocking(*args: Any, **kwargs: Any) -> Any:
            result = self._portal.call(partial(_await, call, args, kwargs))
            return self._wrap(result) if self._wrap else result

        blocking.__name__ = method
        return blocking


async def _await(call: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return await call(*args, **kwargs)


async def _connect(url: str | None, namespace: str | None) -> ClusterClient:
    return await ClusterClient.connect(url, namespace)
