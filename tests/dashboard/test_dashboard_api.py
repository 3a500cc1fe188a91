"""The dashboard's JSON API and /metrics against the records in KV, on a real cluster; bad input; loopback."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
from cluster_helpers import eventually
from dash_helpers import DashCluster, burn_then_wait, fail_loudly, talk_when_told
from prometheus_client.parser import text_string_to_metric_families

from fluster.bus.kv import snapshot
from fluster.dashboard.server import DashboardSettings
from fluster.protocol.codec import encode
from fluster.protocol.messages import JobRecord, JobState, LogLine, now_ms
from fluster.types import Entrypoint


async def test_job_api_matches_the_job_record(dash: DashCluster, tmp_path: Path) -> None:
    client = dash.client
    go, done = tmp_path / "go", tmp_path / "done"
    job_id = await client.submit("talker", Entrypoint.from_callable(talk_when_told, str(go), str(done)))
    failing = await client.submit("failing", Entrypoint.from_callable(fail_loudly))
    await client.wait(failing, timeout=60)
    async with httpx.AsyncClient(base_url=dash.url) as http:

        async def running() -> bool:
            r = await http.get(f"/api/jobs/{job_id}")
            return r.status_code == 200 and r.json()["state"] == "RUNNING"

        await eventually(running, 30, "the job RUNNING in the API")
        record = (await snapshot(client.assets.jobs, JobRecord))[job_id]
        doc = (await http.get(f"/api/jobs/{job_id}")).json()
        assert doc["job_id"] == record.job_id and doc["worker_id"] == record.current.worker_id
        assert [a["attempt"] for a in doc["attempts"]] == [a.attempt for a in record.attempts]
        assert doc["resources"]["memory_bytes"] == record.request.resources.memory_bytes

        failed = (await http.get(f"/api/jobs/{failing}")).json()
        assert failed["state"] == "FAILED"
        assert "this job broke" in failed["error_info"]["traceback"]
        assert failed["attempts"][0]["exit_code"] is not None

        listed = (await http.get("/api/jobs", params={"state": "failed"})).json()
        assert [j["job_id"] for j in listed["jobs"]] == [failing]
        tree = (await http.get("/api/jobs")).json()
        assert {j["job_id"] for j in tree["jobs"]} == {job_id, failing}
        summary = (await http.get("/api/summary")).json()
        assert summary["jobs"]["by_state"] == {"RUNNING": 1, "FAILED": 1}
        assert summary["capacity"]["cpu"] == {"total": 2.0, "used": 1.0, "free": 1.0}

        workers = (await http.get("/api/workers")).json()
        assert [w["worker_id"] for w in workers] == [dash.workers[0].worker_id]
        assert [j["job_id"] for j in workers[0]["running"]] == [job_id]
        assert workers[0]["labels"]["zone"] == "z0" and workers[0]["labels"]["device-type"] == "cpu"

        logs = (await http.get(f"/api/logs/{job_id}")).json()
        assert [line["line"] for line in logs["lines"]] == ["first line"]
        done.write_text("")
        go.write_text("")
        await client.wait(job_id, timeout=60)

        async def finished() -> bool:
            return (await http.get(f"/api/jobs/{job_id}")).json()["state"] == "SUCCEEDED"

        await eventually(finished, 30, "the job SUCCEEDED in the API")
        doc = (await http.get(f"/api/jobs/{job_id}")).json()
        assert doc["result"]["preview"] == "'finished'"


async def test_metrics_parse_and_show_each_component(dash: DashCluster, tmp_path: Path) -> None:
    done = tmp_path / "done"
    job_id = await dash.client.submit("burner", Entrypoint.from_callable(burn_then_wait, str(done)))
    async with httpx.AsyncClient(base_url=dash.url) as http:

        async def families() -> dict[str, list[tuple[dict[str, str], float]]]:
            text = (await http.get("/metrics")).text
            found: dict[str, list[tuple[dict[str, str], float]]] = {}
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    found.setdefault(sample.name, []).append((sample.labels, sample.value))
            return found

        async def complete() -> bool:
            f = await families()
            usage = f.get("fluster_job_memory_rss_bytes", [])
            return (
                any(v >= 1 for _, v in f.get("fluster_submits_total", []))
                and any(v >= 1 for _, v in f.get("fluster_dispatch_latency_seconds_count", []))
                and any(v >= 1 for _, v in f.get("fluster_heartbeats_handled_total", []))
                and any(labels.get("job_id") == job_id and v > 32 << 20 for labels, v in usage)
            )

        await eventually(complete, 30, "controller, worker and usage figures in /metrics")
        f = await families()
        jobs = {labels["state"]: v for labels, v in f["fluster_jobs"]}
        assert jobs["RUNNING"] == 1 and jobs["PENDING"] == 0
        assert {labels["state"]: v for labels, v in f["fluster_workers"]}["alive"] == 1
        assert any(v >= 1 for _, v in f["fluster_scheduling_pass_seconds_count"])
        assert any(
            labels["source"] == dash.workers[0].worker_id for labels, _ in f["fluster_worker_heartbeats_sent_total"]
        )
        assert any(labels.get("job_id") == job_id for labels, _ in f["fluster_job_cpu_percent"])
    status = await dash.client.usage(job_id)
    assert status is not None and status.peak_rss_bytes >= status.rss_bytes > 32 << 20
    done.write_text("")
    await dash.client.wait(job_id, timeout=60)

    async def final() -> bool:
        record = await dash.client.usage(job_id)
        return record is not None and record.final

    await eventually(final, 30, "the final usage record")


async def test_bad_input_gets_a_clear_answer(dash: DashCluster) -> None:
    async with httpx.AsyncClient(base_url=dash.url) as http:
        r = await http.get("/jobs/no-such-job")
        assert r.status_code == 404 and "no job &#x27;no-such-job&#x27;" in r.text and "Traceback" not in r.text
        r = await http.get("/api/jobs/no-such-job")
        assert r.status_code == 404 and r.json()["error"] == "No such job"
        r = await http.get("/jobs/bad*id")
        assert r.status_code == 400 and "Not a job id" in r.text
        r = await http.get("/api/jobs", params={"state": "sleeping"})
        assert r.status_code == 400 and "unknown job state" in r.json()["detail"]
        r = await http.get("/api/jobs", params={"limit": "many"})
        assert r.status_code == 400
        r = await http.get("/workers/nobody")
        assert r.status_code == 404 and "no worker" in r.text
        r = await http.get("/no/such/page")
        assert r.status_code == 404 and "no such page" in r.text


async def test_a_huge_log_shows_its_tail(dash: DashCluster) -> None:
    """A log of 20,000 lines: the page shows the last lines and says how many it left out."""
    client = dash.client
    record = JobRecord(
        job_id="chatty",
        token="t0",
        request={"name": "chatty", "entrypoint": {"inline": b""}},
        state=JobState.SUCCEEDED,
        submitted_at_ms=now_ms(),
    )
    await client.assets.jobs.put("chatty", encode(record))
    subject = client.subjects.logs("chatty")
    for i in range(20_000):
        await client.nc.publish(subject, encode(LogLine(at_ms=now_ms(), stream="stdout", attempt=0, line=f"line {i}")))
    await client.js.publish(subject, encode(LogLine(at_ms=now_ms(), stream="stdout", attempt=0, line="last")))
    async with httpx.AsyncClient(base_url=dash.url) as http:

        async def listed() -> bool:
            return (await http.get("/api/jobs/chatty")).status_code == 200

        await eventually(listed, 10, "the seeded job")
        doc = (await http.get("/api/logs/chatty", params={"tail": 100})).json()
        assert doc["total"] == 20_001 and doc["truncated"]
        assert [line["line"] for line in doc["lines"]] == [f"line {i}" for i in range(19_901, 20_000)] + ["last"]
        page = (await http.get("/jobs/chatty")).text
        assert "showing the last 500 of 20001 lines" in page


def test_the_dashboard_binds_to_loopback_by_default() -> None:
    from fluster.dashboard.server import bind

    assert DashboardSettings().host == "127.0.0.1"
    sock = bind(DashboardSettings().host, 0)
    try:
        assert sock.getsockname()[0] == "127.0.0.1"
        with socket.create_connection(sock.getsockname()[:2], timeout=5):
            pass
    finally:
        sock.close()
