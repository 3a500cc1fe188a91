"""Process vs docker runtime: median latency of a no-op job, and what a cached environment adds.

Usage: ``python bench/runtimes.py [--jobs 20] [--image fluster-base:py311]``; needs dockerd and the base
image (``.ci/docker.sh``). Two measurements: through a ``LocalCluster`` (submit -> result, as a user sees it),
and the runtimes alone, driven as a worker drives them (start -> result, no scheduling or NATS round trips).
Targets (issue 5): docker overhead over process under 300 ms median; a cached environment adds under 100 ms.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

import anyio
import cloudpickle
import nats

from fluster.local.cluster import LocalCluster
from fluster.local.server import NatsServer
from fluster.protocol.jobfiles import ENTRYPOINT_FILE, call_entrypoint
from fluster.protocol.messages import EnvironmentSpec
from fluster.protocol.resources import ResourceSpec
from fluster.protocol.subjects import Subjects
from fluster.types import Entrypoint, create_environment
from fluster.worker.docker_runtime import DockerRuntime
from fluster.worker.environments import EnvironmentCache
from fluster.worker.image import DEFAULT_IMAGE, build_base_image
from fluster.worker.runtime import AttemptSpec, ProcessRuntime, Runtime


def noop() -> int:
    return 1


def use_package() -> int:
    import benchpkg  # type: ignore[import-not-found]  # installed by the environment cache

    return int(benchpkg.VALUE)


async def run_job(runtime: Runtime, root: Path, fn: object, python_path: list[Path]) -> float:
    """Seconds from start() to a readable result, as a worker sees it."""
    workdir = root / uuid.uuid4().hex[:8]
    workdir.mkdir()
    (workdir / ENTRYPOINT_FILE).write_bytes(call_entrypoint(fn, (), {}))
    spec = AttemptSpec(
        job_id="bench",
        attempt=1,
        workdir=workdir,
        env={},
        resources=ResourceSpec(cpu=1, memory="512m"),
        environment=EnvironmentSpec(),
        python_path=python_path,
    )
    started = time.perf_counter()
    attempt = await runtime.start(spec)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_drain, attempt)
        info = await attempt.wait()
    status, _ = pickle.loads((workdir / "result.pkl").read_bytes())
    if info.exit_code != 0 or status != "ok":
        raise RuntimeError(f"bench job failed on {runtime.name}: {info}")
    return time.perf_counter() - started


async def _drain(attempt: object) -> None:
    async for _ in attempt.lines():  # type: ignore[attr-defined]
        pass


def _wheel(directory: Path) -> Path:
    path = directory / "benchpkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("benchpkg.py", "VALUE = 1\n")
        wheel.writestr("benchpkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: benchpkg\nVersion: 1.0\n")
        wheel.writestr(
            "benchpkg-1.0.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        wheel.writestr("benchpkg-1.0.dist-info/RECORD", "")
    return path


async def cluster_latencies(runtime: str, jobs: int, wheel: Path) -> dict[str, float]:
    """Median submit -> result of a no-op job, and of a job whose environment is already cached."""
    env = create_environment(pip_packages=[str(wheel)])
    async with LocalCluster(workers=1, runtime=runtime, namespace=f"bench{uuid.uuid4().hex[:6]}") as client:

        async def one(name: str, fn: object, **options: object) -> float:
            started = time.perf_counter()
            job = await client.submit(name, Entrypoint.from_callable(fn), **options)  # type: ignore[arg-type]
            await client.result(job, timeout=300)
            return time.perf_counter() - started

        await one("warmup", noop)
        await one("install", use_package, environment=env)  # builds the environment once
        plain = [await one(f"noop-{i}", noop) for i in range(jobs)]
        cached = [await one(f"env-{i}", use_package, environment=env) for i in range(jobs)]
    return {"noop": _ms(plain), "cached_env": _ms(cached)}


def _ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


async def main(jobs: int, image: str) -> None:
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    await anyio.to_thread.run_sync(build_base_image, image)
    with tempfile.TemporaryDirectory(prefix="fluster-bench-") as tmp, NatsServer() as server:
        root = Path(tmp)
        nc = await nats.connect(server.url)
        objects = await nc.jetstream().create_object_store(Subjects("bench").object_bucket)
        runtimes: list[Runtime] = [
            ProcessRuntime(),
            DockerRuntime(f"bench-{uuid.uuid4().hex[:6]}", root / "cache", image),
        ]
        cache = EnvironmentCache(root / "envs", objects)
        env = EnvironmentSpec(pip_packages=[str(_wheel(root))])
        started = time.perf_counter()
        await cache.prepare(env, _quiet)
        install = time.perf_counter() - started

        results: dict[str, dict[str, float]] = {}
        for runtime in runtimes:
            await run_job(runtime, root, noop, [])  # warm-up: image check, fluster files for containers
            plain = [await run_job(runtime, root, noop, []) for _ in range(jobs)]
            with_env = []
            for _ in range(jobs):
                started = time.perf_counter()
                prepared = await cache.prepare(env, _quiet)
                assert prepared.cache_hit
                await run_job(runtime, root, use_package, prepared.python_path)
                with_env.append(time.perf_counter() - started)
            results[runtime.name] = {"noop": _ms(plain), "cached_env": _ms(with_env)}
        await nc.close()

    cluster = {name: await cluster_latencies(name, jobs, _wheel(Path(tempfile.mkdtemp()))) for name in results}
    _report(f"through a LocalCluster, submit -> result, median of {jobs}", cluster, None)
    _report(f"runtimes alone, start -> result, median of {jobs}", results, install)


def _report(title: str, results: dict[str, dict[str, float]], install: float | None) -> None:
    process, docker_ = results["process"], results["docker"]
    print(f"{title}:")
    print("  no-op job:")
    print(f"    process  {process['noop']:8.1f} ms")
    print(f"    docker   {docker_['noop']:8.1f} ms")
    ratio = docker_["noop"] / process["noop"]
    overhead = docker_["noop"] - process["noop"]
    print(f"    ratio    {ratio:8.2f} x   docker overhead {overhead:.1f} ms (target < 300 ms)")
    if install is not None:
        print(f"  first environment build (pip install of one local wheel): {install * 1000:.0f} ms")
    print("  a job whose environment is cached:")
    for name, values in results.items():
        added = values["cached_env"] - values["noop"]
        print(f"    {name:8} {values['cached_env']:8.1f} ms   adds {added:.1f} ms (target < 100 ms)")


async def _quiet(line: str) -> None:
    return None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    args = parser.parse_args()
    anyio.run(main, args.jobs, args.image)
