"""What the ray backend runs inside Ray: ``run_task`` (every task) and ``ActorHost`` (every actor), and the
form values take in Ray's object store.

User callables, arguments and results cross Ray as fluster's own cloudpickle bytes, so that what works on
the other backends works here (``cloudpickle.register_pickle_by_value``, classes defined in tests or
notebooks, exceptions that come back as the caller's own class). A stored value (a ``put`` object, a task's
result) is the tuple ``(pickle, [Ray objects])``: the refs it holds (in lists, tuples, sets, dict values)
are taken out of the pickle (``RefSlot``) so that Ray sees them and keeps them alive for whoever gets the
value (Ray counts references only through its own serializer). Stored values passed to a task travel as its
top-level Ray arguments, which Ray resolves on the node that runs it; the payload names them by position
(``Slot``). A user exception travels as ``Failed`` (its ``to_wire`` form), so Ray counts the task as failed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import cloudpickle

from fluster.context.current import job_context
from fluster.context.handles import ObjectRef
from fluster.errors import from_wire, to_wire
from fluster.protocol.codec import decode, encode
from fluster.protocol.messages import ErrorInfo
from fluster.protocol.values import replace

Stored = tuple[bytes, list[Any]]  # a value in Ray's object store: its pickle, and the Ray objects it holds


@dataclass(frozen=True)
class Slot:
    """In a call's payload: the value stored in its ``index``-th Ray argument."""

    index: int


@dataclass(frozen=True)
class RefSlot:
    """In a stored value's pickle: an ``ObjectRef`` of the value's ``index``-th Ray object."""

    index: int
    size: int


class Failed(Exception):  # noqa: N818 - an envelope, never raised to users: the caller unwraps it (reraise)
    """A user exception on its way back through Ray: ``info`` is its encoded ``ErrorInfo``."""

    def __init__(self, info: bytes) -> None:
        super().__init__("a fluster task on Ray raised an exception")
        self.info = info

    def __reduce__(self) -> tuple[object, ...]:
        return (Failed, (self.info,))

    def reraise_as(self) -> BaseException:
        """The user's exception, rebuilt (its own type, the remote traceback as its ``__cause__``)."""
        return from_wire(decode(self.info, ErrorInfo))


def run_task(namespace: str | None, payload: bytes, *stored: Stored) -> Stored:
    """Run the pickled ``(fn, args, kwargs)`` with each ``Slot`` replaced by its stored value; the result,
    stored. Inside, ``get_job_context()`` is a ray context of the same namespace (nested tasks)."""
    return _guarded(namespace, lambda: _call(*unpack(payload, stored)))


def stream_task(namespace: str | None, payload: bytes, *stored: Stored) -> Iterator[Stored]:
    """``run_task`` for a generator function, run as Ray's streaming generator: each item, stored, as it is
    produced (Ray holds the generator back when its consumer lags)."""
    yield from _streamed(namespace, lambda: _call(*unpack(payload, stored)))  # a generator, as Ray requires


class ActorHost:
    """Serves one user object: ``call(method, payload, *stored)`` runs ``obj.method(*args, **kwargs)``."""

    def __init__(self, namespace: str | None, token: str, payload: bytes) -> None:
        self._namespace = namespace
        self._token = token
        cls, args, kwargs = unpack(payload, ())
        self._instance = _in_context(namespace, lambda: cls(*args, **kwargs))

    def token(self) -> str:
        """The creator's token: tells the context that created this actor from those that only found it."""
        return self._token

    def call(self, method: str, payload: bytes, *stored: Stored) -> Stored:
        def invoke() -> Any:
            args, kwargs = unpack(payload, stored)
            if method.startswith("_"):
                raise AttributeError(f"{type(self._instance).__name__}.{method}: actors serve public methods only")
            return getattr(self._instance, method)(*args, **kwargs)

        return _guarded(self._namespace, invoke)

    def stream(self, method: str, payload: bytes, *stored: Stored) -> Iterator[Stored]:
        """``call`` for a generator method (sync or async), as Ray's streaming generator."""

        def invoke() -> Any:
            args, kwargs = unpack(payload, stored)
            if method.startswith("_"):
                raise AttributeError(f"{type(self._instance).__name__}.{method}: actors serve public methods only")
            return getattr(self._instance, method)(*args, **kwargs)

        yield from _streamed(self._namespace, invoke)


def store(value: Any) -> Stored:
    """``value`` as it is kept in Ray's object store."""
    import ray

    refs: list[Any] = []

    def take(ref: ObjectRef) -> Any:
        if not isinstance(ref.value, ray.ObjectRef):
            return ref
        refs.append(ref.value)
        return RefSlot(len(refs) - 1, ref.size)

    return bytes(cloudpickle.dumps(replace(value, ObjectRef, take))), refs


def load(stored: Stored) -> Any:
    """The value ``store`` kept."""
    data, refs = stored
    value = cloudpickle.loads(data)
    return replace(value, RefSlot, lambda slot: ObjectRef(value=refs[slot.index], size=slot.size)) if refs else value


def unpack(payload: bytes, stored: tuple[Stored, ...] | tuple[()]) -> Any:
    """The value pickled in ``payload``, with each ``Slot`` replaced by its stored value."""
    values = [load(item) for item in stored]
    value = cloudpickle.loads(payload)
    return replace(value, Slot, lambda slot: values[slot.index]) if values else value


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return fn(*args, **kwargs)


def _guarded(namespace: str | None, run: Callable[[], Any]) -> Stored:
    try:
        return store(_in_context(namespace, run))
    except Exception as exc:  # the user's error (or an unpicklable result): the caller re-raises it
        raise Failed(encode(to_wire(exc))) from None


def _streamed(namespace: str | None, start: Callable[[], Any]) -> Iterator[Stored]:
    """The items of the generator ``start()`` returns, stored; its exception as ``_guarded`` raises it."""
    from fluster.context.ray_backend import RayContext
    from fluster.context.streams import LocalItems

    try:
        with job_context(RayContext(namespace=namespace)):  # for the generator's body too, between items
            fetch = LocalItems(start())
            while True:
                items, ended = fetch()
                for value, error in items:
                    if error is not None:
                        raise error
                    yield store(value)
                if ended:
                    return
    except Exception as exc:
        raise Failed(encode(to_wire(exc))) from None


def _in_context(namespace: str | None, run: Callable[[], Any]) -> Any:
    from fluster.context.ray_backend import RayContext

    with job_context(RayContext(namespace=namespace)):
        return run()
