"""Turning one actor request into one reply on the server side: decode, find the method, run it, encode.

Never raises for anything a caller sent: a malformed request, an unknown method or a failing method all become
an error reply, so the serving loop keeps going.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

import anyio

from fluster.actor import wire
from fluster.actor.threads import ThreadRunner
from fluster.errors import ProtocolError, UnknownActorMethod, to_wire
from fluster.protocol.codec import encode

if TYPE_CHECKING:
    from fluster.actor.server import ActorServer, _Registration

log = logging.getLogger(__name__)


class Reply(NamedTuple):
    """The reply message, and the large value to stream after it when it did not fit (``ref`` names it)."""

    body: bytes
    ref: str | None = None
    large: bytes = b""


@dataclass(frozen=True)
class _Method:
    fn: Callable[..., Any]
    is_async: bool
    ctx_index: int | None  # position of the ActorContext parameter among positional parameters
    ctx_name: str | None


INLINE_AFTER = 5  # calls under INLINE_MAX_S in a thread before a sync method runs on the loop
INLINE_MAX_S = 0.0002


def _timed(fn: Any, args: Any, kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


class Invoker:
    """Runs requests against one registered object."""

    def __init__(self, server: ActorServer, reg: _Registration) -> None:
        from fluster.actor.server import ActorContext

        self.name = reg.name
        self._obj = reg.obj
        self._client = server.client
        self._transfers = server.transfers
        self._threads = ThreadRunner(reg.max_concurrency, reg.name)
        self._threaded = reg.threaded
        self._methods: dict[str, _Method] = {}
        # sync methods seen to return in microseconds run on the loop: a thread hand-off costs more than they do
        self._fast_runs: dict[str, int] = {}
        self._slow: set[str] = set()
        self._context = ActorContext(
            actor=reg.name,
            endpoint_id=reg.record.endpoint_id,
            job_id=reg.record.job_id,
            client=server.client,
            resolver=server.resolver,
        )

    async def reply_for(self, data: bytes) -> Reply:
        """The reply to one request (decoded here)."""
        try:
            call = wire.decode_request(data)
        except ProtocolError as exc:
            return await self.encode(wire.ERROR, encode(to_wire(exc)))
        status, body = await self.outcome(call)
        return await self.encode(status, body)

    async def read_args(self, call: wire.Call) -> bytes:
        """The call's pickled arguments, read from their transfer when they were too large to travel inline.

        Raises:
            FlusterTimeout: the transfer does not exist, or stopped arriving.
        """
        if call.ref is None:
            return call.args
        return await self._transfers.get(call.ref)

    async def outcome(self, call: wire.Call, args_bytes: bytes | None = None) -> tuple[int, bytes]:
        """Run one decoded call: ``(OK, pickled result)`` or ``(ERROR, encoded ErrorInfo)``; never raises for
        anything the caller sent."""
        method_name = call.method
        try:
            method = self._method(method_name)
            if args_bytes is None:
                args_bytes = await self.read_args(call)
            if self._client.verifier is not None:  # signed calls only: check before unpickling anything
                args_bytes = self._client.verifier.open_call(self.name, method_name, args_bytes)
            args, kwargs = wire.loads(args_bytes)
            if method.ctx_name is not None:
                args, kwargs = self._with_context(method, tuple(args), dict(kwargs))
            if method.is_async:
                result = await method.fn(*args, **kwargs)
            elif self._threaded and not self._runs_inline(method_name):
                result, elapsed = await self._threads.run(partial(_timed, method.fn, args, kwargs))
                self._observe(method_name, elapsed)
            elif self._threaded:
                result, elapsed = _timed(method.fn, args, kwargs)
                self._observe(method_name, elapsed)
            else:
                result = method.fn(*args, **kwargs)
            return wire.OK, wire.dumps_value(result)
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            log.debug("actor call failed actor=%s method=%s: %r", self.name, method_name, exc)
            return wire.ERROR, encode(to_wire(exc))

    def _runs_inline(self, method: str) -> bool:
        return self._fast_runs.get(method, 0) >= INLINE_AFTER and method not in self._slow

    def _observe(self, method: str, elapsed: float) -> None:
        if method in self._slow:
            return
        if elapsed >= INLINE_MAX_S:
            self._slow.add(method)  # once slow, always in a thread: the loop must stay free
            self._fast_runs.pop(method, None)
        else:
            self._fast_runs[method] = self._fast_runs.get(method, 0) + 1

    def close(self) -> None:
        """Let the worker threads exit once their current calls return."""
        self._threads.close()

    def _method(self, name: str) -> _Method:
        found = self._methods.get(name)
        if found is not None:
            return found
        fn = None if name.startswith("_") else getattr(self._obj, name, None)
        if fn is None or not callable(fn):
            raise UnknownActorMethod(
                f"actor {self.name!r} ({type(self._obj).__qualname__}) has no public method {name!r}"
            )
        found = _describe(fn)
        self._methods[name] = found
        return found

    def _with_context(
        self, method: _Method, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        assert method.ctx_name is not None
        if method.ctx_index is not None and len(args) >= method.ctx_index:
            return args[: method.ctx_index] + (self._context,) + args[method.ctx_index :], kwargs
        kwargs[method.ctx_name] = self._context
        return args, kwargs

    async def encode(self, status: int, data: bytes) -> Reply:
        limit = self._client.nc.max_payload - wire.ENVELOPE_ROOM
        if len(data) <= limit:
            return Reply(wire.encode_reply(status, data))
        # The caller reads and drops the transfer; if it gave up, the stream's max_age reaps it.
        ref = await self._transfers.reserve(len(data))
        return Reply(wire.encode_reply(status, b"", ref), ref, data)


def _describe(fn: Callable[..., Any]) -> _Method:
    from fluster.actor.server import ActorContext

    is_async = inspect.iscoroutinefunction(fn)
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature take no context
        return _Method(fn, is_async, None, None)
    positional = 0
    for param in params:
        annotation = param.annotation
        named = isinstance(annotation, str) and annotation.split(".")[-1] == "ActorContext"
        if annotation is ActorContext or named:
            index = positional if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD) else None
            return _Method(fn, is_async, index, param.name)
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            positional += 1
    return _Method(fn, is_async, None, None)
