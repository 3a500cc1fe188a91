"""The same context and cluster code on Ray, then on fluster (docs/ray.md). Needs ``pip install 'fluster[ray]'``.

Starts a local Ray (loopback only, 2 CPUs) and a fluster LocalCluster, runs one pipeline and one job on each,
prints what they return, and stops both. ``RAY_ADDRESS`` picks a running Ray instead.
"""

from __future__ import annotations

import os
import sys

# Ray's single-machine mode: every Ray process binds loopback only (read when Ray is imported, so set first)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import fluster
from fluster import Entrypoint, ResourceSpec, create_environment
from fluster.context import (
    ActorOptions,
    Cluster,
    JobRequest,
    RayCluster,
    TaskOptions,
    create_context,
    get_job_context,
    job_context,
)


def square(x: int) -> int:
    return x * x


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def incr(self) -> int:
        self.n += 1
        return self.n


def pipeline() -> int:
    """Backend-free code: it asks the current context for everything."""
    ctx = get_job_context()
    a = ctx.run(square, 3)
    b = ctx.create_task(square, a, options=TaskOptions(resources={"CPU": 1}))
    counter = ctx.create_actor(Counter, options=ActorOptions(name="counter", get_if_exists=True))
    ctx.get([counter.incr.remote() for _ in range(10)], timeout=60)
    ready, _ = ctx.wait([b], num_returns=1, timeout=60)
    assert ready == [b]
    return int(ctx.get(b, timeout=60)) + int(ctx.get(counter.incr.remote(), timeout=60))


def greet() -> None:
    print(f"hello from a {type(get_job_context()).__name__} job, WHO={os.environ['WHO']}", flush=True)


REQUEST = JobRequest(
    "greet",
    Entrypoint.from_callable(greet),
    resources=ResourceSpec(cpu=0, memory="128m"),
    environment=create_environment(env_vars={"WHO": "the request"}),
)


def main() -> None:
    # 1. on Ray: the context starts a local Ray (or joins RAY_ADDRESS) and shuts it down at the end
    ray_options = {} if os.environ.get("RAY_ADDRESS") else {"num_cpus": 2, "include_dashboard": True}
    with create_context("ray", namespace="example", **ray_options) as ctx, job_context(ctx):
        print("pipeline on ray:", pipeline())  # 81 + 11
        with RayCluster("auto", namespace="example", python=sys.executable) as ray_cluster:
            job_id = ray_cluster.launch(REQUEST)
            for line in ray_cluster.monitor(job_id):
                print("  ray job:", line)
            print("job on ray:", ray_cluster.wait(job_id, timeout=120).status)
    # 2. on fluster: the same pipeline and the same request
    with fluster.LocalCluster(workers=2) as client:
        with create_context("cluster", client=client) as ctx, job_context(ctx):
            print("pipeline on fluster:", pipeline())
        with Cluster(client=client) as cluster:
            job_id = cluster.launch(REQUEST)
            for line in cluster.monitor(job_id):
                print("  fluster job:", line)
            print("job on fluster:", cluster.wait(job_id, timeout=120).status)


if __name__ == "__main__":
    main()
