"""Calling actors by name: ``ActorPool`` calls one member or broadcasts to all, ``ActorClient`` calls one name
directly; ``ClusterResolver`` (``fluster.actor.resolver``, re-exported here) finds them and carries the calls.

Waiting for members and broadcasting read the endpoints bucket; a pool from ``lookup`` follows its watch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Any, Generic, Literal, TypeVar

import anyio

from fluster.actor import registry
from fluster.actor.broadcast import BroadcastResult
from fluster.actor.resolver import DEFAULT_CALL_TIMEOUT_S, ClusterResolver, Pending
from fluster.errors import FlusterTimeout
from fluster.protocol.actor_messages import EndpointRecord
from fluster.protocol.ids import validate_name

__all__ = ["DEFAULT_CALL_TIMEOUT_S", "ActorClient", "ActorPool", "ClusterResolver", "Pending"]

log = logging.getLogger(__name__)

FOLLOW_RETRY_S = 1.0  # a pool's registry watch that ended is started again after this long


class ActorPool:
    """One actor name's endpoints. From ``ClusterResolver.lookup``, ``size`` and ``endpoints`` follow the
    registry; a pool built directly is as of its last ``refresh`` or ``wait_for_size``."""

    def __init__(self, resolver: ClusterResolver, name: str) -> None:
        self.resolver = resolver
        self.name = validate_name(name, "actor name")
        self.endpoints: list[EndpointRecord] = []
        self._subject = resolver.client.subjects.actor(name)
        self._call = self._methods(resolver.call_timeout)

    @property
    def size(self) -> int:
        return len(self.endpoints)

    async def refresh(self) -> list[EndpointRecord]:
        """Re-read the live endpoints from KV (not those of jobs that have ended)."""
        self.endpoints, _ = await self.resolver.serving(self.name)
        return self.endpoints

    async def follow(self) -> None:
        """Keep ``endpoints`` current from the registry's watch until cancelled; a watch that fails (a
        reconnect, a re-created bucket) is started again. In place of the watch's first view, whose "initial
        values done" marker can overtake the deliveries (``registry.endpoints``), the endpoints are read
        anew once the watch is in place, so no change between two watches is missed."""
        kv = self.resolver.client.assets.endpoints
        while True:
            try:
                async with aclosing(registry.watch(kv, self.name)) as changes:
                    first = True
                    async for current in changes:
                        if first:
                            await self.refresh()
                            first = False
                        else:
                            self.endpoints = registry.oldest_first(current.values())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("endpoint watch of %s failed, watching again: %r", self.name, exc)
            if self.resolver.client.nc.is_closed:
                return  # nothing to follow on a closed connection
            await anyio.sleep(FOLLOW_RETRY_S)

    async def wait_for_size(
        self,
        n: int,
        timeout: float | None = None,
    ) -> list[EndpointRecord]:
        """Wait (watching KV, not polling) until at least ``n`` endpoints are live, and return them.

        Raises:
            FlusterTimeout: fewer than ``n`` after ``timeout`` seconds.
        """
        changes = registry.watch(self.resolver.client.assets.endpoints, self.name)
        with anyio.move_on_after(timeout):
            async with aclosing(changes):  # stops the KV watcher now, not when the generator is collected
                async for current in changes:
                    self.endpoints = registry.oldest_first(current.values())
                    if len(current) >= n:
                        return self.endpoints
        raise FlusterTimeout(f"actor {self.name!r} has {self.size} endpoint(s), not {n}, after {timeout:g}s")

    def call(self, timeout: float | None | _Default = "default") -> _Methods[Any]:
        """``await pool.call().method(*args)``: one member runs it, picked by the queue group."""
        if timeout == "default":
            return self._call
        return self._methods(timeout)

    def broadcast(self, timeout: float | None | _Default = "default") -> _Methods[BroadcastResult]:
        """``await pool.broadcast().method(*args)``: every live member runs it (``BroadcastResult``)."""
        wait = self.resolver.call_timeout if timeout == "default" else timeout
        return _Methods(lambda m, a, k: self._broadcast(m, a, k, wait))

    def _methods(self, timeout_s: float | None) -> _Methods[Any]:
        resolver, subject, name = self.resolver, self._subject, self.name
        return _Methods(lambda m, a, k: resolver.call(subject, name, m, a, k, timeout_s))

    async def _broadcast(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], timeout_s: float | None
    ) -> BroadcastResult:
        await self.refresh()
        sent = [(e, await self.resolver.send(e.subject, method, args, kwargs, timeout_s)) for e in self.endpoints]
        return BroadcastResult(self.resolver, self.name, method, sent, timeout_s)


class ActorClient:
    """One actor name, called directly: ``await ActorClient(resolver, "counter").incr(1)``."""

    def __init__(self, resolver: ClusterResolver, name: str, timeout: float | None | _Default = "default") -> None:
        self._pool = ActorPool(resolver, name)
        self._methods = self._pool.call(timeout)

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        if method.startswith("_"):
            raise AttributeError(method)
        return getattr(self._methods, method)  # type: ignore[no-any-return]


_Default = Literal["default"]  # use the resolver's call_timeout

R = TypeVar("R")


class _Methods(Generic[R]):
    """``proxy.method(*args, **kwargs)`` returns an awaitable of ``R``."""

    def __init__(self, invoke: Callable[[str, tuple[Any, ...], dict[str, Any]], Awaitable[R]]) -> None:
        self._invoke = invoke

    def __getattr__(self, method: str) -> Callable[..., Awaitable[R]]:
        if method.startswith("_"):
            raise AttributeError(method)
        invoke = self._invoke

        def bound(*args: Any, **kwargs: Any) -> Awaitable[R]:
            return invoke(method, args, kwargs)

        bound.__name__ = method
        return bound
