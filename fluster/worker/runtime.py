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
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from fluster.protocol.messages import EnvironmentSpec
from fluster.protocol.resources import ResourceSpec

log = logging.getLogger(__name__)

BOOTSTRAP = Path(__file__).with_name("bootstrap.py")
ENTRYPOINT_FILE = "entrypoint.pkl"
RESULT_FILE = "result.pkl"

Stream = Literal["stdout", "stderr"]


@dataclass(frozen=True)
class AttemptSpec:
    """Everything a runtime needs to start one attempt."""

    job_id: str
    attempt: int
    workdir: Path  # holds ENTRYPOINT_FILE; the attempt writes RESULT_FILE here
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


class ProcessRuntime:
    """Runs each attempt as ``python bootstrap.py <workdir>`` in its own session (process group)."""

    name = "process"

    def __init__(self, python: str | None = None) -> None:
        self._python = python or sys.executable

    async def start(self, spec: AttemptSpec) -> RunningAttempt:
        # a job process inherits the worker's environment (PATH, HOME, ...) like any child, plus its own vars
        env = {**os.environ, **spec.env}
        env["PYTHONUNBUFFERED"] = "1"
        paths = [str(p) for p in spec.python_path]
        if paths:
            env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        proc = await asyncio.create_subprocess_exec(
            self._python,
            str(BOOTSTRAP),
            str(spec.workdir),
            cwd=str(spec.cwd or spec.workdir),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=_job_session,
            limit=1 << 20,
        )
        return _ProcessAttempt(proc)

    async def cleanup_stale(self) -> None:
        return None


class _ProcessAttempt:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc

    async def lines(self) -> AsyncIterator[tuple[Stream, str]]:
        queue: asyncio.Queue[tuple[Stream, str] | None] = asyncio.Queue()

        async def pump(stream: Stream, reader: asyncio.StreamReader | None) -> None:
            if reader is not None:
                while True:
                    try:
                        raw = await reader.readline()
                    except ValueError:  # a line longer than the limit: take what is there
                        raw = await reader.read(1 << 20)
                    if not raw:
                        break
                    await queue.put((stream, raw.decode(errors="replace").rstrip("\n")))
            await queue.put(None)

        tasks = [
            asyncio.ensure_future(pump("stdout", self._proc.stdout)),
            asyncio.ensure_future(pump("stderr", self._proc.stderr)),
        ]
        try:
            done = 0
            while done < 2:
                item = await queue.get()
                if item is None:
                    done += 1
                else:
                    yield item
        finally:
            for task in tasks:
                task.cancel()

    async def wait(self) -> ExitInfo:
        return ExitInfo(exit_code=await self._proc.wait())

    async def stop(self, grace: float) -> None:
        pgid = self._proc.pid
        _signal_group(pgid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self._proc.wait(), grace)
        except TimeoutError:
            pass
        # the group may still hold children of the job even after the job's own process exited
        _signal_group(pgid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            await self._proc.wait()


def _job_session() -> None:
    """In the child: its own session (so a stop reaches the whole group), and death with the worker, so a
    SIGKILLed worker leaves no job running that the controller will start again elsewhere."""
    os.setsid()
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
