"""The blocking facade over the async actor API, for scripts: the same calls without ``await``.

Every method forwards to the async object on a portal of ``fluster.blocking`` (an event loop in a background
thread); nothing here re-implements behaviour.

::

    with fluster.actor.blocking.connect(url) as actors:
        pool = actors.lookup("inference")
        pool.wait_for_size(3, timeout=30)
        prediction = pool.call().predict([1, 2, 3])
        results = {r.endpoint.endpoint_id: r.value for r in pool.broadcast().predict([1]).wait_all()}
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Literal

from anyio.from_thread import BlockingPortal

from fluster import blocking
from fluster.actor.broadcast import BroadcastResult, EndpointResult
from fluster.actor.pool import ActorClient, ActorPool
from fluster.actor.resolver import DEFAULT_CALL_TIMEOUT_S, ClusterResolver
from fluster.actor.server import ActorServer
from fluster.client.blocking import Client
from fluster.protocol.actor_messages import EndpointRecord
from fluster.protocol.ids import EndpointId


def connect(
    url: str | None = None, namespace: str | None = None, call_timeout: float | None = DEFAULT_CALL_TIMEOUT_S
) -> BlockingActors:
    """Connect to a cluster (as ``ClusterClient.connect`` does) and return the blocking actor API.

    Raises:
        ClusterUnavailable: nothing answers at the URL.
    """
    owned, client = blocking.connect(url, namespace)
    return BlockingActors(owned.portal, ClusterResolver(client, call_timeout=call_timeout), owned)


class BlockingActors:
    """A resolver and server factory usable without ``await``; close it (or use ``with``) when done."""

    def __init__(
        self,
        portal: BlockingPortal,
        resolver: ClusterResolver,
        owned_portal: blocking.OwnedPortal | None = None,
        owns_client: bool = True,
    ) -> None:
        self.portal = portal
        self.resolver = resolver
        self._owned_portal = owned_portal
        self._owns_client = owns_client

    @classmethod
    def from_client(cls, client: Client, call_timeout: float | None = DEFAULT_CALL_TIMEOUT_S) -> BlockingActors:
        """Actors over an open ``fluster.Client``, sharing its connection and event loop (closing this
        object leaves the client open)."""
        return cls(client.portal, ClusterResolver(client.aio, call_timeout=call_timeout), owns_client=False)

    def lookup(self, name: str) -> BlockingActorPool:
        return BlockingActorPool(self.portal, self.portal.call(self.resolver.lookup, name))

    def actor(self, name: str, timeout: float | None = DEFAULT_CALL_TIMEOUT_S) -> Any:
        """One actor, called directly: ``actors.actor("counter").incr(1)``."""
        return blocking.Methods(self.portal, ActorClient(self.resolver, name, timeout))

    def server(self) -> BlockingActorServer:
        return BlockingActorServer(self.portal, ActorServer(self.resolver.client, self.resolver))

    def close(self) -> None:
        """Close the connection, and the event loop thread when this object started it."""
        try:
            self.portal.call(self.resolver.close)
            if self._owns_client:
                self.portal.call(self.resolver.client.close)
        finally:
            if self._owned_portal is not None:
                self._owned_portal.close()

    def __enter__(self) -> BlockingActors:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class BlockingActorPool:
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
        return blocking.Methods(self._portal, self.pool.call(timeout))

    def broadcast(self, timeout: float | None | Literal["default"] = "default") -> Any:
        """``pool.broadcast().method(*args)`` returns a ``BlockingBroadcast``."""
        return blocking.Methods(
            self._portal,
            self.pool.broadcast(timeout),
            lambda result: BlockingBroadcast(self._portal, result),
        )


class BlockingBroadcast:
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


class BlockingActorServer:
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
        """Serve until the process is interrupted, or the client it serves on is closed."""
        with contextlib.suppress(concurrent.futures.CancelledError):  # its event loop ended (client closed)
            self._portal.call(self.server.serve)

    def __enter__(self) -> BlockingActorServer:
        self._context, _ = blocking.entered(self._portal, self.server)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        context, self._context = self._context, None
        if context is not None:
            context.__exit__(exc_type, exc, tb)
