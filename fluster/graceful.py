"""``run_async``: run an async job entrypoint so that a stop (SIGTERM) cancels it instead of interrupting it.

Inside a job, SIGTERM normally becomes ``SystemExit`` wherever the main thread is. For an event loop that is
the wrong place: the exception leaves the loop, which then cancels every task at once, the NATS client's own
reader among them, so cleanup that talks to NATS (an actor withdrawing its endpoints and its name) hangs.
``run_async`` turns SIGTERM into a cancellation of the entrypoint's task while the loop keeps running, and
once the cleanup is done ends the process as the signal would have (the job is reported stopped).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fluster.aio import RECANCEL_S

T = TypeVar("T")


def run_async(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``asyncio.run(fn(*args))``, where SIGTERM cancels ``fn`` (its ``finally`` blocks and context managers
    run with the loop and its connections alive) and then ends the process with SIGTERM's usual handling.
    Outside the main thread (which alone receives signals) it is plain ``asyncio.run``."""
    if threading.current_thread() is not threading.main_thread():
        return asyncio.run(_call(fn, *args))  # signals reach the main thread only
    previous = signal.getsignal(signal.SIGTERM)
    terminated = False

    async def main() -> T:
        nonlocal terminated
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def stop() -> None:
            nonlocal terminated
            terminated = True
            task.cancel()
            # again until it ends: one cancellation may be swallowed (fluster.aio explains, with the figure)
            loop.call_later(RECANCEL_S, lambda: None if task.done() else stop())

        loop.add_signal_handler(signal.SIGTERM, stop)
        try:
            return await fn(*args)
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            signal.signal(signal.SIGTERM, previous)

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        if not terminated:
            raise
        os.kill(os.getpid(), signal.SIGTERM)  # the job's own SIGTERM handling (or the default: exit)
        raise


async def _call(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    return await fn(*args)
