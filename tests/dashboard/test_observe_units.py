"""The pure parts: the metrics registry, the usage tracker, the dashboard view's indexes, structured logs."""

from __future__ import annotations

import io
import json
import logging

import pytest

from fluster.dashboard.view import ClusterView
from fluster.logs import ContextFilter, JsonFormatter, TextFormatter, bind_context, context_with
from fluster.observe.proc import TreeSample
from fluster.observe.registry import Histogram, Registry, one
from fluster.observe.usage import Running, UsageTracker
from fluster.protocol.messages import AttemptRecord, JobRecord, JobState


def test_histogram_counts_into_buckets_and_overflow() -> None:
    h = Histogram("x", (0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 2.0, 3.0):
        h.observe(value)
    assert h.counts == [2, 1, 2] and h.count == 5 and h.sum == pytest.approx(5.65)
    with pytest.raises(ValueError):
        Histogram("bad", (1.0, 0.5))


def test_registry_snapshot_holds_counters_gauges_histograms() -> None:
    r = Registry("worker", "w1")
    calls = r.counter("calls", actor="a")
    assert r.counter("calls", actor="a") is calls
    calls.value += 3
    r.histogram("lat").observe(0.002)
    r.gauge("running", lambda: one(2))
    r.counter_fn("tasks", lambda: [((("outcome", "completed"),), 7.0)])
    snap = r.snapshot(at_ms=1, interval_ms=500)
    assert {(s.name, s.value) for s in snap.counters} == {("calls", 3), ("tasks", 7)}
    assert snap.gauges[0].value == 2 and snap.histograms[0].counts[2] == 1


def test_usage_tracker_reports_percent_peak_and_a_final_record() -> None:
    samples = {100: TreeSample(cpu_seconds=1.0, rss_bytes=100, pss_bytes=80, processes=2)}
    tracker = UsageTracker("w1", sample=lambda sessions: {s: samples[s] for s in sessions if s in samples})
    run = [Running("job", 0, 100)]
    first = tracker.update(run, now=10.0)
    assert first[0].cpu_percent == 0 and first[0].rss_bytes == 100
    samples[100] = TreeSample(cpu_seconds=2.0, rss_bytes=50, pss_bytes=40, processes=1)
    second = tracker.update(run, now=12.0)[0]
    assert second.cpu_percent == 50.0 and second.peak_rss_bytes == 100 and second.rss_bytes == 50
    final = tracker.update([], now=13.0)
    assert len(final) == 1 and final[0].final and final[0].cpu_seconds == 2.0 and final[0].peak_rss_bytes == 100


def _record(job_id: str, seq: int, state: JobState, parent: str | None = None, worker: str = "w") -> JobRecord:
    attempts = [AttemptRecord(attempt=0, worker_id=worker, incarnation="i", state=state, assigned_at_ms=1)]
    return JobRecord(
        job_id=job_id,
        token="t",
        request={"name": job_id.rsplit("/", 1)[-1], "entrypoint": {"inline": b""}, "parent_id": parent},
        state=state,
        submitted_at_ms=seq,
        seq=seq,
        attempts=attempts if state != JobState.PENDING else [],
    )


def test_view_indexes_follow_every_event() -> None:
    view = ClusterView("ns")
    view.put_job("a", _record("a", 2, JobState.RUNNING))
    view.put_job("b", _record("b", 1, JobState.PENDING))
    view.put_job("a/c", _record("a/c", 3, JobState.RUNNING, parent="a"))
    assert view.ordered_jobs() == ["b", "a", "a/c"] and view.roots() == ["b", "a"]
    assert view.children_of("a") == ["a/c"] and view.on_worker["w"] == {"a", "a/c"}
    view.put_job("a", _record("a", 2, JobState.SUCCEEDED))
    assert view.on_worker["w"] == {"a/c"} and view.states[JobState.SUCCEEDED] == 1
    view.put_job("a/c", None)
    assert "w" not in view.on_worker and view.children_of("a") == [] and view.ordered_jobs() == ["b", "a"]
    assert view.in_state(JobState.PENDING) == ["b"]


def test_log_records_carry_the_bound_context_as_json_and_text() -> None:
    logger = logging.getLogger("fluster.test.logs")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        ctx = context_with(job_id="j1", attempt=2, worker_id="w1")
        ctx.run(logger.info, "hello %s", "there")
        entry = json.loads(stream.getvalue())
        assert entry["message"] == "hello there"
        assert (entry["job_id"], entry["attempt"], entry["worker_id"]) == ("j1", 2, "w1")
        assert "actor" not in entry
        handler.setFormatter(TextFormatter())
        stream.truncate(0)
        stream.seek(0)
        context_with(actor="greeter").run(logger.info, "called")
        assert stream.getvalue().rstrip().endswith("called [actor=greeter]")
    finally:
        logger.removeHandler(handler)
    with pytest.raises(ValueError):
        bind_context(colour="blue")
