"""Retrying JetStream operations through the seconds a NATS cluster spends electing a stream leader, and
through a missing asset (a restarted single server, a deleted bucket), which is re-created first.

``TRANSIENT`` is the one list of errors that mean "try again"; ``backoff`` the one delay schedule. Every
retry loop in fluster uses these two.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import NoStreamResponseError, NotFoundError, ServiceUnavailableError

from fluster.errors import ClusterUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT = (NatsTimeout, TimeoutError, NoStreamResponseError, ServiceUnavailableError, NoRespondersError)
DEADLINE_S = 30.0  # a leader election takes ~5 s (research/nats-ecosystem.md); give it room
STREAM_NOT_FOUND = 10059  # JetStream's error code for an API call on a stream that does not exist

Repair = Callable[[], Awaitable[object]]


def backoff(attempt: int, first: float = 0.05, cap: float = 1.0) -> float:
    """The delay before retry number ``attempt`` (0-based): doubling from ``first``, at most ``cap``."""
    return float(min(cap, first * 2.0 ** min(attempt, 30)))


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` means the operation may succeed if tried again (possibly after a repair)."""
    return isinstance(exc, TRANSIENT) or is_missing_stream(exc)


def is_missing_stream(exc: BaseException) -> bool:
    return isinstance(exc, NotFoundError) and getattr(exc, "err_code", None) == STREAM_NOT_FOUND


async def with_retries(
    op: Callable[[], Awaitable[T]], what: str, deadline: float = DEADLINE_S, repair: Repair | None = None
) -> T:
    """Run ``op``, retrying with backoff while JetStream answers with transient errors; before a retry, call
    ``repair`` (which re-creates missing assets: a deleted stream answers like a busy one).

    Raises:
        ClusterUnavailable: JetStream did not accept the operation within ``deadline`` seconds.
    """
    last: BaseException | None = None
    with anyio.move_on_after(deadline):
        for attempt in range(1_000_000):
            try:
                return await op()
            except (*TRANSIENT, NotFoundError) as exc:
                if not is_transient(exc):
                    raise
                last = exc
                log.warning("%s: JetStream not answering (%r), retrying", what, exc)
                if repair is not None:
                    await repair()
                await anyio.sleep(backoff(attempt))
    raise ClusterUnavailable(f"{what}: JetStream did not answer within {deadline:g}s ({last!r})")
