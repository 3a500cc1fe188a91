"""fluster in one screen: start a local cluster, run jobs, read their results and logs, and stop.

    python examples/quickstart.py

Starts its own nats-server, controller and two workers (or uses the cluster at $FLUSTER_URL when set).
"""

import os
import time
import uuid

import fluster
from fluster import Entrypoint, ResourceSpec


def train(lr: float, steps: int) -> dict[str, float]:
    loss = 1.0
    for step in range(steps):
        loss *= 1 - lr
        print(f"step {step}: loss={loss:.4f}")
    return {"lr": lr, "loss": round(loss, 4)}


def flaky() -> None:
    raise ValueError("this job fails on purpose")


def main() -> None:
    started = time.perf_counter()
    url = os.environ.get("FLUSTER_URL")
    cluster = fluster.Client(url) if url else fluster.LocalCluster(workers=2)
    run = uuid.uuid4().hex[:6]  # job names are unique in a cluster: a second run on the same one needs new ones
    with cluster as client:
        print(f"cluster ready in {time.perf_counter() - started:.2f}s")
        jobs = [
            client.submit(
                f"train-{run}-{i}",
                Entrypoint.from_callable(train, lr, 5),
                resources=ResourceSpec(cpu=1, memory="512m"),
            )
            for i, lr in enumerate([0.1, 0.2, 0.3])
        ]
        failing = client.submit(f"flaky-{run}", flaky)
        try:
            for job_id in jobs:
                print(f"{job_id}: {client.result(job_id, timeout=60)}")
            print(f"logs of {jobs[0]}:")
            for line in client.logs(jobs[0]):
                print(f"  [{line.stream}] {line.line}")
            try:
                client.result(failing, timeout=60)
            except ValueError as exc:
                print(f"flaky raised its own exception type: {exc!r}")
            for status in client.list_jobs(prefix=f"train-{run}"):
                print(f"  {status.job_id:18} {status.state.value}")
        finally:
            for job_id in [*jobs, failing]:  # on a shared cluster, leave nothing running
                client.kill(job_id)
    print(f"done in {time.perf_counter() - started:.2f}s")


if __name__ == "__main__":
    main()
