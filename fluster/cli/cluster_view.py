"""Seeing the cluster: ``status`` (one job, or the whole cluster at a glance, like ``ray status``), ``workers``
and ``actors``. Everything is read from KV; nothing here asks the controller."""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from fluster.actor import registry
from fluster.bus.options import redact_url
from fluster.cli import format as fmt
from fluster.cli.job_status import current_attempt, print_status, print_usage, status_dict, usage_fields
from fluster.cli.session import connected
from fluster.protocol.actor_messages import EndpointRecord
from fluster.protocol.messages import JobState, WorkerInfo
from fluster.types import JobStatus

Sub = Callable[..., argparse.ArgumentParser]

_HOLDING = (JobState.BUILDING, JobState.RUNNING)  # states in which an attempt holds its worker's resources


def register(add: Sub) -> None:
    p = add("status", "show one job, or the whole cluster at a glance", _status, json_output=True)
    p.add_argument("job_id", nargs="?", metavar="JOB", help="job id (leave out for the cluster overview)")
    add("workers", "list workers with their resources in use", _workers, json_output=True)
    add("actors", "list actor names with their endpoints and owning jobs", _actors, json_output=True)


async def _status(args: argparse.Namespace) -> int:
    async with connected(args) as client:
        if args.job_id:
            status = await client.status(args.job_id)
            job_usage = await client.usage(args.job_id)
            if args.json:
                print(json.dumps(usage_fields(status_dict(status), job_usage)))
            else:
                print_status(status)
                print_usage(job_usage)
            return 0
        workers = await client.list_workers()
        jobs = await client.list_jobs()
        actors = await registry.endpoints(client.assets.endpoints, "*")
        url, namespace = redact_url(client.url), client.namespace
    usage = _usage(workers, jobs)
    if args.json:
        print(json.dumps(_overview_dict(url, namespace, workers, jobs, actors, usage)))
        return 0
    _print_overview(url, namespace, workers, jobs, actors, usage)
    return 0


async def _workers(args: argparse.Namespace) -> int:
    async with connected(args) as client:
        workers = await client.list_workers()
        jobs = await client.list_jobs()
    if args.json:
        print(json.dumps([w.model_dump(mode="json") for w in workers]))
        return 0
    usage = _usage(workers, jobs)
    now = time.time()
    rows = []
    for w in workers:
        u = usage.get(w.worker_id, _Use())
        rows.append(
            [
                w.worker_id,
                w.hostname,
                w.runtime,
                f"{u.cpu:g}/{w.resources.cpu:g}",
                f"{fmt.size(u.memory)}/{fmt.size(w.resources.memory_bytes)}",
                fmt.device(w.resources.device),
                str(len(u.jobs)),
                fmt.age(w.registered_at_ms, now),
            ]
        )
    print(fmt.table(["WORKER", "HOST", "RUNTIME", "CPU", "MEMORY", "DEVICE", "JOBS", "UP SINCE"], rows))
    return 0


async def _actors(args: argparse.Namespace) -> int:
    async with connected(args) as client:
        endpoints = await registry.endpoints(client.assets.endpoints, "*")
    if args.json:
        print(json.dumps([e.model_dump(mode="json") for e in endpoints]))
        return 0
    now = time.time()
    rows = [
        [
            e.name,
            e.endpoint_id,
            e.job_id or "-",
            e.worker_id or "-",
            "exclusive" if e.exclusive else "pool",
            fmt.age(e.registered_ms, now),
        ]
        for e in sorted(endpoints, key=lambda e: (e.name, e.registered_ms))
    ]
    print(fmt.table(["ACTOR", "ENDPOINT", "JOB", "WORKER", "KIND", "REGISTERED"], rows))
    return 0


@dataclass
class _Use:
    cpu: float = 0.0
    memory: int = 0
    devices: int = 0
    jobs: list[str] = field(default_factory=list)


