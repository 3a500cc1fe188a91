"""What components publish about themselves: metrics snapshots (on ``Subjects.metrics``) and per-job resource
usage (the ``usage`` KV bucket). Plain data, no I/O; ``fluster.observe`` fills them, ``fluster.dashboard``
reads them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fluster.protocol.message_base import Message

Component = Literal["controller", "worker", "actor", "pool"]
MAX_SERIES = 10_000  # series one snapshot may carry


class Sample(Message):
    """One value of a counter or gauge series."""

    name: str = Field(max_length=200)
    labels: dict[str, str] = Field(default_factory=dict, max_length=16)
    value: float


class HistogramSample(Message):
    """A histogram as plain data: ``counts[i]`` observations fell at or below ``bounds[i]`` (and above the
    bound before it); ``counts[-1]`` is the overflow bucket (above every bound)."""

    name: str = Field(max_length=200)
    labels: dict[str, str] = Field(default_factory=dict, max_length=16)
    bounds: list[float] = Field(max_length=64)
    counts: list[int] = Field(max_length=65)
    sum: float = 0.0


class MetricsSnapshot(Message):
    """A component's figures since it started (counters only grow), published every few seconds."""

    component: Component
    source_id: str = Field(max_length=256)
    at_ms: int
    interval_ms: int = Field(ge=0)  # when the next snapshot is due: a reader forgets sources silent for long
    counters: list[Sample] = Field(default_factory=list, max_length=MAX_SERIES)
    gauges: list[Sample] = Field(default_factory=list, max_length=MAX_SERIES)
    histograms: list[HistogramSample] = Field(default_factory=list, max_length=MAX_SERIES)


class UsageRecord(Message):
    """What one attempt of a job uses, sampled from its process tree by its worker (usage KV, key: job id).

    ``cpu_percent`` is over the last sampling interval (100 = one core busy); ``rss_bytes`` the resident set
    of every process of the attempt now, ``peak_rss_bytes`` the largest it was seen at; ``memory_bytes`` the
    proportional set size (what the memory limit is enforced on: shared pages counted once).
    """

    job_id: str
    attempt: int
    worker_id: str
    started_at_ms: int
    sampled_at_ms: int
    cpu_percent: float = 0.0
    cpu_seconds: float = 0.0
    rss_bytes: int = 0
    peak_rss_bytes: int = 0
    memory_bytes: int = 0
    processes: int = 0
    final: bool = False  # the attempt has ended: these are its last figures
