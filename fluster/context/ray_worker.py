"""What the ray backend runs inside Ray: ``run_task`` (every task) and ``ActorHost`` (every actor).

User callables, arguments and results cross Ray as fluster's own cloudpickle bytes, so that what works on
the other backends works here (``cloudpickle.register_pickle_by_value``, classes defined in tests or
notebooks, exceptions that come back as the caller's own class). Stored values (``put`` objects, results
passed on to other tasks) are Ray objects holding those bytes; they travel as top-level Ray arguments, which
Ray resolves on the node that runs the task, and the payload names them by position (``Slot``).
A user exception travels as ``Failed`` (its ``to_wire`` form), so Ray still counts the task as failed.
Ray itself is imported by the code that schedules these, never here: this module is what workers import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cloudpickle

from fluster.errors import from_wire, to_wire
from fluster.pool.remote import replace
from fluster.protocol.codec import decode, encode
from fluster.protocol.messages import ErrorInfo


@dataclass(frozen=True)
class Slot:
    """In a task's payload: the value of its ``index``-th Ray argument (a stored object's bytes)."""

    index: int


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


def run_task(namespace: str | None, payload: bytes, *stored: bytes) -> bytes:
    """Run the pickled ``(fn, args, kwargs)`` with each ``Slot`` replaced by its stored value; the pickled
    result. Inside, ``get_job_context()`` is a ray context of the same namespace (nested tasks)."""
    return _guarded(namespace, lambda: _call(*unpack(payload, stored)))


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

    def call(self, method: str, payload: bytes, *stored: bytes) -> bytes:
        def invoke() -> Any:
            args, kwargs = unpack(payload, stored)
            if method.startswith("_"):
                raise AttributeError(
                    f"{type(self._instance).__name__}.{method} is private: actors serve public methods"
                )
            return getattr(self._instance, method)(*args, **kwargs)

        return _guarded(self._namespace, invoke)


def unpack(payload: bytes, stored: tuple[bytes, ...] | tuple[()]) -> Any:
    """The value pickled in ``payload``, with each ``Slot`` replaced by the unpickled stored value."""
    values = [cloudpickle.loads(data) for data in stored]
    value = cloudpickle.loads(payload)
    return replace(value, Slot, lambda slot: values[slot.index]) if values else value


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return fn(*args, **kwargs)


def _guarded(namespace: str | None, run: Callable[[], Any]) -> bytes:
    try:
        return bytes(cloudpickle.dumps(_in_context(namespace, run)))
    except Exception as exc:  # the user's error (or an unpicklable result): the caller re-raises it
        raise Failed(encode(to_wire(exc))) from None


def _in_context(namespace: str | None, run: Callable[[], Any]) -> Any:
    from fluster.context.api import job_context
    from fluster.context.ray_backend import RayContext

    with job_context(RayContext(namespace=namespace)):
        return run()
