"""Resource use of a job's process tree, from ``/proc``: CPU time, resident and proportional memory.

A job is its session (the worker starts it with ``start_new_session``; see ``fluster.worker.memory``, whose
``/proc`` pass and PSS reader this reuses). One read of ``/proc/<pid>/stat`` gives a process's CPU time and
resident set; ``smaps_rollup`` its PSS. CPU percent is CPU time over wall time between two samples.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from fluster.worker.memory import process_memory, session_members

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class TreeSample:
    cpu_seconds: float  # user + system time of the processes alive now
    rss_bytes: int
    pss_bytes: int
    processes: int


def sample_sessions(sessions: set[int]) -> dict[int, TreeSample]:
    """A sample of every process in each of ``sessions`` (one pass over ``/proc``); an ended session is absent."""
    found: dict[int, TreeSample] = {}
    for session, pids in session_members(sessions).items():
        cpu, rss, pss, alive = 0.0, 0, 0, 0
        for pid in pids:
            stat = _stat(pid)
            if stat is None:
                continue
            cpu += stat[0]
            rss += stat[1]
            pss += process_memory(pid)
            alive += 1
        found[session] = TreeSample(cpu_seconds=cpu, rss_bytes=rss, pss_bytes=pss, processes=alive)
    return found


def _stat(pid: int) -> tuple[float, int] | None:
    """(CPU seconds, resident bytes) of ``pid``, or None when it has ended."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # fields after the command name (which may hold spaces and parentheses): state is [0], utime [11],
    # stime [12], rss (pages) [21]
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return (int(fields[11]) + int(fields[12])) / _TICKS, int(fields[21]) * _PAGE
    except (IndexError, ValueError):
        return None
