"""The data plane's one envelope and one reference: how every value that a computation gives back crosses
the wire, and how a value that lives in the value store is named.

An *outcome* is ``[status, data, ref]`` (msgpack):

- ``OK``: ``data`` is the pickled value; when it was too large for a message, ``data`` is empty and ``ref``
  names where the bytes are (the receiver reads them, and the store drops an ephemeral copy once read);
- ``ERROR``: ``data`` is an encoded ``ErrorInfo`` (``ref`` as for ``OK`` when large);
- ``STORED``: the value stays in the store, and the receiver is given ``ref`` rather than the value (a large
  task result, which its caller reads only when it needs it).

It is an actor call's reply, a task's outcome (a batch reply is a list of them) and, pickled by the
stdlib-only bootstrap, what a job process leaves for its worker. A job's result is the same pair of
``data``/``ref`` in a ``Payload`` field of the job's record.

A ``ValueRef`` names a value in the value store (``fluster.bus.values``): the store (``DURABLE``, the object
store, with a TTL; ``EPHEMERAL``, the stream that carries large call arguments and replies, read once), the
key, the size in bytes and the chunk count. Only those four cross the wire; a caller-side ref also carries
``lineage`` (how to compute the value again), ``owner`` (what keeps it alive while a task needs it) and a
``finalizer``. A ``ValueRef`` may sit anywhere in a call's arguments (inside lists, tuples, sets and dict
values): whoever runs the call reads it (``find`` / ``replace`` walk them).

One inline limit (``inline_limit``) decides what travels inside a message, derived from the server's
``max_payload``, for jobs, actors and tasks alike.
"""

from __future__ import annotations

import pickle
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import cloudpickle
import msgpack

from fluster.errors import ProtocolError

T = TypeVar("T")

OK = 0
ERROR = 1
STORED = 2
STATUSES = (OK, ERROR, STORED)

DURABLE = "d"  # the object store: outlives the call; deleted by its owner, else by the bucket's TTL
EPHEMERAL = "e"  # the transfer stream: read once by the one receiver, reaped by the stream's max_age
MAX_KEY = 512
MAX_SIZE = 1 << 40

# What a message needs beside the value: the envelope, headers, a job record's other fields (attempts,
# request): half of the server's max_payload, so a value at the limit still fits in any of them. And never
# more than INLINE_MAX: larger messages hold up everything behind them on a connection (NATS delivers a
# subscription's messages in order), while the store's chunks interleave with other traffic.
INLINE_FRACTION = 2
INLINE_MAX = 512 * 1024

# Values of these types pickle the same with the standard pickler, which is ~7x cheaper per call than
# cloudpickle's; the receiver always uses pickle.loads, which reads both.
PLAIN = frozenset({bytes, str, int, float, bool, type(None)})


