"""The blocking facade: the same pool and call API from plain (non-async) code."""

from __future__ import annotations

import pytest
from actors_for_tests import Boom, Calculator, Named

from fluster.actor import ActorNotFound
from fluster.actor.blocking import BlockingActors, connect
from fluster.client.blocking import Client


def test_blocking_facade_calls_broadcasts_and_serves(nats_url: str, namespace: str) -> None:
    with connect(nats_url, namespace, call_timeout=20) as actors:
        server = actors.server()
        server.register("calc", Calculator())
        server.register("svc", Named("only"))
        with server:
            pool = actors.lookup("calc")
            assert pool.wait_for_size(1, timeout=10)[0].name == "calc"
            assert pool.size == 1
            assert pool.call().add(2, 3) == 5
            assert actors.actor("calc").mul(6, 7) == 42
            with pytest.raises(Boom, match="nope"):
                pool.call().fail("nope")
            result = actors.lookup("svc").broadcast().who()
            assert [r.value for r in result.wait_all()] == ["only"]
            assert result.wait_any().value == "only"
            assert [r.value for r in result.as_completed()] == ["only"]
        with pytest.raises(ActorNotFound):
            actors.actor("calc").add(1, 2)


def test_blocking_facade_shares_a_fluster_client(nats_url: str, namespace: str) -> None:
    with Client(nats_url, namespace) as client:
        with BlockingActors.from_client(client) as actors:
            server = actors.server()
            server.register("calc", Calculator())
            with server:
                assert actors.lookup("calc").call().add(1, 2) == 3
        assert client.list_jobs() == []  # the client is still open


def test_leaving_a_local_cluster_stops_the_actor_servers_still_serving_on_it(tmp_path: object) -> None:
    import threading

    from fluster.local.cluster import LocalCluster

    left = threading.Event()
    serving: list[threading.Thread] = []

    def run() -> None:
        with LocalCluster(workers=0) as client:
            actors = BlockingActors.from_client(client)
            entered = actors.server()
            entered.register("calc", Calculator())
            entered.__enter__()  # never exited by the user
            blocked = actors.server()
            blocked.register("svc", Named("serve"))
            thread = threading.Thread(target=blocked.serve, daemon=True)
            thread.start()
            serving.append(thread)
            actors.lookup("svc").wait_for_size(1, timeout=30)
            assert actors.actor("calc").add(1, 2) == 3
        left.set()

    threading.Thread(target=run, daemon=True).start()
    assert left.wait(60), "LocalCluster.__exit__ did not return while an actor server was serving"
    serving[0].join(10)
    assert not serving[0].is_alive()  # serve() returned once the cluster was left
