"""Running a task batch (its wire format is ``fluster.protocol.tasks``): the function cache both sides keep,
and the loop that runs a batch's tasks and turns each into an outcome."""

from __future__ import annotations

import asyncio
import inspect
import pickle
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any

import cloudpickle

from fluster.cancel import Running
from fluster.protocol.tasks import TaskSpec
from fluster.protocol.values import Outcome, failure, ok

CACHE_SIZE = 512


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


def run_tasks(
    tasks: list[TaskSpec],
    running: Running | None = None,
    batch_id: str = "",
    in_thread: bool = True,
    stream: Callable[[Any], Any] | None = None,
) -> tuple[list[Outcome], float]:
    """Run the tasks in this thread, in order: their outcomes and the seconds they took. With ``running``,
    each runs as the task ``(batch_id, index)`` there, so that it can be cancelled (``in_thread=False``, on
    an event loop: only before it starts). A task that returns a generator gives ``stream(generator)``
    (its handle) as its value, when ``stream`` is given."""
    start = time.perf_counter()
    if running is None or not (in_thread or running.cancels_waiting()):  # the hot path: nothing to cancel
        outcomes = [_run_one(fn, args, kwargs, stream) for fn, args, kwargs in tasks]
    else:
        outcomes = [
            _run_one(running.run, ((batch_id, i), partial(fn, *args, **kwargs), in_thread), {}, stream)
            for i, (fn, args, kwargs) in enumerate(tasks)
        ]
    return outcomes, time.perf_counter() - start


def _run_one(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], stream: Callable[[Any], Any] | None
) -> Outcome:
    try:
        value = fn(*args, **kwargs)
        if inspect.isawaitable(value):
            value = asyncio.run(_wait(value))
        elif stream is not None and (inspect.isgenerator(value) or inspect.isasyncgen(value)):
            value = stream(value)
    except Exception as exc:
        return failure(exc)
    try:
        return ok(value)
    except Exception as exc:
        kind = type(value).__name__
        return failure(TypeError(f"the task's return value of type {kind} cannot be pickled: {exc}"))


async def _wait(value: Any) -> Any:
    return await value
