"""The runtime interface a worker runs attempts through, and the ``process`` runtime (a child Python process).

A runtime turns a prepared ``AttemptSpec`` (work dir with the pickled entrypoint, env vars, limits) into a
running attempt whose output lines, exit and stop it exposes. The worker does everything else (logs, results,
reports), so ``process`` and ``docker`` behave the same to users.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import anyio

from fluster.environ import inherited_job_environment
from fluster.protocol.jobfiles import LEASE_FORMAT, LIFELINE_FILE
from fluster.protocol.messages import EnvironmentSpec
from fluster.protocol.resources import ResourceSpec, parse_memory
from fluster.worker.memory import MemoryWatch

log = logging.getLogger(__name__)

BOOTSTRAP = Path(__file__).with_name("bootstrap.py")

Stream = Literal["stdout", "stderr"]


@dataclass(frozen=True)
class AttemptSpec:
    """Everything a runtime needs to start one attempt."""

    job_id: str
    attempt: int
    workdir: Path  # holds the entrypoint; the attempt writes its result here (fluster.protocol.jobfiles)
    env: dict[str, str]  # the job's env vars plus FLUSTER_*; the runtime adds nothing the user did not ask for
    resources: ResourceSpec
    environment: EnvironmentSpec
    python_path: list[Path] = field(default_factory=list)  # extra import dirs (workspace, installed packages)
    cwd: Path | None = None  # working directory (a workspace); defaults to workdir


@dataclass(frozen=True)
class ExitInfo:
    exit_code: int  # negative: killed by that signal
    oom_killed: bool = False
    error: str | None = None  # what the runtime itself knows went wrong (OOM message, start failure)


class RunningAttempt(Protocol):
    def lines(self) -> AsyncIterator[tuple[Stream, str]]:
        """Output lines (without the newline) until the attempt's output ends."""
        ...

    async def wait(self) -> ExitInfo: ...

    async def stop(self, grace: float) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns once nothing of the attempt runs."""
        ...


class Runtime(Protocol):
    name: str

    async def start(self, spec: AttemptSpec) -> RunningAttempt: ...

    async def cleanup_stale(self) -> None:
        """Remove what an earlier run of this worker left behind (containers)."""
        ...


class Lifeline:
    """The worker's end of an attempt's lifeline FIFO (in its work dir, so containers see it through the mount).

    When the worker dies, for any reason, the kernel closes this end and the job's bootstrap kills the job's
    process group: a job never outlives its worker, so the controller can rerun it elsewhere safely. Through
    it the worker also renews the attempt's lease (``fluster.worker.lease``): each renewal is the moment, on
    the machine's monotonic clock (shared by every process and container of the host), until which the
    attempt may run; the bootstrap kills the job when that moment passes without a newer one.
    """

    def __init__(self, workdir: Path, until: float) -> None:
        path = workdir / LIFELINE_FILE
        os.mkfifo(path, 0o644)
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_NONBLOCK)  # never blocks; not inherited
        self._until = 0.0
        self.renew(until)

    def renew(self, until: float) -> None:
        """Let the attempt run until ``until`` (monotonic seconds); a lease never shrinks."""
        if self._fd is None or until <= self._until:
            return
        try:
            os.write(self._fd, struct.pack(LEASE_FORMAT, until))  # 8 bytes: atomic, under PIPE_BUF
            self._until = until
        except BlockingIOError:  # the job is not reading (it is exiting): its old lease stands
            pass

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ProcessRuntime:
    """Runs each attempt as ``python bootstrap.py <workdir>`` in its own session (process group)."""

    name = "process"

    def __init__(self, python: str | None = None, passthrough: frozenset[str] = frozenset()) -> None:
        """``passthrough``: names of the worker's environment variables that jobs inherit besides PATH, HOME
        and the like (``fluster.environ.JOB_INHERITS``)."""
        self._python = python or sys.executable
        self._passthrough = passthrough
        self._memory = MemoryWatch()  # enforces each job's memory request (see memory.py for how and why)

    async def start(self, spec: AttemptSpec) -> RunningAttempt:
        # a job process inherits what programs need of the worker's environment (PATH, HOME, ...), never its
        # secrets, plus its own vars
        env = {**inherited_job_environment(self._passthrough), **spec.env}
        env["PYTHONUNBUFFERED"] = "1"
        paths = [str(p) for p in spec.python_path]
        if paths:
            env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        loop = asyncio.get_running_loop()
        transport, pipes = await loop.subprocess_exec(
            _Pipes,
            self._python,
            str(BOOTSTRAP),
            str(spec.workdir),
            cwd=str(spec.cwd or spec.workdir),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, so a stop reaches everything the job started
        )
        pipes.transport = transport
        attempt = _ProcessAttempt(transport, pipes, self._memory, spec.resources.memory)
        self._memory.watch(transport.get_pid(), parse_memory(spec.resources.memory), attempt.out_of_memory)
        return attempt

    async def cleanup_stale(self) -> None:
        return None


MAX_LINE = 1 << 20  # a longer "line" is cut into pieces of this size
HIGH_WATER, LOW_WATER = 4096, 512  # queued lines at which reading the job's pipes pauses / resumes


class _Pipes(asyncio.SubprocessProtocol):
    """Splits the job's stdout and stderr into lines as they arrive, in one queue, with no reader tasks."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[Stream, str] | None] = asyncio.Queue()
        self.exited = asyncio.Event()
        self.transport: asyncio.SubprocessTransport | None = None
        self._partial: dict[int, bytes] = {1: b"", 2: b""}
        self._open = 2
        self._paused = False

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        raw = data if isinstance(data, bytes) else data.encode()
        *lines, rest = (self._partial[fd] + raw).split(b"\n")
        while len(rest) > MAX_LINE:
            lines.append(rest[:MAX_LINE])
            rest = rest[MAX_LINE:]
        self._partial[fd] = rest
        for line in lines:
            self.queue.put_nowait((_STREAMS[fd], line.decode(errors="replace")))
        if self.queue.qsize() > HIGH_WATER and not self._paused:
            self._pause(True)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd not in self._partial:
            return
        if self._partial[fd]:
            self.queue.put_nowait((_STREAMS[fd], self._partial[fd].decode(errors="replace")))
        self._partial[fd] = b""
        self._open -= 1
        if self._open == 0:
            self.queue.put_nowait(None)

    def process_exited(self) -> None:
        self.exited.set()

    def drained(self) -> None:
        if self._paused and self.queue.qsize() < LOW_WATER:
            self._pause(False)

    def _pause(self, pause: bool) -> None:
        self._paused = pause
        for fd in (1, 2):
            pipe = self.transport.get_pipe_transport(fd) if self.transport else None
            if isinstance(pipe, asyncio.ReadTransport):
                pipe.pause_reading() if pause else pipe.resume_reading()


