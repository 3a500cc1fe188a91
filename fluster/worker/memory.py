"""Memory limits for the ``process`` runtime: a sampler that measures each job's processes and kills a job that
uses more than it asked for, as the kernel's OOM killer does for a Docker job over its cgroup limit.

Why a sampler: it needs no privileges and no cgroup delegation (a worker is often not root, and cgroups v1/v2
setups differ), and unlike ``RLIMIT_AS`` it limits memory actually used, not address space reserved (which
breaks programs that map large regions they never touch, thread arenas, JITs). A job is its session: the
worker starts it with ``start_new_session``, and its children stay in that session unless they call
``setsid`` themselves. Memory is the proportional set size (``Pss`` in ``/proc/<pid>/smaps_rollup``), so
pages shared by forked children count once, with the resident set as the fallback. The price of sampling: a
spike shorter than the interval can go unseen. The known processes of every job are measured ten times a
second; one pass over ``/proc`` a second, for every job at once, finds the processes they started since.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

SAMPLE_INTERVAL_S = 0.1  # how often the known processes of each job are measured
RESCAN_EVERY = 10  # samples between passes over /proc that find each job's new processes (once a second)
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass
class _Watched:
    limit: int
    on_exceeded: Callable[[int], None]


class MemoryWatch:
    """Watches job sessions on the running event loop: ``watch(session, limit, on_exceeded)`` until
    ``unwatch(session)``. A session over its limit is SIGKILLed and ``on_exceeded(used_bytes)`` is called."""

    def __init__(self, interval: float = SAMPLE_INTERVAL_S) -> None:
        self._interval = interval
        self._jobs: dict[int, _Watched] = {}
        self._members: dict[int, list[int]] = {}  # each job's processes as of the last pass over /proc
        self._samples = 0
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, session: int, limit: int, on_exceeded: Callable[[int], None]) -> None:
        if limit <= 0 or not os.path.isdir("/proc"):
            return
        self._jobs[session] = _Watched(limit, on_exceeded)
        self._members[session] = [session]  # the session leader is the job's own process
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._interval, self._sample)

    def unwatch(self, session: int) -> None:
        self._jobs.pop(session, None)
        self._members.pop(session, None)
        if not self._jobs and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _sample(self) -> None:
        self._timer = None
        try:
            if self._samples % RESCAN_EVERY == 0:
                self._members = session_members(set(self._jobs))
                for gone in set(self._jobs) - set(self._members):  # its processes have all ended
                    self._jobs.pop(gone, None)
            self._samples += 1
            for session, watched in list(self._jobs.items()):
                pids = self._members.get(session, [session])
                used = sum(process_memory(pid) for pid in pids)
                if used > watched.limit:
                    log.warning("job over its memory limit session=%d used=%d limit=%d", session, used, watched.limit)
                    _kill(session, session_members({session}).get(session, pids))
                    self.unwatch(session)
                    watched.on_exceeded(used)
        except Exception as exc:  # a sampler failure must not end the worker; the next pass tries again
            log.warning("memory sampling failed: %r", exc)
        if self._jobs:
            self._timer = asyncio.get_running_loop().call_later(self._interval, self._sample)


def session_members(sessions: set[int]) -> dict[int, list[int]]:
    """The pids of every process in each of ``sessions`` (one pass over ``/proc``)."""
    found: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # the process ended while we looked
            continue
        # the command name (field 2) may hold spaces and parentheses: the fields we need follow the last ')'
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 3 and int(fields[3]) in sessions:
            found.setdefault(int(fields[3]), []).append(int(entry.name))
    return found


def process_memory(pid: int) -> int:
    """Bytes of memory that ``pid`` uses: its proportional set size, else its resident set, else 0."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _kill(session: int, pids: list[int]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(session, signal.SIGKILL)
    for pid in pids:  # members that moved to a process group of their own
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
