"""The lives of a cluster context's actors: each actor is a job, restarted by the controller as a new attempt
of that job (``ActorOptions.max_restarts`` is the job's retry budget), which re-runs the constructor and
serves the same name. ``ActorLives`` follows each actor job's record and tells a call in flight that the
attempt serving it died, and whether another one comes (``Restarting``) or not (``ActorDied``).

A call whose actor died while it was in flight is sent again, to the restarted actor, up to
``max_task_retries`` times (-1: always), as in Ray; a call made while the actor is restarting waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import anyio

from fluster.bus.kv import watch_model
from fluster.bus.retry import backoff
from fluster.errors import ActorDied, ActorNotFound
from fluster.protocol.messages import JobRecord

log = logging.getLogger(__name__)

RECHECK_S = 30.0  # the record is read anew (and the watch made again) this often
RESTART_WAIT_S = 300.0  # a call waits at most this long for a restarted actor to serve again
DEATH_GRACE_S = 5.0  # a call that finds nothing serving waits this long to hear whether the actor died


class Restarting(Exception):  # noqa: N818 - a signal between two functions here, never raised to users
    """The attempt that served a call died, and the controller starts another."""


@dataclass
class _Life:
    died: asyncio.Future[tuple[str, bool]]  # of the attempt serving now: (why, whether it restarts)
    restarting: bool = False
    followed: bool = False
    ended: str | None = None  # why the job ended, once it has
    seen_dead: set[int] = field(default_factory=set)


class ActorLives:
    """One watch per actor job, started at its first call; ``spawn`` runs a coroutine on the context's loop."""

    def __init__(self, jobs: Any, spawn: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        self._jobs = jobs  # the namespace's jobs bucket
        self._spawn = spawn
        self._lives: dict[str, _Life] = {}

    async def call(self, job_id: str, what: str, send: Callable[[], Awaitable[Any]], retries: int) -> Any:
        """``await send()``, sent again when its actor restarts under it (up to ``retries`` times, -1: always).

        Raises:
            ActorDied: the actor's job ended, or its attempt died with no retry of this call left.
        """
        life = self._life(job_id)
        tried = 0
        waited = 0
        while True:
            if life.ended is not None:
                raise ActorDied(f"{what}: the actor died ({life.ended})")
            died = life.died
            reply = asyncio.ensure_future(send())
            await asyncio.wait((reply, died), return_when=asyncio.FIRST_COMPLETED)
            if reply.done():
                try:
                    value = reply.result()
                    life.restarting = False
                    return value
                except ActorNotFound:
                    if life.restarting and waited * 0.5 < RESTART_WAIT_S:
                        await anyio.sleep(backoff(waited, 0.1, 0.5))  # it is starting again: nothing serves yet
                        waited += 1
                        continue
                    # nothing serves: perhaps its process just died, which its worker reports in a moment
                    with anyio.move_on_after(DEATH_GRACE_S):
                        await asyncio.shield(died)
                    if not died.done():
                        raise
            else:
                reply.cancel()
            why, restarts = died.result()
            if not restarts:
                raise ActorDied(f"{what}: the actor died before answering ({why})")
            if retries != -1 and tried >= retries:
                raise ActorDied(
                    f"{what}: the actor died before answering ({why}); it is restarting, but "
                    f"max_task_retries={retries} allows no more retries of this call"
                )
            tried += 1
            log.info("%s: its actor died (%s): sending it again (retry %d)", what, why, tried)

    def _life(self, job_id: str) -> _Life:
        life = self._lives.get(job_id)
        if life is None:
            life = self._lives[job_id] = _Life(asyncio.get_running_loop().create_future())
            self._spawn(self._follow(job_id, life))
        return life

    async def _follow(self, job_id: str, life: _Life) -> None:
        try:
            while life.ended is None:
                async with aclosing(watch_model(self._jobs, job_id, JobRecord)) as records:
                    with anyio.move_on_after(RECHECK_S):
                        async for record in records:
                            self._observe(job_id, life, record)
                            if life.ended is not None:
                                return
        except Exception as exc:  # cannot tell (connection closing): the next call watches again
            # its calls still end: a tracked call that hears nothing gives up after its unreachable timeout
            log.debug("cannot follow actor job %s: %r", job_id, exc)
            self._lives.pop(job_id, None)

    def _observe(self, job_id: str, life: _Life, record: JobRecord | None) -> None:
        if record is None or record.state.is_terminal:
            detail = "" if record is None else f" {record.state.value}" + (f": {record.error}" if record.error else "")
            life.ended = f"its job {job_id} ended{detail}" if record is not None else f"its job {job_id} is gone"
            if not life.died.done():
                life.died.set_result((life.ended, False))
            return
        dead = {a.attempt for a in record.attempts if a.state.is_terminal}
        if not life.followed:  # attempts that died before this watch began were no call's concern
            life.followed = True
            life.seen_dead |= dead
        new = dead - life.seen_dead  # one write may hold an attempt's end and its successor's start
        if new:
            life.seen_dead |= new
            life.restarting = True  # until a call is answered again
            ended = [a for a in record.attempts if a.attempt in new][-1]
            why = f"attempt {ended.attempt} of its job ended {ended.state.value}"
            why += f": {ended.error}" if ended.error else ""
            died, life.died = life.died, asyncio.get_running_loop().create_future()
            if not died.done():
                died.set_result((why, True))


def restarts_of(record: JobRecord) -> int:
    """How often an actor job was restarted: its attempts that died while the job went on."""
    dead = sum(1 for a in record.attempts if a.state.is_terminal)
    return dead - 1 if record.state.is_terminal and dead else dead
