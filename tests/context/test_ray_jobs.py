"""A JobRequest as Ray job options, and a Ray job's log as lines (pure: no Ray needed)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from fluster import ResourceSpec, create_environment, tpu_device
from fluster.context import JobRequest
from fluster.context.ray_jobs import JobLogLines, entry_command, remote_options, runtime_env, submit_options
from fluster.types import Entrypoint

NOOP = Entrypoint.from_binary("true")


def test_runtime_env_has_env_vars_pip_packages_and_the_workspace_with_excludes(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "w"\ndependencies = ["attrs>=23"]\n[project.optional-dependencies]\nfast = ["orjson"]\n'
    )
    env = create_environment(
        env_vars={"WANDB_MODE": "offline"}, pip_packages=["numpy", "attrs>=23"], workspace=tmp_path, extras=["fast"]
    )
    ray_env = runtime_env(env)
    assert ray_env["env_vars"] == {"WANDB_MODE": "offline"}
    assert ray_env["pip"] == ["numpy", "attrs>=23", "orjson"]  # the workspace's dependencies, once each
    assert ray_env["working_dir"] == str(tmp_path)
    assert {".git", "__pycache__", ".venv", "*.pyc"} <= set(ray_env["excludes"])
    assert runtime_env(None) == {} and runtime_env(create_environment()) == {}


def test_an_extra_the_workspace_does_not_define_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="extra 'gpu' is not defined"):
        runtime_env(create_environment(workspace=tmp_path, extras=["gpu"]))


def test_submit_and_remote_options_ask_for_the_same_resources() -> None:
    request = JobRequest("tpu", NOOP, resources=ResourceSpec(cpu=8, memory="16g", device=tpu_device("v5e-16", 4)))
    assert submit_options(request) == {
        "entrypoint_num_cpus": 8,
        "entrypoint_memory": 16 << 30,
        "entrypoint_num_gpus": None,
        "entrypoint_resources": {"TPU": 4.0, "TPU-v5e-16-head": 1.0},
    }
    assert remote_options(request) == {
        "num_cpus": 8,
        "memory": 16 << 30,
        "resources": {"TPU": 4.0, "TPU-v5e-16-head": 1.0},
    }


def test_the_entry_command_is_one_shell_word_per_argument() -> None:
    command = entry_command("/opt/my python/bin/python", "fluster_entry_ab12", "team-a")
    assert shlex.split(command) == [
        "/opt/my python/bin/python",
        "-m",
        "fluster.context.ray_entry",
        "fluster_entry_ab12",
        "team-a",
    ]


def test_log_lines_drop_rays_setup_and_join_lines_split_across_chunks() -> None:
    lines = JobLogLines("job-1", "python -c 'print(1)\nprint(2)'")  # the command shows over two lines
    assert lines.feed("2026-01-01 INFO job_manager.py:581 -- Runtime env is setting up.\nRunning entry") == []
    assert lines.feed("point for job job-1: python -c 'print(1)\nprint(2)'\nhel") == []
    assert lines.feed("lo\nwor") == ["hello"]
    assert lines.feed("ld\n") == ["world"]
    assert lines.feed("no newline at the end") == []
    assert lines.end() == ["no newline at the end"]


def test_log_lines_of_a_job_that_never_started_are_its_setup_output() -> None:
    lines = JobLogLines("job-2", "python train.py")
    assert lines.feed("Runtime env setup failed: pip could not find 'nope'\n") == []
    assert lines.end() == ["Runtime env setup failed: pip could not find 'nope'"]
