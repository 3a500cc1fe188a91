"""The actor call: one compact msgpack array per request, an outcome (``fluster.protocol.values``) per reply,
no pydantic on the hot path.

Request: ``[method, args, ref]`` where ``args`` is ``dumps_args(args, kwargs)``, or empty with ``ref`` (a
``ValueRef`` in the ephemeral store) naming where it is when it is larger than a message can carry; a fourth
element, a call id, makes the call *tracked* (``fluster.actor.calls``): the server runs it once however often
it is sent, keeps its reply for a while, and answers ``PROBE`` requests about it. A probe is answered with
the call's own reply when it has finished, else ``[RUNNING]`` or ``[UNKNOWN]`` outcomes (never received, or
forgotten).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgpack

from fluster.errors import ProtocolError
from fluster.protocol.values import STATUSES, Outcome, ValueRef, encode_outcome, unpack, unpack_outcome

RUNNING = 3  # probe answers
UNKNOWN = 4
REPLY_STATUSES = (*STATUSES, RUNNING, UNKNOWN)

PROBE = "__fluster_probe__"  # the method of a probe request (no actor method can start with "_")
MAX_CALL_ID = 64
MAX_METHOD = 256


class Call(NamedTuple):
    method: str
    args: bytes
    ref: ValueRef | None
    call_id: str | None


def encode_request(method: str, args: bytes, ref: ValueRef | None = None, call_id: str | None = None) -> bytes:
    wire_ref = ref.wire() if ref is not None else None
    fields = (method, args, wire_ref) if call_id is None else (method, args, wire_ref, call_id)
    data: bytes = msgpack.packb(fields, use_bin_type=True)
    return data


def decode_request(data: bytes) -> Call:
    """Split a request into method name, pickled arguments, where large ones are, and call id.

    Raises:
        ProtocolError: the bytes are not an actor request.
    """
    fields: Any = unpack(data, "actor request")
    if not isinstance(fields, list) or len(fields) not in (3, 4):
        raise ProtocolError("cannot decode actor request: expected an array of 3 or 4 elements")
    method, args, ref = fields[:3]
    call_id = fields[3] if len(fields) == 4 else None
    if (
        not isinstance(method, str)
        or not 0 < len(method) <= MAX_METHOD
        or not isinstance(args, bytes)
        or not isinstance(call_id, str | None)
        or (call_id is not None and not 0 < len(call_id) <= MAX_CALL_ID)
    ):
        raise ProtocolError(
            "malformed actor request: expected [method: str, args: bytes, ref: ValueRef | None, call id: str]"
        )
    return Call(method, args, ValueRef.from_wire(ref) if ref is not None else None, call_id)


def encode_reply(outcome: Outcome) -> bytes:
    return encode_outcome(outcome)


def probe_answer(status: int) -> bytes:
    return encode_outcome(Outcome(status, b""))


def decode_reply(data: bytes) -> Outcome:
    """Raises: ProtocolError: the bytes are not an actor reply."""
    return unpack_outcome(unpack(data, "actor reply"), REPLY_STATUSES)
