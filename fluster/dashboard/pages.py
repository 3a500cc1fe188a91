"""The dashboard's cluster pages, rendered on the server from the API documents (``api``): overview, workers,
one worker, actors, pools, and the page that explains a bad request. Each returns the ``<main>`` content;
``app`` wraps it in the layout (or returns it alone when the page's script reloads it). The job pages are
``job_pages``'."""

from __future__ import annotations

import time
from typing import Any

from fluster.dashboard import html as h
from fluster.dashboard.job_pages import JOB_COLUMNS, job_row
from fluster.protocol.messages import JobState


def overview(doc: dict[str, Any], now: float | None = None) -> str:
    now = time.time() if now is None else now
    cap = doc["capacity"]
    workers = doc["workers"]
    states = doc["jobs"]["by_state"]
    rows = []
    for key, label, fmt in (("cpu", "CPU", _num), ("memory_bytes", "Memory", h.size), ("devices", "Devices", _num)):
        c = cap[key]
        if key == "devices" and not c["total"]:
            continue
        rows.append([label, fmt(c["used"]), fmt(c["free"]), fmt(c["total"]), h.bar(c["used"], c["total"])])
    worker_states = ", ".join(f"{n} {s}" for s, n in sorted(workers["by_state"].items())) or "none"
    job_cells = "".join(
        f'<a class="tile s-{s.value.lower()}" href="/jobs?state={s.value}" data-state="{s.value}">'
        f"<b>{states.get(s.value, 0)}</b>{h.esc(s.value.lower())}</a>"
        for s in JobState
    )
    pending = doc["pending"]
    pending_rows = [
        [
            h.job_link(p["job_id"]),
            h.state(p["state"]),
            h.esc(p["resources"]),
            h.duration(p["waiting_s"]),
            h.esc(p["reason"]),
        ]
        for p in pending["jobs"]
    ]
    more = ""
    if pending["count"] > len(pending["jobs"]):
        more = f'<p><a href="/jobs?state=PENDING">… and {pending["count"] - len(pending["jobs"])} more</a></p>'
    return (
        "<h1>Cluster</h1>"
        f"<section class=cards><div class=card><h2>Workers</h2><p class=big id=workers-count>{workers['count']}</p>"
        f'<p>{workers["busy"]} busy · {h.esc(worker_states)} · <a href="/workers">all workers</a></p></div>'
        f"<div class=card><h2>Actors</h2><p class=big>{doc['actors']['names']}</p>"
        f'<p>{doc["actors"]["endpoints"]} endpoint(s) · <a href="/actors">all actors</a></p></div>'
        f"<div class=card><h2>Pools</h2><p class=big>{doc['pools']}</p>"
        '<p><a href="/pools">all pools</a></p></div></section>'
        "<h2>Capacity</h2>"
        + h.table(["resource", "used", "free", "total", ""], rows, "capacity")
        + f"<h2>Jobs <small>({doc['jobs']['count']})</small></h2><div class=tiles id=job-states>{job_cells}</div>"
        + f"<h2>Pending demand <small>({pending['count']})</small></h2>"
        + h.table(["job", "state", "needs", "waiting", "why"], pending_rows, "pending", "nothing is waiting")
        + more
    )


def workers(docs: list[dict[str, Any]], now: float | None = None) -> str:
    rows = []
    for w in docs:
        res, used = w["resources"], w["used"]
        rows.append(
            [
                h.worker_link(w["worker_id"]),
                f'<span class="wstate w-{h.esc(w["state"])}">{h.esc(w["state"])}</span>',
                h.esc(w["hostname"]),
                f"{_num(used['cpu'])}/{_num(res['cpu'])} {h.bar(used['cpu'], res['cpu'])}",
                f"{h.size(used['memory_bytes'])}/{h.size(res['memory_bytes'])} "
                + h.bar(used["memory_bytes"], res["memory_bytes"]),
                h.esc(_device(res["device"])),
                str(len(w["running"])),
                f"{w['usage']['cpu_percent']:.0f}% · {h.size(w['usage']['rss_bytes'])}",
                _heartbeat(w["heartbeat_age_s"]),
                h.esc(", ".join(f"{k}={v}" for k, v in sorted(w["labels"].items())) or "-"),
            ]
        )
    return f"<h1>Workers <small>({len(docs)})</small></h1>" + h.table(
        ["worker", "state", "host", "cpu", "memory", "device", "jobs", "usage", "heartbeat", "labels"],
        rows,
        "workers",
        "no workers registered",
    )


