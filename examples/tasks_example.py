"""Tasks two ways: a WorkerPool of warm executor jobs, and the context API (the same code on any backend).

Run: ``python examples/tasks_example.py``. It starts a ``LocalCluster`` (nats-server, controller, two
workers), or uses the cluster at ``FLUSTER_URL`` when that is set.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from fluster import Client, LocalCluster, ResourceSpec
from fluster.context import ActorOptions, JobContext, create_context, get_job_context, job_context
from fluster.pool import WorkerPool, WorkerPoolConfig


def square(x: int) -> int:
    return x * x


def total(values: list[int]) -> int:
    return sum(values)


class Counter:
    def __init__(self) -> None:
        self.count = 0

    def incr(self, by: int = 1) -> int:
        self.count += by
        return self.count


def big_table(rows: int) -> list[tuple[int, str]]:
    return [(i, f"row-{i}") for i in range(rows)]


def count_rows(table: list[tuple[int, str]]) -> int:
    return len(table)


def pipeline() -> tuple[int, int]:
    """Backend-agnostic code: it uses whatever context is current."""
    ctx: JobContext = get_job_context()
    squares = [ctx.run(square, i) for i in range(10)]
    summed = ctx.run(total, squares)  # futures as arguments are resolved before the task runs
    counter = ctx.create_actor(Counter, options=ActorOptions(name="example-counter", get_if_exists=True))
    ctx.get([counter.incr.remote() for _ in range(5)])
    return ctx.get(summed), ctx.get(counter.incr.remote(0))


@contextlib.contextmanager
def cluster() -> Iterator[Client]:
    url = os.environ.get("FLUSTER_URL")
    if url:
        with Client(url) as client:
            yield client
    else:
        with LocalCluster(workers=2, cpu=2, memory="4g") as client:
            yield client


def main() -> None:
    with create_context("sync") as ctx, job_context(ctx):
        print("sync backend:", pipeline())
    with cluster() as client:
        config = WorkerPoolConfig(num_workers=2, resources=ResourceSpec(cpu=1, memory="512m"))
        with WorkerPool(client, config) as pool:
            futures = pool.map(square, range(10))
            print("pool map:", [f.result(timeout=60) for f in futures])
            print("pool status:", pool.status())
        with create_context("cluster", client=client) as ctx, job_context(ctx):
            print("cluster backend:", pipeline())
            # a result over 256 KiB stays in the object store: the next task's executor reads it by key,
            # and if the object were lost, reading it would re-run big_table from its lineage
            table = ctx.run(big_table, 100_000)
            print("large result, counted by another task:", ctx.get(ctx.run(count_rows, table)))


if __name__ == "__main__":
    main()
