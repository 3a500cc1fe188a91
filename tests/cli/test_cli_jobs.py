"""The job commands against one cluster that ``fluster up --detach`` starts for the module (and ``fluster down``
stops): submit with what a function needs, run, result, status, logs, jobs, workers, actors."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import Run, fluster, fluster_all

from fluster.cli import failures
from fluster.local.server import free_port

pytestmark = pytest.mark.timeout(180)

MODULE = """
import os, sys, time
import helperlib

def hello(name="world"):
    print("hi", name)
    return helperlib.shout(name)

def add(a, b):
    return a + b

def boom(x):
    raise ValueError(f"bad value {x}\\nsecond line of the error")

def chatter():
    for line in ("a1", "b2", "a3"):
        print(line)
    return 3

def retried():
    if os.environ["FLUSTER_ATTEMPT"] == "0":
        raise RuntimeError("first attempt fails")
    print("second attempt running", flush=True)
    time.sleep(60)

def serve(name):
    import anyio
    import fluster
    from fluster.actor import ActorServer

    class Echo:
        def echo(self, x):
            return x

    async def main():
        async with fluster.ClusterClient.connect() as client:
            server = ActorServer(client)
            server.register(name, Echo())
            async with server:
                print("serving", flush=True)
                await anyio.sleep_forever()

    fluster.run_async(main)
