"""One active controller per namespace: a lease key in the ``leader`` KV bucket, held by refreshing it.

The bucket's max age is the lease length: a controller that stops refreshing (crash, SIGKILL, partition)
loses the key when it expires, and a standby's ``create`` then succeeds. Refreshes are compare-and-set on
the revision, so a controller that lost the lease finds out at its next refresh and stops.

The holder also keeps its own deadline on its monotonic clock: ``valid()`` is true until ``LEASE_TTL_S -
SAFETY_S`` after the last refresh was *sent*, which is before the server stored it and so before the key can
expire for anybody else. A controller paused past that (SIGSTOP, a stalled VM) resumes with ``valid()``
false and acts on nothing, even before it has learnt that a standby took over.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
import uuid

import anyio
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from fluster.bus.assets import LEADER_LEASE_S as LEASE_TTL_S
from fluster.bus.retry import TRANSIENT
from fluster.errors import LeadershipLost

log = logging.getLogger(__name__)

LEASE_KEY = "controller"
SAFETY_S = 2.0  # the holder stops acting this long before anybody else could take the lease
_UNAVAILABLE = (*TRANSIENT, NotFoundError)  # a missing stream answers like a busy one


class LeaderLease:
    def __init__(self, kv: KeyValue, holder: str, ttl: float = LEASE_TTL_S) -> None:
        self._kv = kv
        self.holder = holder
        self._ttl = ttl
        self._revision = 0
        self._valid_until = 0.0

    def valid(self) -> bool:
        """Whether this controller may act: it holds the lease, and nobody else can have taken it yet."""
        return time.monotonic() < self._valid_until

    async def acquire(self) -> None:
        """Wait until this controller holds the lease (at once when no other controller is alive)."""
        announced = False
        while True:
            sent = time.monotonic()
            try:
                self._took(await self._kv.create(LEASE_KEY, self._record()), sent)
                log.info("controller lease acquired holder=%s", self.holder)
                return
            except _UNAVAILABLE as exc:
                log.info("controller lease: JetStream not answering (%r), retrying", exc)
            except KeyWrongLastSequenceError:
                holder, revision = await self._read()
                if holder == self.holder and revision:  # ours still (we stood down, or a reply was lost)
                    try:
                        self._took(await self._kv.update(LEASE_KEY, self._record(), last=revision), sent)
                        log.info("controller lease taken back holder=%s", self.holder)
                        return
                    except KeyWrongLastSequenceError:
                        pass
                elif not announced:
                    log.info("another controller is active (%s); standing by holder=%s", holder, self.holder)
                    announced = True
            await anyio.sleep(self._ttl / 5)

    async def keep(self) -> None:
        """Refresh the lease until cancelled.

        Raises:
            LeadershipLost: another controller took the lease, or it could not be refreshed in time.
        """
        while True:
            await anyio.sleep(self._ttl / 4)
            if not self.valid():
                raise LeadershipLost("the controller lease lapsed (paused, or JetStream unreachable for too long)")
            sent = time.monotonic()
            try:
                self._took(await self._kv.update(LEASE_KEY, self._record(), last=self._revision), sent)
            except KeyWrongLastSequenceError:
                await self._resolve_conflict(sent)
            except _UNAVAILABLE as exc:
                # JetStream busy (a stream leader election): retry at the next refresh, within the lease
                log.warning("controller lease refresh failed, retrying: %r", exc)

    async def release(self) -> None:
        self._valid_until = 0.0
        try:
            await self._kv.delete(LEASE_KEY, last=self._revision)
        except Exception as exc:  # not holding it any more: nothing to release
            log.debug("lease release skipped: %r", exc)

    # -- internals ------------------------------------------------------------------------------------

    def _record(self) -> bytes:
        return self.holder.encode()

    def _took(self, revision: int, sent: float) -> None:
        self._revision = int(revision)
        self._valid_until = sent + self._ttl - SAFETY_S

    async def _read(self) -> tuple[str | None, int]:
        """The lease key's holder (``"?"`` when its value is corrupt, None when absent) and revision."""
        try:
            entry = await self._kv.get(LEASE_KEY)
        except (KeyNotFoundError, NotFoundError):
            return None, 0
        if entry.operation in ("DEL", "PURGE") or not entry.value:
            return None, int(entry.revision or 0)
        holder = _holder(entry.value)
        return holder if holder is not None else "?", int(entry.revision or 0)

    async def _resolve_conflict(self, sent: float) -> None:
        """The lease key changed under us. Ours (a lost reply), corrupt (somebody wrote garbage over it) or
        expired unclaimed (JetStream unavailable longer than the lease): take it back; another's: stop."""
        holder, revision = await self._read()
        if holder is None:
            try:
                self._took(await self._kv.create(LEASE_KEY, self._record()), sent)
                log.warning("controller lease had expired unclaimed; reclaimed holder=%s", self.holder)
                return
            except KeyWrongLastSequenceError as exc:
                raise LeadershipLost("another controller took over the lease") from exc
        if holder in (self.holder, "?"):
            if holder == "?":
                log.error("the controller lease key held an undecodable value; rewriting it holder=%s", self.holder)
            try:
                self._took(await self._kv.update(LEASE_KEY, self._record(), last=revision), sent)
                return
            except KeyWrongLastSequenceError as exc:
                raise LeadershipLost("the controller lease changed twice under us") from exc
        raise LeadershipLost(f"another controller ({holder}) took over the lease")


_HOLDER = re.compile(r"^[A-Za-z0-9_.-]+-[0-9]+-[0-9a-f]{6}$")


def _holder(value: bytes) -> str | None:
    """The holder named by a lease value (``<host>-<pid>-<hex>``), or None when the value is not one."""
    try:
        text = value.decode()
    except UnicodeDecodeError:
        return None
    return text if _HOLDER.match(text) else None


def lease_holder_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
