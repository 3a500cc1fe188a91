"""Calling actors: ``ClusterResolver`` finds them and carries their calls; ``fluster.actor.pool`` is the
``ActorPool`` it gives, one member called or all broadcast to.

A call is one publish on the actor's subject (its queue group picks the member) and one reply routed by
``ReplyMux``; it reads no KV. Looking up and listing the live endpoints read the endpoints bucket.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, NamedTuple

from nats.aio.msg import Msg

from fluster.actor import registry
from fluster.aio import cancel_and_wait
from fluster.bus.mux import NoResponders, ReplyMux, ReplyTimeout
from fluster.bus.values import ValueStore
from fluster.errors import ActorCallTimeout, ActorNotFound, JobNotFound
from fluster.protocol.actor_messages import EndpointRecord
from fluster.protocol.calls import PROBE, decode_reply, encode_request
from fluster.protocol.values import EPHEMERAL, OK, ValueRef, dumps_args, value_of

if TYPE_CHECKING:
    from fluster.actor.pool import ActorPool
    from fluster.client.cluster import ClusterClient

log = logging.getLogger(__name__)

DEFAULT_CALL_TIMEOUT_S = 60.0
CLOSE_FOLLOWERS_S = 5.0  # close() waits at most this long for the pools' registry watches to end


class ClusterResolver:
    """Finds actors of one namespace and carries their calls; one per connection is enough."""

    def __init__(self, client: ClusterClient, call_timeout: float | None = DEFAULT_CALL_TIMEOUT_S) -> None:
        self.client = client
        self.call_timeout = call_timeout
        self._mux = ReplyMux(client.nc)
        self.values = ValueStore(client.nc, client.subjects, client.assets.objects, client.assets.repair)
        self._pools: dict[str, ActorPool] = {}
        self._followers: set[asyncio.Task[None]] = set()

    async def lookup(self, name: str) -> ActorPool:
        """The pool of actor ``name``: its live endpoints as of now (maybe none yet: see ``wait_for_size``),
        then kept current from the registry (one watch per name and resolver, until ``close``), so ``size``
        drops when an endpoint is withdrawn or expires and grows when one joins."""
        from fluster.actor.pool import ActorPool  # at call time: actor.pool re-exports this module's names

        pool = self._pools.get(name)
        if pool is None:
            pool = self._pools[name] = ActorPool(self, name)
            follower = asyncio.get_running_loop().create_task(pool.follow(), name=f"fluster-follow-{name}")
            self._followers.add(follower)
            follower.add_done_callback(self._followers.discard)
        await pool.refresh()
        return pool

    async def serving(self, name: str) -> tuple[list[EndpointRecord], list[EndpointRecord]]:
        """The endpoints of ``name``: those of live servers, and those of jobs that have ended (listed until the
        server withdraws them or their TTL runs out, after a SIGKILL say)."""
        live: list[EndpointRecord] = []
        ended: list[EndpointRecord] = []
        for endpoint in await registry.endpoints(self.client.assets.endpoints, name):
            if endpoint.job_id is None:  # served by a process that is not a job: live while listed
                live.append(endpoint)
                continue
            try:
                finished = (await self.client.status(endpoint.job_id)).finished
            except JobNotFound:
                finished = True
            (ended if finished else live).append(endpoint)
        return live, ended

    async def close(self) -> None:
        await cancel_and_wait(list(self._followers), CLOSE_FOLLOWERS_S)  # one cancel may be swallowed
        self._pools.clear()
        await self._mux.close()

    # -- the call path ------------------------------------------------------------------------------

    async def call(
        self,
        subject: str,
        actor: str,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout_s: float | None,
        raw: bool = False,
    ) -> Any:
        """Call ``method`` on whoever serves ``subject`` and return its result (with ``raw``, the bytes of a
        result the method returned ``Encoded``).

        Raises:
            ActorNotFound: nothing serves the subject.
            ActorCallTimeout: no reply in time.
            Exception: the method's own exception, with the remote traceback as its ``__cause__``.
        """
        payload = self._seal(subject, method, dumps_args(args, kwargs))
        if len(payload) > self.values.inline_limit:
            pending = await self._send_large(subject, method, payload, timeout_s)
            return await self.result(pending, actor, method, timeout_s, raw)
        # The hot path: one publish, one reply, nothing else awaited.
        try:
            msg = await self._mux.request(subject, encode_request(method, payload), timeout_s)
        except (NoResponders, ReplyTimeout) as exc:
            raise self._error(exc, actor, method, timeout_s) from None
        return await self.decode(msg, raw)

    async def send(
        self,
        subject: str,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout_s: float | None,
        call_id: str | None = None,
    ) -> Pending:
        """Publish one call and return its pending reply, for ``result`` to decode (broadcasts use it).
        With a ``call_id`` the call is tracked (see ``fluster.actor.tracked``)."""
        payload = self._seal(subject, method, dumps_args(args, kwargs))
        if len(payload) > self.values.inline_limit:
            return await self._send_large(subject, method, payload, timeout_s, call_id)
        request = encode_request(method, payload, None, call_id)
        return Pending(await self._mux.send(subject, request, timeout_s), None)

    def send_now(
        self,
        subject: str,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout_s: float | None,
        call_id: str | None = None,
    ) -> Pending | None:
        """``send`` without awaiting (for callbacks on the loop), or None, having sent nothing, when it cannot:
        large arguments, or a connection that cannot take the write now."""
        if not self._mux.sends_now:
            return None
        payload = self._seal(subject, method, dumps_args(args, kwargs))
        if len(payload) > self.values.inline_limit:
            return None
        future = self._mux.send_now(subject, encode_request(method, payload, None, call_id), timeout_s)
        return None if future is None else Pending(future, None)

    async def probe(self, subject: str, call_id: str, timeout_s: float) -> Msg:
        """Ask the server of ``subject`` about tracked call ``call_id``.

        Raises:
            NoResponders: nothing serves the subject.
            ReplyTimeout: no answer within ``timeout_s``.
        """
        return await self._mux.request(subject, encode_request(PROBE, b"", None, call_id), timeout_s)

    async def result(
        self, pending: Pending, actor: str, method: str, timeout_s: float | None, raw: bool = False
    ) -> Any:
        """Wait for a reply from ``send`` and return the method's result (raising as ``call`` does); with
        ``raw``, the bytes of a result the method returned ``Encoded``."""
        try:
            msg = await pending.future
        except (NoResponders, ReplyTimeout) as exc:
            if pending.ref is not None and isinstance(exc, NoResponders):  # nobody will read it
                await self.values.drop(pending.ref)
            raise self._error(exc, actor, method, timeout_s) from None
        return await self.decode(msg, raw)

    async def _send_large(
        self, subject: str, method: str, payload: bytes, timeout_s: float | None, call_id: str | None = None
    ) -> Pending:
        # The request goes first, so the server reads the chunks while they are still being written.
        ref = self.values.reserve(len(payload))
        future = await self._mux.send(subject, encode_request(method, b"", ref, call_id), timeout_s)
        await self.values.send(ref, payload)
        return Pending(future, ref)

    async def decode(self, msg: Msg, raw: bool = False) -> Any:
        """The value of a reply (its bytes when ``raw``), or raise its error.

        Raises:
            ProtocolError: the reply is not an outcome.
        """
        outcome = decode_reply(msg.data)
        if outcome.ref is not None and outcome.ref.store == EPHEMERAL:
            outcome = outcome._replace(data=await self.values.get(outcome.ref), ref=None)
        if raw and outcome.status == OK:
            return outcome.data
        return value_of(outcome)

    def _seal(self, subject: str, method: str, args: bytes) -> bytes:
        """Signed arguments when this client signs its calls (``fluster.security.signing``), else as they are."""
        signer = self.client.signer
        if signer is None:
            return args
        return signer.seal_call(self.client.subjects.actor_of(subject), method, args)

    def _error(self, exc: Exception, actor: str, method: str, timeout_s: float | None) -> Exception:
        if isinstance(exc, NoResponders):
            return ActorNotFound(
                f"no server for actor {actor!r} in namespace {self.client.namespace!r} (calling {method!r})"
            )
        return ActorCallTimeout(f"actor call {actor}.{method} got no reply within {timeout_s:g}s")


class Pending(NamedTuple):
    """A sent call: the future of its reply, and the blob holding its arguments when they were large."""

    future: asyncio.Future[Msg]
    ref: ValueRef | None
