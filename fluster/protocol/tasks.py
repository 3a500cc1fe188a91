"""The task batch between a ``WorkerPool`` and its executors (pure: no I/O).

A batch is msgpack ``[functions, calls, store_over, batch_id]``: ``functions`` is a list of pickled functions (each
pickled once per pool and cached by the pool's ``FunctionCache``, since cloudpickling a function by value costs
far more than a no-op task), ``calls`` is the pickled list of ``(function_index, args, kwargs)``, with the
standard pickler when every argument is a plain value and cloudpickle otherwise, and ``store_over`` (or None)
asks the executor to put each result whose pickle is larger into the value store; ``batch_id`` names the
batch, so that one of its tasks can be cancelled as ``(batch_id, index)``. The reply is msgpack
``[elapsed_s, outcomes]``: one outcome (``fluster.protocol.values``) per task, ``STORED`` for a result left
in the store. The executor returns it ``Encoded``, so the actor layer sends it as it is: a task's result is
pickled once on its way back.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import cloudpickle
import msgpack

from fluster.errors import ProtocolError
from fluster.protocol.values import Outcome, all_plain, unpack, unpack_outcome

MAX_BATCH_ID = 64

TaskSpec = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class Encoded(NamedTuple):
    """A method's return value already in its wire form: the actor server sends ``data`` as the reply's data
    without pickling it (the caller asked for it raw)."""

    data: bytes


def encode_batch(
    tasks: Sequence[TaskSpec],
    dumps_fn: Callable[[Callable[..., Any]], bytes],
    store_over: int | None = None,
    batch_id: str = "",
) -> bytes:
    functions: list[bytes] = []
    index: dict[int, int] = {}
    calls = []
    plain = True
    for fn, args, kwargs in tasks:
        i = index.get(id(fn))
        if i is None:
            i = index[id(fn)] = len(functions)
            functions.append(dumps_fn(fn))
        calls.append((i, args, kwargs))
        if plain:
            plain = all_plain(args, kwargs)
    if plain:
        encoded = pickle.dumps(calls, protocol=pickle.HIGHEST_PROTOCOL)
    else:
        encoded = cloudpickle.dumps(calls, protocol=pickle.HIGHEST_PROTOCOL)
    data: bytes = msgpack.packb([functions, encoded, store_over, batch_id], use_bin_type=True)
    return data


class Batch(NamedTuple):
    tasks: list[TaskSpec]
    store_over: int | None  # results whose pickle is larger go to the value store (None: never)
    batch_id: str


def decode_batch(data: bytes, loads_fn: Callable[[bytes], Callable[..., Any]]) -> Batch:
    """The tasks, the size above which their results are to be stored, and the batch's id.

    Raises:
        ProtocolError: not a batch. (Unpickling errors, such as a module the executor cannot import, are
            raised as they are.)
    """
    fields = unpack(data, "task batch")
    if (
        not isinstance(fields, list)
        or len(fields) != 4
        or not isinstance(fields[0], list)
        or not all(isinstance(f, bytes) for f in fields[0])
        or not isinstance(fields[1], bytes)
        or not isinstance(fields[2], int | None)
        or not isinstance(fields[3], str)
        or len(fields[3]) > MAX_BATCH_ID
    ):
        raise ProtocolError("malformed task batch: expected [functions, calls, store_over, batch_id]")
    functions, encoded, store_over, batch_id = fields
    loaded = [loads_fn(f) for f in functions]
    return Batch([(loaded[i], args, kwargs) for i, args, kwargs in pickle.loads(encoded)], store_over, batch_id)


def encode_outcomes(elapsed_s: float, outcomes: list[Outcome]) -> bytes:
    data: bytes = msgpack.packb([elapsed_s, [o.packed() for o in outcomes]], use_bin_type=True)
    return data


def decode_outcomes(data: bytes, count: int) -> tuple[float, list[Outcome]]:
    """The elapsed time and one outcome per task; a batch that failed as a whole gives its error to each.

    Raises:
        ProtocolError: not a batch reply, or one with another number of outcomes.
    """
    fields = unpack(data, "task batch reply")
    if not isinstance(fields, list) or len(fields) != 2 or not isinstance(fields[1], list):
        raise ProtocolError("malformed task batch reply: expected [elapsed, outcomes]")
    elapsed, packed = fields
    outcomes = [unpack_outcome(o) for o in packed]
    if len(outcomes) == 1 and count > 1:
        outcomes = outcomes * count
    if len(outcomes) != count or not isinstance(elapsed, int | float):
        raise ProtocolError(f"a task batch reply holds {len(outcomes)} outcomes for {count} tasks")
    return float(elapsed), outcomes
