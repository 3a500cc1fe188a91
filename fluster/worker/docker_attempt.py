"""A running job container as the worker sees it: its output lines, its exit, its stop, and its removal.

The docker SDK's streaming calls block, so two daemon threads follow the container's stdout and stderr and a
third waits for its exit; they hand what they see to the event loop. The container is removed once its exit
code and OOM flag are read and its logs have drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import docker.errors

from fluster.worker.runtime import AttemptSpec, ExitInfo, Stream

log = logging.getLogger(__name__)

_MAX_LINE = 1 << 20
_LOG_DRAIN_TIMEOUT = 10.0  # after exit, how long wait() lets the log readers catch up before removing


class DockerAttempt:
    """One running container: its output lines, its exit, and its stop. Removed once its exit is known."""

    def __init__(self, container: Any, spec: AttemptSpec, on_removed: Callable[[], None]) -> None:
        self._container = container
        self._spec = spec
        # the container's first process as this host sees it, whose tree the worker samples for per-job usage
        # (fluster.observe.usage); None when the worker cannot see it (dockerd in another PID namespace)
        host_pid = container.attrs.get("State", {}).get("Pid") if isinstance(container.attrs, dict) else None
        self.pid: int | None = host_pid if isinstance(host_pid, int) and host_pid > 0 and _visible(host_pid) else None
        self._on_removed = on_removed
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[Stream, str] | None] = asyncio.Queue()
        self._exited = asyncio.Event()
        self._status: dict[str, Any] = {}
        self._readers_done = threading.Event()
        self._exited_sync = threading.Event()
        self._open_readers = 2
        self._readers_lock = threading.Lock()
        self._finish_lock = anyio.Lock()
        self._result: ExitInfo | None = None
        # Readers start now, so output is kept whether or not, and whenever, lines() is called.
        for stream in ("stdout", "stderr"):
            threading.Thread(
                target=self._read_logs,
                args=(stream,),
                name=f"logs-{container.short_id}-{stream}",
                daemon=True,
            ).start()
        threading.Thread(target=self._wait_exit, name=f"wait-{container.short_id}", daemon=True).start()

    async def lines(self) -> AsyncIterator[tuple[Stream, str]]:
        done = 0
        while done < 2:
            item = await self._queue.get()
            if item is None:
                done += 1
            else:
                yield item

    async def wait(self) -> ExitInfo:
        return await self._finish()

    async def stop(self, grace: float) -> None:
        if not self._exited.is_set():
            await self._signal("SIGTERM")
            with anyio.move_on_after(grace):
                await self._exited.wait()
            if not self._exited.is_set():
                await self._signal("SIGKILL")
        await self._finish()

    # -- internals --------------------------------------------------------------------------------------

    async def _signal(self, sig: str) -> None:
        try:
            await anyio.to_thread.run_sync(lambda: self._container.kill(signal=sig))
        except docker.errors.APIError as exc:  # 409: not running any more, which is what we want
            log.debug("signal %s to container=%s: %s", sig, self._container.short_id, exc)

    async def _finish(self) -> ExitInfo:
        """Wait for exit, collect exit code and OOMKilled, let the logs drain, then remove the container."""
        async with self._finish_lock:
            if self._result is not None:
                return self._result
            await self._exited.wait()
            with anyio.move_on_after(_LOG_DRAIN_TIMEOUT, shield=True):
                await anyio.to_thread.run_sync(self._readers_done.wait, abandon_on_cancel=True)
            with anyio.CancelScope(shield=True):
                result = await anyio.to_thread.run_sync(self._collect_and_remove)
            self._result = result
            self._on_removed()
            return result

    def _collect_and_remove(self) -> ExitInfo:
        container = self._container
        state: dict[str, Any] = {}
        try:
            container.reload()
            state = container.attrs.get("State", {})
        except docker.errors.DockerException as exc:
            log.warning("cannot inspect container=%s: %s", container.short_id, exc)
        code = int(self._status.get("StatusCode", state.get("ExitCode", -1)))
        oom = bool(state.get("OOMKilled", False))
        error: str | None = None
        if oom:
            limit = self._spec.resources.memory
            error = f"out of memory: the job exceeded its memory limit of {limit}"
        elif self._status.get("Error"):
            error = f"docker: {self._status['Error']}"
        elif "error" in self._status:
            error = str(self._status["error"])
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as exc:
            log.warning("cannot remove container=%s: %s", container.short_id, exc)
        log.info(
            "container finished job_id=%s attempt=%s exit_code=%s oom=%s",
            self._spec.job_id,
            self._spec.attempt,
            code,
            oom,
        )
        return ExitInfo(exit_code=_signal_exit_code(code), oom_killed=oom, error=error)

    def _wait_exit(self) -> None:
        try:
            status = dict(self._container.wait())
        except Exception as exc:  # any failure must still release wait(): the state is read afterwards
            status = {"error": f"waiting for the container failed: {exc}"}
        self._status = status
        self._exited_sync.set()
        self._post(self._exited.set)

    def _read_logs(self, stream: Stream) -> None:
        pending = b""
        last = b"\n"
        only = {"stdout": stream == "stdout", "stderr": stream == "stderr"}
        try:
            for chunk in self._container.logs(stream=True, follow=True, **only):
                last = chunk[-1:] or last
                pending += chunk
                *complete, pending = pending.split(b"\n")
                if len(pending) > _MAX_LINE:  # as the process runtime does: a huge line goes out in pieces
                    complete.append(pending)
                    pending = b""
                for raw in complete:
                    self._post(self._queue.put_nowait, (stream, _decode(raw)))
            if last == b"\n" and self._exited_sync.wait(_LOG_DRAIN_TIMEOUT):
                # dockerd's follow stream can end before it sends a final line that has no newline;
                # the stored log has it, so read the last entry back once the container has exited
                tail = bytes(self._container.logs(tail=1, **only))
                if tail and not tail.endswith(b"\n"):
                    pending = tail
        except Exception as exc:  # a removed container ends its log stream with an error; the lines are kept
            log.debug("log stream %s of container=%s ended: %s", stream, self._container.short_id, exc)
        finally:
            if pending:
                self._post(self._queue.put_nowait, (stream, _decode(pending)))
            self._post(self._queue.put_nowait, None)
            with self._readers_lock:
                self._open_readers -= 1
                if self._open_readers == 0:
                    self._readers_done.set()

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop is gone: nobody is listening any more
            self._loop.call_soon_threadsafe(fn, *args)


def _visible(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def _signal_exit_code(code: int) -> int:
    """128+N (killed by signal N, as docker-init reports it) becomes -N, as in the process runtime."""
    return -(code - 128) if 128 < code <= 128 + 64 else code


def _decode(raw: bytes) -> str:
    return raw.decode(errors="replace").rstrip("\r")
