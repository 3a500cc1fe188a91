"""An inference actor served by 3 jobs: a client waits for the pool, calls it (balanced), then broadcasts.

Run: ``python examples/actor_example.py``. It starts a ``LocalCluster`` (nats-server, controller, workers),
or uses the cluster at ``FLUSTER_URL`` when that is set. Each job runs an ``ActorServer``; killing the jobs
removes their endpoints.
"""

from __future__ import annotations

import os
import uuid
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


def serve_inference(name: str, scale: int) -> None:
    """A job's entrypoint: serve the actor until the job is killed. ``fluster.run_async`` turns the stop (SIGTERM)
    into a cancellation, so ``async with server`` withdraws the endpoint before the process ends."""

    async def main() -> None:
        async with ClusterClient.connect() as client:  # the job's FLUSTER_* variables say where
            server = ActorServer(client)
            server.register(name, InferenceActor(scale), max_concurrency=4)
            async with server:
                await anyio.sleep_forever()

    fluster.run_async(main)


async def main() -> None:
    async with AsyncExitStack() as stack:
        if os.environ.get("FLUSTER_URL"):
            client = await stack.enter_async_context(ClusterClient.connect())
        else:
            client = await stack.enter_async_context(LocalCluster(workers=3))
        # unique names: on a cluster that outlives this script, a second run must not meet the first one's
        run = uuid.uuid4().hex[:6]
        actor = f"inference-{run}"
        jobs = []
        resolver = ClusterResolver(client)
        try:
            for i in range(3):
                jobs.append(await client.submit(f"{actor}-{i}", Entrypoint.from_callable(serve_inference, actor, 2)))
            pool = await resolver.lookup(actor)
            await pool.wait_for_size(3, timeout=60)
            owners = sorted(e.job_id or "" for e in pool.endpoints)
            print(f"pool {actor!r} has {pool.size} endpoints, owned by jobs {owners}")

            job, result = await pool.call().predict([1, 2, 3])
            print(f"call -> {result} (served by job {job})")
            served_by = Counter([(await pool.call().predict([0]))[0] for _ in range(30)])
            print(f"30 calls spread over the pool: {dict(served_by)}")
            for reply in await (await pool.broadcast().health()).wait_all():
                print(f"broadcast -> job {reply.endpoint.job_id}: {reply.result()}")
            for job_id in jobs:
                await client.kill(job_id)
            print(f"after killing the jobs the pool has {len(await pool.refresh())} endpoints")
        finally:
            for job_id in jobs:  # what this script started, it stops, whatever happened (a no-op when done)
                await client.kill(job_id)
            await resolver.close()


if __name__ == "__main__":
    anyio.run(main)
