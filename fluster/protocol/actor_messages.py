"""The actor system's KV record: what the ``endpoints`` bucket holds for each live actor endpoint.

Key layout in the namespace's endpoints bucket (see ``docs/actors.md``):

- ``<name>.<endpoint_id>``: one entry per serving endpoint, refreshed by its server's heartbeat; it expires by
  the bucket TTL when the server's process dies, and is deleted when the server stops.
- ``<name>``: the exclusive claim of a name, present only while an ``exclusive=True`` registration holds it.

Call requests and replies do not use pydantic: their compact envelope lives in ``fluster.protocol.calls``.
"""

from __future__ import annotations

from pydantic import Field

from fluster.protocol.message_base import Message


class EndpointRecord(Message):
    """One live endpoint of an actor: who serves it, where to reach it directly, and when it was last seen."""

    name: str
    endpoint_id: str
    subject: str  # the endpoint's own subject, for direct and broadcast calls
    job_id: str | None = None
    worker_id: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    exclusive: bool = False
    registered_ms: int
    refreshed_ms: int


def endpoint_key(name: str, endpoint_id: str) -> str:
    """The endpoints-bucket key of one endpoint."""
    return f"{name}.{endpoint_id}"


def endpoints_pattern(name: str) -> str:
    """The key pattern that matches every endpoint of actor ``name`` (and not its claim key)."""
    return f"{name}.*"


def claim_key(name: str) -> str:
    """The endpoints-bucket key an exclusive registration creates to hold ``name``."""
    return name
