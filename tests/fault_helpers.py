"""Fault injection the tests share: a TCP proxy that can cut a process off from NATS, attempt markers that
show whether two attempts of a job overlapped, and waiting for a process to be gone."""

from __future__ import annotations

import os
import selectors
import socket
import threading
import time
from pathlib import Path


class Proxy:
    """A loopback TCP proxy in front of a NATS server, for cutting one process off from it.

    ``blackhole()`` stops forwarding in both directions but keeps every connection open: the process's
    socket looks healthy while nothing it sends arrives (a silent partition). ``cut()`` closes every
    connection and refuses new ones; ``restore()`` forwards again (new connections too).
    """

    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._mode = "forward"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nats-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def blackhole(self) -> None:
        with self._lock:
            self._mode = "blackhole"

    def cut(self) -> None:
        with self._lock:
            self._mode = "cut"
            for sock in list(self._pairs):
                self._close(sock)

    def restore(self) -> None:
        with self._lock:
            self._mode = "forward"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with self._lock:
            for sock in list(self._pairs):
                self._close(sock)
        self._selector.close()
        self._listener.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.05):
                with self._lock:
                    if key.fileobj is self._listener:
                        self._accept()
                    elif self._mode == "forward":
                        self._forward(key.fileobj)  # type: ignore[arg-type]
            if self._mode == "blackhole":
                time.sleep(0.01)  # data waits in the kernel's buffers; nothing is read or sent

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        if self._mode == "cut":
            client.close()
            return
        try:
            upstream = socket.create_connection(self._target, timeout=2)
        except OSError:
            client.close()
            return
        for sock in (client, upstream):
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ, None)
        self._pairs[client] = upstream
        self._pairs[upstream] = client

    def _forward(self, sock: socket.socket) -> None:
        peer = self._pairs.get(sock)
        if peer is None:
            return
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(sock)
            return
        try:
            peer.setblocking(True)
            peer.sendall(data)
            peer.setblocking(False)
        except OSError:
            self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        peer = self._pairs.pop(sock, None)
        for s in (sock, peer):
            if s is None:
                continue
            self._pairs.pop(s, None)
            try:
                self._selector.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()


def record_attempt(marker_dir: str, hold_first_s: float = 60.0, hold_later_s: float = 0.2) -> int:
    """A job that shows when each attempt ran: ``<attempt>-<pid>.start`` holds its start time and
    ``<attempt>-<pid>.alive`` the last moment it was seen alive (rewritten every 20 ms); the first attempt
    runs ``hold_first_s``, later ones ``hold_later_s``."""
    attempt = int(os.environ["FLUSTER_ATTEMPT"])
    base = Path(marker_dir, f"{attempt}-{os.getpid()}")
    Path(f"{base}.start").write_text(repr(time.time()))
    alive = Path(f"{base}.alive")
    end = time.monotonic() + (hold_first_s if attempt == 0 else hold_later_s)
    while time.monotonic() < end:
        tmp = Path(f"{base}.alive.tmp")
        tmp.write_text(repr(time.time()))
        tmp.replace(alive)
        time.sleep(0.02)
    return attempt


def attempts_ran(marker_dir: Path) -> dict[int, tuple[float, float, int]]:
    """Per attempt: (start, last seen alive, pid), from ``record_attempt``'s markers."""
    found: dict[int, tuple[float, float, int]] = {}
    for start in marker_dir.glob("*.start"):
        attempt, pid = (int(x) for x in start.stem.split("-"))
        alive = start.with_suffix(".alive")
        last = float(alive.read_text()) if alive.exists() else float(start.read_text())
        found[attempt] = (float(start.read_text()), last, pid)
    return found


def assert_no_overlap(marker_dir: Path) -> None:
    """No attempt started before the one before it was last seen alive."""
    ran = attempts_ran(marker_dir)
    for attempt in sorted(ran)[1:]:
        _, previous_alive, _ = ran[attempt - 1]
        start, _, _ = ran[attempt]
        assert previous_alive < start, f"attempt {attempt - 1} was alive {previous_alive - start:.3f}s into {attempt}"


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
