"""Actors served from inside fluster jobs: the job owns the endpoint, and the endpoint ends with the job."""

from __future__ import annotations

import actors_for_tests
import cloudpickle
import pytest
from actors_for_tests import serve_named_until_terminated

from fluster.actor import ActorNotFound, ClusterResolver, registry
from fluster.client.cluster import ClusterClient
from fluster.errors import ActorCallTimeout
from fluster.types import Entrypoint


@pytest.fixture(autouse=True)
def _pickle_test_actors_by_value():  # type: ignore[no-untyped-def]
    # the job process cannot import this test directory's modules, so ship them inside the entrypoint
    cloudpickle.register_pickle_by_value(actors_for_tests)
    yield
    cloudpickle.unregister_pickle_by_value(actors_for_tests)


async def test_endpoint_of_a_job_is_owned_by_it_and_gone_when_the_job_is_killed(cluster: ClusterClient):
    job_id = await cluster.submit("svc-job", Entrypoint.from_callable(serve_named_until_terminated, "in-job"))
    resolver = ClusterResolver(cluster, call_timeout=20)
    pool = await resolver.lookup("svc")
    (endpoint,) = await pool.wait_for_size(1, timeout=30)
    assert endpoint.job_id == job_id and endpoint.worker_id
    assert await pool.call().who() == "in-job"
    await cluster.kill(job_id)
    assert await pool.refresh() == []
    with pytest.raises(ActorNotFound):
        await pool.call().who()
    await resolver.close()


async def test_lookup_leaves_out_the_endpoints_of_jobs_that_ended_without_withdrawing_them(cluster: ClusterClient):
    job_id = await cluster.submit("svc-vanish", Entrypoint.from_callable(serve_named_until_terminated, "gone"))
    resolver = ClusterResolver(cluster, call_timeout=20)
    pool = await resolver.lookup("svc")
    await pool.wait_for_size(1, timeout=30)
    with pytest.raises(ActorCallTimeout):
        await pool.call(timeout=2).vanish()
    await cluster.wait(job_id, timeout=30)
    listed = await registry.endpoints(cluster.assets.endpoints, "svc")
    assert [e.job_id for e in listed] == [job_id]  # still in the registry until its TTL runs out
    assert (await resolver.lookup("svc")).endpoints == []
    await resolver.close()


async def test_a_pool_follows_the_registry_as_members_die_and_join(cluster: ClusterClient):
    import anyio

    first = [
        await cluster.submit(f"svc-live-{i}", Entrypoint.from_callable(serve_named_until_terminated, f"m{i}"))
        for i in range(2)
    ]
    resolver = ClusterResolver(cluster, call_timeout=20)
    pool = await resolver.lookup("svc")
    await pool.wait_for_size(2, timeout=30)
    with pytest.raises(ActorCallTimeout):
        await pool.call(timeout=2).vanish()  # one member ends as a SIGKILL would: nothing withdraws it
    with anyio.fail_after(30):  # its endpoint expires (ENDPOINT_TTL_S), and the pool sees it without a refresh
        while pool.size != 1:
            await anyio.sleep(0.1)
    joined = await cluster.submit("svc-live-2", Entrypoint.from_callable(serve_named_until_terminated, "m2"))
    with anyio.fail_after(30):
        while pool.size != 2:
            await anyio.sleep(0.1)
    assert await resolver.lookup("svc") is pool  # one live view (one watch) per name and resolver
    for job_id in [*first, joined]:
        await cluster.kill(job_id)
    with anyio.fail_after(30):
        while pool.size != 0:
            await anyio.sleep(0.1)
    await resolver.close()


async def test_a_named_pool_in_jobs_keeps_serving_through_job_retries(cluster: ClusterClient):
    """A member's job dies (its process ends at once, as a SIGKILL would): its callers keep calling the name,
    answered by the other member, and the job's retry brings the member back into the same pool."""
    import anyio

    jobs = [
        await cluster.submit(
            f"svc-retried-{i}",
            Entrypoint.from_callable(serve_named_until_terminated, f"m{i}"),
            max_retries_failure=2,
        )
        for i in range(2)
    ]
    resolver = ClusterResolver(cluster, call_timeout=20)
    pool = await resolver.lookup("svc")
    await pool.wait_for_size(2, timeout=30)
    before = {e.endpoint_id for e in pool.endpoints}
    with pytest.raises(ActorCallTimeout):
        await pool.call(timeout=2).vanish()  # one member's attempt ends: nothing withdraws its endpoint
    answered = [await pool.call().who() for _ in range(20)]  # while it is away: every call is answered
    assert set(answered) <= {"m0", "m1"} and len(answered) == 20
    with anyio.fail_after(60):  # its job is retried, and its member joins the pool again
        while not any(e.endpoint_id not in before for e in pool.endpoints):
            await anyio.sleep(0.1)
        (rejoined,) = [e for e in pool.endpoints if e.endpoint_id not in before]
        seen: set[str] = set()
        while seen != {"m0", "m1"}:  # both members serve the name again
            seen.add(await pool.call().who())
    status = await cluster.status(rejoined.job_id or "")
    assert status.attempt == 1 and status.failure_count == 1  # the same job, on its second attempt
    for job_id in jobs:
        await cluster.kill(job_id)
    await resolver.close()
