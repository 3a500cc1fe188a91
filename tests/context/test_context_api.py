"""The context API, the same tests on every backend: sync, threads, a real cluster (LocalCluster) and a real
local Ray (the session's, see ``ray_helpers``)."""

from __future__ import annotations

import concurrent.futures
import sys
import threading
import time
import traceback
from collections.abc import Iterator

import cloudpickle
import pytest
from cluster_helpers import context_on

from fluster.context import ActorOptions, JobContext, Lifetime, create_context, get_job_context, job_context
from fluster.context.ray_backend import RayContext

cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Boom(RuntimeError):
    pass


class Counter:
    def __init__(self, start: int = 0) -> None:
        self.count = start

    def incr(self, by: int = 1) -> int:
        value = self.count
        time.sleep(0)  # invites a race if calls were not serialised
        self.count = value + by
        return self.count

    def get(self) -> int:
        return self.count


def square(x: int) -> int:
    return x * x


def add_all(*values: int, extra: list[int] | None = None, named: dict[str, int] | None = None) -> int:
    return sum(values) + sum(extra or []) + sum((named or {}).values())


def failing_task() -> None:
    raise Boom("from the task")


def sleeper(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@pytest.fixture(params=["sync", "threads", "cluster", pytest.param("ray", marks=pytest.mark.ray)])
def ctx(request: pytest.FixtureRequest, namespace: str) -> Iterator[JobContext]:
    with context_on(request.param, request, namespace) as context:
        yield context


def test_put_get_run(ctx: JobContext) -> None:
    ref = ctx.put({"data": [1, 2, 3]})
    assert ctx.get(ref) == {"data": [1, 2, 3]}
    future = ctx.run(lambda d: sum(d["data"]), ref)
    assert ctx.get(future) == 6
    assert ctx.get([ctx.run(square, i) for i in range(5)]) == [0, 1, 4, 9, 16]


def test_chains_of_tasks_pass_futures_also_nested(ctx: JobContext) -> None:
    a = ctx.run(square, 2)
    b = ctx.run(square, a)  # 16
    c = ctx.create_task(add_all, a, b, extra=[a, ctx.put(1)], named={"b": b})
    assert ctx.get(c) == 4 + 16 + 4 + 1 + 16


def test_failed_dependency_fails_the_dependent_task(ctx: JobContext) -> None:
    with pytest.raises(Boom):
        ctx.get(ctx.run(square, ctx.run(failing_task)))


def test_exceptions_keep_type_and_traceback(ctx: JobContext) -> None:
    with pytest.raises(Boom, match="from the task") as info:
        ctx.get(ctx.run(failing_task))
    text = "".join(traceback.format_exception(info.value))
    assert "failing_task" in text


def test_wait_with_num_returns_and_timeout(ctx: JobContext) -> None:
    fast = ctx.run(sleeper, 0.0)
    ready, pending = ctx.wait([fast], num_returns=1, timeout=30)
    assert ready == [fast] and pending == []
    if isinstance(ctx, type(create_context("sync"))):
        return  # the sync backend has finished every task before wait is called
    slow = [ctx.run(sleeper, 3.0) for _ in range(2)]
    start = time.monotonic()
    ready, pending = ctx.wait([*slow, fast], num_returns=1, timeout=0.3)
    assert ready == [fast] and pending == slow
    ready, pending = ctx.wait(slow, num_returns=2, timeout=0.2)
    assert ready == [] and len(pending) == 2
    assert time.monotonic() - start < 2.5


def test_concurrent_increments_on_a_named_actor(ctx: JobContext) -> None:
    counter = ctx.create_actor(Counter, options=ActorOptions(name="counter"))
    with concurrent.futures.ThreadPoolExecutor(4) as threads:
        futures = list(threads.map(lambda _: counter.incr.remote(), range(100)))
    ctx.get(futures)
    assert ctx.get(counter.get.remote()) == 100


def test_get_if_exists_returns_the_same_actor_from_two_creators(ctx: JobContext) -> None:
    options = ActorOptions(name="shared", get_if_exists=True)
    barrier = threading.Barrier(2)

    def create() -> object:
        barrier.wait()
        return ctx.create_actor(Counter, 10, options=options)

    with concurrent.futures.ThreadPoolExecutor(2) as threads:
        first, second = threads.map(lambda _: create(), range(2))
    ctx.get(first.incr.remote(1))  # type: ignore[attr-defined]
    assert ctx.get(second.incr.remote(1)) == 12  # type: ignore[attr-defined]


def test_duplicate_actor_name_raises_value_error(ctx: JobContext) -> None:
    ctx.create_actor(Counter, options=ActorOptions(name="only-one"))
    with pytest.raises(ValueError, match="only-one"):
        ctx.create_actor(Counter, options=ActorOptions(name="only-one"))


def test_unnamed_actors_are_isolated(ctx: JobContext) -> None:
    a = ctx.create_actor(Counter)
    b = ctx.create_actor(Counter, start=100)
    ctx.get([a.incr.remote(), a.incr.remote()])
    assert ctx.get([a.get.remote(), b.incr.remote(5)]) == [2, 105]


def test_actor_calls_take_futures_and_refs_and_their_futures_feed_tasks(ctx: JobContext) -> None:
    counter = ctx.create_actor(Counter)
    assert ctx.get(counter.incr.remote(ctx.run(square, 3)), timeout=60) == 9
    assert ctx.get(counter.incr.remote(by=ctx.put(1)), timeout=60) == 10
    assert ctx.get(ctx.run(square, counter.get.remote()), timeout=60) == 100


def test_actor_method_errors_keep_their_type(ctx: JobContext) -> None:
    counter = ctx.create_actor(Counter, options=ActorOptions(lifetime=Lifetime.EPHEMERAL))
    with pytest.raises(TypeError):
        ctx.get(counter.incr.remote("not a number"))


def test_job_context_sets_the_current_context() -> None:
    with create_context("sync") as sync_ctx, job_context(sync_ctx):
        assert get_job_context() is sync_ctx
    assert get_job_context() is not sync_ctx


def test_large_objects_round_trip_and_feed_tasks(ctx: JobContext) -> None:
    big = bytes(range(256)) * 4096 * 2  # 2 MiB: the object store on the cluster backend
    ref = ctx.put(big)
    assert ctx.get(ref) == big
    assert ctx.get(ctx.run(len, ref)) == len(big)


def test_wait_returns_at_most_num_returns_ready_and_nothing_for_nothing(ctx: JobContext) -> None:
    done = [ctx.run(square, i) for i in range(3)]
    ctx.get(done)
    ready, pending = ctx.wait(done, num_returns=1, timeout=30)
    assert ready == [done[0]] and pending == done[1:]  # the others are done too, but only one was asked for
    ready, pending = ctx.wait(done, num_returns=2, timeout=30)
    assert ready == done[:2] and pending == done[2:]
    assert ctx.wait([]) == ([], [])
    assert ctx.wait(done, num_returns=0) == ([], done)
    with pytest.raises(ValueError, match="num_returns=4"):
        ctx.wait(done, num_returns=4)


def test_wait_picks_the_first_to_finish(ctx: JobContext) -> None:
    if isinstance(ctx, type(create_context("sync"))):
        return  # the sync backend has finished every task before wait is called
    if isinstance(ctx, RayContext):
        return  # the session's Ray has 2 CPUs, shared with what other tests left: which runs first varies
    slow, fast = ctx.run(sleeper, 2.0), ctx.run(sleeper, 0.0)
    ready, pending = ctx.wait([slow, fast], num_returns=1, timeout=30)
    assert ready == [fast] and pending == [slow]


def _current_context() -> int:
    return id(get_job_context())


@pytest.mark.parametrize("backend", ["sync", "threads"])
def test_tasks_and_actor_calls_see_the_context_set_with_job_context(backend: str) -> None:
    class Probe:
        def current(self) -> int:
            return id(get_job_context())

    with create_context(backend) as ctx, job_context(ctx):
        assert ctx.get(ctx.run(_current_context)) == id(ctx)
        assert ctx.get(ctx.create_actor(Probe).current.remote()) == id(ctx)


class Slow:
    def nap(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds


def test_actor_calls_take_a_timeout(ctx: JobContext) -> None:
    from fluster.errors import ActorCallTimeout

    if isinstance(ctx, type(create_context("sync"))):
        return  # the sync backend has finished every call before it returns
    slow = ctx.create_actor(Slow, options=ActorOptions(call_timeout=0.5, max_concurrency=2))
    with pytest.raises(ActorCallTimeout, match="Slow|nap"):
        ctx.get(slow.nap.remote(5.0), timeout=60)
    assert ctx.get(slow.nap.options(timeout=60).remote(0.8), timeout=60) == 0.8  # its own timeout wins
    assert ctx.get(slow.nap.remote(0.0), timeout=60) == 0.0
    with pytest.raises(ValueError, match="call_timeout"):
        ctx.create_actor(Slow, options=ActorOptions(call_timeout=0))


def test_as_completed_yields_futures_as_they_finish(ctx: JobContext) -> None:
    ref = ctx.put(1)
    futures = [ctx.run(sleeper, 1.0), ctx.run(sleeper, 0.0)]
    order = list(ctx.as_completed([*futures, ref], timeout=60))
    assert order[0] is ref and set(order[1:]) == set(futures)
    if isinstance(ctx, type(create_context("sync"))):
        return  # the sync backend has finished every task before as_completed is called
    if not isinstance(ctx, RayContext):  # the session's Ray has 2 CPUs, shared with what other tests left
        assert order[1:] == futures[::-1]  # the quick one first
    with pytest.raises(TimeoutError):
        list(ctx.as_completed([ctx.run(sleeper, 3.0)], timeout=0.2))


def test_a_task_may_close_over_futures(ctx: JobContext) -> None:
    x = ctx.run(sleeper, 0.3)
    # fdb_ray_clone's README: a lambda that closes over one future and takes another as its argument
    both = ctx.run(lambda z: ctx_get(x) + ctx_get(z), ctx.run(square, 2))  # type: ignore[operator]
    assert ctx.get(both, timeout=60) == 4.3
    failed = ctx.run(failing_task)
    with pytest.raises(Boom):
        ctx.get(ctx.run(lambda: ctx_get(failed)), timeout=60)


def ctx_get(value: object) -> object:
    """fdb_ray_clone's ``await_future``: a future's value (an argument arrives as its value already)."""
    return value.result(timeout=60) if isinstance(value, concurrent.futures.Future) else value
