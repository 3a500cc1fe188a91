"""Actor benchmark (issue 3): fluster actor calls against raw nats-py request-reply, measured in one run.

Run: ``python bench/actors.py`` (starts its own nats-server; responders and actors run in other processes).
Every figure is printed next to its target; ratios compare figures measured in this same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import nats

from fluster.actor import ActorServer, ClusterResolver
from fluster.client.cluster import ClusterClient
from fluster.local.server import NatsServer

RAW_SUBJECT = "bench.raw"
ARG = b"x" * 100
LATENCY_CALLS = 2000
THROUGHPUT_CALLS = 10_000
BIG = 10 * 1024 * 1024


class Echo:
    def echo(self, value: Any) -> Any:
        return value

    async def aecho(self, value: Any) -> Any:
        return value

    async def size(self, value: bytes) -> int:
        return len(value)


# -- the other processes -----------------------------------------------------------------------------


async def serve_raw(url: str) -> None:
    nc = await nats.connect(url)

    async def reply(msg: Any) -> None:
        await msg.respond(msg.data)

    await nc.subscribe(RAW_SUBJECT, cb=reply)
    await nc.flush()
    print("ready", flush=True)
    await anyio.sleep_forever()


async def serve_actor(url: str, namespace: str, name: str, max_concurrency: int) -> None:
    async with ClusterClient.connect(url, namespace) as client:
        server = ActorServer(client)
        server.register(name, Echo(), max_concurrency=max_concurrency)
        server.register(f"{name}-inline", Echo(), max_concurrency=max_concurrency, threaded=False)
        async with server:
            print("ready", flush=True)
            await anyio.sleep_forever()


def spawn(*args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError(f"{args} did not start")
    return proc


# -- measurements ------------------------------------------------------------------------------------


async def latencies(calls: list[Callable[[], Awaitable[Any]]], n: int = LATENCY_CALLS) -> list[tuple[float, float]]:
    """Median and p99 round trip (us) of each call, interleaved so that machine noise hits them alike."""
    for call in calls:
        for _ in range(200):
            await call()
    samples: list[list[float]] = [[] for _ in calls]
    for _ in range(n):
        for call, out in zip(calls, samples, strict=True):
            start = time.perf_counter()
            await call()
            out.append((time.perf_counter() - start) * 1e6)
    result = []
    for out in samples:
        out.sort()
        result.append((statistics.median(out), out[int(len(out) * 0.99)]))
    return result


async def throughput(
    calls: list[Callable[[], Awaitable[Any]]], n: int = THROUGHPUT_CALLS, rounds: int = 3
) -> list[float]:
    """Calls per second of each call with ``n`` in flight at once: the median of ``rounds`` rounds, each
    round measuring every call in turn so that machine noise hits them alike."""
    for call in calls:
        await asyncio.gather(*(call() for _ in range(500)))
    rates: list[list[float]] = [[] for _ in calls]
    for _ in range(rounds):
        for call, out in zip(calls, rates, strict=True):
            start = time.perf_counter()
            await asyncio.gather(*(call() for _ in range(n)))
            out.append(n / (time.perf_counter() - start))
    return [statistics.median(out) for out in rates]


async def big_round_trips(call: Callable[[], Awaitable[Any]]) -> float:
    """Median MiB/s of the 10 MiB argument over five calls."""
    times = []
    for _ in range(5):
        start = time.perf_counter()
        await call()
        times.append(time.perf_counter() - start)
    return (BIG / 2**20) / statistics.median(times)


def row(label: str, value: str, target: str, ok: bool | None = None) -> None:
    mark = "" if ok is None else ("  OK" if ok else "  MISS")
    print(f"{label:<52} {value:>22}   target: {target}{mark}")


async def run(url: str) -> None:
    namespace = "bench"
    procs = [
        spawn("--serve-raw", url),
        spawn("--serve-actor", url, namespace, "one", "64"),
        spawn("--serve-actor", url, namespace, "pair", "64"),
        spawn("--serve-actor", url, namespace, "pair", "64"),
    ]
    try:
        nc = await nats.connect(url)
        async with ClusterClient.connect(url, namespace) as client:
            resolver = ClusterResolver(client)
            one = await resolver.lookup("one")
            inline = await resolver.lookup("one-inline")
            pair = await resolver.lookup("pair")
            await pair.wait_for_size(2, timeout=10)

            (raw_med, raw_p99), (f_med, f_p99), (fa_med, fa_p99), (fi_med, fi_p99) = await latencies(
                [
                    lambda: nc.request(RAW_SUBJECT, ARG, timeout=5),
                    lambda: one.call().echo(ARG),
                    lambda: one.call().aecho(ARG),
                    lambda: inline.call().echo(ARG),
                ]
            )
            raw_tp, one_tp, pair_tp, one_atp, pair_atp = await throughput(
                [
                    lambda: nc.request(RAW_SUBJECT, ARG, timeout=30),
                    lambda: one.call().echo(ARG),
                    lambda: pair.call().echo(ARG),
                    lambda: one.call().aecho(ARG),
                    lambda: pair.call().aecho(ARG),
                ]
            )

            big = os.urandom(BIG)
            assert await one.call().aecho(big) == big
            big_rate = await big_round_trips(lambda: one.call().size(big))
            echo_rate = await big_round_trips(lambda: one.call().aecho(big))

            print(f"\nfluster actor benchmark: 100-byte argument, nats-server at {url}, {os.cpu_count()} cpus\n")
            row(
                "raw nats-py request-reply, median / p99 (us)",
                f"{raw_med:,.0f} / {raw_p99:,.0f}",
                "the floor",
            )
            limit = 1.3 * raw_med
            row(
                "fluster call, sync method, median / p99 (us)",
                f"{f_med:,.0f} / {f_p99:,.0f}",
                f"median <= 1.3x raw = {limit:,.0f} (ratio {f_med / raw_med:.2f}x)",
                f_med <= limit,
            )
            row(
                "fluster call, async method, median / p99 (us)",
                f"{fa_med:,.0f} / {fa_p99:,.0f}",
                f"median <= 1.3x raw = {limit:,.0f} (ratio {fa_med / raw_med:.2f}x)",
                fa_med <= limit,
            )
            row(
                "fluster call, sync method threaded=False (us)",
                f"{fi_med:,.0f} / {fi_p99:,.0f}",
                f"median <= 1.3x raw = {limit:,.0f} (ratio {fi_med / raw_med:.2f}x)",
                fi_med <= limit,
            )
            row("raw nats-py request-reply, 10,000 at once (/s)", f"{raw_tp:,.0f}", "the floor")
            for label, value in (
                ("fluster, one actor max_concurrency=64, sync (/s)", one_tp),
                ("fluster, pool of 2, sync (/s)", pair_tp),
                ("fluster, one actor max_concurrency=64, async (/s)", one_atp),
                ("fluster, pool of 2, async (/s)", pair_atp),
            ):
                row(
                    label,
                    f"{value:,.0f}",
                    f">= raw {raw_tp:,.0f} (ratio {value / raw_tp:.2f}x)",
                    value >= raw_tp,
                )
            row("10 MiB argument, small result (MiB/s)", f"{big_rate:,.0f}", ">= 100 MiB/s", big_rate >= 100)
            row(
                "10 MiB argument echoed back: 10 MiB each way (MiB/s)",
                f"{echo_rate:,.0f}",
                "(no target; 20 MiB moved per call)",
            )
            await resolver.close()
        await nc.close()
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve-raw")
    parser.add_argument("--serve-actor", nargs=4)
    args = parser.parse_args()
    if args.serve_raw:
        anyio.run(serve_raw, args.serve_raw)
    elif args.serve_actor:
        url, namespace, name, conc = args.serve_actor
        anyio.run(serve_actor, url, namespace, name, int(conc))
    else:
        with NatsServer() as server:
            anyio.run(run, server.url)


if __name__ == "__main__":
    main()
