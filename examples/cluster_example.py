"""Resource-aware scheduling on a local cluster: jobs queue for CPUs, and a job no worker can take times out.

python examples/cluster_example.py

It always starts its own LocalCluster (one 4-CPU worker): the timings it shows depend on that shape.
"""

import time

import fluster
from fluster import Entrypoint, JobState, ResourceSpec


def cpu_job(n: int) -> int:
    time.sleep(2)
    return n


def impossible_job() -> None:
    pass


def example_resource_scheduling(client: fluster.Client) -> None:
    """One worker with 4 CPUs; four jobs of 2 CPUs and 2 s each run two at a time, so they take about 4 s."""
    print("resource serialization: four 2-CPU jobs on a 4-CPU worker")
    started = time.perf_counter()
    wall_start = time.time()
    job_ids = [
        client.submit(f"job-{i}", Entrypoint.from_callable(cpu_job, i), resources=ResourceSpec(cpu=2, memory="1g"))
        for i in range(4)
    ]
    for job_id in job_ids:
        status = client.wait(job_id, timeout=60)
        offset = (status.started_at_ms or 0) / 1000 - wall_start
        print(f"  {job_id} {status.state.value} started at +{offset:.1f}s")
    print(f"  all four done in {time.perf_counter() - started:.1f}s (pairs: about 4 s, not 2 s or 8 s)")


def example_scheduling_timeout(client: fluster.Client) -> None:
    """A job asking for 100 CPUs cannot be placed: after its scheduling timeout it ends UNSCHEDULABLE."""
    print("scheduling timeout: a 100-CPU job")
    job_id = client.submit("impossible", impossible_job, resources=ResourceSpec(cpu=100), scheduling_timeout=2)
    status = client.wait(job_id, timeout=30)
    assert status.state == JobState.UNSCHEDULABLE, status
    print(f"  {job_id} {status.state.value}: {status.error}")


def main() -> None:
    with fluster.LocalCluster(workers=1, cpu=4, memory="8g") as client:
        example_resource_scheduling(client)
        example_scheduling_timeout(client)


if __name__ == "__main__":
    main()
