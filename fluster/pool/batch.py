"""The task batch wire format between a ``WorkerPool`` and its executors (pure: no I/O).

A batch is ``pickle((functions, calls, store_over))``: ``functions`` is a list of pickled functions (each
pickled once per pool and cached by ``FunctionCache``, since cloudpickling a function by value costs far more
than a no-op task), ``calls`` is the pickled list of ``(function_index, args, kwargs)``, with the standard
pickler when every argument is a plain value and cloudpickle otherwise, and ``store_over`` (or None) asks the
executor to put each result whose pickle is larger into the object store. The reply is one pickle of
``(elapsed_s, [(status, data), ...])``: per task the pickled value (``OK``), an encoded ``ErrorInfo``
(``ERROR``), or the pickled ``(key, size)`` of the stored value (``STORED``).
"""

from __future__ import annotations

import inspect
import pickle
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import cloudpickle

from fluster.errors import from_wire, to_wire
from fluster.pool.remote import PLAIN, RemoteRef, all_plain
from fluster.protocol.codec import decode, encode
from fluster.protocol.messages import ErrorInfo

OK = 0
ERROR = 1
STORED = 2
CACHE_SIZE = 512

TaskSpec = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]
Outcome = tuple[int, bytes]


class FunctionCache:
    """Pickled functions by identity (LRU), and unpickled ones by their bytes; both bounded.

    Only functions without a closure are cached on the sending side, so a closure's current captured
    values are always what runs.
    """

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._size = size
        self._pickled: OrderedDict[int, tuple[Callable[..., Any], bytes]] = OrderedDict()
        self._loaded: OrderedDict[bytes, Callable[..., Any]] = OrderedDict()

    def dumps(self, fn: Callable[..., Any]) -> bytes:
        found = self._pickled.get(id(fn))
        if found is not None and found[0] is fn:
            return found[1]
        data: bytes = cloudpickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
        if getattr(fn, "__closure__", None) is None:
            self._pickled[id(fn)] = (fn, data)  # holding fn keeps its id from being reused
            if len(self._pickled) > self._size:
                self._pickled.popitem(last=False)
        return data

    def loads(self, data: bytes) -> Callable[..., Any]:
        fn = self._loaded.get(data)
        if fn is None:
            fn = pickle.loads(data)
            self._loaded[data] = fn
            if len(self._loaded) > self._size:
                self._loaded.popitem(last=False)
        return fn


def encode_batch(tasks: Sequence[TaskSpec], cache: FunctionCache, store_over: int | None = None) -> bytes:
    functions: list[bytes] = []
    index: dict[int, int] = {}
    calls = []
    plain = True
    for fn, args, kwargs in tasks:
        i = index.get(id(fn))
        if i is None:
            i = index[id(fn)] = len(functions)
            functions.append(cache.dumps(fn))
        calls.append((i, args, kwargs))
        if plain:
            plain = all_plain(args, kwargs)
    if plain:
        encoded = pickle.dumps(calls, protocol=pickle.HIGHEST_PROTOCOL)
    else:
        encoded = cloudpickle.dumps(calls, protocol=pickle.HIGHEST_PROTOCOL)
    return pickle.dumps((functions, encoded, store_over), protocol=pickle.HIGHEST_PROTOCOL)


def decode_batch(data: bytes, cache: FunctionCache) -> tuple[list[TaskSpec], int | None]:
    """The tasks, and the size above which their results are to be stored (None: never)."""
    functions, encoded, store_over = pickle.loads(data)
    loaded = [cache.loads(f) for f in functions]
    return [(loaded[i], args, kwargs) for i, args, kwargs in pickle.loads(encoded)], store_over


def failed_batch(exc: BaseException) -> bytes:
    """The outcome of a batch that could not be decoded (every task fails with ``exc``)."""
    return encode_outcomes(0.0, [error_outcome(exc)])


def error_outcome(exc: BaseException) -> Outcome:
    return ERROR, encode(to_wire(exc))


def stored_outcome(key: str, size: int) -> Outcome:
    return STORED, pickle.dumps((key, size), protocol=pickle.HIGHEST_PROTOCOL)


def run_tasks(tasks: list[TaskSpec]) -> tuple[list[Outcome], float]:
    """Run the tasks in this thread, in order: their outcomes and the seconds they took."""
    start = time.perf_counter()
    outcomes = [_run_one(fn, args, kwargs) for fn, args, kwargs in tasks]
    return outcomes, time.perf_counter() - start


def encode_outcomes(elapsed_s: float, outcomes: list[Outcome]) -> bytes:
    return pickle.dumps((elapsed_s, outcomes), protocol=pickle.HIGHEST_PROTOCOL)


def decode_outcomes(data: bytes, count: int) -> tuple[float, list[Outcome]]:
    """The elapsed time and one outcome per task; a batch that failed as a whole gives its error to each."""
    elapsed, outcomes = pickle.loads(data)
    if len(outcomes) == 1 and count > 1:
        outcomes = outcomes * count
    return float(elapsed), outcomes


def outcome_value(outcome: Outcome) -> Any:
    """The task's return value (a ``RemoteRef`` when it was stored), or raise its exception (its own type,
    remote traceback as ``__cause__``)."""
    status, data = outcome
    if status == OK:
        return pickle.loads(data)
    if status == STORED:
        key, size = pickle.loads(data)
        return RemoteRef(key, size)
    raise from_wire(decode(data, ErrorInfo))


def _run_one(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Outcome:
    try:
        value = fn(*args, **kwargs)
        if inspect.isawaitable(value):
            value = _run_awaitable(value)
    except Exception as exc:
        return error_outcome(exc)
    try:
        if type(value) in PLAIN:
            return OK, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        return OK, cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        kind = type(value).__name__
        return error_outcome(TypeError(f"the task's return value of type {kind} cannot be pickled: {exc}"))


def _run_awaitable(value: Any) -> Any:
    import asyncio

    async def wait() -> Any:
        return await value

    return asyncio.run(wait())