def inline_limit(max_payload: int) -> int:
    """The largest value (pickled) that travels inside a message; larger ones go through the value store."""
    return max(1024, min(INLINE_MAX, max_payload // INLINE_FRACTION))


# -- pickling values -----------------------------------------------------------------------------------


def all_plain(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether every argument is a plain value (then there is nothing in them to walk)."""
    return all(type(a) in PLAIN for a in args) and all(type(v) in PLAIN for v in kwargs.values())


def dumps_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """Pickle a call's arguments: plainly when they are all plain values, else with cloudpickle."""
    if all_plain(args, kwargs):
        return pickle.dumps((args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
    data: bytes = cloudpickle.dumps((args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
    return data


def dumps_value(value: Any) -> bytes:
    """Pickle a value, plainly when it is a plain value."""
    if type(value) in PLAIN:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    data: bytes = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return data


def loads(data: bytes) -> Any:
    return pickle.loads(data)


# -- the reference -------------------------------------------------------------------------------------


class ValueRef:
    """A value in the value store, by store, key, size and chunk count (see the module docstring)."""

    __slots__ = ("store", "key", "size", "chunks", "lineage", "owner", "finalizer", "__weakref__")

    def __init__(
        self, key: str, size: int, store: str = DURABLE, chunks: int = 0, lineage: Any = None, owner: Any = None
    ) -> None:
        self.key = key
        self.size = size
        self.store = store
        self.chunks = chunks
        self.lineage = lineage
        self.owner = owner
        self.finalizer: weakref.finalize[Any, Any] | None = None

    def __reduce__(self) -> tuple[object, ...]:
        return (ValueRef, (self.key, self.size, self.store, self.chunks))

    def __repr__(self) -> str:
        return f"ValueRef({self.key!r}, size={self.size}, store={self.store!r})"

    def wire(self) -> list[Any]:
        return [self.store, self.key, self.size, self.chunks]

    @classmethod
    def from_wire(cls, fields: Any) -> ValueRef:
        """Raises: ProtocolError: not a reference, or one naming an impossible value."""
        if not isinstance(fields, list | tuple) or len(fields) != 4:
            raise ProtocolError("malformed value reference: expected [store, key, size, chunks]")
        store, key, size, chunks = fields
        if (
            store not in (DURABLE, EPHEMERAL)
            or not isinstance(key, str)
            or not 0 < len(key) <= MAX_KEY
            or not isinstance(size, int)
            or not isinstance(chunks, int)
            or not 0 <= size <= MAX_SIZE
            or not 0 <= chunks <= size + 1
        ):
            raise ProtocolError(f"value reference {str(fields)[:100]} names an impossible value")
        return cls(key, size, store, chunks)


def find(value: Any, kind: type[T] | tuple[type, ...]) -> list[T]:
    """Every instance of ``kind`` in ``value``, looking inside lists, tuples, sets and dict values."""
    found: list[Any] = []
    _find(value, kind, found)
    return found


def replace(value: Any, kind: type[T] | tuple[type, ...], fn: Callable[[T], Any]) -> Any:
    """``value`` with every instance of ``kind`` (inside lists, tuples, sets and dict values) replaced by
    ``fn(instance)``."""
    if isinstance(value, kind):
        return fn(value)  # type: ignore[arg-type]
    kind_of = type(value)
    if kind_of in (list, tuple, set):
        return kind_of(replace(v, kind, fn) for v in value)
    if kind_of is dict:
        return {k: replace(v, kind, fn) for k, v in value.items()}
    return value


def _find(value: Any, kind: type | tuple[type, ...], found: list[Any]) -> None:
    if isinstance(value, kind):
        found.append(value)
    elif type(value) in (list, tuple, set):
        for item in value:
            _find(item, kind, found)
    elif type(value) is dict:
        for item in value.values():
            _find(item, kind, found)


# -- the envelope --------------------------------------------------------------------------------------


class Outcome(NamedTuple):
    status: int
    data: bytes
    ref: ValueRef | None = None

    def packed(self) -> list[Any]:
        return [self.status, self.data, self.ref.wire() if self.ref is not None else None]


def ok(value: Any) -> Outcome:
    return Outcome(OK, dumps_value(value))


def failure(exc: BaseException) -> Outcome:
    from fluster.errors import to_wire
    from fluster.protocol.codec import encode

    return Outcome(ERROR, encode(to_wire(exc)))


def encode_outcome(outcome: Outcome) -> bytes:
    data: bytes = msgpack.packb(outcome.packed(), use_bin_type=True)
    return data


def decode_outcome(data: bytes, statuses: tuple[int, ...] = STATUSES) -> Outcome:
    """Raises: ProtocolError: the bytes are not an outcome (or one of another status than ``statuses``)."""
    return unpack_outcome(unpack(data, "outcome"), statuses)


def unpack_outcome(fields: Any, statuses: tuple[int, ...] = STATUSES) -> Outcome:
    if not isinstance(fields, list | tuple) or len(fields) != 3:
        raise ProtocolError("malformed outcome: expected [status, data, ref]")
    status, body, ref = fields
    if status not in statuses or not isinstance(body, bytes) or (status == STORED and ref is None):
        raise ProtocolError("malformed outcome: unknown status, data that is not bytes, or STORED without a ref")
    return Outcome(status, body, ValueRef.from_wire(ref) if ref is not None else None)


def value_of(outcome: Outcome) -> Any:
    """The value an inline outcome stands for (a ``ValueRef`` when it was STORED), or raise its exception (its
    own type, with the remote traceback as ``__cause__``)."""
    if outcome.status == OK:
        return pickle.loads(outcome.data)
    if outcome.status == STORED:
        assert outcome.ref is not None
        return outcome.ref
    from fluster.errors import from_wire
    from fluster.protocol.codec import decode
    from fluster.protocol.messages import ErrorInfo

    raise from_wire(decode(outcome.data, ErrorInfo))


def unpack(data: bytes, what: str) -> Any:
    """msgpack ``data`` as Python values (arrays as lists).

    Raises:
        ProtocolError: it is not msgpack.
    """
    try:
        return msgpack.unpackb(data, raw=False)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ProtocolError(f"cannot decode {what}: {exc}") from exc
