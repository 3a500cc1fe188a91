"""``Dispatcher``: the calls of one actor an ``ActorServer`` serves, each run as a task within the actor's
``max_concurrency``, answered (probes and copies of tracked calls from its ``CallLog``) and counted. The
server owns the subscriptions that feed it; what one call runs is ``fluster.actor.invoke``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import anyio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from fluster.actor.calls import CallLog
from fluster.bus.publish import Publisher
from fluster.errors import ProtocolError
from fluster.logs import context_with
from fluster.protocol.calls import PROBE, RUNNING, UNKNOWN, Call, decode_request, probe_answer
from fluster.protocol.values import ERROR, Outcome, failure

if TYPE_CHECKING:
    from fluster.actor.invoke import Invoker
    from fluster.bus.values import ValueStore
    from fluster.observe.components import ActorMetrics

log = logging.getLogger(__name__)

MAX_READS = 64  # calls of one actor reading their arguments from the value store at once


class Dispatcher:
    """Starts a task per call of one actor, at most ``max_concurrency`` at a time; the excess waits, in order.

    It is a subscription callback, not an ``async for`` loop: nats-py's message iterator yields to the event
    loop once per message (an ``asyncio.wait`` each), while its callback task drains every queued message in
    one go, so a burst of calls is answered in one loop iteration and one socket write. The handler tasks
    are plain asyncio tasks in an asyncio ``TaskGroup`` that ``run`` owns (anyio's ``start_soon`` costs ~4x
    more per call); cancelling ``run`` cancels them.

    A call whose arguments come through the value store reads them before it takes a slot (bounded separately
    by ``MAX_READS``), so requests naming values that never come cannot hold the actor's slots. Tracked calls
    (with a call id) are answered from the ``CallLog`` when they are probes or copies.
    """

    def __init__(
        self,
        nc: NATS,
        invoker: Invoker,
        values: ValueStore,
        max_concurrency: int,
        metrics: ActorMetrics,
        job_fields: dict[str, Any],
    ) -> None:
        self._nc = nc
        self._calls_total, self._errors = metrics.actor(invoker.name, lambda: max_concurrency - self._limiter.value)
        self._log_context = context_with(actor=invoker.name, **job_fields)  # what its call tasks log with
        self._publisher = Publisher(nc)
        self._values = values
        self.invoker = invoker
        self._limiter = anyio.Semaphore(max_concurrency)
        self._control = invoker.control
        self._reads = anyio.Semaphore(MAX_READS)
        self._calls = CallLog()
        self._handlers: asyncio.TaskGroup | None = None
        self._ready = asyncio.Event()

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as handlers:
                self._handlers = handlers
                self._ready.set()
                await anyio.sleep_forever()
        finally:
            self._handlers = None

    async def dispatch(self, msg: Msg) -> None:
        await self._ready.wait()
        try:
            call = decode_request(msg.data)
        except ProtocolError as exc:
            self._spawn(self._reply(msg.reply, failure(exc)))
            return
        if call.call_id is not None and self._answered(call, msg.reply):
            return
        if call.method in self._control:  # answered at once, outside the limit (cancelling a running call)
            self._spawn(self._handle_control(call, msg.reply))
            return
        if call.ref is not None:
            await self._reads.acquire()
            if not self._spawn(self._read_then_run(call, msg.reply)):
                self._reads.release()
            return
        try:
            self._limiter.acquire_nowait()
        except anyio.WouldBlock:
            await self._limiter.acquire()  # holds back this subscription's queue: backpressure
        if not self._spawn(self._handle(call, msg.reply, call.args)):
            self._limiter.release()  # stopping: the caller gets no reply and times out (or probes)

    def _answered(self, call: Call, reply: str) -> bool:
        """Answer a probe, or a copy of a tracked call seen before; False for a tracked call to run now."""
        call_id = call.call_id
        assert call_id is not None
        finished = self._calls.finished(call_id)
        if finished is not None:
            self._spawn(self._reply(reply, finished))
            return True
        if self._calls.running(call_id):
            if call.method == PROBE:
                self._spawn(self._answer(reply, RUNNING))
            else:
                self._calls.join(call_id, reply)
            return True
        if call.method == PROBE:
            self._spawn(self._answer(reply, UNKNOWN))
            return True
        self._calls.start(call_id, reply)
        return False

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> bool:
        handlers = self._handlers
        if handlers is not None:
            try:
                handlers.create_task(coro, context=self._log_context.copy())  # a copy per task, as by default
                return True
            except RuntimeError:  # the task group is shutting down
                pass
        coro.close()
        return False

    async def _read_then_run(self, call: Call, reply: str) -> None:
        try:
            args = await self.invoker.read_args(call)
        except Exception as exc:  # the value never came, or broke off
            await self._finish(call, reply, failure(exc))
            return
        finally:
            self._reads.release()
        await self._limiter.acquire()
        await self._handle(call, reply, args)

    async def _handle(self, call: Call, reply: str, args: bytes) -> None:
        try:
            outcome = await self.invoker.outcome(call, args)
        except BaseException:
            if call.call_id is not None:
                self._calls.abandon(call.call_id)
            raise
        finally:
            self._limiter.release()
        await self._finish(call, reply, outcome)

    async def _handle_control(self, call: Call, reply: str) -> None:
        outcome = await self.invoker.outcome(call)
        await self._finish(call, reply, outcome)

    async def _finish(self, call: Call, reply: str, outcome: Outcome) -> None:
        self._calls_total.value += 1
        if outcome.status == ERROR:
            self._errors.value += 1
        if call.call_id is None:
            await self._reply(reply, outcome)
            return
        for subject in self._calls.finish(call.call_id, outcome):
            await self._reply(subject, outcome)

    async def _reply(self, subject: str, outcome: Outcome) -> None:
        if not subject:
            return
        try:
            reply = self.invoker.encode(outcome)
            await self._publisher.publish(subject, reply.body)
            if reply.ref is not None:  # after the reply, so the caller reads while the chunks are written
                await self._values.send(reply.ref, reply.large)
        except Exception as exc:  # a connection going away: the caller times out (or probes)
            log.warning("cannot reply actor=%s: %r", self.invoker.name, exc)

    async def _answer(self, subject: str, status: int) -> None:
        try:
            await self._publisher.publish(subject, probe_answer(status))
        except Exception as exc:
            log.warning("cannot answer a probe actor=%s: %r", self.invoker.name, exc)
