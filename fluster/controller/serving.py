"""How the controller answers: handlers run in their subscription's callback, and a reply that must wait for a
write is sent when the write completes, by one task for all of them.

A task per request (to await its write) cost the controller more than the request itself: at thousands of
submits and reports a second, creating, scheduling and finishing those tasks was a third of its CPU. Here a
handler changes the view synchronously and returns either its reply or ``Later(written, reply)``; the write's
done-callback queues the reply, and ``Replies.run`` publishes whatever is queued. Only handlers that truly
wait on other parties (a kill waits for its workers) run as tasks.

A handler may answer with bytes it encoded once (a heartbeat's usual "ok", an ack), and a subscription may
memo its last decoded message per sender: a worker's heartbeats repeat the same bytes while what it runs does
not change, and bytes equal to ones that passed validation decode to the same message, so they skip msgpack
and pydantic (a third of an idle heartbeat's cost). Validation is not weakened: only bytes already
validated for that same sender are reused.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, TypeVar

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from pydantic import BaseModel

from fluster.bus.rpc import RateLimitedLog, encode_error
from fluster.errors import LeadershipLost, ProtocolError
from fluster.protocol.codec import ERROR_HEADERS, decode, encode

log = logging.getLogger(__name__)
_warnings = RateLimitedLog(log)

Req = TypeVar("Req", bound=BaseModel)


MEMO_SENDERS = 100_000  # senders whose last message a memo keeps (then it starts over): bounds its memory

Reply = BaseModel | bytes  # a message, or one already encoded


class Later(NamedTuple):
    """A reply to send once ``written`` completes (what it answers is stored); if the write fails, its error
    is sent instead."""

    written: asyncio.Future[None]
    reply: Reply


Handler = Callable[[Any, str], "Reply | Later"]


class Replies:
    """Replies waiting for writes, published by one task as their writes complete."""

    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self._ready: deque[tuple[str, bytes, dict[str, str] | None]] = deque()
        self._wake = asyncio.Event()

    def after(self, later: Later, subject: str) -> None:
        if not subject:
            return
        later.written.add_done_callback(lambda written: self._queue(subject, later.reply, written))

    def now(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        if subject:
            self._ready.append((subject, data, headers))
            self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._ready:
                subject, data, headers = self._ready.popleft()
                try:
                    await self._nc.publish(subject, data, headers=headers)
                except Exception as exc:  # the requester may be gone; its retry covers it
                    _warnings.warning("reply", "cannot reply on %s: %r", subject[:200], exc)

    def _queue(self, subject: str, reply: Reply, written: asyncio.Future[None]) -> None:
        if written.cancelled():
            self.now(subject, encode_error(LeadershipLost("the controller stopped leading")), ERROR_HEADERS)
        elif (error := written.exception()) is not None:
            self.now(subject, encode_error(error), ERROR_HEADERS)
        else:
            self.now(subject, _encoded(reply))


def inline(
    nc: NATS,
    replies: Replies,
    model: type[Req],
    handler: Handler,
    leading: Callable[[], None],
    *,
    memo: bool = False,
) -> Callable[[Msg], Awaitable[None]]:
    """A subscription callback that decodes, checks the lease, handles and answers in place; never raises.
    With ``memo``, a sender's message equal to its last one reuses that one's decoded form."""
    last: dict[str, tuple[bytes, Req]] = {}

    async def answer_now(subject: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        if not subject:
            return
        try:
            await nc.publish(subject, data, headers=headers)
        except Exception as exc:  # the requester may be gone; its retry covers it
            _warnings.warning("reply", "cannot reply on %s: %r", subject[:200], exc)

    async def serve(msg: Msg) -> None:
        sender = msg.subject.rsplit(".", 1)[-1]
        try:
            data = msg.data
            seen = last.get(sender) if memo else None
            if seen is not None and seen[0] == data:
                request = seen[1]
            else:
                request = decode(data, model)
                if memo:
                    if len(last) >= MEMO_SENDERS:
                        last.clear()
                    last[sender] = (data, request)
            leading()
            answer = handler(request, sender)
        except ProtocolError as exc:
            _warnings.warning(f"malformed {model.__name__}", "malformed %s: %s", model.__name__, str(exc)[:300])
            await answer_now(msg.reply, encode_error(exc), ERROR_HEADERS)
            return
        except Exception as exc:
            _warnings.warning(f"failed {model.__name__}", "%s failed: %s", model.__name__, repr(exc)[:300])
            await answer_now(msg.reply, encode_error(exc), ERROR_HEADERS)
            return
        if isinstance(answer, Later):
            replies.after(answer, msg.reply)
        else:
            await answer_now(msg.reply, _encoded(answer))

    return serve


def _encoded(reply: Reply) -> bytes:
    return reply if isinstance(reply, bytes) else encode(reply)
