"""Futures and object refs inside task arguments: find them, wait for them, and replace them by their values.

Arguments are walked through lists, tuples, sets and dict values, the containers a user builds by hand
(``fluster.protocol.values.find`` / ``replace``); anything else is passed as is.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

from fluster.protocol.values import PLAIN, find, replace

Args = tuple[tuple[Any, ...], dict[str, Any]]
Future = concurrent.futures.Future


def dependencies(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Future[Any]]:
    """Every future found in the arguments."""
    return find((args, kwargs), Future)


def substitute(value: Any, load: Callable[[Any], Any] | None = None) -> Any:
    """``value`` with each ref replaced by ``load(ref)`` (when given), else each future by its result.

    Refs are loaded in the caller's thread (a load may block on I/O); futures are replaced only once they
    are done, so that never blocks. A failed future raises its exception. A future's result is taken as
    stored (``raw_result``): a backend whose futures load a stored value on ``result()`` passes the stored
    reference on instead, for the task's executor to read.
    """
    from fluster.context.handles import ObjectRef

    if load is None:
        return replace(value, Future, raw_result)
    return replace(value, ObjectRef, load)


def raw_result(future: Future[Any]) -> Any:
    """``future``'s result as it was set, bypassing a subclass's ``result`` (which may load it)."""
    return Future.result(future)


def captured_futures(fn: Callable[..., Any]) -> list[Future[Any]]:
    """The futures a function closes over (its closure cells and default arguments, and inside the lists,
    tuples, sets and dicts there), which a task must wait for before it is pickled and sent."""
    cells = getattr(fn, "__closure__", None) or ()
    held: list[Any] = []
    for cell in cells:
        try:
            held.append(cell.cell_contents)
        except ValueError:  # a cell not yet filled
            continue
    held.extend(getattr(fn, "__defaults__", None) or ())
    held.extend((getattr(fn, "__kwdefaults__", None) or {}).values())
    if not held or all(type(h) in PLAIN for h in held):
        return []
    return find(held, Future)


def when_done(futures: list[Future[Any]], then: Callable[[], None]) -> None:
    """Call ``then()`` (in whichever thread completes the last one) once every future is done."""
    if not futures:
        then()
        return
    remaining = [len(futures)]
    lock = threading.Lock()

    def one_done(_: Future[Any]) -> None:
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        if last:
            then()

    for future in futures:
        future.add_done_callback(one_done)


def chain(source: Future[Any], target: Future[Any]) -> None:
    """Complete ``target`` as ``source`` completes (with its result as stored: see ``raw_result``)."""

    def copy(done: Future[Any]) -> None:
        if target.done():
            return
        if done.cancelled():
            target.cancel()
        elif (error := done.exception()) is not None:
            target.set_exception(error)
        else:
            target.set_result(raw_result(done))

    source.add_done_callback(copy)
