"""Tracked calls, caller side: a call that must not hang when its request or reply is lost.

The call carries an id (``fluster.actor.calls`` on the server runs it once and keeps its reply). While no
reply has come for ``probe_s``, the caller probes: ``RUNNING`` means keep waiting (a long call), the call's own
reply means it was lost on the way (it is used, and the original, should it still come, is dropped),
``UNKNOWN`` means the request never arrived (it is sent again, under the same id, so it cannot run twice). A
server that answers neither the call nor its probes for ``unreachable_s`` is given up on.

Only for servers that are one member (a pool executor, a context actor): a probe reaches whoever answers the
subject, which for a queue group of several members need not be the one running the call.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any

from fluster.bus.mux import NoResponders, ReplyTimeout
from fluster.errors import ActorCallTimeout, ActorNotFound
from fluster.protocol.calls import RUNNING, UNKNOWN, decode_reply

if TYPE_CHECKING:
    from fluster.actor.resolver import ClusterResolver, Pending

log = logging.getLogger(__name__)

PROBE_S = 5.0  # silence after which a tracked call is probed
UNREACHABLE_S = 60.0  # a server that answers nothing for this long is given up on


async def call(
    resolver: ClusterResolver,
    subject: str,
    actor: str,
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    probe_s: float = PROBE_S,
    unreachable_s: float = UNREACHABLE_S,
) -> Any:
    """Call ``method`` as a tracked call and return its result (raising as ``result`` does)."""
    call_id = uuid.uuid4().hex
    pending = await resolver.send(subject, method, args, kwargs, None, call_id)
    return await result(resolver, pending, subject, actor, method, (args, kwargs), call_id, probe_s, unreachable_s)


async def result(
    resolver: ClusterResolver,
    pending: Pending,
    subject: str,
    actor: str,
    method: str,
    call: tuple[tuple[Any, ...], dict[str, Any]],
    call_id: str,
    probe_s: float = PROBE_S,
    unreachable_s: float = UNREACHABLE_S,
    raw: bool = False,
) -> Any:
    """The result of a tracked call sent as ``pending`` (``call`` is its arguments, to send it again); with
    ``raw``, its bytes as the method returned them ``Encoded``.

    Raises:
        ActorNotFound: nothing serves the subject.
        ActorCallTimeout: neither the call nor its probes were answered for ``unreachable_s``.
        Exception: the method's own exception, as ``ClusterResolver.result`` raises it.
    """
    loop = asyncio.get_running_loop()
    heard = loop.time()
    current = pending
    while True:
        if await _done_within(current.future, probe_s):
            return await resolver.result(current, actor, method, None, raw)
        try:
            answer = await resolver.probe(subject, call_id, probe_s)
        except NoResponders:
            current.future.cancel()
            raise ActorNotFound(f"no server for actor {actor!r} (calling {method!r})") from None
        except ReplyTimeout:
            if loop.time() - heard > unreachable_s:
                current.future.cancel()
                raise ActorCallTimeout(
                    f"actor call {actor}.{method}: no answer to the call or its probes for {unreachable_s:g}s"
                ) from None
            continue
        heard = loop.time()
        status = decode_reply(answer.data).status
        if status == RUNNING:
            continue
        if current.future.done() and not current.future.cancelled():
            return await resolver.result(current, actor, method, None, raw)  # the reply came meanwhile
        current.future.cancel()
        if status == UNKNOWN:
            log.info("tracked call %s.%s (%s) never arrived: sending it again", actor, method, call_id)
            current = await resolver.send(subject, method, call[0], call[1], None, call_id)
            continue
        log.info("the reply of tracked call %s.%s (%s) was lost: using its probe's", actor, method, call_id)
        return await resolver.decode(answer, raw)


async def _done_within(future: asyncio.Future[Any], timeout: float) -> bool:
    """Whether ``future`` is done within ``timeout`` (it is not cancelled when it is not)."""
    if future.done():
        return True
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    future.add_done_callback(wake)
    timer = loop.call_later(timeout, wake)
    try:
        await waiter
    finally:
        timer.cancel()
        future.remove_done_callback(wake)
    return future.done()
