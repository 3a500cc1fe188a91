"""The controller at scale: a real nats-server and a real ``fluster controller`` process, N simulated workers
speaking fluster's real protocol (one process), M no-op jobs submitted through ``ClusterClient``.

    python bench/scale.py                               # the whole matrix: (1k, 5k, 10k) x (10k, 100k)
    python bench/scale.py --workers 1000 --jobs 10000   # one cell

Each simulated worker registers, heartbeats at the default interval (listing what it runs), takes
dispatches, "runs" each job for a drawn short time, and reports RUNNING and SUCCEEDED. Controller CPU and
RSS are read from /proc, so the figures do not depend on what else the machine does. Per cell it prints:
controller CPU (cores), RSS, submit throughput, submit->dispatch p50/p99, time until every job is terminal,
false worker deaths; then the fitted exponents of controller CPU per job against M and per heartbeat
against N, each beside its target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

HZ = os.sysconf("SC_CLK_TCK")


# -- /proc ----------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def rss_bytes(pid: int) -> int:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1]) * 1024
    return 0


# -- the simulated workers (run in their own process: python bench/scale.py --simulate ...) ---------------


@dataclass
class SimWorker:
    worker_id: str
    incarnation: str
    running: dict[tuple[str, int], float] = field(default_factory=dict)  # attempt -> ends at (monotonic)
    # (what it ran, its incarnation, the heartbeat encoded): a worker's heartbeats repeat while these do not
    # change, and encoding each one again was a large part of the simulator's CPU, which shares the machine
    last_beat: tuple[tuple[tuple[str, int], ...], str, bytes] | None = None


async def simulate(url: str, namespace: str, n: int, interval: float, out: Path, stop_file: Path) -> None:
    """Run ``n`` workers until ``stop_file`` exists; write what they saw to ``out`` (JSON)."""
    from fluster.bus.connection import connect
    from fluster.bus.mux import ReplyMux
    from fluster.protocol.codec import decode, encode
    from fluster.protocol.ids import new_incarnation
    from fluster.protocol.messages import (
        AttemptRef,
        Heartbeat,
        HeartbeatReply,
        JobUpdated,
        RegisterWorker,
        RegisterWorkerReply,
        RunJob,
        WorkerInfo,
        WorkerResources,
        now_ms,
    )
    from fluster.protocol.subjects import Subjects

    subjects = Subjects(namespace)
    nc = await connect(url, name="scale-simulator")
    mux = ReplyMux(nc)
    rng = random.Random(1)
    workers = {f"sim-{i:05d}": SimWorker(f"sim-{i:05d}", new_incarnation()) for i in range(n)}
    dispatched: dict[str, float] = {}  # job id -> wall time the RunJob arrived
    stats = {"false_deaths": 0, "heartbeats": 0, "heartbeat_timeouts": 0, "reports_failed": 0, "terminal": 0}
    dead: set[str] = set()
    last_terminal = [0.0]

    def info(w: SimWorker) -> WorkerInfo:
        return WorkerInfo(
            worker_id=w.worker_id,
            incarnation=w.incarnation,
            hostname="sim",
            pid=os.getpid(),
            runtime="process",
            resources=WorkerResources(cpu=4, memory_bytes=16 << 30, max_concurrent_jobs=10),
            registered_at_ms=now_ms(),
        )

    async def register(w: SimWorker) -> None:
        for _ in range(100):
            try:
                msg = await mux.request(subjects.register(w.worker_id), encode(RegisterWorker(info=info(w))), 10)
                decode(msg.data, RegisterWorkerReply)
                return
            except Exception:
                await asyncio.sleep(0.5)

    sem = asyncio.Semaphore(500)

    async def bounded(coro: Any) -> None:
        async with sem:
            await coro

    await asyncio.gather(*(bounded(register(w)) for w in workers.values()))

    async def report(w: SimWorker, job_id: str, attempt: int, state: Any) -> bool:
        update = JobUpdated(
            worker_id=w.worker_id,
            incarnation=w.incarnation,
            job_id=job_id,
            attempt=attempt,
            state=state,
            at_ms=now_ms(),
            exit_code=0 if state == "SUCCEEDED" else None,
        )
        for _ in range(20):
            try:
                await mux.request(subjects.job_update(w.worker_id), encode(update), 10)
                return True
            except Exception:
                await asyncio.sleep(0.2)
        stats["reports_failed"] += 1
        return False

    async def run_job(w: SimWorker, job_id: str, attempt: int, incarnation: str) -> None:
        duration = rng.uniform(0.0, 0.1)
        w.running[(job_id, attempt)] = time.monotonic() + duration
        await report(w, job_id, attempt, "RUNNING")
        await asyncio.sleep(duration)
        if w.running.pop((job_id, attempt), None) is not None and incarnation == w.incarnation:
            if await report(w, job_id, attempt, "SUCCEEDED"):
                stats["terminal"] += 1
                last_terminal[0] = time.time()

    tasks: set[asyncio.Task[None]] = set()

    async def on_run(msg: Any) -> None:
        w = workers.get(msg.subject.split(".")[-2])
        run = decode(msg.data, RunJob)
        job_id, attempt, incarnation = run.job_id, run.attempt, run.incarnation
        ok = w is not None and incarnation == w.incarnation
        await msg.respond(msgpack.packb({"accepted": ok, "reason": "" if ok else "stale"}))
        if ok and w is not None:
            dispatched.setdefault(job_id, time.time())
            task = asyncio.ensure_future(run_job(w, job_id, attempt, incarnation))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def on_kill(msg: Any) -> None:
        await msg.respond(msgpack.packb({"stopped": True, "message": ""}))

    await nc.subscribe(f"{subjects.prefix}.worker.*.run", cb=on_run)
    await nc.subscribe(f"{subjects.prefix}.worker.*.kill", cb=on_kill)
    await nc.flush()
    Path(str(out) + ".ready").write_text("ready")

    plain_ok: set[bytes] = set()  # answers seen to be a bare "ok" (no attempts to kill): not decoded again

    async def beat(w: SimWorker) -> None:
        key = tuple(w.running)
        if w.last_beat is None or w.last_beat[:2] != (key, w.incarnation):
            running = [AttemptRef(job_id=j, attempt=a) for j, a in key]
            heartbeat = Heartbeat(worker_id=w.worker_id, incarnation=w.incarnation, running=running)
            w.last_beat = (key, w.incarnation, encode(heartbeat))
        try:
            msg = await mux.request(subjects.heartbeat(w.worker_id), w.last_beat[2], 2 * interval)
        except Exception:
            stats["heartbeat_timeouts"] += 1
            return
        stats["heartbeats"] += 1
        if msg.data in plain_ok:
            return
        reply = decode(msg.data, HeartbeatReply)
        if reply.status == "ok" and not reply.kill and len(plain_ok) < 16:
            plain_ok.add(msg.data)
        if reply.status == "reregister":  # the controller declared a live worker dead
            stats["false_deaths"] += 1
            dead.add(w.worker_id)
            w.incarnation = new_incarnation()
            w.running.clear()
            await register(w)

    async def progress() -> None:
        while True:
            Path(str(out) + ".progress").write_text(str(stats["terminal"]))
            await asyncio.sleep(0.5)

    progress_task = asyncio.ensure_future(progress())
    order = list(workers.values())
    while not stop_file.exists():
        start = time.monotonic()
        for i, w in enumerate(order):  # spread each round of heartbeats over the interval
            task = asyncio.ensure_future(beat(w))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if i % 100 == 99:
                await asyncio.sleep(max(0.0, start + interval * (i + 1) / len(order) - time.monotonic()))
        await asyncio.sleep(max(0.0, start + interval - time.monotonic()))
    progress_task.cancel()
    stats["workers_falsely_dead"] = len(dead)
    out.write_text(json.dumps({"stats": stats, "dispatched": dispatched, "last_terminal": last_terminal[0]}))
    await nc.close()


# -- one cell -------------------------------------------------------------------------------------------


def noop() -> None:
    return None


@dataclass
class Cell:
    workers: int
    jobs: int
    controller_cores: float = 0.0
    idle_cores: float = 0.0
    cpu_per_job_ms: float = 0.0
    cpu_per_heartbeat_us: float = 0.0
    rss_mb: float = 0.0
    rss_per_job_kb: float = 0.0
    submits_per_s: float = 0.0
    dispatch_p50_ms: float = 0.0
    dispatch_p99_ms: float = 0.0
    all_terminal_s: float = 0.0
    false_deaths: int = 0
    done: int = 0
    note: str = ""


async def run_cell(n_workers: int, n_jobs: int, timeout: float, interval: float, concurrency: int) -> Cell:
    from fluster.client.cluster import ClusterClient
    from fluster.local.server import NatsServer
    from fluster.types import Entrypoint

    cell = Cell(n_workers, n_jobs)
    tmp = Path(tempfile.mkdtemp(prefix="fluster-scale-"))
    namespace = f"s{uuid.uuid4().hex[:8]}"
    server = NatsServer(store_dir=tmp / "nats")
    (tmp / "nats").mkdir()
    server.start()
    env = {**os.environ, "FLUSTER_LOG_LEVEL": "WARNING"}
    log = open(tmp / "controller.log", "wb")  # noqa: SIM115 - closed at the end of the cell
    profile = (
        ["-m", "cProfile", "-o", os.environ["FLUSTER_SCALE_PROFILE"]] if "FLUSTER_SCALE_PROFILE" in os.environ else []
    )
    controller = subprocess.Popen(
        [sys.executable, *profile, "-m", "fluster.cli", "controller", "--url", server.url, "--namespace", namespace],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    out, stop = tmp / "sim.json", tmp / "sim.stop"
    simulator = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--simulate",
            server.url,
            namespace,
            str(n_workers),
            str(interval),
            str(out),
            str(stop),
        ],
        env=env,
        start_new_session=True,
    )
    try:
        async with ClusterClient.connect(server.url, namespace) as client:
            deadline = time.monotonic() + 120
            while not Path(str(out) + ".ready").exists():
                if time.monotonic() > deadline or simulator.poll() is not None:
                    raise RuntimeError("the simulated workers did not start")
                await asyncio.sleep(0.2)
            while len(await client.list_workers()) < n_workers and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            # idle: N workers heartbeating, nothing to run
            await asyncio.sleep(2 * interval)
            cpu0, t0 = cpu_seconds(controller.pid), time.monotonic()
            await asyncio.sleep(max(5.0, 3 * interval))
            cpu1, t1 = cpu_seconds(controller.pid), time.monotonic()
            cell.idle_cores = (cpu1 - cpu0) / (t1 - t0)
            beats = n_workers * (t1 - t0) / interval
            cell.cpu_per_heartbeat_us = (cpu1 - cpu0) / beats * 1e6
            rss0 = rss_bytes(controller.pid)
            # M jobs, `concurrency` submits in flight
            entry = Entrypoint.from_callable(noop)
            submitted: dict[str, float] = {}
            sem = asyncio.Semaphore(concurrency)
            last_ack = [0.0]

            async def submit(i: int) -> None:
                async with sem:
                    name = f"j{i}"
                    submitted[name] = time.time()
                    await client.submit(name, entry, max_retries_preemption=100)
                    last_ack[0] = time.time()

            cpu_start, wall_start, first = cpu_seconds(controller.pid), time.monotonic(), time.time()
            try:
                await asyncio.wait_for(asyncio.gather(*(submit(i) for i in range(n_jobs))), timeout)
            except TimeoutError:
                cell.note = f"submits not done within {timeout:g}s"
            cell.submits_per_s = len(submitted) / max(1e-9, last_ack[0] - first)
            # until every job is terminal (the simulator's SUCCEEDED reports acknowledged)
            end_by = time.monotonic() + timeout
            while time.monotonic() < end_by:
                await asyncio.sleep(1)
                if _terminal_count(out) >= len(submitted):
                    break
            else:
                cell.note += f" not all terminal within {timeout:g}s"
            cpu_end, wall_end = cpu_seconds(controller.pid), time.monotonic()
            cell.controller_cores = (cpu_end - cpu_start) / (wall_end - wall_start)
            busy = cpu_end - cpu_start - cell.idle_cores * (wall_end - wall_start)  # the jobs' share
            cell.cpu_per_job_ms = max(0.0, busy) / max(1, len(submitted)) * 1000
            cell.rss_mb = rss_bytes(controller.pid) / 2**20
            cell.rss_per_job_kb = max(0, rss_bytes(controller.pid) - rss0) / max(1, len(submitted)) / 1024
    finally:
        stop.write_text("stop")
        try:
            simulator.wait(30)
        except subprocess.TimeoutExpired:
            simulator.kill()
        if profile:  # a clean exit, so that the profile is written
            controller.send_signal(signal.SIGTERM)
            try:
                controller.wait(30)
            except subprocess.TimeoutExpired:
                pass
        for proc in (controller, simulator):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        server.stop()
    if out.exists():
        seen = json.loads(out.read_text())
        cell.false_deaths = int(seen["stats"].get("workers_falsely_dead", 0))
        cell.done = int(seen["stats"].get("terminal", 0))
        latencies = [(seen["dispatched"][j] - t) * 1000 for j, t in submitted.items() if j in seen["dispatched"]]
        if latencies:
            latencies.sort()
            cell.dispatch_p50_ms = statistics.median(latencies)
            cell.dispatch_p99_ms = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        if seen["last_terminal"]:
            cell.all_terminal_s = seen["last_terminal"] - first
    return cell


def _terminal_count(out: Path) -> int:
    """How many jobs are terminal: the simulator counts the SUCCEEDED reports the controller acknowledged
    (an acknowledgement follows the record's write) and writes the count down twice a second."""
    try:
        return int(Path(str(out) + ".progress").read_text() or 0)
    except (OSError, ValueError):
        return 0


# -- the matrix -----------------------------------------------------------------------------------------


def fit_exponent(xs: list[float], ys: list[float]) -> float:
    points = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]
    if len(points) < 2:
        return float("nan")
    mx = statistics.fmean(p[0] for p in points)
    my = statistics.fmean(p[1] for p in points)
    num = sum((x - mx) * (y - my) for x, y in points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return num / den if den else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1000,5000,10000")
    parser.add_argument("--jobs", default="10000,100000")
    parser.add_argument("--cell-timeout", type=float, default=240.0, help="seconds each phase of a cell may take")
    parser.add_argument("--heartbeat-interval", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=512, help="submits in flight")
    parser.add_argument("--simulate", nargs=6, metavar=("URL", "NS", "N", "INTERVAL", "OUT", "STOP"))
    args = parser.parse_args()
    if args.simulate:
        url, ns, n, interval, out, stop = args.simulate
        asyncio.run(simulate(url, ns, int(n), float(interval), Path(out), Path(stop)))
        return
    sizes_n = [int(x) for x in args.workers.split(",")]
    sizes_m = [int(x) for x in args.jobs.split(",")]
    cells: list[Cell] = []
    header = (
        f"{'workers':>8} {'jobs':>8} {'ctl cores':>9} {'idle':>6} {'RSS MB':>7} {'KB/job':>7} {'submit/s':>9} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'done s':>7} {'false':>6} {'ms/job':>7} {'us/hb':>6}"
    )
    print(header, flush=True)
    for n in sizes_n:
        for m in sizes_m:
            c = asyncio.run(run_cell(n, m, args.cell_timeout, args.heartbeat_interval, args.concurrency))
            cells.append(c)
            print(
                f"{c.workers:>8} {c.jobs:>8} {c.controller_cores:>9.2f} {c.idle_cores:>6.2f} {c.rss_mb:>7.0f} "
                f"{c.rss_per_job_kb:>7.2f} {c.submits_per_s:>9.0f} {c.dispatch_p50_ms:>8.0f} "
                f"{c.dispatch_p99_ms:>8.0f} {c.all_terminal_s:>7.1f} {c.false_deaths:>6} {c.cpu_per_job_ms:>7.3f} "
                f"{c.cpu_per_heartbeat_us:>6.0f} {c.note}",
                flush=True,
            )
    print()
    for n in sizes_n:
        row = [c for c in cells if c.workers == n]
        if len(row) >= 2:
            e = fit_exponent([c.jobs for c in row], [c.cpu_per_job_ms for c in row])
            print(f"controller CPU per job against M at N={n}: exponent {e:.2f}   target < 0.1")
    idle = {c.workers: c.cpu_per_heartbeat_us for c in cells}
    if len(idle) >= 2:
        e = fit_exponent(list(idle), list(idle.values()))
        print(f"controller CPU per heartbeat against N: exponent {e:.2f}   target < 0.1 (O(1) per heartbeat)")
    biggest = max(cells, key=lambda c: (c.workers, c.jobs))
    print(
        f"{biggest.workers} workers, {biggest.jobs} jobs: {biggest.false_deaths} false worker deaths "
        f"(target 0), {biggest.done} of {biggest.jobs} terminal (target all)"
    )
    print(f"CPU per job: {max(c.cpu_per_job_ms for c in cells):.3f} ms at most   target <= 0.4 ms")
    top_idle = max(cells, key=lambda c: c.workers)
    print(f"idle {top_idle.workers} workers: controller {top_idle.idle_cores:.2f} of a core   target <= 0.3")
    print(f"submit->dispatch p99 at {biggest.jobs} jobs: {biggest.dispatch_p99_ms:.0f} ms   target <= 1000 ms")
    print(f"controller memory per job: {max(c.rss_per_job_kb for c in cells):.2f} KB   target <= 5 KB")


if __name__ == "__main__":
    main()
