"""Stored values among task arguments and results, and the walk that finds them.

``RemoteRef`` names an object in the namespace's object store. A caller puts RemoteRefs in a task's
arguments (also inside lists, tuples, sets and dict values) and the executor reads each one before the task
runs; a pool asked to store large results gets a RemoteRef back in place of each result over its limit.
Only the key and size cross the wire: ``lineage`` (how to compute the value again), ``owner`` (what keeps
the object from being deleted while a task needs it) and ``finalizer`` stay with the caller.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

PLAIN = frozenset({bytes, str, int, float, bool, type(None)})  # values that hold nothing to find or replace


def all_plain(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether every argument is a plain value (then there is nothing in them to walk)."""
    return all(type(a) in PLAIN for a in args) and all(type(v) in PLAIN for v in kwargs.values())


class RemoteRef:
    """An object in the object store, by key; ``lineage`` is ``(fn, args, kwargs, options)`` when a task made it."""

    __slots__ = ("key", "size", "lineage", "owner", "finalizer", "__weakref__")

    def __init__(self, key: str, size: int, lineage: Any = None, owner: Any = None) -> None:
        self.key = key
        self.size = size
        self.lineage = lineage
        self.owner = owner
        self.finalizer: weakref.finalize[Any, Any] | None = None

    def __reduce__(self) -> tuple[object, ...]:
        return (RemoteRef, (self.key, self.size))

    def __repr__(self) -> str:
        return f"RemoteRef({self.key!r}, size={self.size})"


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
