"""Large task results stay in the object store, and a task whose stored result is gone runs again from its
lineage: when its future is read, and when a later task needs it as an argument (cluster backend)."""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest
from cluster_helpers import local_cluster

from fluster.bus.blobs import delete_blob, get_blob
from fluster.context import create_context
from fluster.context.cluster import ClusterContext
from fluster.context.resolve import raw_result
from fluster.errors import ObjectLost
from fluster.pool.executor import CACHE_ENV
from fluster.protocol.values import ValueRef
from fluster.types import create_environment

cloudpickle.register_pickle_by_value(sys.modules[__name__])

BIG = 1024 * 1024  # well over the 512 KiB inline limit


def make_big(log: str, fill: int = 7) -> bytes:
    with open(log, "a") as f:
        f.write("ran\n")
    return bytes([fill]) * BIG


def double(data: bytes, log: str) -> bytes:
    with open(log, "a") as f:
        f.write("ran\n")
    return data + data


def runs(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.fixture
def ctx(nats_url: str, namespace: str) -> Iterator[ClusterContext]:
    with local_cluster(nats_url, namespace), create_context("cluster", url=nats_url, namespace=namespace) as context:
        assert isinstance(context, ClusterContext)
        yield context


@pytest.fixture
def uncached_ctx(nats_url: str, namespace: str) -> Iterator[ClusterContext]:
    """Executors that keep no copy of the stored arguments they read: every lost object must be rebuilt."""
    environment = create_environment(env_vars={CACHE_ENV: "0"})
    with (
        local_cluster(nats_url, namespace),
        create_context("cluster", url=nats_url, namespace=namespace, environment=environment) as context,
    ):
        assert isinstance(context, ClusterContext)
        yield context


def stored_key(future: object) -> str:
    value = raw_result(future)  # type: ignore[arg-type]
    assert isinstance(value, ValueRef), f"expected a stored result, got {type(value).__name__}"
    return value.key


def exists(ctx: ClusterContext, key: str) -> bool:
    try:
        ctx.client.portal.call(get_blob, ctx.client.aio.assets.objects, key)
    except ObjectLost:
        return False
    return True


def lose(ctx: ClusterContext, key: str) -> None:
    """What a lost stream, an expiry or another client's delete does to an object."""
    ctx.client.portal.call(delete_blob, ctx.client.aio.assets.objects, key)
    assert not exists(ctx, key)


def test_a_large_result_stays_in_the_object_store_until_its_future_is_dropped(
    ctx: ClusterContext, tmp_path: Path
) -> None:
    future = ctx.run(make_big, str(tmp_path / "log"))
    assert ctx.get(future) == bytes([7]) * BIG
    key = stored_key(future)
    assert exists(ctx, key)
    assert ctx.get(future) == bytes([7]) * BIG  # read again from the store
    del future
    gc.collect()
    deadline = time.monotonic() + 10
    while exists(ctx, key):
        assert time.monotonic() < deadline, "the object of a dropped future was not deleted"
        time.sleep(0.05)


def test_reading_a_lost_result_reruns_its_task(ctx: ClusterContext, tmp_path: Path) -> None:
    log = tmp_path / "log"
    future = ctx.run(make_big, str(log))
    ctx.wait([future])
    lose(ctx, stored_key(future))
    assert ctx.get(future) == bytes([7]) * BIG
    assert runs(log) == 2
    assert exists(ctx, stored_key(future))  # the future now names the re-made object


def test_a_task_whose_stored_argument_is_lost_gets_it_rebuilt(uncached_ctx: ClusterContext, tmp_path: Path) -> None:
    ctx = uncached_ctx
    log = tmp_path / "log"
    produced = ctx.run(make_big, str(log))
    ctx.wait([produced])
    lose(ctx, stored_key(produced))
    assert ctx.get(ctx.run(len, produced)) == BIG
    assert runs(log) == 2
    lose(ctx, stored_key(produced))
    three = [
        ctx.run(len, produced),
        ctx.run(lambda xs: len(xs[0]), [produced]),
        ctx.run(lambda d: len(d["a"]), {"a": produced}),
    ]
    assert ctx.get(three) == [BIG, BIG, BIG]
    assert runs(log) == 3  # rebuilt once, however many tasks needed it


def test_lineage_is_followed_through_a_chain_of_lost_results(uncached_ctx: ClusterContext, tmp_path: Path) -> None:
    ctx = uncached_ctx
    first_log, second_log = tmp_path / "first", tmp_path / "second"
    first = ctx.run(make_big, str(first_log), 3)
    second = ctx.run(double, first, str(second_log))
    ctx.wait([second])
    lose(ctx, stored_key(first))
    lose(ctx, stored_key(second))
    del first  # only the lineage of `second` keeps it now
    assert ctx.get(second) == bytes([3]) * (2 * BIG)
    assert (runs(first_log), runs(second_log)) == (2, 2)


def test_a_lost_put_object_raises_object_lost(ctx: ClusterContext) -> None:
    ref = ctx.put(b"p" * BIG)
    assert ref.key is not None
    lose(ctx, ref.key)
    with pytest.raises(ObjectLost, match="put it again"):
        ctx.get(ref)
    with pytest.raises(ObjectLost, match="no longer in the object store"):
        ctx.get(ctx.run(len, ref))


def test_small_results_travel_inline(ctx: ClusterContext, tmp_path: Path) -> None:
    future = ctx.run(make_big, str(tmp_path / "log"))
    small = ctx.run(len, future)
    assert ctx.get(small) == BIG
    assert raw_result(small) == BIG  # not stored


def put_inside(size: int) -> object:
    from fluster.context import get_job_context

    return get_job_context().put(b"n" * size)


def test_an_object_put_inside_a_task_outlives_the_task(ctx: ClusterContext) -> None:
    ref = ctx.get(ctx.run(put_inside, BIG))
    assert ref.key is not None
    gc.collect()
    assert ctx.get(ref) == b"n" * BIG
    assert ctx.get(ctx.run(len, ref)) == BIG
