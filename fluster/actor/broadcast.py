"""A broadcast's outcome: one result or error per endpoint, waited for all at once, first, or as they come."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from nats.aio.msg import Msg

from fluster.errors import ActorNotFound
from fluster.protocol.actor_messages import EndpointRecord

if TYPE_CHECKING:
    from fluster.actor.resolver import ClusterResolver, Pending


@dataclass(frozen=True)
class EndpointResult:
    """What one endpoint of a broadcast returned or raised."""

    endpoint: EndpointRecord
    value: Any = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def result(self) -> Any:
        """The value, or raise the endpoint's error."""
        if self.error is not None:
            raise self.error
        return self.value


class BroadcastResult:
    """The replies of every member a broadcast reached, one ``EndpointResult`` each."""

    def __init__(
        self,
        resolver: ClusterResolver,
        actor: str,
        method: str,
        pending: list[tuple[EndpointRecord, Pending]],
        timeout_s: float | None,
    ) -> None:
        self._timeout_s = timeout_s
        self._resolver, self._actor, self._method = resolver, actor, method
        self._pending = pending
        self.endpoints = [e for e, _ in pending]

    def __len__(self) -> int:
        return len(self._pending)

    async def wait_all(self) -> list[EndpointResult]:
        """Every member's result or error, in ``endpoints`` order."""
        return [await self._one(endpoint, pending) for endpoint, pending in self._pending]

    async def wait_any(self) -> EndpointResult:
        """The first member to answer, with its result or error.

        Raises:
            ActorNotFound: the broadcast reached no member.
        """
        async for first in self.as_completed():
            return first
        raise ActorNotFound(f"no endpoint of actor {self._actor!r} to broadcast {self._method!r} to")

    async def as_completed(self) -> AsyncIterator[EndpointResult]:
        """Each member's result or error as it arrives."""
        by_future = {pending.future: (endpoint, pending) for endpoint, pending in self._pending}
        remaining: set[asyncio.Future[Msg]] = set(by_future)
        while remaining:
            done, remaining = await asyncio.wait(remaining, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                yield await self._one(*by_future[future])

    async def wait_one(self, index: int) -> EndpointResult:
        """The result or error of ``endpoints[index]``."""
        return await self._one(*self._pending[index])

    async def _one(self, endpoint: EndpointRecord, pending: Pending) -> EndpointResult:
        try:
            value = await self._resolver.result(pending, self._actor, self._method, self._timeout_s)
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            return EndpointResult(endpoint, error=exc)
        return EndpointResult(endpoint, value=value)
