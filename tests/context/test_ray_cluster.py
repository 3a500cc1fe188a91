"""RayCluster on the session's real Ray: what the shared cluster-API tests (test_cluster_jobs.py) do not cover."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest
from ray_helpers import RaySession

from fluster import ResourceSpec, create_environment, tpu_device
from fluster.context import JobRequest, RayCluster
from fluster.errors import FlusterTimeout
from fluster.types import Entrypoint

cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = pytest.mark.ray

LIGHT = ResourceSpec(cpu=0, memory="64m")  # so that several jobs run at once on the session's 2 CPUs
JOB_TIMEOUT_S = 60


class Boom(RuntimeError):
    pass


def print_env(name: str) -> None:
    print(f"{name}={os.environ.get(name)}", flush=True)


def fail() -> None:
    raise Boom("from a callable job")


def python(code: str) -> Entrypoint:
    return Entrypoint.from_binary(sys.executable, ["-c", code])


@pytest.fixture
def ray_cluster(ray_session: RaySession, namespace: str) -> Iterator[RayCluster]:
    # the job server's URL here; test_cluster_jobs.py gives the GCS address, and one test below "auto"
    with RayCluster(ray_session.dashboard_url, namespace=namespace, python=sys.executable) as cluster:
        yield cluster


def test_env_vars_reach_binary_and_callable_jobs(ray_cluster: RayCluster) -> None:
    env = create_environment(env_vars={"GREETING": "hello from the request"})
    binary = ray_cluster.launch(JobRequest("env-bin", python("import os; print(os.environ['GREETING'])"), LIGHT, env))
    call = ray_cluster.launch(JobRequest("env-call", Entrypoint.from_callable(print_env, "GREETING"), LIGHT, env))
    assert list(ray_cluster.monitor(binary)) == ["hello from the request"]
    assert list(ray_cluster.monitor(call)) == ["GREETING=hello from the request"]
    assert {ray_cluster.wait(j, JOB_TIMEOUT_S).status for j in (binary, call)} == {"succeeded"}
    assert ray_cluster.get_runtime_env(JobRequest("x", python(""), environment=env)) == {
        "env_vars": {"GREETING": "hello from the request"}
    }


def test_monitor_yields_each_line_as_it_is_written(ray_cluster: RayCluster, tmp_path: Path) -> None:
    go = tmp_path / "go"
    code = (
        "import os, time\nprint('first', flush=True)\ndeadline = time.monotonic() + 60\n"
        f"while not os.path.exists({str(go)!r}) and time.monotonic() < deadline:\n    time.sleep(0.05)\n"
        "print('second', flush=True)"
    )
    job_id = ray_cluster.launch(JobRequest("stream", python(code), LIGHT))
    lines = ray_cluster.monitor(job_id)
    assert next(lines) == "first"  # the job is still running: it waits for the file written below
    assert ray_cluster.poll(job_id).status == "running"
    go.touch()
    assert list(lines) == ["second"]
    assert ray_cluster.wait(job_id, JOB_TIMEOUT_S).status == "succeeded"


def test_a_failing_callable_job_is_failed_with_its_error(ray_cluster: RayCluster) -> None:
    job_id = ray_cluster.launch(JobRequest("fails", Entrypoint.from_callable(fail), LIGHT))
    info = ray_cluster.wait(job_id, JOB_TIMEOUT_S)
    assert info.status == "failed" and info.details.exit_code == 1
    assert info.error_message is not None and "Boom: from a callable job" in info.error_message
    assert any("Boom: from a callable job" in line for line in ray_cluster.monitor(job_id))


def test_any_client_can_poll_a_job_by_its_id(ray_cluster: RayCluster, ray_session: RaySession) -> None:
    job_id = ray_cluster.launch(JobRequest("shared", python("print('done')"), LIGHT))
    other = RayCluster("auto")  # another client, finding the running cluster itself
    assert other.wait(job_id, JOB_TIMEOUT_S).status == "succeeded"
    assert other.poll(job_id).name == "shared" and job_id.startswith("shared-")
    assert [j.job_id for j in ray_cluster.list_jobs()] == [job_id]  # this namespace's jobs only
    assert job_id in [j.job_id for j in other.list_jobs()]  # no namespace: every job


def test_a_request_for_failure_retries_is_refused(ray_cluster: RayCluster) -> None:
    with pytest.raises(ValueError, match="does not retry failed jobs, so max_retries_failure=2 cannot apply"):
        ray_cluster.launch(JobRequest("retried", python(""), LIGHT, max_retries_failure=2))


def test_unknown_job_ids_are_key_errors(ray_cluster: RayCluster) -> None:
    for call in (ray_cluster.poll, ray_cluster.monitor, ray_cluster.wait, ray_cluster.terminate):
        with pytest.raises(KeyError, match="no Ray job 'no-such-job'"):
            result = call("no-such-job")
            if isinstance(result, Iterator):
                next(result)


def test_a_job_that_cannot_be_placed_is_pending_and_terminate_says_so(
    ray_cluster: RayCluster, ray_session: RaySession
) -> None:
    import ray
    from ray.util.state import list_actors

    request = JobRequest(
        "tpu", python("print('never')"), ResourceSpec(cpu=1, memory="2g", device=tpu_device("v5e-16", 4))
    )
    job_id = ray_cluster.launch(request)
    assert ray_cluster.poll(job_id).status == "pending"
    # what the job's supervisor (the actor that runs the entrypoint) waits for: the request's resources
    supervisors = list_actors(
        address=ray_session.dashboard_url,
        filters=[("name", "=", f"_ray_internal_job_actor_{job_id}")],
        detail=True,
        raise_on_missing_output=False,
    )
    assert [a.required_resources for a in supervisors] == [
        {"CPU": 1.0, "memory": float(2 << 30), "TPU": 4.0, "TPU-v5e-16-head": 1.0}
    ]
    assert ray_cluster.get_ray_resources(request) == {"TPU": 4.0, "TPU-v5e-16-head": 1.0}
    with pytest.raises(FlusterTimeout, match="still pending after 0.5s: Ray stops a job once its entrypoint is placed"):
        ray_cluster.terminate(job_id, timeout=0.5)
    # what ends it here (a driver's privilege, not the job server's): its supervisor actor, killed
    ray.kill(ray.get_actor(f"_ray_internal_job_actor_{job_id}", namespace="SUPERVISOR_ACTOR_RAY_NAMESPACE"))
    assert ray_cluster.wait(job_id, JOB_TIMEOUT_S).status == "failed"


def test_the_workspace_is_the_jobs_working_dir_without_excluded_files(ray_cluster: RayCluster, tmp_path: Path) -> None:
    (tmp_path / "helper_mod.py").write_text("VALUE = 'from the workspace'\n")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "big.bin").write_bytes(b"x" * 1024)
    code = "import os, helper_mod; print(helper_mod.VALUE); print(sorted(os.listdir('.')))"
    request = JobRequest("workspace", python(code), LIGHT, create_environment(workspace=tmp_path))
    job_id = ray_cluster.launch(request)
    assert list(ray_cluster.monitor(job_id)) == ["from the workspace", "['helper_mod.py']"]


def test_get_ray_options_run_a_ray_remote_function_as_the_request_asks(ray_cluster: RayCluster) -> None:
    import ray

    request = JobRequest(
        "remote", python(""), ResourceSpec(cpu=0.5, memory="32m"), create_environment(env_vars={"MODE": "remote"})
    )

    def where() -> tuple[str | None, dict[str, float]]:
        return os.environ.get("MODE"), ray.get_runtime_context().get_assigned_resources()

    mode, assigned = ray.get(ray.remote(**ray_cluster.get_ray_options(request))(where).remote(), timeout=JOB_TIMEOUT_S)
    assert mode == "remote" and assigned == {"CPU": 0.5, "memory": 32 << 20}
