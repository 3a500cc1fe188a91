"""Task benchmark (issue 4): no-op task round trip and throughput through the cluster context, side by side
with Ray and Dask distributed (2 worker processes each) when they are installed; and (issue 15) the items
per second one generator task streams to its caller, beside Ray's streaming generator.

Run: ``python bench/tasks.py`` (starts its own nats-server, a controller and two workers as processes; the
context runs 2 executors). Ray and Dask run in a subprocess of ``--peers-python`` (default: this Python), so
they can live in their own virtualenv: ``python -m venv /tmp/peers && /tmp/peers/bin/pip install ray
"dask[distributed]"``, then ``python bench/tasks.py --peers-python /tmp/peers/bin/python``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fluster.client.blocking import Client
from fluster.context import create_context
from fluster.local.server import NatsServer
from fluster.protocol.resources import ResourceSpec

ROUND_TRIPS = 1000
TASKS = 10_000
REPEATS = 3
STREAM_ITEMS = 20_000


def numbers(n: int) -> Iterator[int]:
    yield from range(n)


def stream_rate(run: Callable[[int], Any]) -> float:
    rates = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        run(STREAM_ITEMS)
        rates.append(STREAM_ITEMS / (time.perf_counter() - start))
    return statistics.median(rates)


def noop() -> None:
    return None


# -- fluster -------------------------------------------------------------------------------------------


@contextmanager
def cluster() -> Iterator[tuple[str, str]]:
    """nats-server, a controller and two 2-CPU workers, each its own process."""
    namespace = f"bench{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as tmp, NatsServer(store_dir=Path(tmp)) as server:
        common = ["--url", server.url, "--namespace", namespace]
        cli = [sys.executable, "-m", "fluster.cli"]
        procs = [subprocess.Popen([*cli, "controller", *common], start_new_session=True)]
        for i in range(2):
            worker = ["worker", "--worker-id", f"bench-{i}", "--cpu", "2", "--memory", "4g", *common]
            procs.append(subprocess.Popen([*cli, *worker], start_new_session=True))
        try:
            with Client(server.url, namespace) as client:
                deadline = time.monotonic() + 30
                while len(client.list_workers()) < 2 and time.monotonic() < deadline:
                    time.sleep(0.1)
            yield server.url, namespace
        finally:
            for proc in procs:
                os.killpg(proc.pid, signal.SIGTERM)
            for proc in procs:
                proc.wait()


def fluster_figures() -> dict[str, float]:
    with cluster() as (url, namespace):
        ctx = create_context("cluster", url=url, namespace=namespace, resources=ResourceSpec(cpu=1, memory="512m"))
        with ctx:
            ctx.get([ctx.run(noop) for _ in range(2000)])  # starts the pool and warms it
            figures = measure(lambda: ctx.get(ctx.run(noop)), lambda n: ctx.get([ctx.run(noop) for _ in range(n)]))
            figures["stream_per_s"] = stream_rate(lambda n: [ctx.get(f) for f in ctx.run(numbers, n)])
            return figures


def measure(one: Callable[[], Any], many: Callable[[int], Any]) -> dict[str, float]:
    times = []
    for _ in range(ROUND_TRIPS):
        start = time.perf_counter()
        one()
        times.append(time.perf_counter() - start)
    times.sort()
    rates = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        many(TASKS)
        rates.append(TASKS / (time.perf_counter() - start))
    return {
        "median_us": statistics.median(times) * 1e6,
        "p99_us": times[int(len(times) * 0.99)] * 1e6,
        "tasks_per_s": statistics.median(rates),
    }


# -- peers, run in a subprocess of --peers-python ----------------------------------------------------

PEER_COMMON = f"""
import json, statistics, time
ROUND_TRIPS, TASKS, REPEATS, STREAM_ITEMS = {ROUND_TRIPS}, {TASKS}, {REPEATS}, {STREAM_ITEMS}
def stream_rate(run):
    rates = []
    for _ in range(REPEATS):
        start = time.perf_counter(); run(STREAM_ITEMS); rates.append(STREAM_ITEMS / (time.perf_counter() - start))
    return statistics.median(rates)
