"""Job benchmarks on a local cluster (process runtime), each figure printed next to its target.

    python bench/jobs.py [--jobs 200] [--latency-samples 30]

- median submit→RUNNING and submit→result latency of a no-op job
- jobs/s for N no-op jobs submitted at once
- the scheduler's pure pass time for 10,000 pending jobs over 1,000 workers
- a gang of 8 (8 single-slot workers): submit -> every task RUNNING, median
- the controller's placement pass over 10,000 pending jobs (10% gangs of 8, some with group_by and
  constraints) on 1,000 labelled workers
- cold start: from nothing to the first job result on a fresh LocalCluster
- resident memory of an idle local cluster (nats-server, controller, 2 workers) started by `fluster up`
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import fluster
from fluster.controller import heap
from fluster.controller import state as st
from fluster.controller.book import Book
from fluster.controller.placement import Placer
from fluster.controller.scheduler import JobDemand, WorkerSupply, find_assignments
from fluster.protocol.messages import Constraint, JobRequest, Payload, SubmitJob, WorkerInfo, WorkerResources
from fluster.protocol.resources import ResourceSpec


def noop() -> None:
    return None


def line(name: str, value: str, target: str) -> None:
    print(f"{name:<52} {value:>14}   target {target}")


async def latency(samples: int) -> tuple[float, float]:
    async with fluster.LocalCluster(workers=2) as client:
        await client.result(await client.submit("warmup", noop), timeout=60)
        to_running, to_result = [], []
        for i in range(samples):
            t0_wall = time.time() * 1000
            t0 = time.perf_counter()
            job_id = await client.submit(f"lat-{i}", noop)
            await client.result(job_id, timeout=60)
            to_result.append((time.perf_counter() - t0) * 1000)
            status = await client.status(job_id)
            to_running.append((status.started_at_ms or 0) - t0_wall)
    return statistics.median(to_running), statistics.median(to_result)


async def throughput(n: int) -> float:
    async with fluster.LocalCluster(workers=2) as client:
        await client.result(await client.submit("warmup", noop), timeout=60)
        t0 = time.perf_counter()
        ids = await asyncio.gather(*(client.submit(f"tp-{i}", noop) for i in range(n)))
        for job_id in ids:
            await client.wait(job_id, timeout=300)
        return n / (time.perf_counter() - t0)


def gang_task() -> list[int]:
    import fluster.gang

    return fluster.gang.all_gather(os.getpid())  # returns once every task runs


async def gang_to_running(samples: int) -> float:
    """Submit -> the last of 8 tasks RUNNING (its worker's report), on 8 single-slot workers."""
    async with fluster.LocalCluster(workers=8, cpu=1, memory="1g", max_concurrent_jobs=1) as client:
        times = []
        for i in range(samples + 1):
            t0_wall = time.time() * 1000
            one = ResourceSpec(cpu=1, memory="256m")
            job_id = await client.submit(f"gang-{i}", gang_task, resources=one, replicas=8, coschedule=True)
            await client.result(job_id, timeout=120)
            status = await client.status(job_id)
            started = [a.started_at_ms or 0 for t in status.tasks for a in t.attempts[-1:]]
            if i:  # the first warms the workers' caches
                times.append(max(started) - t0_wall)
        return statistics.median(times)


def scheduler_pass() -> float:
    rng = random.Random(0)
    g = 1 << 30
    jobs = [
        JobDemand(f"j{i}", cpu=rng.choice([1, 2, 4, 8]), memory=rng.choice([1, 2, 4, 16]) * g, queued_at_ms=0)
        for i in range(10_000)
    ]
    times = []
    for _ in range(5):
        workers = [WorkerSupply(f"w{i}", cpu=16, memory=64 * g, used_cpu=rng.choice([0, 8, 12])) for i in range(1000)]
        t0 = time.perf_counter()
        find_assignments(jobs, workers, now_ms=1)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def incremental_pass() -> float:
    """The controller's own placement (``Placer`` over a ``Book``): the first pass over 10,000 pending jobs
    and 1,000 workers, as after a restart (later passes look only at what changed)."""
    rng = random.Random(0)
    times = []
    for _ in range(3):
        book = _book_of_workers(labelled=False)
        for i in range(10_000):
            resources = ResourceSpec(cpu=rng.choice([1, 2, 4, 8]), memory=f"{rng.choice([1, 2, 4, 16])}g")
            request = JobRequest(name=f"j{i}", entrypoint=Payload(inline=b""), resources=resources)
            book.put(st.new_record(SubmitJob(job_id=f"j{i}", token="t", request=request), 0, i))
        times.append(_timed_pass(book))
    return statistics.median(times)


def gang_pass() -> float:
    """The controller's first placement pass over 10,000 pending jobs of which 10% are gangs of 8 (half of
    those with ``group_by=slice``), a quarter of the rest constrained to a zone, on 1,000 workers labelled by
    zone and slice (125 slices of 8)."""
    rng = random.Random(0)
    times = []
    for _ in range(3):
        book = _book_of_workers(labelled=True)
        for i in range(10_000):
            resources = ResourceSpec(cpu=rng.choice([1, 2, 4, 8]), memory=f"{rng.choice([1, 2, 4, 16])}g")
            fields: dict[str, object] = {}
            if i % 10 == 0:
                fields = {"replicas": 8, "coschedule": True, "group_by": "slice" if i % 20 == 0 else None}
            elif i % 4 == 0:
                fields = {"constraints": [Constraint(label="zone", values=[rng.choice("abcd")])]}
            request = JobRequest(name=f"j{i}", entrypoint=Payload(inline=b""), resources=resources, **fields)
            book.put(st.new_record(SubmitJob(job_id=f"j{i}", token="t", request=request), 0, i))
        times.append(_timed_pass(book))
    return statistics.median(times)


def _book_of_workers(labelled: bool) -> Book:
    """1,000 workers of 16 CPUs; ``labelled``: by zone (4) and slice (125 slices of 8)."""
    book = Book()
    for w in range(1000):
        info = WorkerInfo(
            worker_id=f"w{w}",
            incarnation="i",
            hostname="h",
            pid=1,
            runtime="process",
            resources=WorkerResources(cpu=16, memory_bytes=64 << 30, max_concurrent_jobs=100),
            registered_at_ms=0,
            labels={"zone": "abcd"[w % 4], "slice": f"s{w // 8}"} if labelled else {},
        )
        book.add_worker(info, 0)
    return book


def _timed_pass(book: Book) -> float:
    """One pass of the controller's placement, each placement committed (as ``jobs.schedule_pass`` does),
    with the bounded explanation of what waits; milliseconds."""
    placer = Placer(reserve_after_ms=180_000)
    with heap.tuned():  # the collector as the controller's process runs it
        t0 = time.perf_counter()
        for job_id, unit, workers in placer.place(book, 0):
            record = book.jobs[job_id]
            if record.request.is_gang:
                book.put(st.assign_gang(record, [(t, w, "i", None) for t, w in enumerate(workers)], 0))
            else:
                book.put(st.assign(record, workers[0], "i", 0, task=unit))
        placer.explain_blocked(book, 0)
        return (time.perf_counter() - t0) * 1000


def cold_start() -> float:
    code = (
        "import time; t0 = time.perf_counter()\n"
        "import fluster\n"
        "with fluster.LocalCluster(workers=2) as c:\n"
        "    c.result(c.submit('first', lambda: 1), timeout=60)\n"
        "    print(time.perf_counter() - t0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def idle_memory_mb() -> float:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fluster.cli", "up", "--workers", "2"],
        stdout=subprocess.PIPE,
        text=True,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        for text in proc.stdout:
            if text.startswith("press Ctrl-C"):
                break
        time.sleep(3)  # let the idle cluster settle (heartbeats, caches) before reading its memory
        return sum(_rss_kb(pid) for pid in _tree(proc.pid)) / 1024
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def _rss_kb(pid: int) -> int:
    try:
        for text in Path(f"/proc/{pid}/status").read_text().splitlines():
            if text.startswith("VmRSS:"):
                return int(text.split()[1])
    except OSError:
        pass
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--latency-samples", type=int, default=30)
    args = parser.parse_args()
    print(f"fluster job benchmarks ({os.cpu_count()} CPUs, process runtime)")
    running, result = asyncio.run(latency(args.latency_samples))
    line("no-op job submit -> RUNNING, median", f"{running:.1f} ms", "(none)")
    line("no-op job submit -> result, median", f"{result:.1f} ms", "< 200 ms")
    line(f"throughput, {args.jobs} no-op jobs", f"{asyncio.run(throughput(args.jobs)):.1f} jobs/s", "(none)")
    line("scheduler pass, 10,000 pending x 1,000 workers", f"{scheduler_pass():.1f} ms", "< 100 ms")
    line("controller placement, 10,000 pending x 1,000 workers", f"{incremental_pass():.1f} ms", "< 100 ms")
    line("gang of 8: submit -> every task RUNNING, median", f"{asyncio.run(gang_to_running(5)):.0f} ms", "(none)")
    line("placement, 10,000 pending (10% gangs of 8) x 1,000 labelled", f"{gang_pass():.1f} ms", "< 100 ms")
    line("cold start to first result (fresh LocalCluster)", f"{cold_start():.2f} s", "< 2 s (ray: 4.4 s)")
    line("idle local cluster resident memory", f"{idle_memory_mb():.0f} MB", "< 400 MB (ray: 1.8 GB)")


if __name__ == "__main__":
    main()