_STREAMS: dict[int, Stream] = {1: "stdout", 2: "stderr"}


class _ProcessAttempt:
    def __init__(self, transport: asyncio.SubprocessTransport, pipes: _Pipes, memory: MemoryWatch, limit: str) -> None:
        self._transport = transport
        self._pipes = pipes
        self._memory = memory
        self._limit = limit
        self._oom_error: str | None = None

    @property
    def pid(self) -> int:
        """The job's process, leader of its session (usage sampling reads its tree)."""
        return self._transport.get_pid()

    def out_of_memory(self, used: int) -> None:
        """Called by the memory watch once it has killed the job for using ``used`` bytes."""
        self._oom_error = (
            f"out of memory: the job exceeded its memory limit of {self._limit} (its processes used {used >> 20}m)"
        )

    async def lines(self) -> AsyncIterator[tuple[Stream, str]]:
        while (item := await self._pipes.queue.get()) is not None:
            self._pipes.drained()
            yield item

    async def wait(self) -> ExitInfo:
        await self._pipes.exited.wait()
        self._memory.unwatch(self._transport.get_pid())
        code = self._transport.get_returncode()
        self._transport.close()
        if self._oom_error is not None:
            return ExitInfo(exit_code=code if code is not None else -9, oom_killed=True, error=self._oom_error)
        return ExitInfo(exit_code=code if code is not None else -1)

    async def stop(self, grace: float) -> None:
        pgid = self._transport.get_pid()
        _signal_group(pgid, signal.SIGTERM)
        with anyio.move_on_after(grace):
            await self._pipes.exited.wait()
        # the group may still hold children of the job even after the job's own process exited
        _signal_group(pgid, signal.SIGKILL)
        await self._pipes.exited.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
