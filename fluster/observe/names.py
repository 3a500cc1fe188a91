"""Every metric fluster exposes, named once: its Prometheus name, type and help text.

Components publish series under these names (``fluster.observe.components``); the dashboard serves them at
``/metrics`` with this help text, plus the series it derives from its own view of the registries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class MetricName:
    name: str
    kind: Literal["counter", "gauge", "histogram"]
    help: str


def _m(name: str, kind: Literal["counter", "gauge", "histogram"], help_text: str) -> MetricName:
    metric = MetricName(name, kind, help_text)
    ALL[name] = metric
    return metric


ALL: dict[str, MetricName] = {}

# -- published by the controller (the leader) ---------------------------------------------------------------
SUBMITS = _m("fluster_submits", "counter", "Jobs submitted to this controller (new jobs, not retried submits)")
DISPATCH_LATENCY = _m(
    "fluster_dispatch_latency_seconds", "histogram", "From a job's assignment to its worker accepting the dispatch"
)
QUEUE_WAIT = _m("fluster_queue_wait_seconds", "histogram", "From a job's submission to its first assignment")
SCHEDULING_PASS = _m("fluster_scheduling_pass_seconds", "histogram", "Duration of one scheduling pass")
HEARTBEATS = _m("fluster_heartbeats_handled", "counter", "Worker heartbeats the controller handled")
CONTROLLER_JOBS = _m("fluster_controller_jobs", "gauge", "Jobs in the controller's view, by state")
CONTROLLER_WORKERS = _m("fluster_controller_workers", "gauge", "Workers in the controller's view, by state")

# -- published by workers ----------------------------------------------------------------------------------
WORKER_HEARTBEATS = _m("fluster_worker_heartbeats_sent", "counter", "Heartbeats this worker sent")
WORKER_HEARTBEAT_AT = _m(
    "fluster_worker_last_heartbeat_timestamp_seconds", "gauge", "When a controller last answered this worker"
)
WORKER_ATTEMPTS = _m("fluster_worker_attempts_started", "counter", "Attempts this worker started")
WORKER_RUNNING = _m("fluster_worker_running_attempts", "gauge", "Attempts running on this worker")
WORKER_LOG_LINES = _m("fluster_worker_log_lines", "counter", "Job output lines this worker published")

# -- published by actor servers ------------------------------------------------------------------------------
ACTOR_CALLS = _m("fluster_actor_calls", "counter", "Actor calls answered, per actor")
ACTOR_ERRORS = _m("fluster_actor_errors", "counter", "Actor calls answered with an error, per actor")
ACTOR_RUNNING = _m("fluster_actor_calls_running", "gauge", "Actor calls running now, per actor")

# -- published by worker pools --------------------------------------------------------------------------------
POOL_TASKS = _m("fluster_pool_tasks", "counter", "Pool tasks finished, by outcome (completed, failed, retried)")
POOL_QUEUED = _m("fluster_pool_tasks_queued", "gauge", "Pool tasks waiting for an executor")
POOL_IN_FLIGHT = _m("fluster_pool_tasks_in_flight", "gauge", "Pool tasks running on executors")
POOL_EXECUTORS = _m("fluster_pool_executors", "gauge", "Pool executors, by state (ready, busy, starting)")

# -- derived by the dashboard from the registries ---------------------------------------------------------------
JOBS = _m("fluster_jobs", "gauge", "Jobs in the jobs bucket, by state")
WORKERS = _m("fluster_workers", "gauge", "Registered workers, by state (alive, silent, unknown)")
ACTOR_ENDPOINTS = _m("fluster_actor_endpoints", "gauge", "Live endpoints, per actor")
JOB_CPU = _m("fluster_job_cpu_percent", "gauge", "CPU use of a running job's processes (100 = one core)")
JOB_RSS = _m("fluster_job_memory_rss_bytes", "gauge", "Resident memory of a running job's processes")
JOB_PEAK_RSS = _m("fluster_job_memory_peak_rss_bytes", "gauge", "Largest resident memory a running job was seen at")
CAPACITY = _m("fluster_capacity", "gauge", "Cluster capacity by resource (cpu, memory_bytes, devices) and use")
