"""``ActorLauncher``: a ``ClusterContext``'s actors started as jobs serving the object by name
(``fluster.context.actor_job``), or, for a name that is served already, found (``get_if_exists``); a name
another creator wins in the meantime is found on the next round.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import anyio

from fluster.actor import registry
from fluster.actor.pool import ActorPool
from fluster.bus.assets import ENDPOINT_TTL_S
from fluster.client.cluster import ClusterClient
from fluster.context.actor_job import serve_actor
from fluster.context.handles import ActorHandle, ActorOptions, Lifetime
from fluster.context.resources import as_resource_spec
from fluster.errors import ActorNameTaken, JobFailed
from fluster.protocol.actor_messages import EndpointRecord
from fluster.protocol.ids import validate_name
from fluster.protocol.resources import ResourceSpec
from fluster.types import Entrypoint

if TYPE_CHECKING:
    from fluster.actor.resolver import ClusterResolver
    from fluster.context.api import JobContext

DEFAULT_ACTOR_RESOURCES = ResourceSpec(cpu=0, memory="256m")
MAX_CREATE_ROUNDS = 5
FOREVER = 1_000_000  # the job retry budget of an actor restarted always (max_restarts=-1)


class ActorLauncher:
    """Starts (or finds) the actors of one context; ``ephemeral`` are the jobs its ``close`` kills."""

    def __init__(self, context: JobContext, resolver: ClusterResolver, aio: ClusterClient) -> None:
        self._context = context
        self._resolver = resolver
        self._aio = aio
        self.ephemeral: list[str] = []

    async def start(
        self, cls: type[Any], args: tuple[Any, ...], kwargs: dict[str, Any], options: ActorOptions
    ) -> ActorHandle:
        name = validate_name(options.name, "actor name") if options.name else f"actor-{uuid.uuid4().hex[:12]}"
        for _ in range(MAX_CREATE_ROUNDS):  # a round ends early when another creator wins the name
            if options.name:
                live, dying = await self._resolver.serving(name)
                if live:
                    return self._existing(name, options, live)
                if dying:  # a killed actor's endpoints are on their way out: its name is not free yet
                    await self._until_unserved(name)
            handle = await self._launch_actor(name, cls, args, kwargs, options)
            if handle is not None:
                return handle
        raise ActorNameTaken(f"actor {name!r}: could neither create it nor find who holds the name")

    async def _launch_actor(
        self, name: str, cls: type[Any], args: tuple[Any, ...], kwargs: dict[str, Any], options: ActorOptions
    ) -> ActorHandle | None:
        """Start the actor's job; its handle, or None when another creator won the name."""
        detached = options.lifetime == Lifetime.DETACHED
        restarts = FOREVER if options.max_restarts == -1 else options.max_restarts
        # A job's children die with it, so a detached actor is submitted as a top-level job.
        submitter = ClusterClient(self._aio.nc, self._aio.url, self._aio.namespace, self._aio.assets, None)
        job_id = await (submitter if detached else self._aio).submit(
            f"actor-{name}-{uuid.uuid4().hex[:6]}",
            Entrypoint.from_callable(
                serve_actor, name, cls, args, kwargs, options.max_concurrency, options.name is not None
            ),
            resources=as_resource_spec(options.resources) or DEFAULT_ACTOR_RESOURCES,
            # a restart is a new attempt of the actor's job, whether its process died or its worker was lost
            max_retries_failure=restarts,
            max_retries_preemption=restarts,
        )
        pool = ActorPool(self._resolver, name)
        serving = asyncio.ensure_future(pool.wait_for_size(1))
        ended = asyncio.ensure_future(self._aio.wait(job_id))
        try:
            await asyncio.wait((serving, ended), return_when=asyncio.FIRST_COMPLETED)
        finally:
            serving.cancel()
            ended.cancel()
        if serving.done() and not serving.cancelled() and serving.exception() is None:
            if pool.endpoints[0].job_id == job_id:
                if not detached:
                    self.ephemeral.append(job_id)
                return ActorHandle(name=name, _context=self._context, job_id=job_id)
            await self._aio.kill(job_id)  # another creator won the name
            return None
        try:
            await self._aio.result(job_id)
        except ActorNameTaken:
            return None
        raise JobFailed(f"actor job {job_id} ended before serving {name!r}", job_id=job_id)

    async def _until_unserved(self, name: str) -> None:
        with anyio.move_on_after(ENDPOINT_TTL_S + 2):  # withdrawn at exit, else expired by their TTL
            async for serving in registry.watch(self._aio.assets.endpoints, name):
                # an empty first view can be the watcher's marker overtaking the entries: read again to be sure
                if not serving and not await registry.endpoints(self._aio.assets.endpoints, name):
                    return

    def _existing(self, name: str, options: ActorOptions, serving: list[EndpointRecord]) -> ActorHandle:
        if not options.get_if_exists:
            raise ValueError(f"an actor named {name!r} already exists (use get_if_exists=True to reuse it)")
        return ActorHandle(name=name, _context=self._context, job_id=serving[0].job_id if len(serving) == 1 else None)
