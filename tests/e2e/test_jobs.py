"""Jobs end to end on a real nats-server, controller and workers (process runtime)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import cloudpickle
import pytest

import fluster
from fluster import ClusterClient, Entrypoint, JobState, ResourceSpec
from fluster.errors import ClusterUnavailable, FlusterTimeout, JobAlreadyExists, JobNotFound, Unschedulable

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # job processes cannot import test modules


class CustomError(Exception):
    pass


def add_and_print(a: int, b: int) -> int:
    print("adding", a, b)
    print("to stderr", file=sys.stderr)
    return a + b


def raise_custom() -> None:
    raise CustomError("it broke here")


def sleep_and_record_pid(path: str, seconds: float) -> None:
    Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)


def fail_first_attempts(n: int) -> int:
    attempt = int(os.environ["FLUSTER_ATTEMPT"])
    if attempt < n:
        raise RuntimeError(f"attempt {attempt} fails")
    return attempt


def read_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(("FLUSTER_", "MY_"))}


def submit_child_and_sleep(path: str) -> None:
    import anyio

    async def go() -> None:
        async with ClusterClient.connect() as client:
            await client.submit("child", Entrypoint.from_callable(sleep_and_record_pid, path, 60))
            await anyio.sleep(60)

    anyio.run(go)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    try:
        return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0
    except OSError:
        return False


async def test_submit_wait_result_and_logs(cluster: ClusterClient) -> None:
    job_id = await cluster.submit("add", Entrypoint.from_callable(add_and_print, 2, 3))
    status = await cluster.wait(job_id, timeout=30)
    assert status.state == JobState.SUCCEEDED and status.exit_code == 0
    assert await cluster.result(job_id) == 5
    lines = [(line.stream, line.line) async for line in cluster.logs(job_id)]
    assert ("stdout", "adding 2 3") in lines
    assert ("stderr", "to stderr") in lines
    followed = [line.line async for line in cluster.logs(job_id, follow=True)]
    assert "adding 2 3" in followed


async def test_logs_follow_streams_until_the_job_ends(cluster: ClusterClient) -> None:
    def chatty() -> None:
        for i in range(5):
            print("line", i, flush=True)
            time.sleep(0.1)

    job_id = await cluster.submit("chatty", chatty)
    lines = [line.line async for line in cluster.logs(job_id, follow=True)]
    assert lines == [f"line {i}" for i in range(5)]
    assert (await cluster.status(job_id)).state == JobState.SUCCEEDED


async def test_failure_reraises_the_job_exception_with_remote_traceback(cluster: ClusterClient) -> None:
    job_id = await cluster.submit("boom", raise_custom)
    with pytest.raises(CustomError, match="it broke here") as info:
        await cluster.result(job_id, timeout=30)
    assert "raise_custom" in info.value.remote_traceback  # type: ignore[attr-defined]
    status = await cluster.status(job_id)
    assert status.state == JobState.FAILED
    assert status.error is not None and "it broke here" in status.error
    assert status.exit_code == 1


async def test_failed_job_is_retried_while_max_retries_failure_lasts(cluster: ClusterClient) -> None:
    job_id = await cluster.submit("flaky", Entrypoint.from_callable(fail_first_attempts, 2), max_retries_failure=2)
    assert await cluster.result(job_id, timeout=30) == 2
    status = await cluster.status(job_id)
    assert status.failure_count == 2 and len(status.attempts) == 3


async def test_kill_running_job_kills_its_process(
    cluster: ClusterClient, tmp_path: Path, eventually_fn: object
) -> None:
    pid_file = tmp_path / "pid"
    job_id = await cluster.submit("sleeper", Entrypoint.from_callable(sleep_and_record_pid, str(pid_file), 60))

    async def started() -> bool:
        return pid_file.exists() and pid_file.read_text() != ""

    await eventually_fn(started, 30, "the job to start")  # type: ignore[operator]
    pid = int(pid_file.read_text())
    reply = await cluster.kill(job_id)
    assert not reply.already_finished
    status = await cluster.status(job_id)
    assert status.state == JobState.KILLED
    assert not pid_alive(pid)


async def test_kill_finished_job_is_a_noop_with_a_clear_answer(cluster: ClusterClient) -> None:
    job_id = await cluster.submit("quick", Entrypoint.from_callable(add_and_print, 1, 1))
    await cluster.wait(job_id, timeout=30)
    reply = await cluster.kill(job_id)
    assert reply.already_finished and reply.state == JobState.SUCCEEDED
    assert "already finished" in reply.message
    with pytest.raises(JobNotFound) as info:
        await cluster.kill("no-such-job")
    assert isinstance(info.value, KeyError)  # as Fray's cluster API raises for an unknown job
    assert not str(info.value).startswith("'"), str(info.value)  # its message, not KeyError's repr


async def test_killing_a_job_kills_its_children(cluster: ClusterClient, tmp_path: Path, eventually_fn: object) -> None:
    pid_file = tmp_path / "child-pid"
    parent = await cluster.submit("parent", Entrypoint.from_callable(submit_child_and_sleep, str(pid_file)))

    async def child_started() -> bool:
        return pid_file.exists() and pid_file.read_text() != ""

    await eventually_fn(child_started, 30, "the child job to start")  # type: ignore[operator]
    child = await cluster.status(f"{parent}/child")
    assert child.parent_id == parent
    reply = await cluster.kill(parent)
    assert f"{parent}/child" in reply.killed
    assert (await cluster.status(f"{parent}/child")).state == JobState.KILLED
    assert not pid_alive(int(pid_file.read_text()))


async def test_scheduling_timeout_makes_the_job_unschedulable(cluster: ClusterClient) -> None:
    job_id = await cluster.submit("huge", lambda: None, resources=ResourceSpec(cpu=100), scheduling_timeout=0.5)
    with pytest.raises(Unschedulable, match="cpu=100"):
        await cluster.result(job_id, timeout=30)
    assert (await cluster.status(job_id)).state == JobState.UNSCHEDULABLE


async def test_big_job_does_not_block_small_ones(cluster: ClusterClient) -> None:
    big = await cluster.submit("big", lambda: None, resources=ResourceSpec(cpu=64))
    small = await cluster.submit("small", Entrypoint.from_callable(add_and_print, 1, 2))
    assert await cluster.result(small, timeout=30) == 3
    assert (await cluster.status(big)).state == JobState.PENDING


async def test_resources_serialize_jobs_on_a_worker(cluster: ClusterClient) -> None:
    # two workers of 2 CPUs: four 2-CPU jobs of 1 s run two at a time
    ids = [
        await cluster.submit(f"pair-{i}", Entrypoint.from_callable(time.sleep, 1), resources=ResourceSpec(cpu=2))
        for i in range(4)
    ]
    statuses = [await cluster.wait(j, timeout=60) for j in ids]
    spans = sorted((s.started_at_ms or 0, s.finished_at_ms or 0) for s in statuses)
    for i, (start, _) in enumerate(spans):
        running_at_start = sum(1 for s, e in spans if s <= start < e)
        assert running_at_start <= 2, f"job {i} started with {running_at_start} running"


async def test_env_vars_and_fluster_variables_reach_the_job(cluster: ClusterClient) -> None:
    job_id = await cluster.submit(
        "env", read_env, environment=fluster.create_environment(env_vars={"MY_SETTING": "42"})
    )
    env = await cluster.result(job_id, timeout=30)
    assert env["MY_SETTING"] == "42"
    assert env["FLUSTER_JOB_ID"] == job_id and env["FLUSTER_ATTEMPT"] == "0"
    assert env["FLUSTER_NAMESPACE"] == cluster.namespace and env["FLUSTER_URL"] == cluster.url
    assert env["FLUSTER_WORKER_ID"] in {w.worker_id for w in await cluster.list_workers()}


async def test_binary_entrypoint(cluster: ClusterClient) -> None:
    job_id = await cluster.submit("echo", Entrypoint.from_binary("echo", ["hello", "binary"]))
    assert (await cluster.wait(job_id, timeout=30)).state == JobState.SUCCEEDED
    assert [line.line async for line in cluster.logs(job_id)] == ["hello binary"]
    failing = await cluster.submit("false", Entrypoint.from_binary("false"))
    status = await cluster.wait(failing, timeout=30)
    assert status.state == JobState.FAILED and status.error and "exit code 1" in status.error


async def test_list_jobs_and_workers(cluster: ClusterClient) -> None:
    a = await cluster.submit("a", Entrypoint.from_callable(add_and_print, 1, 1))
    b = await cluster.submit("b", lambda: None, resources=ResourceSpec(cpu=99))
    await cluster.wait(a, timeout=30)
    assert [s.job_id for s in await cluster.list_jobs()] == [a, b]
    assert [s.job_id for s in await cluster.list_jobs(state=JobState.PENDING)] == [b]
    assert [s.job_id for s in await cluster.list_jobs(prefix="a")] == [a]
    workers = await cluster.list_workers()
    assert len(workers) == 2 and all(w.resources.cpu == 2 for w in workers)


async def test_duplicate_job_name_is_rejected(cluster: ClusterClient) -> None:
    await cluster.submit("once", lambda: None)
    with pytest.raises(JobAlreadyExists, match="already exists"):
        await cluster.submit("once", lambda: None)


@pytest.mark.parametrize("name", ["", "has space", "a/b", "dot.ted", "star*", "gt>"])
async def test_bad_job_names_are_rejected(cluster: ClusterClient, name: str) -> None:
    with pytest.raises(ValueError):
        await cluster.submit(name, lambda: None)


async def test_wait_timeout_and_unknown_job(cluster: ClusterClient) -> None:
    job_id = await cluster.submit("never", lambda: None, resources=ResourceSpec(cpu=99))
    with pytest.raises(FlusterTimeout):
        await cluster.wait(job_id, timeout=0.3)
    with pytest.raises(JobNotFound):
        await cluster.status("missing")
    with pytest.raises(JobNotFound):
        await cluster.wait("missing", timeout=5)


async def test_connect_without_url_says_how_to_start_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("FLUSTER_URL", "NATS_URL", "FLUSTER_JOB_ID"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ClusterUnavailable, match="fluster up"):
        await ClusterClient.connect()


async def test_large_entrypoint_and_result_travel_through_the_object_store(cluster: ClusterClient) -> None:
    blob = os.urandom(3 * 1024 * 1024)
    job_id = await cluster.submit("big-data", Entrypoint.from_callable(lambda b: b[::-1], blob))
    assert await cluster.result(job_id, timeout=60) == blob[::-1]


def flood() -> None:
    for i in range(20_000):
        print(f"line {i}")
    sys.stdout.write("x" * 100_000)  # a last line with no newline


async def test_every_output_line_reaches_the_logs_in_order(cluster: ClusterClient) -> None:
    job_id = await cluster.submit("flood", flood)
    await cluster.wait(job_id, timeout=60)
    lines = [line.line async for line in cluster.logs(job_id)]
    assert lines[:-1] == [f"line {i}" for i in range(20_000)]
    assert lines[-1] == "x" * 100_000
