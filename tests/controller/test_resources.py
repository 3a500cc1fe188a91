import pytest

from fluster.protocol.resources import (
    ResourceSpec,
    cpu_device,
    device_count,
    device_type,
    device_variant,
    gpu_device,
    parse_memory,
    tpu_device,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1g", 1 << 30),
        ("8g", 8 << 30),
        ("512m", 512 << 20),
        ("2GB", 2 << 30),
        ("16GiB", 16 << 30),
        ("1.5g", 3 << 29),
        ("1024", 1024),
        ("64k", 64 << 10),
        ("16gb", 16 << 30),
        (" 4G ", 4 << 30),
    ],
)
def test_parse_memory_string(text: str, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "8x", "-1g", "g", "1gi", "1..5g", "lots of memory"])
def test_parse_memory_string_invalid_says_how_to_fix(text: str) -> None:
    with pytest.raises(ValueError, match="like '512m', '8g'"):
        parse_memory(text)


def test_resource_spec_rejects_bad_memory_at_construction() -> None:
    with pytest.raises(ValueError, match="invalid memory amount 'lots'"):
        ResourceSpec(memory="lots")


def test_device_helpers() -> None:
    assert device_type(cpu_device()) == "cpu"
    assert device_type(gpu_device("A100", 2)) == "gpu"
    assert device_type(tpu_device("v5litepod-16")) == "tpu"
    assert device_variant(gpu_device("A100")) == "A100"
    assert device_variant(gpu_device()) is None
    assert device_variant(cpu_device()) is None
    assert device_count(gpu_device("H100", 4)) == 4
    assert device_count(cpu_device()) == 0


def test_resource_spec_round_trips_through_the_wire() -> None:
    spec = ResourceSpec(cpu=2, memory="2GB", device=gpu_device("A100", 2))
    assert ResourceSpec.model_validate(spec.model_dump()) == spec
