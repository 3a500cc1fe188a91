"""What this machine offers: CPU count, memory, and NVIDIA GPUs (through ``nvidia-smi`` when it is there)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

from fluster.protocol.resources import CpuDevice, GpuDevice

log = logging.getLogger(__name__)


def probe_cpu() -> float:
    try:
        return float(len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return float(os.cpu_count() or 1)


def probe_memory() -> int:
    """Total memory in bytes (cgroup limit when lower than the machine's)."""
    total = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    total = int(line.split()[1]) * 1024
                    break
    except OSError:
        total = 0
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                raw = f.read().strip()
            if raw.isdigit() and 0 < int(raw) < (total or 1 << 62):
                total = int(raw)
        except OSError:
            continue
    return total or 1 << 30


def probe_gpus() -> GpuDevice | CpuDevice:
    """The machine's NVIDIA GPUs as a device (variant = model name), or a CPU device when there are none."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return CpuDevice()
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi failed, assuming no GPUs: %s", exc)
        return CpuDevice()
    names = [line.strip() for line in out.splitlines() if line.strip()]
    if not names:
        return CpuDevice()
    variant = names[0].replace("NVIDIA ", "").replace(" ", "-")
    return GpuDevice(variant=variant, count=len(names))
