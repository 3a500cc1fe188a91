"""Futures and object refs inside task arguments: find them, wait for them, and replace them by their values.

Arguments are walked through lists, tuples, sets and dict values, the containers a user builds by hand;
anything else is passed as is.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

Args = tuple[tuple[Any, ...], dict[str, Any]]


def dependencies(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[concurrent.futures.Future[Any]]:
    """Every future found in the arguments."""
    found: list[concurrent.futures.Future[Any]] = []
    _walk(args, found)
    _walk(kwargs, found)
    return found


def substitute(value: Any, load: Callable[[Any], Any] | None = None) -> Any:
    """``value`` with each ref replaced by ``load(ref)`` (when given), else each future by its result.

    Refs are loaded in the caller's thread (a load may block on I/O); futures are replaced only once they
    are done, so that never blocks. A failed future raises its exception.
    """
    from fluster.context.api import ObjectRef

    if load is None and isinstance(value, concurrent.futures.Future):
        return value.result()
    if load is not None and isinstance(value, ObjectRef):
        return load(value)
    if type(value) in (list, tuple, set):
        return type(value)(substitute(v, load) for v in value)
    if type(value) is dict:
        return {k: substitute(v, load) for k, v in value.items()}
    return value


def when_done(futures: list[concurrent.futures.Future[Any]], then: Callable[[], None]) -> None:
    """Call ``then()`` (in whichever thread completes the last one) once every future is done."""
    if not futures:
        then()
        return
    remaining = [len(futures)]
    lock = threading.Lock()

    def one_done(_: concurrent.futures.Future[Any]) -> None:
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        if last:
            then()

    for future in futures:
        future.add_done_callback(one_done)


def chain(source: concurrent.futures.Future[Any], target: concurrent.futures.Future[Any]) -> None:
    """Complete ``target`` as ``source`` completes."""

    def copy(done: concurrent.futures.Future[Any]) -> None:
        if target.done():
            return
        if done.cancelled():
            target.cancel()
        elif (error := done.exception()) is not None:
            target.set_exception(error)
        else:
            target.set_result(done.result())

    source.add_done_callback(copy)


def _walk(value: Any, found: list[concurrent.futures.Future[Any]]) -> None:
    if isinstance(value, concurrent.futures.Future):
        found.append(value)
    elif type(value) in (list, tuple, set):
        for item in value:
            _walk(item, found)
    elif type(value) is dict:
        for item in value.values():
            _walk(item, found)
