"""Task and actor resources as each backend needs them. Pure: no Ray import, no I/O.

A task or actor asks for resources with a ``ResourceSpec`` or, as Ray and Fray code does, a dict of Ray
resource names (``{"CPU": 1, "GPU": 1, "memory": 2**30, "head_node": 0.001}``). The cluster backend takes
what a ``ResourceSpec`` can say (``as_resource_spec``); the Ray backend takes either (``ray_options``).
``ray_job_resources`` is the custom-resource part of a job request on Ray (GPUs, or a TPU slice's head).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fluster.protocol.resources import CpuDevice, GpuDevice, ResourceSpec, TpuDevice, format_memory

RayResources = Mapping[str, float]
Resources = ResourceSpec | RayResources

_BUILTIN = ("CPU", "GPU", "memory")


def validate_ray_resources(resources: Mapping[Any, Any]) -> dict[str, float]:
    """A plain copy of a Ray-style resource dict.

    Raises:
        ValueError: a name is not a non-empty string, or an amount is not a finite number >= 0.
    """
    checked: dict[str, float] = {}
    for name, amount in resources.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"resource names must be non-empty strings, got {name!r}")
        if isinstance(amount, bool) or not isinstance(amount, int | float) or not math.isfinite(amount) or amount < 0:
            raise ValueError(
                f"resource {name!r} must be a number >= 0 (memory in bytes), got {amount!r}: "
                'for example {"CPU": 1, "memory": 2**30, "head_node": 0.001}'
            )
        checked[name] = float(amount)
    return checked


def as_resource_spec(resources: Resources | None) -> ResourceSpec | None:
    """``resources`` as a ``ResourceSpec`` (a dict's ``CPU``, ``GPU`` and ``memory``), for backends that
    schedule by ``ResourceSpec``.

    Raises:
        ValueError: the dict names a custom resource, which only the Ray backend schedules by.
    """
    if resources is None or isinstance(resources, ResourceSpec):
        return resources
    amounts = validate_ray_resources(resources)
    custom = sorted(set(amounts) - set(_BUILTIN))
    if custom:
        raise ValueError(
            f"custom resources {custom} are only understood by the ray backend; on a fluster cluster ask with "
            "ResourceSpec(cpu=..., memory=..., device=...)"
        )
    gpus = amounts.get("GPU", 0)
    if gpus != int(gpus):
        raise ValueError(f"a fluster cluster gives whole GPUs, got GPU={gpus:g}")
    spec: dict[str, Any] = {"cpu": amounts.get("CPU", 1)}
    if "memory" in amounts:
        spec["memory"] = format_memory(int(amounts["memory"]))
    if gpus:
        spec["device"] = GpuDevice(count=int(gpus))
    return ResourceSpec(**spec)


def ray_options(resources: Resources | None) -> dict[str, Any]:
    """The ``.options(...)`` of a Ray task or actor that asks for ``resources``: ``num_cpus``, ``num_gpus``,
    ``memory`` (bytes) and ``resources`` (the custom ones). Empty for None: Ray's own defaults.

    Raises:
        ValueError: a bad resource dict (see ``validate_ray_resources``).
    """
    if resources is None:
        return {}
    if isinstance(resources, ResourceSpec):
        options: dict[str, Any] = {"num_cpus": resources.cpu, "memory": resources.memory_bytes}
        if isinstance(resources.device, GpuDevice):
            options["num_gpus"] = resources.device.count
        elif isinstance(resources.device, TpuDevice):  # a task runs on one host: its chips, not the slice's head
            options["resources"] = {"TPU": float(resources.device.count)}
        return options
    amounts = validate_ray_resources(resources)
    options = {}
    if "CPU" in amounts:
        options["num_cpus"] = amounts.pop("CPU")
    if "GPU" in amounts:
        options["num_gpus"] = amounts.pop("GPU")
    if "memory" in amounts:
        options["memory"] = int(amounts.pop("memory"))
    if amounts:
        options["resources"] = amounts
    return options


def ray_job_resources(spec: ResourceSpec) -> dict[str, float]:
    """The accelerator resources of a job on Ray: ``{"GPU": n}``, ``{"TPU": chips, "TPU-<type>-head": 1}``
    (the head of the TPU slice, so that a job lands on one slice's first host), ``{}`` for CPU only.

    Raises:
        ValueError: a TPU device without a type (``tpu_device("v5litepod-16", count=4)``).
    """
    device = spec.device
    if isinstance(device, CpuDevice):
        return {}
    if isinstance(device, GpuDevice):
        return {"GPU": float(device.count)}
    assert isinstance(device, TpuDevice)
    return {"TPU": float(device.count), tpu_head_resource(device.variant): 1.0}


def tpu_head_resource(variant: str) -> str:
    """Ray's resource on the first host of a TPU slice of ``variant`` (``TPU-v5litepod-16-head``).

    Raises:
        ValueError: ``variant`` is empty or ``auto``.
    """
    if not variant or variant == "auto":
        raise ValueError(
            "a TPU job on Ray needs the TPU type to find its slice's head host: "
            "tpu_device('v5litepod-16', count=4), not variant='auto'"
        )
    return f"TPU-{variant}-head"
