"""``RayContext``: the context API on a Ray cluster (``create_context("ray", **ray_init_options)``).

Tasks are Ray tasks, objects live in Ray's object store, actors are Ray actors (each hosts the user's object,
``fluster.context.ray_worker``); futures are ``concurrent.futures.Future``s completed from Ray's own
completion callbacks. A future or ref passed to a task crosses as a Ray argument, so the value never comes
back through the caller. Ray is imported when a context is created, not with this module.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import cloudpickle

from fluster.context.api import Future, JobContext
from fluster.context.handles import ActorHandle, ActorOptions, Lifetime, ObjectRef, TaskOptions
from fluster.context.ray_objects import RayFuture, RayItems, Stored, fluster_error, import_ray, pack, time_slice
from fluster.context.ray_worker import ActorHost, load, run_task, store, stream_task
from fluster.context.resources import ray_options
from fluster.context.streams import Fetch, is_streaming
from fluster.errors import FlusterTimeout
from fluster.pool.future import settle, settled
from fluster.protocol.ids import validate_name
from fluster.protocol.values import all_plain, replace

log = logging.getLogger(__name__)

DEFAULT_ACTOR_OPTIONS = {"num_cpus": 0}  # as on the cluster backend: an actor holds no CPU unless it asks
OWNERSHIP_TIMEOUT_S = 5.0  # close(): how long to ask a get_if_exists actor whether this context created it


class RayContext(JobContext):
    """The context API on Ray. Inside a Ray worker, or once ``ray.init`` has run, it uses that connection;
    otherwise it calls ``ray.init(address, namespace=namespace, **ray_init_options)`` (``address=None``:
    ``RAY_ADDRESS``, else a new local Ray; ``"auto"``: the running one) and ``close()`` shuts Ray down.
    ``memory`` is Ray's ``_memory`` (the memory a new local Ray offers). Named actors live in ``namespace``.
    ``connect=False`` connects on first use instead (what a job's own context does: most never use it).

    Raises:
        ImportError: Ray is not installed (``pip install 'fluster[ray]'``).
        ValueError: Ray is already initialized in this process and init options were given.
    """

    def __init__(
        self, address: str | None = None, namespace: str | None = None, connect: bool = True, **ray_init_options: Any
    ) -> None:
        super().__init__()
        self._ray = import_ray()
        self._namespace = namespace
        self._init_options: dict[str, Any] | None = dict(ray_init_options, address=address, namespace=namespace)
        if "memory" in ray_init_options:
            self._init_options["_memory"] = self._init_options.pop("memory")
        self._owns_ray = False
        self._lock = threading.Lock()
        self._pending: set[RayFuture] = set()
        self._created: list[Any] = []  # ephemeral actors this context started: killed by close()
        self._found_or_created: list[tuple[Any, str]] = []  # get_if_exists actors, with this context's token
        self._task_fn: Any = None
        self._stream_fn: Any = None
        self._host_cls: Any = None
        self._closed = False
        if connect:
            self._connect()

    def _connect(self) -> None:
        """Start or join Ray, once (the first call does it; ``_init_options`` is None after)."""
        if self._init_options is None:
            return
        with self._lock:
            options, self._init_options = self._init_options, None
            if options is None:
                return
            if self._ray.is_initialized():
                given = sorted(k for k, v in options.items() if v is not None and k != "namespace")
                if given:
                    raise ValueError(
                        f"Ray is already initialized in this process, so {given} cannot apply: call "
                        "create_context('ray') without them to use that Ray, or ray.shutdown() first"
                    )
                return
            self._ray.init(**options)
            self._owns_ray = True

    # -- objects --------------------------------------------------------------------------------------

    def put(self, obj: Any) -> ObjectRef:
        self._connect()
        stored = store(obj)
        return ObjectRef(value=self._ray.put(stored), size=len(stored[0]))

    def get(self, ref: Any, timeout: float | None = None) -> Any:
        if isinstance(ref, ObjectRef):
            return self._load(ref, timeout)
        return super().get(ref, timeout)

    def _load(self, ref: ObjectRef, timeout: float | None = None) -> Any:
        if not isinstance(ref.value, self._ray.ObjectRef):
            return ref.value  # a ref of an in-process backend: the value itself
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:  # in slices: a signal handler (Ctrl-C, a test's timeout) runs only between Ray's calls
            try:
                return load(self._ray.get(ref.value, timeout=time_slice(deadline)))
            except self._ray.exceptions.GetTimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise FlusterTimeout(f"the object is not available after {timeout:g}s") from None
            except self._ray.exceptions.RayError as exc:
                raise fluster_error(exc) from exc

    def _ref_argument(self, ref: ObjectRef) -> Any:
        return Stored(ref.value) if isinstance(ref.value, self._ray.ObjectRef) else ref.value

    # -- tasks ----------------------------------------------------------------------------------------

    def _submit(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], options: TaskOptions
    ) -> Future[Any]:
        self._connect()
        payload, stored = pack((fn, args, kwargs))
        task_options = ray_options(options.resources)
        if options.max_retries is not None:
            task_options["max_retries"] = options.max_retries
        if is_streaming(fn):  # Ray's streaming generator: the future holds it, the context's stream reads it
            remote = self._stream_remote().options(num_returns="streaming", **task_options)
            return settled(remote.remote(self._namespace, payload, *stored))
        remote = self._task_remote()
        if task_options:
            remote = remote.options(**task_options)
        return self._future(remote.remote(self._namespace, payload, *stored), is_task=True)

    def _stream_source(self, started: Any) -> Fetch:
        if not isinstance(started, self._ray.ObjectRefGenerator):
            return super()._stream_source(started)
        return RayItems(self._ray, started)

    def _when_resolved(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        start: Callable[[tuple[Any, ...], dict[str, Any]], Future[Any]],
    ) -> Future[Any]:
        if not all_plain(args, kwargs):  # Ray waits for futures of Ray tasks itself: pass them as Ray objects
            args, kwargs = replace((args, kwargs), RayFuture, lambda f: Stored(f.ray_ref))
        return super()._when_resolved(args, kwargs, start)

    def wait(
        self, futures: Sequence[Any], num_returns: int = 1, timeout: float | None = None
    ) -> tuple[list[Any], list[Any]]:
        items = list(futures)
        waiting = [f for f in items if isinstance(f, concurrent.futures.Future) and not f.done()]
        ours = [f for f in waiting if isinstance(f, RayFuture)]
        needed = num_returns - (len(items) - len(waiting))
        if needed <= 0 or num_returns > len(items) or len(ours) < len(waiting) or len(set(ours)) < len(ours):
            return super().wait(items, num_returns, timeout)  # other futures, repeats, or bad input
        deadline = None if timeout is None else time.monotonic() + timeout
        refs = [f.ray_ref for f in ours]
        while True:  # in slices, as in _load
            ready_refs, _ = self._ray.wait(refs, num_returns=needed, timeout=time_slice(deadline), fetch_local=False)
            if len(ready_refs) >= needed or (deadline is not None and time.monotonic() >= deadline):
                break
        ready = {ref.hex() for ref in ready_refs}
        # Ray reports the objects ready; our futures complete from its callbacks an instant later
        rest = None if deadline is None else max(0.0, deadline - time.monotonic())
        concurrent.futures.wait([f for f in ours if f.ray_ref.hex() in ready], timeout=rest)
        return super().wait(items, num_returns, 0)  # at most num_returns of those done, the rest pending

    # -- actors ---------------------------------------------------------------------------------------

    def _new_actor(
        self, cls: type[Any], args: tuple[Any, ...], kwargs: dict[str, Any], options: ActorOptions
    ) -> ActorHandle:
        self._connect()
        actor_options = ray_options(options.resources) or dict(DEFAULT_ACTOR_OPTIONS)
        actor_options.update(
            max_concurrency=options.max_concurrency,
            max_restarts=options.max_restarts,
            max_task_retries=options.max_task_retries,
        )
        if options.lifetime == Lifetime.DETACHED:
            actor_options["lifetime"] = "detached"
        if options.name is not None:
            actor_options.update(name=validate_name(options.name, "actor name"), get_if_exists=options.get_if_exists)
            if self._namespace is not None:
                actor_options["namespace"] = self._namespace
        token = uuid.uuid4().hex
        try:
            host = (
                self._host_remote()
                .options(**actor_options)
                .remote(self._namespace, token, cloudpickle.dumps((cls, args, kwargs)))
            )
        except self._ray.exceptions.ActorAlreadyExistsError as exc:
            raise ValueError(
                f"an actor named {options.name!r} already exists (use get_if_exists=True to reuse it)"
            ) from exc
        if options.lifetime == Lifetime.EPHEMERAL:
            with self._lock:
                if options.name is not None and options.get_if_exists:
                    self._found_or_created.append((host, token))
                else:
                    self._created.append(host)
        return ActorHandle(name=options.name or f"actor-{token[:12]}", _context=self, _instance=host)

    def _call_actor(
        self, handle: ActorHandle, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Future[Any]:
        payload, stored = pack((args, kwargs))
        if method in handle._streaming:
            host = handle._instance.stream.options(num_returns="streaming")
            return settled(host.remote(method, payload, *stored))
        return self._future(handle._instance.call.remote(method, payload, *stored), is_task=False)

    # -- lifecycle ------------------------------------------------------------------------------------

    def close(self) -> None:
        """Cancel the tasks still running, kill the ephemeral actors this context created, and shut Ray down
        if this context started it. Detached actors stay."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending, self._pending = list(self._pending), set()
            created, self._created = self._created, []
            found, self._found_or_created = self._found_or_created, []
        for future in pending:
            if future.is_task and not future.done():
                self._ray.cancel(future.ray_ref, force=True)  # a running task ends with its worker process
            concurrent.futures.Future.cancel(future)
        for host, token in found:
            try:
                if self._ray.get(host.token.remote(), timeout=OWNERSHIP_TIMEOUT_S) == token:
                    created.append(host)
            except self._ray.exceptions.RayError as exc:  # gone already, or still starting: Ray ends it with us
                log.debug("cannot ask actor for its creator: %r", exc)
        for host in created:
            self._ray.kill(host, no_restart=True)
        if self._owns_ray:
            self._ray.shutdown()

    # -- helpers --------------------------------------------------------------------------------------

    def _future(self, ray_ref: Any, is_task: bool) -> RayFuture:
        future = RayFuture(ray_ref, is_task)
        with self._lock:
            if self._closed:
                raise RuntimeError("this RayContext is closed")
            self._pending.add(future)
        if is_task:
            ray = self._ray
            future.canceller = lambda force, recursive: ray.cancel(ray_ref, force=force, recursive=recursive)
        ray_ref.future().add_done_callback(lambda done: self._complete(future, done))
        return future

    def _complete(self, future: RayFuture, done: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._pending.discard(future)
        try:
            error = done.exception()
            outcome = fluster_error(error) if error is not None else load(done.result())
        except concurrent.futures.CancelledError:
            if not future.done():
                concurrent.futures.Future.cancel(future)
            return
        except Exception as exc:  # the result does not unpickle here
            outcome = exc
        if isinstance(outcome, BaseException):  # either is dropped when close() cancelled it meanwhile
            settle(future, error=outcome)
        else:
            settle(future, outcome)

    def _task_remote(self) -> Any:
        if self._task_fn is None:
            self._task_fn = self._ray.remote(run_task)
        return self._task_fn

    def _stream_remote(self) -> Any:
        if self._stream_fn is None:
            self._stream_fn = self._ray.remote(stream_task)
        return self._stream_fn

    def _host_remote(self) -> Any:
        if self._host_cls is None:
            self._host_cls = self._ray.remote(ActorHost)
        return self._host_cls
