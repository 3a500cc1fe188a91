"""``fluster dashboard`` as a real process (JSON logs that name their component), and the usage that
``fluster status`` and ``fluster jobs`` show."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from cli_helpers import fluster
from cluster_helpers import Processes, eventually
from dash_helpers import DashCluster, burn_then_wait

from fluster.types import Entrypoint


async def test_fluster_dashboard_serves_and_logs_json(processes: Processes, nats_url: str, namespace: str) -> None:
    proc = processes.start("dashboard", "--port", "0", "--log-format", "json", name="dashboard")
    address: list[str] = []

    async def serving() -> bool:
        found = re.search(r"dashboard of namespace '[^']+': (http://127\.0\.0\.1:\d+)", processes.log(proc))
        if found:
            address.append(found.group(1))
        return bool(found)

    await eventually(serving, 30, "the dashboard's address")
    async with httpx.AsyncClient(base_url=address[0]) as http:
        summary = (await http.get("/api/summary")).json()
    assert summary["namespace"] == namespace and summary["workers"]["count"] == 0
    records = [json.loads(line) for line in processes.log(proc).splitlines() if line.startswith("{")]
    serving_line = next(r for r in records if r["message"].startswith("dashboard serving"))
    assert serving_line["component"] == "dashboard" and serving_line["level"] == "INFO"


async def test_status_and_jobs_show_a_running_jobs_usage(dash: DashCluster, nats_url: str, tmp_path: Path) -> None:
    done = tmp_path / "done"
    job_id = await dash.client.submit("burner", Entrypoint.from_callable(burn_then_wait, str(done)))

    async def sampled() -> bool:
        usage = await dash.client.usage(job_id)
        return usage is not None and usage.rss_bytes > 32 << 20

    await eventually(sampled, 30, "a usage sample")
    common = ("--url", nats_url, "--namespace", dash.client.namespace)
    status = fluster("status", job_id, *common).ok()
    assert re.search(
        r"using: cpu \d+%, rss \d+\.\d MiB \(peak \d+\.\d MiB\) \(attempt 0, 1 process\(es\)\)", status.out
    )
    doc = json.loads(fluster("status", job_id, "--json", *common).ok().out)
    assert doc["usage"]["job_id"] == job_id and doc["usage"]["rss_bytes"] > 32 << 20
    jobs = fluster("jobs", *common).ok()
    assert "USAGE" in jobs.out.splitlines()[0] and re.search(r"burner .* \d+% \d+\.\d MiB", jobs.out)
    done.write_text("")
    await dash.client.wait(job_id, timeout=60)


def test_up_starts_a_dashboard_and_prints_its_address(tmp_path: Path) -> None:
    from fluster.local.server import free_port

    state = {"FLUSTER_STATE_DIR": str(tmp_path / "state")}
    port = free_port()
    started = fluster(
        "up",
        "--detach",
        "--port",
        str(port),
        "--workers",
        "1",
        "--cpu",
        "1",
        "--memory",
        "1g",
        "--dashboard-port",
        "0",
        extra_env=state,
    ).ok()
    try:
        found = re.search(r"^dashboard: (http://127\.0\.0\.1:\d+)$", started.out, re.M)
        assert found, started.out
        summary = httpx.get(found.group(1) + "/api/summary", timeout=10).json()
        assert summary["workers"]["count"] == 1
    finally:
        assert fluster("down", extra_env=state).code == 0
