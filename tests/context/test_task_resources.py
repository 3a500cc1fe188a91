"""Resources as each backend takes them (pure: no cluster, no Ray)."""

from __future__ import annotations

import pytest

from fluster.context.resources import as_resource_spec, ray_job_resources, ray_options, tpu_head_resource
from fluster.protocol.resources import ResourceSpec, gpu_device, tpu_device


def test_a_ray_style_dict_becomes_ray_options_with_custom_keys_kept() -> None:
    options = ray_options({"CPU": 2, "GPU": 1, "memory": 2**30, "head_node": 0.001})
    assert options == {"num_cpus": 2.0, "num_gpus": 1.0, "memory": 2**30, "resources": {"head_node": 0.001}}
    assert ray_options({"CPU": 0}) == {"num_cpus": 0.0}
    assert ray_options(None) == {}


def test_a_resource_spec_becomes_ray_options() -> None:
    assert ray_options(ResourceSpec(cpu=0.5, memory="64m")) == {"num_cpus": 0.5, "memory": 64 << 20}
    gpus = ray_options(ResourceSpec(cpu=1, memory="1g", device=gpu_device("A100", 2)))
    assert gpus == {"num_cpus": 1, "memory": 1 << 30, "num_gpus": 2}
    tpus = ray_options(ResourceSpec(device=tpu_device("v5litepod-16", 4)))
    assert tpus["resources"] == {"TPU": 4.0}  # a task runs on one host: no slice head


@pytest.mark.parametrize(
    "bad",
    [{"CPU": -1}, {"CPU": "two"}, {"": 1}, {"GPU": float("inf")}, {"CPU": True}],
)
def test_bad_resource_dicts_are_value_errors_that_say_how(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="resource"):
        ray_options(bad)  # type: ignore[arg-type]


def test_the_cluster_backend_takes_cpu_gpu_and_memory_from_a_dict_and_rejects_custom_keys() -> None:
    spec = as_resource_spec({"CPU": 2, "GPU": 1, "memory": 512 << 20})
    assert spec == ResourceSpec(cpu=2, memory="512m", device=gpu_device(count=1))
    assert as_resource_spec(ResourceSpec(cpu=3)) == ResourceSpec(cpu=3)
    assert as_resource_spec(None) is None
    with pytest.raises(ValueError, match=r"custom resources \['head_node'\] are only understood by the ray backend"):
        as_resource_spec({"CPU": 0, "head_node": 0.001})
    with pytest.raises(ValueError, match="whole GPUs"):
        as_resource_spec({"GPU": 0.5})


def test_job_resources_on_ray_name_gpus_or_a_tpu_slice_head() -> None:
    assert ray_job_resources(ResourceSpec()) == {}
    assert ray_job_resources(ResourceSpec(device=gpu_device(count=4))) == {"GPU": 4.0}
    tpu = ray_job_resources(ResourceSpec(device=tpu_device("v5litepod-16", count=8)))
    assert tpu == {"TPU": 8.0, "TPU-v5litepod-16-head": 1.0}
    assert tpu_head_resource("v4-8") == "TPU-v4-8-head"
    with pytest.raises(ValueError, match="needs the TPU type"):
        ray_job_resources(ResourceSpec(device=tpu_device(count=8)))
