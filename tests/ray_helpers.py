"""A real local Ray for the tests marked ``ray``: started once per session in this process, bound to loopback,
shut down at the end with a check that none of its processes is left; and the socket and process readers
those checks use (``/proc``, Linux)."""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fluster.context import create_context
from fluster.local.server import free_port

# Set before Ray is imported (it reads them at import): on Linux Ray turns a node address of 127.0.0.1 into
# the machine's own address and listens on all interfaces; with clusters "disabled" (the macOS/Windows
# default) it advertises and binds loopback only. Usage stats stay off (no traffic out), and the token that
# Ray's token authentication wants comes from the environment instead of a new file in ~/.ray.
RAY_TEST_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "token",
}
SHUTDOWN_TIMEOUT_S = 30.0
SESSION_MEMORY = 4 << 30  # the memory resource the session's Ray offers


@dataclass(frozen=True)
class RaySession:
    address: str  # the GCS address, for ray.init(address=...) and RayCluster(address=...)
    dashboard_url: str  # the job server (http://127.0.0.1:<port>)
    temp_dir: Path  # every Ray process of the session names it on its command line (raylet, gcs_server)


def ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


@pytest.fixture(scope="session")
def ray_session() -> Iterator[RaySession]:
    """One Ray for the session: 2 CPUs, 4 GiB and a ``head_node`` resource, the job server on a free loopback
    port; started by a ray context of its own, whose close shuts it down."""
    if not ray_installed():
        if os.environ.get("CI"):
            pytest.fail("ray is not installed in CI: .ci/run installs fluster[ray]")
        pytest.skip("ray is not installed: pip install -e '.[dev,ray]' to run the ray tests")
    if "ray" in sys.modules:
        pytest.fail("ray was imported before the ray_session fixture: its loopback settings could not apply")
    saved = {key: os.environ.get(key) for key in [*RAY_TEST_ENV, "RAY_AUTH_TOKEN"]}
    os.environ.update(RAY_TEST_ENV, RAY_AUTH_TOKEN=uuid.uuid4().hex)
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths live under it
    dashboard_port = free_port()
    # the ray backend's own start (create_context("ray", **ray_init_options)): the tests' contexts join it
    owner = create_context(
        "ray",
        num_cpus=2,
        memory=SESSION_MEMORY,
        resources={"head_node": 1},
        include_dashboard=True,  # the job server (RayCluster's API) is a dashboard module: Ray loads none without
        dashboard_host="127.0.0.1",
        dashboard_port=dashboard_port,
        log_to_driver=False,
        _temp_dir=str(temp_dir),
    )
    import ray

    try:
        yield RaySession(ray.get_runtime_context().gcs_address, f"http://127.0.0.1:{dashboard_port}", temp_dir)
    finally:
        owner.close()  # it started Ray, so it shuts Ray down
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        left = wait_for_no_processes_naming(str(temp_dir), SHUTDOWN_TIMEOUT_S)
        assert not left, f"Ray processes left after shutdown: {left} (Ray's logs: {temp_dir})"
        shutil.rmtree(temp_dir, ignore_errors=True)  # kept when something was left, for its logs


def wait_for_no_processes_naming(text: str, timeout: float) -> list[str]:
    """Wait until no process has ``text`` on its command line; the command lines still there at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        left = [cmd for pid, cmd in command_lines().items() if text in cmd and pid != os.getpid()]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)  # polling real processes for their exit: there is no event to wait on


def command_lines() -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:  # exited meanwhile
                continue
    return found


def descendants(root: int) -> set[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def listening_addresses(pids: set[int]) -> list[tuple[int, str, int]]:
    """``(pid, address, port)`` of every TCP socket in LISTEN state (and bound UDP socket) that ``pids`` hold."""
    owner: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    owner[target[8:-1]] = pid
        except OSError:  # exited meanwhile
            continue
    found = []
    for table, listening_only in (("tcp", True), ("tcp6", True), ("udp", False), ("udp6", False)):
        path = Path("/proc/net") / table
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if inode in owner and (state == "0A" or not listening_only):
                address, port = parse_proc_address(local)
                found.append((owner[inode], address, port))
    return found


def parse_proc_address(text: str) -> tuple[str, int]:
    """``/proc/net/tcp{,6}``'s ``HEX_ADDRESS:HEX_PORT`` (the address in host byte order, 32-bit words)."""
    hex_address, hex_port = text.split(":")
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words)), int(hex_port, 16)


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback
