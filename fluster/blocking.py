"""Blocking facades, built in one place: each runs its async object on an event loop in a background thread
(an anyio blocking portal) and forwards calls to it; none reimplements behaviour.

``fluster.Client`` (``client/blocking.py``), the actor API for scripts (``actor/blocking.py``), a pool
entered with a ``fluster.Client`` (``pool/blocking.py``), ``LocalCluster``'s ``with`` form and the cluster
context all take their portal and helpers from here. "Blocking" names these facades; the ``sync`` context
backend (``create_context("sync")``) is something else: it runs each task at once, in the caller.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

if TYPE_CHECKING:
    from fluster.bus.options import ConnectOptions
    from fluster.client.cluster import ClusterClient

T = TypeVar("T")


class OwnedPortal:
    """A portal this object started (an event loop thread), ended by ``close``."""

    def __init__(self) -> None:
        self._cm: AbstractContextManager[BlockingPortal] | None = start_blocking_portal(backend="asyncio")
        self.portal: BlockingPortal = self._cm.__enter__()

    def close(self) -> None:
        """End the loop, cancelling what still runs on it (an actor server still serving, say: its owner is
        gone, and waiting for it would wait forever)."""
        cm, self._cm = self._cm, None
        if cm is not None:
            with contextlib.suppress(RuntimeError):  # already stopped
                self.portal.call(self.portal.stop, True)
            cm.__exit__(None, None, None)


def connect(
    url: str | None, namespace: str | None, options: ConnectOptions | None = None
) -> tuple[OwnedPortal, ClusterClient]:
    """A new portal and a client connected on its loop (the portal is closed again when connecting fails).

    Raises:
        ClusterUnavailable: nothing answers at the URL.
    """
    owned = OwnedPortal()
    try:
        return owned, owned.portal.call(_connect, url, namespace, options)
    except BaseException:
        owned.close()
        raise


async def _connect(url: str | None, namespace: str | None, options: ConnectOptions | None) -> ClusterClient:
    from fluster.client.cluster import ClusterClient

    return await ClusterClient.connect(url, namespace, options=options)


def iterate(portal: BlockingPortal, source: AsyncIterator[T]) -> Iterator[T]:
    """An async iterator's items, blocking for each; the iterator is closed when this one is."""
    try:
        while True:
            try:
                yield portal.call(source.__anext__)
            except StopAsyncIteration:
                return
    finally:
        close = getattr(source, "aclose", None)
        if close is not None:
            portal.call(close)


def entered(portal: BlockingPortal, async_cm: Any) -> tuple[AbstractContextManager[Any], Any]:
    """An async context manager entered on the portal's loop: the context manager to exit to leave it, and
    what entering it gave."""
    cm = portal.wrap_async_context_manager(async_cm)
    return cm, cm.__enter__()


class Methods:
    """``proxy.method(*args)`` runs the async proxy's method on the portal and returns its result (passed
    through ``wrap`` when given)."""

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
