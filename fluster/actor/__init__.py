"""Actors: any Python object served by name over NATS request/reply, called one member at a time or broadcast.

``ActorServer`` serves objects; ``ClusterResolver`` finds them and gives ``ActorPool``s;
``fluster.actor.blocking`` is the blocking facade for scripts. See ``docs/actors.md``.
"""

from fluster.actor.broadcast import BroadcastResult, EndpointResult
from fluster.actor.pool import ActorClient, ActorPool
from fluster.actor.resolver import ClusterResolver
from fluster.actor.server import ActorContext, ActorServer
from fluster.errors import ActorCallTimeout, ActorError, ActorNameTaken, ActorNotFound, UnknownActorMethod
from fluster.protocol.actor_messages import EndpointRecord

__all__ = [
    "ActorCallTimeout",
    "ActorClient",
    "ActorContext",
    "ActorError",
    "ActorNameTaken",
    "ActorNotFound",
    "ActorPool",
    "ActorServer",
    "BroadcastResult",
    "ClusterResolver",
    "EndpointRecord",
    "EndpointResult",
    "UnknownActorMethod",
]
