"""One active controller per namespace: a lease key in the ``leader`` KV bucket, held by refreshing it.

The bucket's max age is the lease length: a controller that stops refreshing (crash, SIGKILL, partition)
loses the key when it expires, and a standby's ``create`` then succeeds. Refreshes are compare-and-set on
the revision, so a controller that lost the lease finds out at its next refresh and stops.
"""

from __future__ import annotations

import logging

import anyio
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import KeyWrongLastSequenceError, NoStreamResponseError, ServiceUnavailableError
from nats.js.kv import KeyValue

from fluster.bus.assets import LEADER_LEASE_S as LEASE_TTL_S
from fluster.errors import FlusterError

log = logging.getLogger(__name__)

LEASE_KEY = "controller"


class LeadershipLost(FlusterError):
    """Another controller holds the lease now: this one must stop acting."""


class LeaderLease:
    def __init__(self, kv: KeyValue, holder: str, ttl: float = LEASE_TTL_S) -> None:
        self._kv = kv
        self._holder = holder.encode()
        self._ttl = ttl
        self._revision = 0

    async def acquire(self) -> None:
        """Wait until this controller holds the lease (at once when no other controller is alive)."""
        announced = False
        while True:
            try:
                self._revision = await self._kv.create(LEASE_KEY, self._holder)
                log.info("controller lease acquired holder=%s", self._holder.decode())
                return
            except (NoStreamResponseError, ServiceUnavailableError, NatsTimeout, TimeoutError) as exc:
                log.info("controller lease: JetStream not answering (%r), retrying", exc)
            except KeyWrongLastSequenceError:
                if not announced:
                    log.info("another controller is active; standing by holder=%s", self._holder.decode())
                    announced = True
            await anyio.sleep(self._ttl / 5)

    async def keep(self) -> None:
        """Refresh the lease until cancelled.

        Raises:
            LeadershipLost: another controller took the lease (this one was silent for too long).
        """
        while True:
            await anyio.sleep(self._ttl / 4)
            try:
                self._revision = await self._kv.update(LEASE_KEY, self._holder, last=self._revision)
            except KeyWrongLastSequenceError as exc:
                await self._reclaim(exc)
            except (NoStreamResponseError, ServiceUnavailableError, NatsTimeout, TimeoutError) as exc:
                # JetStream busy (a stream leader election): retry at the next refresh, within the lease
                log.warning("controller lease refresh failed, retrying: %r", exc)

    async def _reclaim(self, exc: KeyWrongLastSequenceError) -> None:
        """The lease key changed under us: if it merely expired (JetStream was unavailable longer than the lease)
        and nobody else took it, take it back; if another controller holds it, stop."""
        try:
            self._revision = await self._kv.create(LEASE_KEY, self._holder)
            log.warning("controller lease had expired unclaimed; reclaimed holder=%s", self._holder.decode())
        except KeyWrongLastSequenceError:
            raise LeadershipLost("another controller took over the lease") from exc

    async def release(self) -> None:
        try:
            await self._kv.delete(LEASE_KEY, last=self._revision)
        except Exception as exc:  # not holding it any more: nothing to release
            log.debug("lease release skipped: %r", exc)
