"""Resource requests and capacities: ``ResourceSpec``, devices and memory strings. Pure data, no I/O."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)


def parse_memory(value: str | int) -> int:
    """Parse a memory amount to bytes: ``512m``, ``8g``, ``2GB``, ``16GiB``, ``1.5g`` or a plain byte count.

    Units are binary (``1g`` = ``1GB`` = ``1GiB`` = 2**30 bytes), as in Kubernetes-style and upstream Fluster sizes.

    Raises:
        ValueError: the string is not a number followed by an optional k/m/g/t/p unit.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid memory amount {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"memory must not be negative, got {value}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"memory must be a string like '512m' or '8g', got {value!r}")
    match = _MEMORY.match(value)
    if match is None or (match.group(3).lower() == "i"):
        raise ValueError(
            f"invalid memory amount {value!r}: use a number and a unit, like '512m', '8g', '2GB' or '16GiB'"
        )
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * _UNITS[unit])


def format_memory(n_bytes: int) -> str:
    for unit in ("t", "g", "m", "k"):
        size = _UNITS[unit]
        if n_bytes >= size and n_bytes % size == 0:
            return f"{n_bytes // size}{unit}"
    return str(n_bytes)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CpuDevice(_Frozen):
    type: Literal["cpu"] = "cpu"
    variant: str = "auto"

    @property
    def count(self) -> int:
        return 0


class GpuDevice(_Frozen):
    type: Literal["gpu"] = "gpu"
    variant: str = "auto"
    count: int = Field(default=1, ge=0)


class TpuDevice(_Frozen):
    type: Literal["tpu"] = "tpu"
    variant: str = "auto"
    count: int = Field(default=1, ge=0)
    topology: str | None = None


Device = Annotated[CpuDevice | GpuDevice | TpuDevice, Field(discriminator="type")]
DeviceType = Literal["cpu", "gpu", "tpu"]


def cpu_device() -> CpuDevice:
    return CpuDevice()


def gpu_device(variant: str = "auto", count: int = 1) -> GpuDevice:
    return GpuDevice(variant=variant, count=count)


def tpu_device(variant: str = "auto", count: int = 1, topology: str | None = None) -> TpuDevice:
    return TpuDevice(variant=variant, count=count, topology=topology)


def device_type(device: CpuDevice | GpuDevice | TpuDevice) -> DeviceType:
    return device.type


def device_variant(device: CpuDevice | GpuDevice | TpuDevice) -> str | None:
    """The variant (``A100``, ``v5litepod-16``), or None when any variant will do."""
    return None if device.variant == "auto" else device.variant


def device_count(device: CpuDevice | GpuDevice | TpuDevice) -> int:
    """Accelerator count (GPUs or TPU chips); 0 for a CPU device."""
    return device.count


class ResourceSpec(_Frozen):
    """What a job asks for (or what a worker offers): CPUs, memory, optional disk and one device kind."""

    cpu: float = Field(default=1, ge=0)
    memory: str = "1g"
    disk: str | None = None
    device: Device = Field(default_factory=CpuDevice)

    @field_validator("memory", mode="before")
    @classmethod
    def _check_memory(cls, value: object) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise ValueError(f"memory must be a string like '512m' or '8g', got {value!r}")
        parse_memory(value)
        return value

    @field_validator("disk", mode="before")
    @classmethod
    def _check_disk(cls, value: object) -> str | None:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise ValueError(f"disk must be a string like '10g', got {value!r}")
        parse_memory(value)
        return value

    @property
    def memory_bytes(self) -> int:
        return parse_memory(self.memory)

    def describe(self) -> str:
        text = f"cpu={self.cpu:g}, memory={self.memory}"
        if self.device.type != "cpu":
            text += f", {self.device.type}={self.device.variant}x{self.device.count}"
        return text
