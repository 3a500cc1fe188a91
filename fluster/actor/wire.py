"""The actor call envelope: one compact msgpack array per request and per reply, no pydantic on the hot path.

Request: ``[method, args, ref]`` where ``args`` is ``cloudpickle((args, kwargs))``, or empty with ``ref``
naming the transfer that holds it when it is larger than a message can carry; a fourth element, a call id,
makes the call *tracked* (``fluster.actor.calls``): the server runs it once however often it is sent, keeps
its reply for a while, and answers ``PROBE`` requests about it.
Reply: ``[status, data, ref]``; ``status`` is ``OK`` (``data`` is the pickled result) or ``ERROR`` (``data``
is an encoded ``ErrorInfo``); ``ref`` again names a transfer for a large ``data``. A probe is answered with
the call's own reply when it has finished, else ``RUNNING`` or ``UNKNOWN`` (never received, or forgotten).
"""

from __future__ import annotations

import pickle
from typing import Any, NamedTuple

import cloudpickle
import msgpack

from fluster.errors import ProtocolError

OK = 0
ERROR = 1
RUNNING = 2  # probe answers
UNKNOWN = 3

PROBE = "__fluster_probe__"  # the method of a probe request (no actor method can start with "_")
MAX_CALL_ID = 64

# Room left in a message for the envelope and headers around a blob-sized value.
ENVELOPE_ROOM = 4096


# Values of these types pickle the same with the standard pickler, which is ~7x cheaper per call than
# cloudpickle's; the receiver always uses pickle.loads, which reads both.
_PLAIN = frozenset({bytes, str, int, float, bool, type(None)})


def dumps_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """Pickle a call's arguments: plainly when they are all plain values, else with cloudpickle."""
    if all(type(a) in _PLAIN for a in args) and all(type(v) in _PLAIN for v in kwargs.values()):
        return pickle.dumps((args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
    data: bytes = cloudpickle.dumps((args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
    return data


def dumps_value(value: Any) -> bytes:
    """Pickle a result, plainly when it is a plain value."""
    if type(value) in _PLAIN:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    data: bytes = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return data


def loads(data: bytes) -> Any:
    return pickle.loads(data)


class Call(NamedTuple):
    method: str
    args: bytes
    ref: str | None
    call_id: str | None


def encode_request(method: str, args: bytes, ref: str | None = None, call_id: str | None = None) -> bytes:
    fields = (method, args, ref) if call_id is None else (method, args, ref, call_id)
    data: bytes = msgpack.packb(fields, use_bin_type=True)
    return data


def decode_request(data: bytes) -> Call:
    """Split a request into method name, pickled arguments, transfer reference and call id.

    Raises:
        ProtocolError: the bytes are not an actor request.
    """
    fields = _unpack(data, "actor request", (3, 4))
    method, args, ref = fields[:3]
    call_id = fields[3] if len(fields) == 4 else None
    if (
        not isinstance(method, str)
        or not isinstance(args, bytes)
        or not isinstance(ref, str | None)
        or not isinstance(call_id, str | None)
        or (call_id is not None and not 0 < len(call_id) <= MAX_CALL_ID)
    ):
        raise ProtocolError(
            "malformed actor request: expected [method: str, args: bytes, ref: str | None, call id: str]"
        )
    return Call(method, args, ref, call_id)


def encode_reply(status: int, data: bytes, ref: str | None = None) -> bytes:
    out: bytes = msgpack.packb((status, data, ref), use_bin_type=True)
    return out


def decode_reply(data: bytes) -> tuple[int, bytes, str | None]:
    """Split a reply into status, data and blob reference.

    Raises:
        ProtocolError: the bytes are not an actor reply.
    """
    status, body, ref = _unpack(data, "actor reply", (3,))
    if status not in (OK, ERROR, RUNNING, UNKNOWN) or not isinstance(body, bytes) or not isinstance(ref, str | None):
        raise ProtocolError("malformed actor reply")
    return status, body, ref


def _unpack(data: bytes, what: str, sizes: tuple[int, ...]) -> tuple[Any, ...]:
    try:
        fields = msgpack.unpackb(data, raw=False, use_list=False)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ProtocolError(f"cannot decode {what}: {exc}") from exc
    if not isinstance(fields, tuple) or len(fields) not in sizes:
        raise ProtocolError(f"cannot decode {what}: expected an array of {' or '.join(map(str, sizes))} elements")
    return fields
