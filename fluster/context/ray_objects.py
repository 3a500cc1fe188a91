"""Ray's side of the ``RayContext``: its futures (``RayFuture``), a stored value on its way to a task as a Ray
argument (``Stored``, ``pack``), a streaming generator's items (``RayItems``), the fluster error for what Ray
raised, and Ray imported on first use. The context itself is ``fluster.context.ray_backend``.
"""

from __future__ import annotations

import time
from typing import Any

import cloudpickle

from fluster.context.ray_worker import Slot, load
from fluster.context.streams import Item
from fluster.errors import ActorDied, ObjectLost, TaskCancelled, TaskLost
from fluster.pool.future import TaskFuture
from fluster.protocol.values import replace

SLICE_S = 1.0  # the longest blocking call into Ray at a time


class RayFuture(TaskFuture[Any]):
    """The future of a Ray task or actor call; ``ray_ref`` is its Ray object (the pickled result)."""

    def __init__(self, ray_ref: Any, is_task: bool) -> None:
        super().__init__()
        self.ray_ref = ray_ref
        self.is_task = is_task


class Stored:
    """Among arguments on their way to Ray: a Ray object holding a stored value, which Ray hands to the task
    as a top-level argument (its place in the payload becomes a ``Slot``)."""

    __slots__ = ("ref",)

    def __init__(self, ref: Any) -> None:
        self.ref = ref


class RayItems:
    """A Ray streaming generator's items, one per fetch; ``close`` cancels the generator task."""

    def __init__(self, ray: Any, refs: Any) -> None:
        self._ray = ray
        self._refs = refs
        self._ended = False

    def __call__(self) -> tuple[list[Item], bool]:
        try:
            ref = next(self._refs)
        except StopIteration:
            self._ended = True
            return [], True
        try:
            return [(load(self._ray.get(ref)), None)], False
        except Exception as exc:
            self._ended = True
            return [(None, fluster_error(exc))], True

    def close(self) -> None:
        if not self._ended:
            self._ended = True
            self._ray.cancel(self._refs)


def pack(value: Any) -> tuple[bytes, list[Any]]:
    """``value`` pickled with each ``Stored`` replaced by a ``Slot``, and the Ray objects, in slot order."""
    stored: list[Any] = []

    def slot(item: Stored) -> Slot:
        stored.append(item.ref)
        return Slot(len(stored) - 1)

    return bytes(cloudpickle.dumps(replace(value, Stored, slot))), stored


def fluster_error(exc: BaseException) -> BaseException:
    """The exception a caller of the context sees for what Ray raised."""
    import ray.exceptions as rex

    from fluster.context.ray_worker import Failed

    if isinstance(exc, rex.RayTaskError) and isinstance(exc.cause, Failed):
        return exc.cause.reraise_as()
    if isinstance(exc, rex.RayActorError):
        return ActorDied(f"the actor died (or is restarting) before answering: {exc}")
    if isinstance(exc, rex.WorkerCrashedError):
        return TaskLost(f"the task's worker died on every attempt its retries allow: {exc}")
    if isinstance(exc, rex.TaskCancelledError):
        return TaskCancelled(f"the task was cancelled: {exc}")
    if isinstance(exc, rex.ObjectLostError):
        return ObjectLost(exc.object_ref_hex, f"a Ray object is lost: {exc}")
    return exc


def time_slice(deadline: float | None) -> float:
    """How long the next blocking call into Ray may take."""
    return SLICE_S if deadline is None else min(SLICE_S, max(0.0, deadline - time.monotonic()))


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError("the ray backend needs Ray: pip install 'fluster[ray]'") from exc
    return ray
