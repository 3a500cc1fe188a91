"""The ``fluster`` command against a real cluster: a controller and worker started by the CLI itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cluster_helpers import Processes

pytestmark = pytest.mark.timeout(180)


def cli(url: str, namespace: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fluster.cli", *args, "--url", url, "--namespace", namespace],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(cwd or ".")},
    )


def test_cli_runs_a_job_end_to_end(processes: Processes, nats_url: str, namespace: str, tmp_path: Path) -> None:
    (tmp_path / "jobs_mod.py").write_text("def hello(name):\n    print('hi', name)\n    return name.upper()\n")
    processes.controller()
    processes.worker("cli-worker")
    out = cli(nats_url, namespace, "submit", "jobs_mod:hello", "ada", "--name", "greet", "--wait", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [namespace and "greet", "'ADA'"]

    status = json.loads(cli(nats_url, namespace, "status", "greet", "--json").stdout)
    assert status["state"] == "SUCCEEDED" and status["worker_id"] == "cli-worker"
    jobs = json.loads(cli(nats_url, namespace, "jobs", "--json").stdout)
    assert [j["job_id"] for j in jobs] == ["greet"]
    assert "greet" in cli(nats_url, namespace, "jobs").stdout
    assert cli(nats_url, namespace, "logs", "greet").stdout == "hi ada\n"
    assert cli(nats_url, namespace, "logs", "-f", "greet").stdout == "hi ada\n"
    workers = json.loads(cli(nats_url, namespace, "workers", "--json").stdout)
    assert [w["worker_id"] for w in workers] == ["cli-worker"]
    assert "already finished" in cli(nats_url, namespace, "kill", "greet").stdout


def test_worker_drains_on_sigterm_and_leaves_the_registry(processes: Processes, nats_url: str, namespace: str) -> None:
    processes.controller()
    worker = processes.worker("leaving", "--drain-grace", "0")
    for _ in range(200):
        listed = json.loads(cli(nats_url, namespace, "workers", "--json").stdout or "[]")
        if listed:
            break
    assert [w["worker_id"] for w in listed] == ["leaving"]
    worker.terminate()
    assert worker.wait(timeout=30) == 0
    assert json.loads(cli(nats_url, namespace, "workers", "--json").stdout) == []


def test_cli_without_url_explains_what_to_do() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("FLUSTER_URL", "NATS_URL")}
    out = subprocess.run(
        [sys.executable, "-m", "fluster.cli", "jobs"], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 3 and "fluster up" in out.stderr
