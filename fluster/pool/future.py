"""``TaskFuture``: the result of a submitted task, usable from threads (``result(timeout)``) and awaitable.

It is a ``concurrent.futures.Future``, so ``concurrent.futures.wait`` / ``as_completed`` work on it, completed
by the pool on its event loop. ``await future`` works on any event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Generator
from typing import Any, TypeVar

T = TypeVar("T")


class TaskFuture(concurrent.futures.Future[T]):
    """A task's eventual value: ``result(timeout)``, ``exception(timeout)``, ``done()``, or ``await`` it.

    ``cancel()`` cancels the task even while it runs (what ``ctx.cancel(future)`` does, see ``cancel_task``):
    the future fails with ``TaskCancelled`` at once, and whoever runs the task is told through the
    ``canceller`` it was given.
    """

    canceller: Callable[[bool, bool], object] | None = None  # (force, recursive): stops the task where it runs

    def cancel(self) -> bool:
        """A task's future cancels its task (``cancel_task``); any other is cancelled as by
        ``concurrent.futures`` (only before it completes)."""
        if self.canceller is None:
            return super().cancel()
        return self.cancel_task()

    def cancel_task(self, force: bool = False, recursive: bool = True) -> bool:
        """Fail with ``TaskCancelled`` and stop the task: cooperatively (``TaskCancelled`` raised in its
        thread) or, with ``force``, by killing the process that runs it; ``recursive`` also cancels the
        tasks it started. False, doing nothing, when the task had finished already."""
        from fluster.errors import TaskCancelled

        canceller = self.canceller  # taken first: completing the future drops it
        try:
            self.set_exception(TaskCancelled("the task was cancelled"))
        except concurrent.futures.InvalidStateError:
            return False  # finished first
        if canceller is not None:
            canceller(force, recursive)
        return True

    def __await__(self) -> Generator[Any, None, T]:
        if not self.done():
            yield from until_done(self).__await__()
        return self.result()

    def __reduce__(self) -> tuple[Any, ...]:
        """A done future pickles as its outcome (a task that closes over it reads it where it runs); one
        that is not done cannot leave its process: the context waits for the futures a task closes over
        before it sends the task, as for its arguments."""
        if not self.done():
            raise TypeError(
                "a future that is not done cannot be pickled: pass it to the task as an argument "
                "(or close over it in a task of a context, which waits for it), or get() its value first"
            )
        if self.cancelled():
            return (settled, (None, concurrent.futures.CancelledError()))
        error = self.exception()
        if error is not None:
            return (settled, (None, error))
        return (settled, (concurrent.futures.Future.result(self),))


def settle(future: concurrent.futures.Future[Any], value: Any = None, error: BaseException | None = None) -> bool:
    """Complete ``future`` with ``value`` (or ``error``) unless it is done already (cancelled, or settled by
    whoever was first): whether this call completed it."""
    try:
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)
    except concurrent.futures.InvalidStateError:
        return False
    return True


def settled(value: Any, error: BaseException | None = None) -> TaskFuture[Any]:
    """A done future of ``value`` (or of ``error``): what a pickled future becomes where it is read."""
    future: TaskFuture[Any] = TaskFuture()
    if error is None:
        future.set_result(value)
    else:
        future.set_exception(error)
    return future


def until_done(future: concurrent.futures.Future[Any]) -> asyncio.Future[None]:
    """A future of the running loop that completes once ``future`` is done (whichever thread completes it)."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: concurrent.futures.Future[Any]) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:  # completed on this very loop: no cross-thread wake-up needed
            _release(waiter)
        else:
            loop.call_soon_threadsafe(_release, waiter)

    future.add_done_callback(wake)
    return waiter


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
