"""A client command's session: connecting with the command line's settings, and long waits (``logs -f``,
``run``) that end cleanly on Ctrl-C or when the cluster goes away."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio

from fluster.bus.options import redact_url
from fluster.cli.args import need_connection
from fluster.client.cluster import ClusterClient
from fluster.errors import ClusterUnavailable

# a follow that has had no connection to NATS this long gives up (FLUSTER_CONNECTION_LOST_AFTER: tests)
LOST_AFTER_S = float(os.environ.get("FLUSTER_CONNECTION_LOST_AFTER", "10"))


@contextlib.asynccontextmanager
async def connected(args: argparse.Namespace) -> AsyncIterator[ClusterClient]:
    url, options = need_connection(args)
    async with ClusterClient.connect(url, args.namespace, options=options) as client:
        yield client


async def interruptible(client: ClusterClient, work: Callable[[], Awaitable[Any]]) -> bool:
    """Run ``work`` until it returns (False) or Ctrl-C / SIGTERM arrives (True).

    Raises:
        ClusterUnavailable: the connection to NATS was down for ``LOST_AFTER_S`` seconds meanwhile.
    """
    interrupted = False
    lost: str | None = None
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            await work()
            tg.cancel_scope.cancel()

        async def watch_signals() -> None:
            nonlocal interrupted
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    interrupted = True
                    tg.cancel_scope.cancel()
                    return

        async def watch_connection() -> None:
            nonlocal lost
            down_since: float | None = None
            while True:
                await anyio.sleep(0.5)  # nats-py offers callbacks only at connect time: watch its flag
                if client.nc.is_connected:
                    down_since = None
                    continue
                now = anyio.current_time()
                down_since = now if down_since is None else down_since
                if now - down_since >= LOST_AFTER_S:
                    lost = redact_url(client.url)
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(run)
        tg.start_soon(watch_signals)
        tg.start_soon(watch_connection)
    if lost is not None:
        raise ClusterUnavailable(
            f"lost the connection to NATS at {lost} for {LOST_AFTER_S:g}s; is the cluster still up?"
        )
    return interrupted
