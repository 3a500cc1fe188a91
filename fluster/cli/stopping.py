"""How a long-running command stops: the first Ctrl-C (or SIGTERM) stops it cleanly, a second one says what it
is waiting for, a third forces the stop. The commands themselves are ``daemons``', ``up``'s and ``dashboard``'s."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import AsyncIterator

import anyio
from anyio.abc import TaskStatus


class Stop:
    """Signals for a long-running command, watched for its whole life: the first Ctrl-C or SIGTERM sets
    ``requested`` (the command then leaves cleanly), a second says what it still waits for, a third cancels
    ``force`` (the command stops without finishing, and says so)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.requested = anyio.Event()
        self.force = anyio.CancelScope()
        self.forced = False

    async def watch(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            count = 0
            async for _ in signals:
                count += 1
                if count == 1:
                    print(f"stopping {self.what} (Ctrl-C again to see what it waits for)", file=sys.stderr, flush=True)
                    self.requested.set()
                elif count == 2:
                    print(
                        f"still stopping {self.what} cleanly: running jobs get their grace period and their last log "
                        "lines and reports are sent; Ctrl-C once more forces it (its jobs are then lost with it)",
                        file=sys.stderr,
                        flush=True,
                    )
                else:
                    print(f"forced: {self.what} stops now without finishing", file=sys.stderr, flush=True)
                    self.forced = True
                    self.force.cancel()
                    return


@contextlib.asynccontextmanager
async def stop_signals(what: str) -> AsyncIterator[Stop]:
    """Watch the signals for a command running ``what``; leaving stops the watch."""
    stop = Stop(what)
    async with anyio.create_task_group() as tg:
        await tg.start(stop.watch)
        try:
            with stop.force:
                yield stop
        finally:
            tg.cancel_scope.cancel()
