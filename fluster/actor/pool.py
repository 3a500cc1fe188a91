"""Calling actors: ``ClusterResolver`` finds them, ``ActorPool`` calls one member or broadcasts to all.

A call is one publish on the actor's subject (its queue group picks the member) and one reply routed by
``ReplyMux``; it reads no KV. Looking up, waiting for members and broadcasting read the endpoints bucket.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Generic, Literal, NamedTuple, TypeVar

import anyio
from nats.aio.msg import Msg

from fluster.actor import registry
from fluster.actor.broadcast import BroadcastResult
from fluster.aio import cancel_and_wait
from fluster.bus.mux import NoResponders, ReplyMux, ReplyTimeout
from fluster.bus.values import ValueStore
from fluster.errors import ActorCallTimeout, ActorNotFound, FlusterTimeout, JobNotFound
from fluster.protocol.actor_messages import EndpointRecord
from fluster.protocol.calls import PROBE, decode_reply, encode_request
from fluster.protocol.ids import validate_name
from fluster.protocol.values import EPHEMERAL, OK, ValueRef, dumps_args, value_of

if TYPE_CHECKING:
    from fluster.client.cluster import ClusterClient

log = logging.getLogger(__name__)

DEFAULT_CALL_TIMEOUT_S = 60.0
FOLLOW_RETRY_S = 1.0  # a pool's registry watch that ended is started again after this long
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


class Pending(NamedTuple):
    """A sent call: the future of its reply, and the blob holding its arguments when they were large."""

    future: asyncio.Future[Msg]
    ref: ValueRef | None


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