def worker(doc: dict[str, Any], now: float | None = None) -> str:
    now = time.time() if now is None else now
    res = doc["resources"]
    facts = [
        ("state", h.esc(doc["state"])),
        ("host", h.esc(f"{doc['hostname']} (pid {doc['pid']})")),
        ("runtime", h.esc(doc["runtime"])),
        ("capacity", h.esc(f"{_num(res['cpu'])} CPU, {h.size(res['memory_bytes'])}, {_device(res['device'])}")),
        ("used", h.esc(f"{_num(doc['used']['cpu'])} CPU, {h.size(doc['used']['memory_bytes'])}")),
        ("free", h.esc(f"{_num(doc['free']['cpu'])} CPU, {h.size(doc['free']['memory_bytes'])}")),
        ("heartbeat", _heartbeat(doc["heartbeat_age_s"])),
        ("registered", h.ago(doc["registered_at_ms"], now)),
        ("labels", h.esc(", ".join(f"{k}={v}" for k, v in sorted(doc["labels"].items())) or "-")),
    ]
    dl = "".join(f"<dt>{h.esc(k)}</dt><dd>{v}</dd>" for k, v in facts)
    rows = [job_row(j, now) for j in doc["running"]]
    return (
        f"<h1>Worker <span class=id>{h.esc(doc['worker_id'])}</span></h1><dl class=facts>{dl}</dl><h2>Running jobs</h2>"
        + h.table(
            JOB_COLUMNS,
            rows,
            "jobs",
            "idle",
        )
    )


def actors(docs: list[dict[str, Any]], now: float | None = None) -> str:
    now = time.time() if now is None else now
    rows = []
    for a in docs:
        endpoints = "<br>".join(
            f"{h.esc(e['endpoint_id'])} on {h.worker_link(e['worker_id'])} "
            f"{'(exclusive) ' if e['exclusive'] else ''}since {h.ago(e['registered_ms'], now)}"
            for e in a["endpoints"]
        )
        jobs = ", ".join(h.job_link(j) for j in a["jobs"]) or "-"
        rows.append(
            [
                f"<span class=actor>{h.esc(a['name'])}</span>",
                str(len(a["endpoints"])),
                endpoints,
                jobs,
                str(a["calls"]),
                str(a["errors"]),
            ]
        )
    return f"<h1>Actors <small>({len(docs)})</small></h1>" + h.table(
        ["actor", "endpoints", "where", "owning jobs", "calls", "errors"], rows, "actors", "no actors are served"
    )


def pools(docs: list[dict[str, Any]], now: float | None = None) -> str:
    now = time.time() if now is None else now
    rows = []
    for p in docs:
        ex, tasks = p["executors"], p["tasks"]
        rows.append(
            [
                h.esc(p["pool"]),
                f"{ex.get('ready', 0)} ready, {ex.get('busy', 0)} busy, {ex.get('starting', 0)} starting",
                str(p["queued"]),
                str(p["in_flight"]),
                f"{tasks.get('completed', 0)} done, {tasks.get('failed', 0)} failed, {tasks.get('retried', 0)} retried",
                ", ".join(h.job_link(j["job_id"], j["name"]) for j in p["jobs"]) or "-",
            ]
        )
    return f"<h1>Pools <small>({len(docs)})</small></h1>" + h.table(
        ["pool", "executors", "queued", "running", "tasks", "executor jobs"], rows, "pools", "no pools are running"
    )


def problem(title: str, detail: str) -> str:
    back = '<p><a href="/">back to the overview</a></p>'
    return f"<h1 class=problem>{h.esc(title)}</h1><p id=problem>{h.esc(detail)}</p>{back}"


def _heartbeat(age: float | None) -> str:
    if age is None:
        return '<span class=hb title="no figures from this worker yet">-</span>'
    return f'<span class=hb data-age="{age}">{h.duration(age)} ago</span>'


def _device(device: dict[str, Any]) -> str:
    if device.get("type") == "cpu" or not device.get("count"):
        return "-"
    return f"{device['count']}x {device['type']} {device.get('variant', '')}".strip()


def _num(value: float) -> str:
    return f"{value:g}"
