"""The dashboard's JSON documents, built from the view: ``/api/summary``, ``/api/jobs``, ``/api/jobs/{id}``,
``/api/workers``, ``/api/actors``, ``/api/pools``. The pages render these same documents, so a page and its
API never disagree. Each costs O(what it returns), apart from the summary's sums over workers."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from typing import Any

from fluster.dashboard.values import preview
from fluster.dashboard.view import ClusterView
from fluster.observe import names
from fluster.protocol.messages import JobRecord, JobState
from fluster.protocol.observe import MetricsSnapshot, UsageRecord

PENDING_STATES = (JobState.PENDING, JobState.PREEMPTED)
MAX_LIMIT = 1000
MAX_CHILDREN = 200  # a job page lists this many children at most (the jobs page filters by prefix for more)


def summary(view: ClusterView, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    total_cpu = used_cpu = 0.0
    total_mem = used_mem = total_dev = used_dev = 0
    worker_states: Counter[str] = Counter()
    busy = 0
    for worker_id, info in view.workers.items():
        res = info.resources
        total_cpu += res.cpu
        total_mem += res.memory_bytes
        total_dev += res.device.count
        cpu, mem, dev = view.used(worker_id)
        used_cpu, used_mem, used_dev = used_cpu + cpu, used_mem + mem, used_dev + dev
        busy += 1 if view.on_worker.get(worker_id) else 0
        worker_states[view.worker_state(worker_id, now)] += 1
    pending_ids = view.in_state(*PENDING_STATES)
    actor_names = Counter(e.name for e in view.endpoints.values())
    return {
        "namespace": view.namespace,
        "workers": {"count": len(view.workers), "busy": busy, "by_state": dict(worker_states)},
        "capacity": {
            "cpu": _use(total_cpu, used_cpu),
            "memory_bytes": _use(total_mem, used_mem),
            "devices": _use(total_dev, used_dev),
        },
        "jobs": {"count": len(view.jobs), "by_state": {s.value: n for s, n in view.states.items() if n}},
        "pending": {
            "count": len(pending_ids),
            "jobs": [_pending(view.jobs[j], now) for j in pending_ids[:50]],
        },
        "actors": {"names": len(actor_names), "endpoints": len(view.endpoints)},
        "pools": len(list(view.live_sources("pool"))),
        "loaded": sorted(view.loaded),
    }


def jobs(
    view: ClusterView,
    state: JobState | None = None,
    prefix: str | None = None,
    offset: int = 0,
    limit: int = 100,
) -> dict[str, Any]:
    """Jobs, newest first; without filters, as a tree: a page of top-level jobs, each followed by its
    descendants (``depth`` says how deep)."""
    limit = max(1, min(limit, MAX_LIMIT))
    offset = max(0, offset)
    if state is None and not prefix:
        roots = view.roots()[::-1]
        rows: list[dict[str, Any]] = []
        for root in roots[offset : offset + limit]:
            _subtree(view, root, 0, rows, set())
        return {"total": len(roots), "offset": offset, "limit": limit, "tree": True, "jobs": rows}
    ids = view.in_state(state) if state is not None else view.ordered_jobs()
    if prefix:
        ids = [j for j in ids if j.startswith(prefix)]
    ids = ids[::-1]
    page = [dict(job_row(view, view.jobs[j]), depth=0) for j in ids[offset : offset + limit]]
    return {"total": len(ids), "offset": offset, "limit": limit, "tree": False, "jobs": page}


def job(view: ClusterView, job_id: str) -> dict[str, Any] | None:
    record = view.jobs.get(job_id)
    if record is None:
        return None
    request = record.request
    children = view.children_of(job_id)
    info = record.error_info
    result: dict[str, Any] | None = None
    if record.result is not None:
        inline = record.result.inline
        result = {
            "size": record.result.size or (len(inline) if inline is not None else 0),
            "stored": inline is None,
            "preview": preview(inline) if inline is not None else None,
        }
    return {
        **job_row(view, record),
        "attempts": [
            {
                **a.model_dump(mode="json"),
                "duration_s": _duration(a.started_at_ms, a.finished_at_ms),
            }
            for a in record.attempts
        ],
        "tasks": [
            {
                "index": t.index,
                "state": t.state.value,
                "failure_count": t.failure_count,
                "preemption_count": t.preemption_count,
                "exit_code": t.exit_code,
                "error": t.error,
            }
            for t in record.tasks
        ],
        "replicas": request.replicas,
        "coschedule": request.coschedule,
        "failure_count": record.failure_count,
        "preemption_count": record.preemption_count,
        "max_retries_failure": request.max_retries_failure,
        "max_retries_preemption": request.max_retries_preemption,
        "scheduling_timeout_ms": request.scheduling_timeout_ms,
        "environment": {
            "env_vars": sorted(request.environment.env_vars),  # names only: values may be secrets
            "pip_packages": list(request.environment.pip_packages),
            "workspace": request.environment.workspace,
        },
        "error_info": (
            {"type": info.type_name, "message": info.message, "traceback": info.traceback} if info is not None else None
        ),
        "result": result,
        "kill_requested": record.kill_requested,
        "children": [job_row(view, view.jobs[c]) for c in children[:MAX_CHILDREN] if c in view.jobs],
        "children_total": len(children),
    }


def job_row(view: ClusterView, record: JobRecord) -> dict[str, Any]:
    current = record.current
    resources = record.request.resources
    usage = view.usage.get(record.job_id)
    return {
        "job_id": record.job_id,
        "name": record.request.name,
        "state": record.state.value,
        "parent_id": record.request.parent_id,
        "attempt": current.attempt if current else None,
        "worker_id": current.worker_id if current else None,
        "submitted_at_ms": record.submitted_at_ms,
        "started_at_ms": record.started_at_ms,
        "finished_at_ms": record.finished_at_ms,
        "duration_s": _duration(record.started_at_ms, record.finished_at_ms),
        "resources": {
            "cpu": resources.cpu,
            "memory": resources.memory,
            "memory_bytes": resources.memory_bytes,
            "device": resources.device.model_dump(mode="json"),
            "text": resources.describe(),
        },
        "exit_code": record.exit_code,
        "error": record.error,
        "pending_reason": record.pending_reason,
        "children": len(view.children.get(record.job_id, ())),
        "usage": usage_dict(usage)
        if usage is not None and usage.attempt == (current.attempt if current else -1)
        else None,
    }


def usage_dict(usage: UsageRecord) -> dict[str, Any]:
    return usage.model_dump(mode="json")


def workers(view: ClusterView, now: float | None = None) -> list[dict[str, Any]]:
    now = time.time() if now is None else now
    return [worker(view, w, now) for w in sorted(view.workers)]


def worker(view: ClusterView, worker_id: str, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    info = view.workers[worker_id]
    cpu, mem, dev = view.used(worker_id)
    running = sorted(view.on_worker.get(worker_id, ()), key=lambda j: view.jobs[j].seq)
    usages = [u for j in running if (u := view.usage.get(j)) is not None and not u.final]
    heartbeat = view.heartbeat_at(worker_id)
    return {
        **info.model_dump(mode="json"),
        "state": view.worker_state(worker_id, now),
        "heartbeat_age_s": round(now - heartbeat, 1) if heartbeat is not None else None,
        "used": {"cpu": cpu, "memory_bytes": mem, "devices": dev},
        "free": {
            "cpu": info.resources.cpu - cpu,
            "memory_bytes": info.resources.memory_bytes - mem,
            "devices": info.resources.device.count - dev,
        },
        "labels": dict(info.labels),
        "running": [job_row(view, view.jobs[j]) for j in running],
        "usage": {
            "cpu_percent": round(sum(u.cpu_percent for u in usages), 1),
            "rss_bytes": sum(u.rss_bytes for u in usages),
        },
    }


def actors(view: ClusterView) -> list[dict[str, Any]]:
    calls: defaultdict[str, float] = defaultdict(float)
    errors: defaultdict[str, float] = defaultdict(float)
    for snapshot in view.live_sources("actor"):
        for sample in snapshot.counters:
            name = sample.labels.get("actor", "")
            if sample.name == names.ACTOR_CALLS.name:
                calls[name] += sample.value
            elif sample.name == names.ACTOR_ERRORS.name:
                errors[name] += sample.value
    by_name: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in view.endpoints.values():
        by_name[record.name].append(record.model_dump(mode="json"))
    return [
        {
            "name": name,
            "endpoints": sorted(eps, key=lambda e: e["registered_ms"]),
            "jobs": sorted({e["job_id"] for e in eps if e["job_id"]}),
            "calls": int(calls.get(name, 0)),
            "errors": int(errors.get(name, 0)),
        }
        for name, eps in sorted(by_name.items())
    ]


def pools(view: ClusterView) -> list[dict[str, Any]]:
    found = []
    for snapshot in view.live_sources("pool"):
        found.append(_pool(view, snapshot))
    return sorted(found, key=lambda p: p["pool"])


def _pool(view: ClusterView, snapshot: MetricsSnapshot) -> dict[str, Any]:
    pool_id = snapshot.source_id
    figures: dict[str, Any] = {"pool": pool_id, "executors": {}, "tasks": {}, "queued": 0, "in_flight": 0}
    for sample in snapshot.gauges:
        if sample.name == names.POOL_EXECUTORS.name:
            figures["executors"][sample.labels.get("state", "")] = int(sample.value)
        elif sample.name == names.POOL_QUEUED.name:
            figures["queued"] = int(sample.value)
        elif sample.name == names.POOL_IN_FLIGHT.name:
            figures["in_flight"] = int(sample.value)
    for sample in snapshot.counters:
        if sample.name == names.POOL_TASKS.name:
            figures["tasks"][sample.labels.get("outcome", "")] = int(sample.value)
    # its executors are jobs named <pool>-<index>-<generation>
    figures["jobs"] = [
        job_row(view, view.jobs[j])
        for j in view.in_state(JobState.PENDING, JobState.BUILDING, JobState.RUNNING)
        if view.jobs[j].request.name.startswith(pool_id + "-")
    ]
    return figures


def _subtree(view: ClusterView, job_id: str, depth: int, rows: list[dict[str, Any]], seen: set[str]) -> None:
    if job_id in seen or job_id not in view.jobs:  # a cycle cannot come from the controller; never loop on one
        return
    seen.add(job_id)
    rows.append(dict(job_row(view, view.jobs[job_id]), depth=depth))
    for child in view.children_of(job_id)[:MAX_CHILDREN]:
        _subtree(view, child, depth + 1, rows, seen)


def _pending(record: JobRecord, now: float) -> dict[str, Any]:
    return {
        "job_id": record.job_id,
        "state": record.state.value,
        "resources": record.request.resources.describe(),
        "waiting_s": round(max(0.0, now - record.submitted_at_ms / 1000), 1),
        "reason": record.pending_reason or "waiting for a worker with room",
    }


def _use(total: float, used: float) -> dict[str, float]:
    return {"total": total, "used": used, "free": total - used}


def _duration(start_ms: int | None, end_ms: int | None) -> float | None:
    if start_ms is None:
        return None
    end = end_ms if end_ms is not None else int(time.time() * 1000)
    return round(max(0, end - start_ms) / 1000, 3)
