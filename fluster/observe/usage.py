"""Per-job resource usage: a worker samples each running attempt's process tree every few seconds and writes
a ``UsageRecord`` to the ``usage`` KV bucket under the job's id; once the attempt ends, a last record marked
``final`` keeps its totals (CPU seconds, peak memory) for as long as the bucket keeps records.

Why a KV bucket, keyed by job id: ``fluster status JOB`` and ``fluster jobs`` read it with a direct get (or a
batched snapshot) without a dashboard running, it outlives the worker that wrote it, and the dashboard keeps
it current with one watch. The write rate is one small record per running attempt per interval.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import anyio
from nats.js.kv import KeyValue

from fluster.observe.proc import TreeSample, sample_sessions
from fluster.protocol.codec import encode
from fluster.protocol.messages import now_ms
from fluster.protocol.observe import UsageRecord

log = logging.getLogger(__name__)

USAGE_INTERVAL_S = 5.0


@dataclass(frozen=True)
class Running:
    """An attempt the worker runs, and the session id (its process's pid) of its process tree."""

    job_id: str
    attempt: int
    session: int


@dataclass
class _Tracked:
    record: UsageRecord
    cpu_seconds: float
    at: float  # monotonic seconds of the last sample


class UsageTracker:
    """Turns successive samples of attempts' process trees into ``UsageRecord``s (pure apart from ``/proc``)."""

    def __init__(self, worker_id: str, sample: Callable[[set[int]], dict[int, TreeSample]] = sample_sessions) -> None:
        self.worker_id = worker_id
        self._sample = sample
        self._tracked: dict[tuple[str, int], _Tracked] = {}

    def update(self, running: Iterable[Running], now: float | None = None) -> list[UsageRecord]:
        """Records for every attempt in ``running`` (current) and for those that have ended since (final)."""
        now = time.monotonic() if now is None else now
        attempts = {(r.job_id, r.attempt): r for r in running}
        samples = self._sample({r.session for r in attempts.values()}) if attempts else {}
        out: list[UsageRecord] = []
        for key, run in attempts.items():
            sample = samples.get(run.session)
            if sample is None:
                continue  # its processes have all ended: reported final once the worker lets go of it
            out.append(self._record(key, run, sample, now))
        for key in set(self._tracked) - set(attempts):
            ended = self._tracked.pop(key)
            out.append(ended.record.model_copy(update={"final": True, "cpu_percent": 0.0, "sampled_at_ms": now_ms()}))
        return out

    def untracked(self, running: Iterable[Running]) -> bool:
        """Whether any of ``running`` has not been sampled yet."""
        return any((r.job_id, r.attempt) not in self._tracked for r in running)

    def _record(self, key: tuple[str, int], run: Running, sample: TreeSample, now: float) -> UsageRecord:
        previous = self._tracked.get(key)
        # CPU time of processes that ended between samples is lost to the sum: never let the total go down
        cpu_total = max(sample.cpu_seconds, previous.cpu_seconds if previous else 0.0)
        if previous is None:
            percent = 0.0
            started = now_ms()
            peak = sample.rss_bytes
        else:
            elapsed = now - previous.at
            percent = max(0.0, (cpu_total - previous.cpu_seconds) / elapsed * 100) if elapsed > 0 else 0.0
            started = previous.record.started_at_ms
            peak = max(previous.record.peak_rss_bytes, sample.rss_bytes)
        record = UsageRecord(
            job_id=run.job_id,
            attempt=run.attempt,
            worker_id=self.worker_id,
            started_at_ms=started,
            sampled_at_ms=now_ms(),
            cpu_percent=round(percent, 1),
            cpu_seconds=round(cpu_total, 2),
            rss_bytes=sample.rss_bytes,
            peak_rss_bytes=peak,
            memory_bytes=sample.pss_bytes,
            processes=sample.processes,
        )
        self._tracked[key] = _Tracked(record, cpu_total, now)
        return record


async def usage_loop(
    kv: KeyValue, worker_id: str, running: Callable[[], list[Running]], interval: float = USAGE_INTERVAL_S
) -> None:
    """Sample ``running()`` every ``interval`` seconds and write each attempt's record to ``kv``, until cancelled.

    An attempt that started since the last sample is sampled within a second (so a short job still gets a
    record), then every ``interval``.
    """
    tracker = UsageTracker(worker_id)
    tick = min(1.0, interval)
    waited = 0.0
    while True:
        await anyio.sleep(tick)
        waited += tick
        current = running()
        if waited < interval and not tracker.untracked(current):
            continue
        waited = 0.0
        try:
            records = await anyio.to_thread.run_sync(tracker.update, current)
        except Exception as exc:  # a sampler failure must not end the worker; the next round tries again
            log.warning("usage sampling failed: %r", exc)
            continue
        for record in records:
            try:
                await kv.put(record.job_id, encode(record))
            except Exception as exc:  # NATS briefly away: the next sample replaces it
                log.info("usage write failed job_id=%s: %r", record.job_id, exc)


def running_attempts(attempts: Iterable[object]) -> list[Running]:
    """The worker's attempts whose runtime exposes a process to sample (``pid``: the process runtime)."""
    found = []
    for attempt in attempts:
        pid = getattr(getattr(attempt, "running", None), "pid", None)
        if isinstance(pid, int) and pid > 0:
            found.append(Running(getattr(attempt, "job_id"), getattr(attempt, "attempt"), pid))  # noqa: B009
    return found
