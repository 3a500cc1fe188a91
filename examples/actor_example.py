"""An inference actor served by 3 jobs: a client waits for the pool, calls it (balanced), then broadcasts.

Run: ``python examples/actor_example.py``. It starts a ``LocalCluster`` (nats-server, controller, workers),
or uses the cluster at ``FLUSTER_URL`` when that is set. Each job runs an ``ActorServer``; killing the jobs
removes their endpoints.
"""

from __future__ import annotations

import os
from collections import Counter
from contextlib import AsyncExitStack

import anyio

import fluster
from fluster import Entrypoint, LocalCluster
from fluster.actor import ActorContext, ActorServer, ClusterResolver
from fluster.client.cluster import ClusterClient


class InferenceActor:
    def __init__(self, scale: int) -> None:
        self.scale = scale

    def predict(self, ctx: ActorContext, data: list[int]) -> tuple[str, list[int]]:
        return ctx.job_id or "-", [x * self.scale for x in data]

    def health(self) -> str:
        return "ok"


def serve_inference(scale: int) -> None:
    """A job's entrypoint: serve the actor until the job is killed. ``fluster.run_async`` turns the stop (SIGTERM)
    into a cancellation, so ``async with server`` withdraws the endpoint before the process ends."""

    async def main() -> None:
        async with ClusterClient.connect() as client:  # the job's FLUSTER_* variables say where
            server = ActorServer(client)
            server.register("inference", InferenceActor(scale), max_concurrency=4)
            async with server:
                await anyio.sleep_forever()

    fluster.run_async(main)


async def main() -> None:
    async with AsyncExitStack() as stack:
        if os.environ.get("FLUSTER_URL"):
            client = await stack.enter_async_context(ClusterClient.connect())
        else:
            client = await stack.enter_async_context(LocalCluster(workers=3))
        jobs = [await client.submit(f"inference-{i}", Entrypoint.from_callable(serve_inference, 2)) for i in range(3)]
        resolver = ClusterResolver(client)
        pool = await resolver.lookup("inference")
        await pool.wait_for_size(3, timeout=60)
        owners = sorted(e.job_id or "" for e in pool.endpoints)
        print(f"pool 'inference' has {pool.size} endpoints, owned by jobs {owners}")

        job, result = await pool.call().predict([1, 2, 3])
        print(f"call -> {result} (served by job {job})")
        served_by = Counter([(await pool.call().predict([0]))[0] for _ in range(30)])
        print(f"30 calls spread over the pool: {dict(served_by)}")
        for reply in await (await pool.broadcast().health()).wait_all():
            print(f"broadcast -> job {reply.endpoint.job_id}: {reply.result()}")

        for job_id in jobs:
            await client.kill(job_id)
        print(f"after killing the jobs the pool has {len(await pool.refresh())} endpoints")
        await resolver.close()


if __name__ == "__main__":
    anyio.run(main)