"""


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("cli-up")
    state = {"FLUSTER_STATE_DIR": str(root / "state")}
    port = free_port()
    store = root / "not" / "yet" / "there"
    started = fluster(
        "up",
        "--detach",
        "--port",
        str(port),
        "--workers",
        "1",
        "--cpu",
        "8",
        "--memory",
        "8g",
        "--store-dir",
        str(store),
        extra_env=state,
    ).ok()
    assert f"export FLUSTER_URL=nats://127.0.0.1:{port}" in started.out
    assert store.is_dir() and list((root / "state").glob("up-*.json"))
    env = {**state, "FLUSTER_URL": f"nats://127.0.0.1:{port}"}
    try:
        yield env
    finally:
        stopped = fluster("down", extra_env=state)
        assert stopped.code == 0 and "stopped the cluster" in stopped.out, stopped.err
        assert not list((root / "state").glob("up-*.json"))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    (root / "helperlib.py").write_text("def shout(x):\n    return str(x).upper() + '!'\n")
    (root / "mymod.py").write_text(MODULE)
    return root


def cli(up: dict[str, str], project: Path, *args: str) -> Run:
    return fluster(*args, cwd=project, extra_env=up)


def test_submit_ships_sibling_modules_takes_json_args_and_names_jobs_uniquely(
    up: dict[str, str], project: Path
) -> None:
    runs = fluster_all(
        [["submit", "mymod:hello", "ada", "--wait"], ["submit", "mymod:add", "--json-args", "2", "3", "--wait"]]
        + [["submit", "mymod:add", "--json-args", "1", "1"]] * 5,
        cwd=project,
        extra_env=up,
    )
    hello, added, *quick = (run.ok() for run in runs)
    assert hello.out.splitlines()[1] == "'ADA!'"
    assert added.out.splitlines()[1] == "5"
    names = {run.out.strip() for run in quick}
    assert len(names) == 5 and all(name.startswith("add-") for name in names)


def test_workspace_ships_the_directory_and_runs_the_job_in_it(up: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("from the workspace\n")
    (tmp_path / "late.py").write_text("VALUE = 42\n")
    (tmp_path / "wsjob.py").write_text(
        "def main():\n    import late\n    return open('data.txt').read().strip(), late.VALUE\n"
    )
    run = fluster("submit", "wsjob:main", "--workspace", ".", "--wait", cwd=tmp_path, extra_env=up).ok()
    assert run.out.splitlines()[1] == "('from the workspace', 42)"


def test_run_streams_a_commands_output_and_exits_with_its_code(up: dict[str, str], project: Path) -> None:
    failed, detached = fluster_all(
        [
            ["run", "--env", "WHO=ada", "--", "sh", "-c", "echo out $WHO; echo err >&2; exit 3"],
            ["run", "--no-wait", "--name", "quiet-run", "--", "true"],
        ],
        cwd=project,
        extra_env=up,
    )
    assert failed.code == 3 and failed.out == "out ada\n"
    assert "err" in failed.err.splitlines()
    assert "exit code 3" in failed.error_line
    assert detached.ok().out.strip() == "quiet-run"


def test_a_failing_job_gives_its_traceback_its_whole_error_and_its_exit_code(up: dict[str, str], project: Path) -> None:
    waited = cli(up, project, "submit", "mymod:boom", "7", "--name", "boom", "--wait")
    assert waited.code == failures.JOB_FAILED
    assert "ValueError: bad value 7" in waited.error_line and "fluster result boom" in waited.error_line
    result, status, logs, duplicate = fluster_all(
        [["result", "boom"], ["status", "boom"], ["logs", "boom"], ["submit", "mymod:boom", "1", "--name", "boom"]],
        cwd=project,
        extra_env=up,
    )
    assert result.code == 1 and result.err.startswith("Traceback (most recent call last)")
    assert "bootstrap.py" not in result.err
    assert result.err.splitlines()[-1] == "error: job boom ended FAILED (exit code 1): ValueError: bad value 7"
    assert status.ok() and "second line of the error" in status.out and "FAILED, exit code 1" in status.out
    assert "Traceback (most recent call last)" in logs.err and "in boom" in logs.err
    assert duplicate.code == failures.CONFLICT and "already exists" in duplicate.error_line


def test_unknown_jobs_are_reported_as_not_found(up: dict[str, str], project: Path) -> None:
    runs = fluster_all(
        [[cmd, "no-such-job"] for cmd in ("logs", "status", "kill", "result")], cwd=project, extra_env=up
    )
    for run in runs:
        assert run.code == failures.NOT_FOUND and "no job 'no-such-job'" in run.error_line, run


def test_logs_filter_by_pattern_tail_and_time(up: dict[str, str], project: Path) -> None:
    cli(up, project, "submit", "mymod:chatter", "--name", "chatter", "--wait").ok()
    grep, tail, since, old = fluster_all(
        [
            ["logs", "chatter", "--grep", "^a"],
            ["logs", "chatter", "--tail", "1"],
            ["logs", "chatter", "--since", "1h"],
            ["logs", "-f", "chatter", "--since", "0s"],
        ],
        cwd=project,
        extra_env=up,
    )
    assert grep.ok().out == "a1\na3\n"
    assert tail.ok().out == "a3\n"
    assert since.ok().out == "a1\nb2\na3\n"
    assert old.ok().out == ""


def test_cluster_views_show_running_jobs_their_resources_and_actors(up: dict[str, str], project: Path) -> None:
    cli(up, project, "submit", "mymod:serve", "echo-actor", "--name", "actor-job", "--cpu", "2", "--memory", "1g").ok()
    cli(up, project, "submit", "mymod:retried", "--name", "retried", "--max-retries-failure", "1").ok()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        actors = json.loads(cli(up, project, "actors", "--json").ok().out)
        jobs = {j["job_id"]: j for j in json.loads(cli(up, project, "jobs", "--json").ok().out)}
        if actors and jobs["retried"]["state"] == "RUNNING" and jobs["retried"]["attempt"] == 1:
            break
    assert [(a["name"], a["job_id"]) for a in actors] == [("echo-actor", "actor-job")]
    try:
        overview, table, running, workers, listed = fluster_all(
            [["status"], ["jobs"], ["jobs", "--state", "Running"], ["workers"], ["actors"]], cwd=project, extra_env=up
        )
        assert "2 running" in overview.ok().out and "cpu      3 used, 5 free of 8" in overview.out
        assert "echo-actor  1 endpoint(s)" in overview.out
        line = next(row for row in table.ok().out.splitlines() if row.startswith("retried "))
        assert "first attempt fails" not in line and " 1 " in line  # the current attempt only
        assert {row.split()[0] for row in running.ok().out.splitlines()[1:]} == {"actor-job", "retried"}
        assert "3/8" in workers.ok().out
        assert "echo-actor" in listed.ok().out and "actor-job" in listed.out
    finally:
        fluster_all([["kill", "actor-job"], ["kill", "retried"]], cwd=project, extra_env=up)


def test_a_job_of_several_tasks_shows_them_in_status_logs_and_json(up: dict[str, str], project: Path) -> None:
    command = ["--", "sh", "-c", "echo line of $FLUSTER_TASK_INDEX of $FLUSTER_NUM_TASKS"]
    ran = cli(up, project, "run", "--name", "two-tasks", "--replicas", "2", "--coschedule", "--cpu", "1", *command)
    assert sorted(ran.ok().out.splitlines()) == ["[0] line of 0 of 2", "[1] line of 1 of 2"]
    status, one, json_status, bad_task, no_tasks = fluster_all(
        [
            ["status", "two-tasks"],
            ["logs", "two-tasks", "--task", "1"],
            ["status", "two-tasks", "--json"],
            ["logs", "two-tasks", "--task", "2"],
            ["run", "--replicas", "0", "--", "true"],
        ],
        cwd=project,
        extra_env=up,
    )
    table = status.ok().out.split("TASK", 1)[1].splitlines()
    assert [row.split()[:2] for row in table[1:3]] == [["0", "SUCCEEDED"], ["1", "SUCCEEDED"]]
    assert one.ok().out == "line of 1 of 2\n"
    doc = json.loads(json_status.ok().out)
    assert [t["index"] for t in doc["tasks"]] == [0, 1] and doc["tasks"][1]["attempts"][0]["task"] == 1
    assert "has 2 task(s): --task takes 0 to 1" in bad_task.error_line
    assert "--replicas" in no_tasks.err and "must be at least 1" in no_tasks.err
