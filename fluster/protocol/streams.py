"""Streamed results: a generator's items pulled by its caller from the server that runs it.

A task or actor method that returns a generator (sync or async) is answered with a ``StreamHandle`` (inside
an ``OK`` outcome, like any value): the subject of the server that drives it and the stream's id. The caller
then calls ``STREAM_NEXT(stream_id, want)`` on that subject, which answers a chunk, msgpack
``[outcomes, ended]`` (sent as it is: ``Encoded``): up to ``want`` items as outcomes
(``fluster.protocol.values``; a failure is the generator's exception, and the last item), and whether the
stream has ended. ``STREAM_CLOSE(stream_id)`` gives a stream up. Both are control
methods: answered at once, outside the actor's ``max_concurrency``.

Back-pressure: the server keeps at most ``STREAM_WINDOW`` produced items that nobody has pulled; the
generator waits (in its thread, or its task) while the window is full. A pull waits at most ``PULL_WAIT_S``
for an item and otherwise answers ``[[], false]``, so no request waits on a slow generator for longer than
that; a stream nobody pulls for ``STREAM_IDLE_S`` is closed (its generator's ``close()`` runs).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from fluster.errors import ProtocolError
from fluster.protocol.values import Outcome, unpack, unpack_outcome

STREAM_NEXT = "__fluster_stream_next__"
STREAM_CLOSE = "__fluster_stream_close__"
STREAM_METHODS = frozenset({STREAM_NEXT, STREAM_CLOSE})

STREAM_WINDOW = 256
PULL_WAIT_S = 5.0
STREAM_IDLE_S = 60.0
MAX_STREAM_ID = 64


@dataclass(frozen=True)
class StreamHandle:
    """Where a streamed result's items are pulled from: a server's own subject, and the stream there."""

    subject: str
    stream_id: str


def encode_chunk(outcomes: list[Outcome], ended: bool) -> bytes:
    data: bytes = msgpack.packb([[o.packed() for o in outcomes], ended], use_bin_type=True)
    return data


def decode_chunk(data: bytes) -> tuple[list[Outcome], bool]:
    """The items of a chunk and whether the stream has ended.

    Raises:
        ProtocolError: not a chunk.
    """
    fields = unpack(data, "stream chunk")
    if not isinstance(fields, list) or len(fields) != 2 or not isinstance(fields[0], list):
        raise ProtocolError("malformed stream chunk: expected [outcomes, ended]")
    if not isinstance(fields[1], bool):
        raise ProtocolError("malformed stream chunk: ended is not a bool")
    return [unpack_outcome(o) for o in fields[0]], fields[1]
