"""Dashboard benchmark: a namespace with 10,000 jobs and 1,000 workers in its registry (records written
straight into the KV buckets through fluster's own codec), served by a real `fluster dashboard` process.

    python bench/dashboard.py [--jobs 10000] [--workers 1000] [--idle-seconds 10]

- time to first byte of the overview (target <= 200 ms) and of the jobs page (target <= 500 ms), median and
  worst of several requests; the job page, the JSON API and /metrics for reference
- the dashboard process's CPU while idle on that cluster (from /proc; target <= 5% of a core)
- how long the dashboard took to load the registry (for reference)
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fluster.bus.assets import ensure_assets
from fluster.bus.connection import connect
from fluster.local.server import NatsServer
from fluster.protocol.codec import encode
from fluster.protocol.messages import (
    AttemptRecord,
    JobRecord,
    JobRequest,
    JobState,
    Payload,
    WorkerInfo,
    WorkerResources,
    now_ms,
)
from fluster.protocol.observe import UsageRecord
from fluster.protocol.resources import ResourceSpec
from fluster.protocol.subjects import Subjects

NAMESPACE = "bench"
TICKS = os.sysconf("SC_CLK_TCK")


def line(name: str, value: str, target: str) -> None:
    print(f"{name:<52} {value:>14}   target {target}")


async def seed(url: str, n_jobs: int, n_workers: int) -> tuple[str, str]:
    """Write the records; returns (a running job id, a finished job id with children)."""
    rng = random.Random(16)
    nc = await connect(url, name="bench-seed")
    assets = await ensure_assets(nc.jetstream(), Subjects(NAMESPACE))
    now = now_ms()
    workers = [f"worker-{i:04d}" for i in range(n_workers)]
    puts = []
    for worker_id in workers:
        info = WorkerInfo(
            worker_id=worker_id,
            incarnation=f"inc{rng.randrange(1 << 30):x}",
            hostname=f"host-{worker_id}.example",
            pid=rng.randrange(1000, 60000),
            runtime="process",
            resources=WorkerResources(cpu=16, memory_bytes=64 << 30, max_concurrent_jobs=10),
            registered_at_ms=now - rng.randrange(86_400_000),
            metadata={"zone": f"zone-{rng.randrange(4)}", "pool": rng.choice(["cpu", "batch"])},
        )
        puts.append((assets.workers, worker_id, encode(info)))
    states = [JobState.SUCCEEDED] * 6 + [JobState.RUNNING] * 2 + [JobState.PENDING, JobState.FAILED]
    running_id = finished_parent = ""
    seq = 0
    for i in range(n_jobs):
        parent = f"job-{i - i % 10:05d}" if i % 10 else None  # one parent per ten jobs, nine children each
        name = f"job-{i:05d}"
        job_id = f"{parent}/{name}" if parent else name
        state = rng.choice(states) if parent else JobState.RUNNING if i % 20 == 0 else JobState.SUCCEEDED
        seq += 1
        submitted = now - rng.randrange(3_600_000)
        attempts = []
        if state != JobState.PENDING:
            worker = rng.choice(workers)
            finished = state.is_terminal
            attempts.append(
                AttemptRecord(
                    attempt=0,
                    worker_id=worker,
                    incarnation="inc0",
                    state=state,
                    assigned_at_ms=submitted + 5,
                    started_at_ms=submitted + 20,
                    finished_at_ms=submitted + 20 + rng.randrange(600_000) if finished else None,
                    exit_code=(0 if state == JobState.SUCCEEDED else 1) if finished else None,
                    error="RuntimeError: the input was malformed" if state == JobState.FAILED else None,
                )
            )
        record = JobRecord(
            job_id=job_id,
            token=f"tok{i}",
            request=JobRequest(
                name=name,
                entrypoint=Payload(entry=f"tok{i}", size=2048),
                resources=ResourceSpec(cpu=rng.choice([0.5, 1, 2]), memory=rng.choice(["512m", "1g", "4g"])),
                parent_id=parent,
            ),
            state=state,
            submitted_at_ms=submitted,
            seq=seq,
            attempts=attempts,
            started_at_ms=attempts[0].started_at_ms if attempts else None,
            finished_at_ms=attempts[0].finished_at_ms if attempts else None,
            exit_code=attempts[0].exit_code if attempts else None,
            error=attempts[0].error if attempts else None,
            result=Payload(inline=b"\x80\x05K*.", size=5) if state == JobState.SUCCEEDED else None,
        )
        puts.append((assets.jobs, job_id, encode(record)))
        if state == JobState.RUNNING:
            running_id = running_id or job_id
            usage = UsageRecord(
                job_id=job_id,
                attempt=0,
                worker_id=attempts[0].worker_id,
                started_at_ms=submitted + 30,
                sampled_at_ms=now,
                cpu_percent=rng.uniform(0, 100),
                cpu_seconds=rng.uniform(0, 1000),
                rss_bytes=rng.randrange(1 << 30),
                peak_rss_bytes=1 << 30,
                memory_bytes=rng.randrange(1 << 30),
                processes=rng.randrange(1, 8),
            )
            puts.append((assets.usage, job_id, encode(usage)))
        if parent is None and state == JobState.SUCCEEDED:
            finished_parent = finished_parent or job_id
    for start in range(0, len(puts), 500):
        await asyncio.gather(*(kv.put(key, value) for kv, key, value in puts[start : start + 500]))
    await nc.close()
    return running_id, finished_parent


def ttfb(address: str, path: str) -> float:
    """Milliseconds from sending a GET to reading the status line; the body is then read in full."""
    host, port = address.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        t0 = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        first = (time.perf_counter() - t0) * 1000
        response.read()
        assert response.status == 200, (path, response.status)
        return first
    finally:
        conn.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=1_000)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--requests", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as store, NatsServer(store_dir=Path(store)) as server:
        t0 = time.perf_counter()
        running, parent = asyncio.run(seed(server.url, args.jobs, args.workers))
        print(f"seeded {args.jobs} jobs and {args.workers} workers in {time.perf_counter() - t0:.1f}s")
        log = Path(store) / "dashboard.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "fluster.cli",
                    "dashboard",
                    "--url",
                    server.url,
                    "--namespace",
                    NAMESPACE,
                    "--port",
                    "0",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            started = time.perf_counter()
            address = None
            while address is None:  # another process's output: there is no event to wait on
                if proc.poll() is not None:
                    raise SystemExit(f"the dashboard exited: {log.read_text()}")
                found = re.search(r"(http://127\.0\.0\.1:\d+)", log.read_text())
                address = found.group(1) if found else None
                time.sleep(0.05)
            loaded = time.perf_counter() - started
            report(address, proc.pid, running, parent, loaded, args)
        finally:
            proc.terminate()
            proc.wait(30)


def report(address: str, pid: int, running: str, parent: str, loaded: float, args: argparse.Namespace) -> None:
    line("dashboard start, registry loaded (s)", f"{loaded:.2f}", "(reference)")
    host, port = address.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", "/api/summary")
    summary = json.loads(conn.getresponse().read())
    conn.close()
    assert summary["jobs"]["count"] == args.jobs and summary["workers"]["count"] == args.workers, summary

    def timed(path: str) -> tuple[float, float]:
        ttfb(address, path)  # warm
        samples = [ttfb(address, path) for _ in range(args.requests)]
        return statistics.median(samples), max(samples)

    for path, name, target in (
        ("/", "overview first byte, median / worst (ms)", "<= 200"),
        ("/jobs", "jobs page first byte, median / worst (ms)", "<= 500"),
        ("/jobs?state=RUNNING", "jobs page, state filter (ms)", "(reference)"),
        ("/jobs?prefix=job-0500", "jobs page, prefix filter (ms)", "(reference)"),
        (f"/jobs/{running}", "a job's page with its log (ms)", "(reference)"),
        (f"/jobs/{parent}", "a parent job's page (ms)", "(reference)"),
        ("/workers", f"workers page, all {args.workers} (ms)", "(reference)"),
        ("/api/summary", "/api/summary (ms)", "(reference)"),
        ("/api/jobs", "/api/jobs (ms)", "(reference)"),
        ("/metrics", "/metrics (ms)", "(reference)"),
    ):
        median, worst = timed(path)
        line(name, f"{median:.1f} / {worst:.1f}", target)
    time.sleep(1.0)  # let the requests' after-effects settle before measuring idle
    before, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(args.idle_seconds)
    used = (cpu_seconds(pid) - before) / (time.monotonic() - t0) * 100
    line(f"idle CPU over {args.idle_seconds:g}s (% of a core)", f"{used:.2f}", "<= 5")
    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    line("dashboard resident memory (MiB)", f"{rss / (1 << 20):.0f}", "(reference)")


if __name__ == "__main__":
    main()
