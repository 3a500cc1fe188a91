"""The dashboard's pages, rendered on the server from the API documents (``api``): overview, jobs, one job,
workers, one worker, actors, pools, and the page that explains a bad request. Each returns the ``<main>``
content; ``app`` wraps it in the layout (or returns it alone when the page's script reloads it)."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

from fluster.dashboard import html as h
from fluster.dashboard.logtail import Tail
from fluster.protocol.messages import JobState

ATTEMPT_COLUMNS = ["task", "attempt", "worker", "state", "started", "ran", "exit", "error"]


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


def jobs(doc: dict[str, Any], state: str | None, prefix: str | None, now: float | None = None) -> str:
    now = time.time() if now is None else now
    options = "".join(
        f'<option value="{s.value}"{" selected" if s.value == state else ""}>{s.value.lower()}</option>'
        for s in JobState
    )
    form = (
        '<form class=filters method=get action="/jobs">'
        f'<label>state <select name=state><option value="">any</option>{options}</select></label>'
        f'<label>prefix <input name=prefix value="{h.esc(prefix or "")}" placeholder="job id prefix"></label>'
        "<button>filter</button></form>"
    )
    rows = [_job_row(j, now) for j in doc["jobs"]]
    what = "top-level jobs with their children" if doc["tree"] else "jobs"
    return (
        "<h1>Jobs</h1>"
        + form
        + f"<p class=count>{doc['total']} {what}</p>"
        + h.table(
            ["job", "state", "attempt", "worker", "resources", "submitted", "ran", "cpu", "memory", "error / reason"],
            rows,
            "jobs",
            "no jobs",
        )
        + _pager(doc, state, prefix)
    )


def job(doc: dict[str, Any], now: float | None = None) -> str:
    now = time.time() if now is None else now
    facts = [
        ("state", h.state(doc["state"]) + (f" exit code {doc['exit_code']}" if doc["exit_code"] is not None else "")),
        ("parent", h.job_link(doc["parent_id"]) if doc["parent_id"] else "-"),
        ("resources", h.esc(doc["resources"]["text"])),
        ("submitted", h.ago(doc["submitted_at_ms"], now)),
        ("started", h.ago(doc["started_at_ms"], now)),
        ("finished", h.ago(doc["finished_at_ms"], now)),
        ("ran", h.duration(doc["duration_s"])),
        (
            "retries",
            f"{doc['failure_count']} failure(s) of {doc['max_retries_failure']}, "
            f"{doc['preemption_count']} preemption(s)",
        ),
    ]
    if doc["pending_reason"] and not JobState(doc["state"]).is_terminal:
        facts.append(("waiting", h.esc(doc["pending_reason"])))
    if doc["error"]:
        facts.append(("error", f"<pre class=error>{h.esc(doc['error'])}</pre>"))
    usage = doc["usage"]
    if usage:
        label = "usage (final)" if usage["final"] else "usage"
        facts.append(
            (
                label,
                f"<span class=usage>CPU {usage['cpu_percent']:.1f}% ({usage['cpu_seconds']:.1f}s in all) · "
                f"RSS {h.size(usage['rss_bytes'])} · peak {h.size(usage['peak_rss_bytes'])} · "
                f"{usage['processes']} process(es)</span>",
            )
        )
    dl = "".join(f"<dt>{h.esc(k)}</dt><dd>{v}</dd>" for k, v in facts)
    attempts = [
        [
            str(a["task"]),
            str(a["attempt"]),
            h.worker_link(a["worker_id"]),
            h.state(a["state"]),
            h.ago(a["started_at_ms"], now),
            h.duration(a["duration_s"]),
            "-" if a["exit_code"] is None else str(a["exit_code"]),
            h.cut(a["error"], 120),
        ]
        for a in doc["attempts"]
    ]
    parts = [f"<h1>Job <span class=id id=job-id>{h.esc(doc['job_id'])}</span></h1><dl class=facts>{dl}</dl>"]
    if doc["tasks"]:
        kind = "a gang" if doc["coschedule"] else "independent"
        tasks = [
            [
                str(t["index"]),
                h.state(t["state"]),
                "-" if t["exit_code"] is None else str(t["exit_code"]),
                f"{t['failure_count']}/{t['preemption_count']}",
                h.cut(t["error"], 120),
            ]
            for t in doc["tasks"]
        ]
        parts.append(f"<h2>Tasks ({len(tasks)}, {kind})</h2>")
        parts.append(h.table(["task", "state", "exit", "failures/losses", "error"], tasks, "tasks", "no tasks"))
    parts += [
        "<h2>Attempts</h2>",
        h.table(
            ["task", "attempt", "worker", "state", "started", "ran", "exit", "error"],
            attempts,
            "attempts",
            "not run yet",
        ),
    ]
    info = doc["error_info"]
    if info and info["traceback"]:
        parts.append(f"<h2>Traceback</h2><pre class=traceback>{h.esc(info['traceback'])}</pre>")
    result = doc["result"]
    if result is not None:
        if result["preview"] is not None:
            parts.append(f"<h2>Result</h2><pre class=result>{h.esc(result['preview'])}</pre>")
        else:
            where = "in the object store" if result["stored"] else "inline"
            parts.append(
                f"<h2>Result</h2><p>{h.size(result['size'])} pickled value ({where}), not a plain value: "
                f"<code>fluster result {h.esc(doc['job_id'])}</code> fetches it.</p>"
            )
    if doc["children_total"]:
        rows = [_job_row(c, now) for c in doc["children"]]
        parts.append(f"<h2>Children <small>({doc['children_total']})</small></h2>")
        parts.append(
            h.table(
                [
                    "job",
                    "state",
                    "attempt",
                    "worker",
                    "resources",
                    "submitted",
                    "ran",
                    "cpu",
                    "memory",
                    "error / reason",
                ],
                rows,
                "children",
            )
        )
        if doc["children_total"] > len(doc["children"]):
            parts.append(f'<p><a href="/jobs?{urlencode({"prefix": doc["job_id"] + "/"})}">all children</a></p>')
    env = doc["environment"]
    if env["env_vars"] or env["pip_packages"] or env["workspace"]:
        parts.append(
            "<h2>Environment</h2><p>"
            + h.esc(
                f"env vars: {', '.join(env['env_vars']) or '-'}; pip: {', '.join(env['pip_packages']) or '-'}; "
                f"workspace: {env['workspace'] or '-'}"
            )
            + "</p>"
        )
    return "".join(parts)


def log_section(job_id: str, tail: Tail, finished: bool) -> str:
    """The live log: the last lines, then whatever follows (the page's script appends it)."""
    note = ""
    if tail.truncated:
        note = (
            f"<p class=note id=log-note>showing the last {len(tail.lines)} of {tail.total} lines; "
            f"<code>fluster logs {h.esc(job_id)}</code> prints them all</p>"
        )
    lines = "".join(
        f'<div class="line {line.stream}" data-seq="{seq}"><span class=a>{line.attempt}</span>'
        f"{h.esc(_clip(line.line))}</div>"
        for seq, line in tail.lines
    )
    return (
        f'<section id=logs><h2>Log</h2>{note}<div id=log class=log data-job="{h.esc(job_id)}" '
        f'data-after="{tail.last_seq}" data-finished="{int(finished)}">{lines}</div></section>'
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
    rows = [_job_row(j, now) for j in doc["running"]]
    return (
        f"<h1>Worker <span class=id>{h.esc(doc['worker_id'])}</span></h1><dl class=facts>{dl}</dl><h2>Running jobs</h2>"
        + h.table(
            ["job", "state", "attempt", "worker", "resources", "submitted", "ran", "cpu", "memory", "error / reason"],
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


def _job_row(j: dict[str, Any], now: float) -> list[str]:
    indent = (
        f'<span class=indent style="padding-left:{1.2 * j.get("depth", 0):.1f}em"></span>' if j.get("depth") else ""
    )
    usage = j["usage"]
    running = usage is not None and not usage["final"]
    reason = j["error"] if j["error"] else (j["pending_reason"] if j["state"] in ("PENDING", "PREEMPTED") else None)
    return [
        indent + h.job_link(j["job_id"]) + (f" <small class=kids>({j['children']})</small>" if j["children"] else ""),
        h.state(j["state"]),
        "-" if j["attempt"] is None else str(j["attempt"]),
        h.worker_link(j["worker_id"]),
        h.esc(j["resources"]["text"]),
        h.ago(j["submitted_at_ms"], now),
        h.duration(j["duration_s"]),
        f"{usage['cpu_percent']:.0f}%" if running and usage else "-",
        (f"{h.size(usage['rss_bytes'])} (peak {h.size(usage['peak_rss_bytes'])})" if usage else "-"),
        h.cut(reason, 80),
    ]


def _pager(doc: dict[str, Any], state: str | None, prefix: str | None) -> str:
    offset, limit, total = doc["offset"], doc["limit"], doc["total"]
    links = []
    base = {k: v for k, v in (("state", state), ("prefix", prefix)) if v}
    if offset > 0:
        links.append(
            f'<a href="/jobs?{urlencode({**base, "offset": max(0, offset - limit), "limit": limit})}">← newer</a>'
        )
    if offset + limit < total:
        links.append(f'<a href="/jobs?{urlencode({**base, "offset": offset + limit, "limit": limit})}">older →</a>')
    shown = f"{offset + 1}–{min(total, offset + limit)} of {total}" if total else ""
    return f"<p class=pager>{shown} {' '.join(links)}</p>"


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


def _clip(text: str, n: int = 10_000) -> str:
    return text if len(text) <= n else text[:n] + f" … ({len(text) - n} more characters)"
