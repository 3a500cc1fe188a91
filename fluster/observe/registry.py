"""A tiny in-process metrics registry: counters and histograms as plain data, updated in O(1) on hot paths
(an integer add, a bisect and an add), turned into a ``MetricsSnapshot`` only when one is published.

Pure: no I/O, no clocks. Gauges are functions read at snapshot time, so keeping them costs nothing between
snapshots. Series are created once (at startup, or when an actor is registered), never per call.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable

from fluster.protocol.observe import Component, HistogramSample, MetricsSnapshot, Sample

Labels = tuple[tuple[str, str], ...]

# seconds: from a millisecond to a minute, for dispatch latencies and scheduling passes
LATENCY_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Counter:
    """A number that only grows: ``counter.value += 1`` on the hot path, or ``inc()``."""

    __slots__ = ("name", "labels", "value")

    def __init__(self, name: str, labels: Labels = ()) -> None:
        self.name = name
        self.labels = labels
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class Histogram:
    """Observations counted into fixed buckets; ``observe(v)`` is a bisect and two adds."""

    __slots__ = ("name", "labels", "bounds", "counts", "sum")

    def __init__(self, name: str, bounds: tuple[float, ...] = LATENCY_BOUNDS, labels: Labels = ()) -> None:
        if list(bounds) != sorted(bounds) or not bounds:
            raise ValueError(f"histogram {name}: bounds must be non-empty and ascending")
        self.name = name
        self.labels = labels
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)


GaugeFn = Callable[[], Iterable[tuple[Labels, float]]]


class Registry:
    """The series of one component. ``counter`` / ``histogram`` return the same object for the same name and
    labels, so callers look a series up once and keep it."""

    def __init__(self, component: Component, source_id: str) -> None:
        self.component: Component = component
        self.source_id = source_id
        self._counters: dict[tuple[str, Labels], Counter] = {}
        self._histograms: dict[tuple[str, Labels], Histogram] = {}
        self._gauges: list[tuple[str, GaugeFn]] = []
        self._counter_fns: list[tuple[str, GaugeFn]] = []

    def counter(self, name: str, **labels: str) -> Counter:
        key = (name, _labels(labels))
        found = self._counters.get(key)
        if found is None:
            found = self._counters[key] = Counter(name, key[1])
        return found

    def histogram(self, name: str, bounds: tuple[float, ...] = LATENCY_BOUNDS, **labels: str) -> Histogram:
        key = (name, _labels(labels))
        found = self._histograms.get(key)
        if found is None:
            found = self._histograms[key] = Histogram(name, bounds, key[1])
        return found

    def gauge(self, name: str, read: GaugeFn) -> None:
        """``read()`` gives the gauge's series (labels, value) when a snapshot is taken."""
        self._gauges.append((name, read))

    def counter_fn(self, name: str, read: GaugeFn) -> None:
        """A counter whose values a component already keeps: ``read()`` gives them at snapshot time."""
        self._counter_fns.append((name, read))

    def drop(self, name: str, **labels: str) -> None:
        """Forget a counter series (an actor that is no longer served)."""
        self._counters.pop((name, _labels(labels)), None)

    def snapshot(self, at_ms: int, interval_ms: int) -> MetricsSnapshot:
        gauges = _read(self._gauges)
        counters = [Sample(name=c.name, labels=dict(c.labels), value=c.value) for c in self._counters.values()]
        counters.extend(_read(self._counter_fns))
        return MetricsSnapshot(
            component=self.component,
            source_id=self.source_id,
            at_ms=at_ms,
            interval_ms=interval_ms,
            counters=counters,
            gauges=gauges,
            histograms=[
                HistogramSample(name=h.name, labels=dict(h.labels), bounds=list(h.bounds), counts=h.counts, sum=h.sum)
                for h in self._histograms.values()
            ],
        )


def one(value: float) -> list[tuple[Labels, float]]:
    """An unlabelled gauge's single series."""
    return [((), value)]


def _read(fns: list[tuple[str, GaugeFn]]) -> list[Sample]:
    found: list[Sample] = []
    for name, read in fns:
        found.extend(Sample(name=name, labels=dict(labels), value=value) for labels, value in read())
    return found


def _labels(labels: dict[str, str]) -> Labels:
    return tuple(sorted(labels.items()))
