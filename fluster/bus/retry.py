"""Retrying JetStream writes through the seconds a NATS cluster spends electing a new stream leader."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

from fluster.errors import ClusterUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT = (NatsTimeout, TimeoutError, NoStreamResponseError, ServiceUnavailableError, NoRespondersError)
DEADLINE_S = 30.0  # a leader election takes ~5 s (research/nats-ecosystem.md); give it room


async def with_retries(op: Callable[[], Awaitable[T]], what: str, deadline: float = DEADLINE_S) -> T:
    """Run ``op``, retrying with backoff while JetStream answers with transient errors.

    Raises:
        ClusterUnavailable: JetStream did not accept the operation within ``deadline`` seconds.
    """
    delay = 0.05
    last: BaseException | None = None
    with anyio.move_on_after(deadline):
        while True:
            try:
                return await op()
            except TRANSIENT as exc:
                last = exc
                log.warning("%s: JetStream not answering (%r), retrying", what, exc)
                await anyio.sleep(delay)
                delay = min(delay * 2, 1.0)
    raise ClusterUnavailable(f"{what}: JetStream did not answer within {deadline:g}s ({last!r})")
