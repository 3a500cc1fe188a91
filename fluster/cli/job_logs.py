"""Printing a job's log lines: the ``logs`` command (filters, tail, follow, one task's lines) and the
printer ``run`` follows a job with. Its arguments are registered with the other job commands (``jobs``).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable

from fluster.cli import format as fmt
from fluster.cli.failures import UsageError
from fluster.cli.session import connected, interruptible
from fluster.client.cluster import ClusterClient
from fluster.errors import JobNotFound
from fluster.protocol.messages import LogLine


async def logs(args: argparse.Namespace) -> int:
    """``fluster logs JOB``: its lines, filtered by ``--since``, ``--grep``, ``--tail`` and ``--task``."""
    pattern = re.compile(args.grep) if args.grep else None
    since_ms = int((time.time() - args.since) * 1000) if args.since is not None else None

    def keep(line: LogLine) -> bool:
        return (since_ms is None or line.at_ms >= since_ms) and (pattern is None or bool(pattern.search(line.line)))

    async with connected(args) as client:
        try:
            status = await client.status(args.job_id)
        except JobNotFound:
            # a forgotten job's lines may outlive its record: print them if there are any
            if not await print_logs(client, args.job_id, False, keep, args.tail, args.timestamps, task=args.task):
                raise
            return 0
        tasks = len(status.tasks) or 1
        if args.task is not None and args.task >= tasks:
            raise UsageError(
                f"job {args.job_id} has {tasks} task(s): --task takes 0" + (f" to {tasks - 1}" if tasks > 1 else "")
            )
        tagged = tasks > 1 and args.task is None

        def show() -> Awaitable[int]:
            return print_logs(client, args.job_id, args.follow, keep, args.tail, args.timestamps, args.task, tagged)

        if await interruptible(client, show):
            return 130
    return 0


async def print_logs(
    client: ClusterClient,
    job_id: str,
    follow: bool,
    keep: Callable[[LogLine], bool] = lambda line: True,
    tail: int | None = None,
    timestamps: bool = False,
    task: int | None = None,
    tagged: bool = False,
) -> int:
    """Print the job's lines (stderr and fluster's own lines to stderr), only ``task``'s if given, each with
    its task's index when ``tagged``; return how many were printed."""
    printed = 0

    def show(line: LogLine) -> None:
        nonlocal printed
        stream = sys.stdout if line.stream == "stdout" else sys.stderr
        prefix = f"{fmt.timestamp(line.at_ms)} " if timestamps else ""
        if tagged:
            prefix += f"[{line.task}] "
        print(f"{prefix}{line.line}", file=stream, flush=True)
        printed += 1

    skip = 0
    if tail is not None:
        last: deque[LogLine] = deque(maxlen=tail)
        async for line in client.logs(job_id, task=task):
            skip += 1
            if keep(line):
                last.append(line)
        for line in last:
            show(line)
        if not follow:
            return printed
    seen = 0
    async for line in client.logs(job_id, follow=follow, task=task):
        seen += 1
        if seen > skip and keep(line):
            show(line)
    return printed
