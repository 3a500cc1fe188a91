"""Value-plane benchmark (issue 13): a large ``put()`` value passed to an actor, beside the same bytes passed
as the argument itself (the baseline, measured in the same run).

Run: ``python bench/values.py`` (starts its own nats-server, a controller and two workers as processes). The
actor reads a ``put()`` value from the value store itself, so the caller neither downloads nor re-uploads it;
``ratio`` is the put-ref rate over the direct-argument rate.
"""

from __future__ import annotations

import os
import statistics
import time

from tasks import cluster

from fluster.context import create_context
from fluster.protocol.resources import ResourceSpec

SIZE = 10 * 1024 * 1024
REPEATS = 7


class Sink:
    def size(self, value: bytes) -> int:
        return len(value)


def rate(call: object) -> float:
    """Median MiB/s of ``call()`` over REPEATS runs (after one warm-up)."""
    assert callable(call)
    call()
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        assert call() == SIZE
        times.append(time.perf_counter() - start)
    return SIZE / statistics.median(times) / (1 << 20)


def main() -> None:
    with cluster() as (url, namespace):
        resources = ResourceSpec(cpu=1, memory="512m")
        with create_context("cluster", url=url, namespace=namespace, resources=resources) as ctx:
            sink = ctx.create_actor(Sink)
            data = os.urandom(SIZE)
            direct = rate(lambda: ctx.get(sink.size.remote(data)))
            ref = ctx.put(data)
            stored = rate(lambda: ctx.get(sink.size.remote(ref)))
    print(f"10 MiB as the argument     {direct:8.1f} MiB/s")
    print(f"10 MiB put(), ref passed   {stored:8.1f} MiB/s")
    print(f"ratio (put ref / argument) {stored / direct:8.2f}x")


if __name__ == "__main__":
    main()
