"""Turning one actor request into one reply on the server side: decode, find the method, run it, encode.

Never raises for anything a caller sent: a malformed request, an unknown method or a failing method all become
an error reply, so the serving loop keeps going. Stored values among the arguments (``ValueRef``) are read
from the value store here, as the task executor reads them, so a large ``put()`` value reaches the actor
without passing through its caller.
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

from fluster.actor.streams import is_stream
from fluster.errors import UnknownActorMethod
from fluster.protocol.calls import Call, encode_reply
from fluster.protocol.streams import STREAM_METHODS, STREAM_NEXT
from fluster.protocol.tasks import Encoded
from fluster.protocol.values import OK, Outcome, ValueRef, all_plain, dumps_value, failure, loads
from fluster.threads import FastPath, ThreadRunner

if TYPE_CHECKING:
    from fluster.actor.server import ActorServer, _Registration

log = logging.getLogger(__name__)


class Reply(NamedTuple):
    """The reply message, and the large value to stream after it when it did not fit (``ref`` names it)."""

    body: bytes
    ref: ValueRef | None = None
    large: bytes = b""


@dataclass(frozen=True)
class _Method:
    fn: Callable[..., Any]
    is_async: bool
    ctx_index: int | None  # position of the ActorContext parameter among positional parameters
    ctx_name: str | None


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
        self._values = server.values
        self._threads = ThreadRunner(reg.max_concurrency, reg.name)
        self._threaded = reg.threaded
        self.control = reg.control | STREAM_METHODS
        self._streams = server.streams
        self._subject = reg.record.subject  # this server's own: where a caller pulls a stream's items
        self._methods: dict[str, _Method] = {}
        self._fast = FastPath()  # sync methods seen to return in microseconds run on the loop
        self._context = ActorContext(
            actor=reg.name,
            endpoint_id=reg.record.endpoint_id,
            job_id=reg.record.job_id,
            client=server.client,
            resolver=server.resolver,
        )

    async def read_args(self, call: Call) -> bytes:
        """The call's pickled arguments, read from the value store when they were too large to travel inline.

        Raises:
            FlusterTimeout: the value does not exist, or stopped arriving.
        """
        if call.ref is None:
            return call.args
        return await self._values.get(call.ref)

    async def outcome(self, call: Call, args_bytes: bytes | None = None) -> Outcome:
        """Run one decoded call: its outcome (OK with the pickled result, or ERROR); never raises for anything
        the caller sent."""
        method_name = call.method
        try:
            if method_name in STREAM_METHODS:
                return await self._stream_call(call, args_bytes)
            method = self._method(method_name)
            if args_bytes is None:
                args_bytes = await self.read_args(call)
            if self._client.verifier is not None:  # signed calls only: check before unpickling anything
                args_bytes = self._client.verifier.open_call(self.name, method_name, args_bytes)
            args, kwargs = loads(args_bytes)
            if not all_plain(args, kwargs):
                (resolved,) = await self._values.resolve([(args, kwargs)])
                if isinstance(resolved, BaseException):
                    raise resolved
                args, kwargs = resolved
            if method.ctx_name is not None:
                args, kwargs = self._with_context(method, tuple(args), dict(kwargs))
            if method.is_async:
                result = await method.fn(*args, **kwargs)
            elif self._threaded and not self._fast.inline(method_name):
                result, elapsed = await self._threads.run(partial(_timed, method.fn, args, kwargs))
                self._fast.observe(method_name, elapsed)
            elif self._threaded:
                result, elapsed = _timed(method.fn, args, kwargs)
                self._fast.observe(method_name, elapsed)
            else:
                result = method.fn(*args, **kwargs)
            if isinstance(result, Encoded):  # already in its wire form (a task batch's outcomes)
                return Outcome(OK, result.data)
            if is_stream(result):  # a generator: its items are pulled by the caller (fluster.protocol.streams)
                result = self._streams.open(result, self._subject)
            return Outcome(OK, dumps_value(result))
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            log.debug("actor call failed actor=%s method=%s: %r", self.name, method_name, exc)
            return failure(exc)

    async def _stream_call(self, call: Call, args_bytes: bytes | None) -> Outcome:
        if args_bytes is None:
            args_bytes = await self.read_args(call)
        if self._client.verifier is not None:
            args_bytes = self._client.verifier.open_call(self.name, call.method, args_bytes)
        args, kwargs = loads(args_bytes)
        if call.method == STREAM_NEXT:
            return Outcome(OK, (await self._streams.next(*args, **kwargs)).data)
        return Outcome(OK, dumps_value(self._streams.close(*args, **kwargs)))

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

    def encode(self, outcome: Outcome) -> Reply:
        """The reply message; a large outcome's data goes to the ephemeral store, to send after it."""
        if outcome.ref is not None or len(outcome.data) <= self._values.inline_limit:
            return Reply(encode_reply(outcome))
        # The caller reads and drops the value; if it gave up, the stream's max_age reaps it.
        ref = self._values.reserve(len(outcome.data))
        return Reply(encode_reply(Outcome(outcome.status, b"", ref)), ref, outcome.data)


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
