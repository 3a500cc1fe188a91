"""``/metrics``: the Prometheus text exposition of what components published (their latest snapshots, each
series labelled with its ``component`` and ``source``) and of what the dashboard derives from its view (jobs
and workers by state, capacity, per-job CPU and memory). Rendered by ``prometheus_client``."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from fluster.dashboard.view import ClusterView
from fluster.observe import names
from fluster.protocol.messages import JobState
from fluster.protocol.observe import MetricsSnapshot

COMPONENTS = ("controller", "worker", "actor", "pool")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def render(view: ClusterView) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(view))
    return generate_latest(registry)


class _Collector(Collector):
    def __init__(self, view: ClusterView) -> None:
        self.view = view

    def collect(self) -> Iterator[Metric]:
        yield from _published(self.view)
        yield from _derived(self.view)


def _published(view: ClusterView) -> Iterator[Metric]:
    counters: dict[str, CounterMetricFamily] = {}
    gauges: dict[str, GaugeMetricFamily] = {}
    histograms: dict[str, HistogramMetricFamily] = {}
    label_names: dict[str, list[str]] = {}

    def family_labels(name: str, labels: dict[str, str]) -> list[str]:
        # one family has one label set: the first series names it, later ones are fitted to it
        return label_names.setdefault(name, ["component", "source", *sorted(labels)])

    def values(name: str, snapshot: MetricsSnapshot, labels: dict[str, str]) -> list[str]:
        extra = {"component": snapshot.component, "source": snapshot.source_id, **labels}
        return [extra.get(k, "") for k in family_labels(name, labels)]

    for component in COMPONENTS:
        for snapshot in view.live_sources(component):
            for sample in snapshot.counters:
                base = sample.name.removesuffix("_total")
                lv = values(base, snapshot, sample.labels)
                family = counters.get(base)
                if family is None:
                    family = counters[base] = CounterMetricFamily(base, _help(base), labels=label_names[base])
                family.add_metric(lv, sample.value)
            for sample in snapshot.gauges:
                lv = values(sample.name, snapshot, sample.labels)
                g = gauges.get(sample.name)
                if g is None:
                    g = gauges[sample.name] = GaugeMetricFamily(
                        sample.name, _help(sample.name), labels=label_names[sample.name]
                    )
                g.add_metric(lv, sample.value)
            for hist in snapshot.histograms:
                lv = values(hist.name, snapshot, hist.labels)
                hf = histograms.get(hist.name)
                if hf is None:
                    hf = histograms[hist.name] = HistogramMetricFamily(
                        hist.name, _help(hist.name), labels=label_names[hist.name]
                    )
                buckets, running = [], 0
                for bound, count in zip([*hist.bounds, float("inf")], hist.counts, strict=False):
                    running += count
                    buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
                hf.add_metric(lv, buckets, hist.sum)
    yield from counters.values()
    yield from gauges.values()
    yield from histograms.values()


def _derived(view: ClusterView) -> Iterator[Metric]:
    jobs = GaugeMetricFamily(names.JOBS.name, names.JOBS.help, labels=["state"])
    for job_state in JobState:
        jobs.add_metric([job_state.value], float(view.states.get(job_state, 0)))
    yield jobs
    now = time.time()
    worker_states = Counter(view.worker_state(w, now) for w in view.workers)
    workers = GaugeMetricFamily(names.WORKERS.name, names.WORKERS.help, labels=["state"])
    for state in ("alive", "silent", "unknown"):
        workers.add_metric([state], float(worker_states.get(state, 0)))
    yield workers
    capacity = GaugeMetricFamily(names.CAPACITY.name, names.CAPACITY.help, labels=["resource", "kind"])
    totals: defaultdict[str, float] = defaultdict(float)
    for worker_id, info in view.workers.items():
        cpu, mem, dev = view.used(worker_id)
        totals["cpu total"] += info.resources.cpu
        totals["memory_bytes total"] += info.resources.memory_bytes
        totals["devices total"] += info.resources.device.count
        totals["cpu used"] += cpu
        totals["memory_bytes used"] += mem
        totals["devices used"] += dev
    for resource in ("cpu", "memory_bytes", "devices"):
        for kind in ("total", "used"):
            capacity.add_metric([resource, kind], totals[f"{resource} {kind}"])
    yield capacity
    endpoints = GaugeMetricFamily(names.ACTOR_ENDPOINTS.name, names.ACTOR_ENDPOINTS.help, labels=["actor"])
    for actor, count in sorted(Counter(e.name for e in view.endpoints.values()).items()):
        endpoints.add_metric([actor], float(count))
    yield endpoints
    job_cpu = GaugeMetricFamily(names.JOB_CPU.name, names.JOB_CPU.help, labels=["job_id", "worker_id"])
    rss = GaugeMetricFamily(names.JOB_RSS.name, names.JOB_RSS.help, labels=["job_id", "worker_id"])
    peak = GaugeMetricFamily(names.JOB_PEAK_RSS.name, names.JOB_PEAK_RSS.help, labels=["job_id", "worker_id"])
    for job_id in view.in_state(JobState.BUILDING, JobState.RUNNING):  # running jobs only: bounded cardinality
        usage = view.usage.get(job_id)
        if usage is None or usage.final:
            continue
        job_cpu.add_metric([job_id, usage.worker_id], usage.cpu_percent)
        rss.add_metric([job_id, usage.worker_id], float(usage.rss_bytes))
        peak.add_metric([job_id, usage.worker_id], float(usage.peak_rss_bytes))
    yield job_cpu
    yield rss
    yield peak


def _help(name: str) -> str:
    known = names.ALL.get(name) or names.ALL.get(name + "_total")
    return known.help if known is not None else f"{name} (published by a fluster component)"
