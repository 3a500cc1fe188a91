"""Finished jobs in the controller: what it keeps of one (``compact``) and when it forgets one (``expired``,
from the book's finished-order heap, by the rule of ``fluster.controller.retention``). Pure."""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from fluster.protocol.messages import JobRecord, evolve

if TYPE_CHECKING:
    from fluster.controller.book import Book


def expired(book: Book, now_ms: int, retention_ms: int) -> list[str]:
    """Jobs finished more than ``retention_ms`` ago whose known descendants all are too (the rule of
    ``fluster.controller.retention``), found from the finished-order heap: O(what expires)."""
    cutoff = now_ms - retention_ms
    out: list[str] = []
    recheck: list[tuple[int, str]] = []
    while book.finished and book.finished[0][0] <= cutoff:
        check_at, job_id = heapq.heappop(book.finished)
        record = book.jobs.get(job_id)
        if record is None or job_id in out or not _finished_before(record, cutoff):
            continue  # forgotten already, listed already, or not finished (an entry of an earlier record)
        family = [book.jobs.get(d) for d in book.descendants(job_id)]
        young = [r for r in family if r is not None and not _finished_before(r, cutoff)]
        if young:  # kept for its family: look again once the youngest could have expired
            latest = max(r.finished_at_ms or now_ms for r in young)
            recheck.append((max(latest, check_at + 1), job_id))
        else:
            out.append(job_id)
    for entry in recheck:
        heapq.heappush(book.finished, entry)
    return out


def compact(record: JobRecord) -> JobRecord:
    """What the controller keeps of a finished job: who it is (id, token, parent, entrypoint), how it ended
    (state, times, exit code, error line) and its last attempt; not its result, traceback or earlier
    attempts, which only clients read (from KV). A finished job with a 64 KiB inline result would otherwise
    hold that in the controller for the whole retention."""
    # ``evolve`` shares one (never changed) fields-set: a ``model_copy``'s own set is ~1 KiB a record
    attempts = [evolve(a) for a in record.attempts[-1:]]
    return evolve(record, result=None, error_info=None, attempts=attempts, request=evolve(record.request))


def _finished_before(record: JobRecord, cutoff_ms: int) -> bool:
    return record.state.is_terminal and record.finished_at_ms is not None and record.finished_at_ms <= cutoff_ms
