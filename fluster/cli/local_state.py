"""What ``fluster up`` started, recorded in a state file per port so that ``fluster down`` can stop it, and the
detached mode (``up --detach``: the same command as a background process, its output in a log file).

State files live in ``$FLUSTER_STATE_DIR``, else ``$XDG_STATE_HOME/fluster``, else ``~/.local/state/fluster``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fluster.cli.failures import NOT_FOUND, UNAVAILABLE, NotFound, UsageError
from fluster.local.server import free_port
from fluster.security.local import state_dir as local_state_dir

DEFAULT_PORT = 4222
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0


def state_dir() -> Path:
    return local_state_dir(os.environ)


def choose_port(requested: int | None) -> int:
    """``requested`` if free, else an error; with none, 4222 when free, else any free port.

    Raises:
        UsageError: the requested port is taken.
    """
    if requested is not None:
        if not _free(requested):
            raise UsageError(f"port {requested} is in use; pick another --port or leave it out")
        return requested
    return DEFAULT_PORT if _free(DEFAULT_PORT) else free_port()


def record(
    url: str,
    port: int,
    namespace: str,
    store_dir: str | None,
    dashboard: str | None = None,
    context: Path | None = None,
    auth: Path | None = None,
) -> Path:
    """Write the state file of a running ``up`` (this process); ``context``: its client's natscli context, which
    commands on this machine connect with (``fluster.security.local.local_cluster_context``); ``auth``: its
    identity store (``fluster creds`` issues credentials from it)."""
    directory = state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"up-{port}.json"
    content = {
        "pid": os.getpid(),
        "url": url,
        "port": port,
        "namespace": namespace,
        "store_dir": store_dir,
        "started_at": time.time(),
        "log": os.environ.get("FLUSTER_UP_LOG"),
        "dashboard": dashboard,
        "context": str(context) if context else None,
        "auth": str(auth) if auth else None,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(content))
    tmp.replace(path)
    return path


def forget(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def start_detached(argv: list[str]) -> int:
    """Run ``fluster up`` (``argv`` without ``--detach``) in the background and return once it is up."""
    directory = state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / f"up-{os.getpid()}-{int(time.time())}.log"
    child_argv = [arg for arg in argv if arg != "--detach"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fluster.cli", *child_argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in this terminal does not reach it; `fluster down` does
            env={**os.environ, "FLUSTER_UP_LOG": str(log)},
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        found = next((s for s in _states() if s.get("pid") == proc.pid), None)
        if found is not None:
            print(f"fluster is up in the background (pid {proc.pid}), namespace {found['namespace']!r}")
            print(f"export FLUSTER_URL={found['url']}")
            if found.get("dashboard"):
                print(f"dashboard: {found['dashboard']}")
            if found.get("context"):
                print(f"credentials: {found['context']} (commands here find them for this URL)")
            else:
                print("no authentication (--insecure): any process on this machine can submit jobs")
            print(f"logs: {log}; `fluster down` stops it")
            return 0
        if proc.poll() is not None:
            output = log.read_text(errors="replace").strip().splitlines()
            reason = next((line for line in reversed(output) if line.startswith("error:")), None)
            sys.stderr.write(f"{reason or 'error: fluster up exited with code ' + str(proc.returncode)} (log: {log})\n")
            return proc.returncode or UNAVAILABLE
        time.sleep(0.05)  # waiting for another process to write its state file: there is no event to wait on
    proc.terminate()
    sys.stderr.write(f"error: fluster up did not start within {START_TIMEOUT_S:g}s (log: {log})\n")
    return UNAVAILABLE


def stop_recorded(port: int | None) -> int:
    """Stop every cluster ``fluster up`` recorded (or the one on ``port``); wait until each has exited.

    Raises:
        NotFound: nothing recorded is running.
    """
    states = [s for s in _states() if port is None or s.get("port") == port]
    stopped = 0
    for state in states:
        pid, path = int(state["pid"]), Path(state["_path"])
        if not _alive(pid):
            forget(path)  # left behind by an up that was killed
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # another process's exit: no event to wait on
        if _alive(pid):
            sys.stderr.write(f"error: fluster up (pid {pid}) did not stop within {STOP_TIMEOUT_S:g}s\n")
            return UNAVAILABLE
        forget(path)
        print(f"stopped the cluster at {state['url']} (pid {pid})")
        stopped += 1
    if not stopped:
        where = f" on port {port}" if port is not None else ""
        raise NotFound(f"no cluster started by `fluster up` is running{where} (state in {state_dir()})")
    return 0 if stopped else NOT_FOUND


def running() -> list[dict[str, Any]]:
    """The state of every ``fluster up`` that still runs."""
    return [state for state in _states() if int(state.get("pid", 0)) > 0 and _alive(int(state["pid"]))]


def _states() -> list[dict[str, Any]]:
    found = []
    for path in sorted(state_dir().glob("up-*.json")):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        state["_path"] = str(path)
        found.append(state)
    return found


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reaps it when it is our own child (tests, --detach)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
