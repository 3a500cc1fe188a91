"""The job entrypoint behind a cluster context's actors: build the object, serve it by name until killed."""

from __future__ import annotations

from typing import Any

from fluster.graceful import run_async


def serve_actor(
    name: str, cls: type[Any], args: tuple[Any, ...], kwargs: dict[str, Any], max_concurrency: int, exclusive: bool
) -> None:
    """Serve ``cls(*args, **kwargs)`` as actor ``name``.

    Raises:
        ActorNameTaken: ``exclusive`` and the name is already served (the creator turns this into
            "get the existing one" or ValueError).
    """
    run_async(_serve, name, cls, args, kwargs, max_concurrency, exclusive)


async def _serve(
    name: str, cls: type[Any], args: tuple[Any, ...], kwargs: dict[str, Any], max_concurrency: int, exclusive: bool
) -> None:
    from fluster.actor.server import ActorServer
    from fluster.client.cluster import ClusterClient

    async with ClusterClient.connect() as client:
        server = ActorServer(client)
        (resolved,) = await server.values.resolve([(args, kwargs)])  # stored values among the arguments
        if isinstance(resolved, BaseException):
            raise resolved
        args, kwargs = resolved
        server.register(name, cls(*args, **kwargs), max_concurrency=max_concurrency, exclusive=exclusive)
        await server.serve()