def measure(one, many):
    times = []
    for _ in range(ROUND_TRIPS):
        start = time.perf_counter(); one(); times.append(time.perf_counter() - start)
    times.sort()
    rates = []
    for _ in range(REPEATS):
        start = time.perf_counter(); many(TASKS); rates.append(TASKS / (time.perf_counter() - start))
    return dict(median_us=statistics.median(times) * 1e6, p99_us=times[int(len(times) * 0.99)] * 1e6,
                tasks_per_s=statistics.median(rates))
"""

RAY = (
    PEER_COMMON
    + """
import ray
ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
@ray.remote
def noop():
    return None
@ray.remote(num_returns="streaming")
def numbers(n):
    for i in range(n):
        yield i
ray.get([noop.remote() for _ in range(2000)])
figures = measure(lambda: ray.get(noop.remote()), lambda n: ray.get([noop.remote() for _ in range(n)]))
figures["stream_per_s"] = stream_rate(lambda n: [ray.get(ref) for ref in numbers.remote(n)])
print(json.dumps(figures))
ray.shutdown()
"""
)

DASK = (
    PEER_COMMON
    + """
from dask.distributed import Client, LocalCluster
def noop():
    return None
if __name__ == "__main__":
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \\
            Client(cluster) as client:
        client.gather([client.submit(noop, pure=False) for _ in range(2000)])
        one = lambda: client.submit(noop, pure=False).result()
        many = lambda n: client.gather([client.submit(noop, pure=False) for _ in range(n)])
        print(json.dumps(measure(one, many)))
"""
)


def peer_figures(python: str, module: str, script: str) -> dict[str, float] | None:
    probe = subprocess.run([python, "-c", f"import {module}"], capture_output=True)
    if probe.returncode != 0:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(script)
    try:
        out = subprocess.run([python, f.name], capture_output=True, text=True, timeout=900)
    finally:
        os.unlink(f.name)
    if out.returncode != 0:
        print(f"{module} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# -- report --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers-python", default=sys.executable, help="the Python that has ray / dask installed")
    parser.add_argument("--no-peers", action="store_true", help="measure fluster only")
    options = parser.parse_args()
    figures: dict[str, dict[str, float] | None] = {"fluster": fluster_figures()}
    if not options.no_peers:
        figures["ray"] = peer_figures(options.peers_python, "ray", RAY)
        figures["dask"] = peer_figures(options.peers_python, "distributed", DASK)
    head = f"{'system':<10}{'round trip median (us)':>26}{'p99 (us)':>12}{'10,000 no-op tasks (/s)':>26}"
    print(f"{head}{'streamed items (/s)':>22}")
    for name, found in figures.items():
        if found is None:
            print(f"{name:<10}{'not installed':>26}")
        else:
            median, p99, rate = found["median_us"], found["p99_us"], found["tasks_per_s"]
            streamed = f"{found['stream_per_s']:>22,.0f}" if "stream_per_s" in found else f"{'-':>22}"
            print(f"{name:<10}{median:>26,.0f}{p99:>12,.0f}{rate:>26,.0f}{streamed}")
    ours = figures["fluster"]
    assert ours is not None
    for name in ("ray", "dask"):
        peer = figures.get(name)
        if peer is None:
            continue
        faster = peer["median_us"] / ours["median_us"]
        more = ours["tasks_per_s"] / peer["tasks_per_s"]
        goal = "  (targets vs ray: >= 4x, >= 10x)" if name == "ray" else ""
        print(f"fluster vs {name}: round trip {faster:.1f}x faster, throughput {more:.1f}x higher{goal}")
        if "stream_per_s" in peer:
            ratio = ours["stream_per_s"] / peer["stream_per_s"]
            print(f"fluster vs {name}: streamed items {ratio:.1f}x more per second  (target vs ray: >= 5x)")


if __name__ == "__main__":
    main()
