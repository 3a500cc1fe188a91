"""Cancelling running code: ``TaskCancelled`` raised in the thread that runs a task, and the scope that
records the tasks a task started, so that cancelling it can cancel them too (``recursive``).

A thread cannot be stopped from outside in Python; ``PyThreadState_SetAsyncExc`` asks the interpreter to
raise an exception in it at its next bytecode. A task in a pure-Python loop sees it within microseconds;
one blocked in a single long C call (``time.sleep(60)``, a socket read, a NumPy kernel) sees it only when
that call returns, which is why a forced cancel (killing the process) exists beside it.

The exception must reach the task it was meant for and nothing else: the thread goes on to other tasks, and
the interpreter may deliver a pending asynchronous exception a few bytecodes late. So a task is registered
under its key while it runs, a cancel raises only while that key is registered (both under one lock), and a
task that was hit clears any exception still pending for its thread before the thread runs anything else.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from contextvars import ContextVar
from typing import Any, TypeVar

from fluster.errors import TaskCancelled

T = TypeVar("T")

MAX_EARLY = 10_000  # cancels remembered for tasks not (yet) seen: a cancel may overtake its task


class TaskScope:
    """The futures of the tasks started while one task runs (by its thread, and the threads it starts
    through a context, which copy its context variables)."""

    __slots__ = ("children", "_lock")

    def __init__(self) -> None:
        self.children: list[concurrent.futures.Future[Any]] = []
        self._lock = threading.Lock()

    def add(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self.children = [f for f in self.children if not f.done()]  # bounded by what still runs
            self.children.append(future)

    def cancel_children(self, force: bool) -> None:
        with self._lock:
            children, self.children = self.children, []
        for child in children:
            cancel_future(child, force=force, recursive=True)


current_scope: ContextVar[TaskScope | None] = ContextVar("fluster_task_scope", default=None)


def started(future: concurrent.futures.Future[Any]) -> None:
    """Record ``future`` as started by the task running here, if any (for recursive cancellation)."""
    scope = current_scope.get()
    if scope is not None:
        scope.add(future)


def cancel_future(future: concurrent.futures.Future[Any], force: bool = False, recursive: bool = True) -> bool:
    """Cancel what ``future`` stands for: a task future cancels its task (``TaskFuture.cancel_task``), any
    other future is cancelled as ``concurrent.futures`` does. False when it had finished already."""
    from fluster.pool.future import TaskFuture

    if isinstance(future, TaskFuture):
        return future.cancel_task(force=force, recursive=recursive)
    return future.cancel()


class Running:
    """The tasks running in threads of one process, by key, so that one can be cancelled where it runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: dict[Hashable, tuple[int, TaskScope]] = {}
        self._hit: set[Hashable] = set()
        self._early: OrderedDict[Hashable, None] = OrderedDict()

    def run(self, key: Hashable, fn: Callable[[], T], in_thread: bool = True) -> T:
        """Run ``fn()`` as the task ``key``; raises ``TaskCancelled`` when it is (or was already) cancelled.
        ``in_thread=False`` (code on an event loop) can be cancelled before it starts, never while it runs."""
        if self._early and self._take_early(key):
            raise TaskCancelled(f"task {key!r} was cancelled before it started")
        if not in_thread:  # a fast task on the loop runs to its end now: no scope, nothing to register
            return fn()
        tid = threading.get_ident()
        scope = TaskScope()
        with self._lock:
            self._threads[key] = (tid, scope)
        token = current_scope.set(scope)
        try:
            try:
                result = fn()
            finally:
                self._leave(key, tid)
        except BaseException:
            # at most one exception is raised per cancel: once this runs, none can interrupt what follows
            self._leave(key, tid)
            current_scope.reset(token)
            raise
        current_scope.reset(token)
        return result

    def cancel(self, key: Hashable, force: bool = False, recursive: bool = True, early: bool = True) -> bool:
        """Raise ``TaskCancelled`` in ``key``'s thread if it runs now (True), else make it fail as it starts
        (False; ``early=False``: it is known to have run already, so nothing is kept); with ``recursive``,
        cancel the tasks it started too."""
        with self._lock:
            found = self._threads.get(key)
            if found is not None and key not in self._hit:
                self._hit.add(key)
                _raise_in(found[0], TaskCancelled)
            elif found is None and early:
                self._early[key] = None
                while len(self._early) > MAX_EARLY:
                    self._early.popitem(last=False)
        if found is not None and recursive:
            found[1].cancel_children(force)
        return found is not None

    def cancels_waiting(self) -> bool:
        """Whether a cancel came for a task not seen yet (which ``run`` must look for)."""
        return bool(self._early)

    def _take_early(self, key: Hashable) -> bool:
        with self._lock:
            return self._early.pop(key, False) is None  # present (its value is None): taken

    def _leave(self, key: Hashable, tid: int) -> None:
        """Unregister ``key`` (idempotent); if it was hit, drop an exception still pending for this thread.
        An exception delivered during this very bookkeeping is caught and the bookkeeping done again."""
        while True:
            try:
                with self._lock:
                    self._threads.pop(key, None)
                    hit = key in self._hit
                    self._hit.discard(key)
                if hit:
                    _raise_in(tid, None)  # nothing can raise in this thread after this
                return
            except TaskCancelled:
                continue


def _raise_in(thread_id: int, exc_type: type[BaseException] | None) -> None:
    """Ask the interpreter to raise ``exc_type`` in the thread (None: forget one still pending)."""
    obj = ctypes.py_object(exc_type) if exc_type is not None else ctypes.c_void_p(0)
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), obj)