def _usage(workers: list[WorkerInfo], jobs: list[JobStatus]) -> dict[str, _Use]:
    """What each worker's current attempts hold, from the job records."""
    usage = {w.worker_id: _Use() for w in workers}
    for job in jobs:
        attempt = current_attempt(job)
        if job.state not in _HOLDING or attempt is None or attempt.worker_id not in usage:
            continue
        use = usage[attempt.worker_id]
        use.cpu += job.resources.cpu
        use.memory += job.resources.memory_bytes
        use.devices += job.resources.device.count
        use.jobs.append(job.job_id)
    return usage


def _print_overview(
    url: str,
    namespace: str,
    workers: list[WorkerInfo],
    jobs: list[JobStatus],
    actors: list[EndpointRecord],
    usage: dict[str, _Use],
) -> None:
    now = time.time()
    busy = sum(1 for w in workers if usage[w.worker_id].jobs)
    print(f"cluster {url}, namespace {namespace!r}")
    print(f"\nworkers: {len(workers)} ({busy} busy, {len(workers) - busy} idle)")
    total_cpu = sum(w.resources.cpu for w in workers)
    total_mem = sum(w.resources.memory_bytes for w in workers)
    total_dev = sum(w.resources.device.count for w in workers)
    used_cpu = sum(u.cpu for u in usage.values())
    used_mem = sum(u.memory for u in usage.values())
    used_dev = sum(u.devices for u in usage.values())
    print(f"  cpu      {used_cpu:g} used, {total_cpu - used_cpu:g} free of {total_cpu:g}")
    print(f"  memory   {fmt.size(used_mem)} used, {fmt.size(total_mem - used_mem)} free of {fmt.size(total_mem)}")
    if total_dev:
        kinds = sorted({fmt.device(w.resources.device) for w in workers if w.resources.device.count})
        print(f"  devices  {used_dev} used, {total_dev - used_dev} free of {total_dev} ({', '.join(kinds)})")
    states = Counter(j.state for j in jobs)
    summary = ", ".join(f"{states[s]} {s.value.lower()}" for s in JobState if states[s]) or "none"
    print(f"\njobs: {summary}")
    pending = [j for j in jobs if j.state in (JobState.PENDING, JobState.PREEMPTED)]
    if pending:
        print(f"\npending demand: {len(pending)} job(s)")
        rows = [
            [
                j.job_id,
                j.resources.describe(),
                fmt.age(j.submitted_at_ms, now),
                j.pending_reason or "waiting for a worker",
            ]
            for j in pending[:20]
        ]
        print(_indent(fmt.table(["JOB", "NEEDS", "SUBMITTED", "WHY"], rows)))
        if len(pending) > 20:
            print(f"  ... and {len(pending) - 20} more (`fluster jobs --state pending`)")
    names = Counter(e.name for e in actors)
    print(f"\nactors: {len(names)} name(s), {len(actors)} endpoint(s)")
    for name_, n in sorted(names.items()):
        print(f"  {name_}  {n} endpoint(s)")


def _overview_dict(
    url: str,
    namespace: str,
    workers: list[WorkerInfo],
    jobs: list[JobStatus],
    actors: list[EndpointRecord],
    usage: dict[str, _Use],
) -> dict[str, object]:
    states = Counter(j.state.value for j in jobs)
    return {
        "url": url,
        "namespace": namespace,
        "workers": [
            {**w.model_dump(mode="json"), "used": {"cpu": u.cpu, "memory_bytes": u.memory, "devices": u.devices}}
            for w in workers
            for u in [usage[w.worker_id]]
        ],
        "jobs": dict(states),
        "pending": [
            {"job_id": j.job_id, "resources": j.resources.model_dump(mode="json"), "reason": j.pending_reason}
            for j in jobs
            if j.state in (JobState.PENDING, JobState.PREEMPTED)
        ],
        "actors": dict(Counter(e.name for e in actors)),
    }


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
