"""Streamed results: a generator task or actor method gives an iterator of futures, in order, as items are
produced, with back-pressure on the cluster, and the generator's exception after the items before it. On
sync, threads, a real cluster (executor jobs and actor jobs) and a real local Ray."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import cloudpickle
import pytest
from cluster_helpers import context_on, local_cluster

from fluster.context import JobContext, create_context
from fluster.protocol.streams import STREAM_WINDOW

cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Boom(RuntimeError):
    pass


@pytest.fixture(params=["sync", "threads", "cluster", pytest.param("ray", marks=pytest.mark.ray)])
def ctx(request: pytest.FixtureRequest, namespace: str) -> Iterator[JobContext]:
    with context_on(request.param, request, namespace) as context:
        yield context


def numbers(n: int, progress: str | None = None) -> Iterator[int]:
    for i in range(n):
        if progress is not None:  # replaced whole, so a reader never sees it half written
            Path(progress + ".tmp").write_text(str(i))
            os.replace(progress + ".tmp", progress)
        yield i


def fails_after(n: int) -> Iterator[int]:
    yield from range(n)
    raise Boom(f"after {n}")


class Source:
    def __init__(self, base: int) -> None:
        self.base = base

    def count(self, n: int) -> Iterator[int]:
        for i in range(n):
            yield self.base + i

    async def ticks(self, n: int) -> AsyncIterator[str]:
        for i in range(n):
            await asyncio.sleep(0)
            yield f"tick-{self.base + i}"
        raise Boom("ticks ran out")

    def plain(self) -> int:
        return self.base


def test_a_generator_task_streams_its_items_in_order(ctx: JobContext) -> None:
    stream = ctx.run(numbers, 1000)
    assert [ctx.get(f, timeout=60) for f in stream] == list(range(1000))


def test_an_exception_ends_the_stream_after_the_items_before_it(ctx: JobContext) -> None:
    futures = list(ctx.run(fails_after, 5))
    assert [ctx.get(f) for f in futures[:5]] == [0, 1, 2, 3, 4]
    assert len(futures) == 6
    with pytest.raises(Boom, match="after 5"):
        ctx.get(futures[5])


def test_generator_actor_methods_stream_sync_and_async(ctx: JobContext) -> None:
    actor = ctx.create_actor(Source, 100)
    assert [ctx.get(f) for f in actor.count.remote(3)] == [100, 101, 102]
    ticks = list(actor.ticks.remote(3))
    assert [ctx.get(f) for f in ticks[:3]] == ["tick-100", "tick-101", "tick-102"]
    with pytest.raises(Boom, match="ticks ran out"):
        ctx.get(ticks[3])
    assert ctx.get(actor.plain.remote(), timeout=60) == 100  # other methods answer as before


def test_a_stream_runs_at_most_a_window_ahead_of_its_consumer(
    request: pytest.FixtureRequest, namespace: str, tmp_path: Path
) -> None:
    nats_url = request.getfixturevalue("nats_url")
    progress = tmp_path / "produced"
    with local_cluster(nats_url, namespace), create_context("cluster", url=nats_url, namespace=namespace) as ctx:
        stream = ctx.run(numbers, 1000, str(progress))
        first = [ctx.get(next(stream)) for _ in range(10)]
        assert first == list(range(10))
        produced = _settled(progress)
        # the window on the server, the chunk on its way and the chunk buffered here
        assert produced < 10 + 3 * STREAM_WINDOW, produced
        rest = [ctx.get(f) for f in stream]
        assert first + rest == list(range(1000))


def _settled(progress: Path, timeout: float = 60.0) -> int:
    """The producer's count once it has stopped moving (it waits for room), read every 0.2 s."""
    deadline = time.monotonic() + timeout
    last, same = -1, 0
    while same < 5:
        assert time.monotonic() < deadline, "the producer never stopped: no back-pressure"
        time.sleep(0.2)
        now = int(progress.read_text()) if progress.exists() else -1
        same = same + 1 if now == last else 0
        last = now
    return last


def endless(marker: str) -> Iterator[int]:
    i = 0
    try:
        while True:
            yield i
            i += 1
    finally:
        Path(marker).write_text("closed")


def big_items(n: int, size: int) -> Iterator[bytes]:
    for i in range(n):
        yield bytes([i]) * size


def test_closing_a_stream_closes_its_generator(ctx: JobContext, tmp_path: Path) -> None:
    marker = tmp_path / "closed"
    stream = ctx.run(endless, str(marker))
    assert [ctx.get(next(stream)) for _ in range(3)] == [0, 1, 2]
    stream.close()
    assert list(stream) == []
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < deadline, "the generator was never closed"
        time.sleep(0.05)


def test_large_items_stream_through_the_store(ctx: JobContext) -> None:
    size = 3 * 1024 * 1024  # past any message's inline limit
    items = [ctx.get(f, timeout=120) for f in ctx.run(big_items, 3, size)]
    assert [(len(item), item[0]) for item in items] == [(size, 0), (size, 1), (size, 2)]
