"""The dashboard's job pages, rendered on the server from the API documents (``api``): the jobs list, one
job (facts, tasks, attempts, result, children, environment) and its live log; and the jobs table's row, which
the worker page shows too. The other pages are ``pages``'."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

from fluster.dashboard import html as h
from fluster.dashboard.logtail import Tail
from fluster.protocol.messages import JobState

JOB_COLUMNS = ["job", "state", "attempt", "worker", "resources", "submitted", "ran", "cpu", "memory", "error / reason"]
ATTEMPT_COLUMNS = ["task", "attempt", "worker", "state", "started", "ran", "exit", "error"]


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
    rows = [job_row(j, now) for j in doc["jobs"]]
    what = "top-level jobs with their children" if doc["tree"] else "jobs"
    return (
        "<h1>Jobs</h1>"
        + form
        + f"<p class=count>{doc['total']} {what}</p>"
        + h.table(
            JOB_COLUMNS,
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
            ATTEMPT_COLUMNS,
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
        rows = [job_row(c, now) for c in doc["children"]]
        parts.append(f"<h2>Children <small>({doc['children_total']})</small></h2>")
        parts.append(h.table(JOB_COLUMNS, rows, "children"))
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


def job_row(j: dict[str, Any], now: float) -> list[str]:
    """One job's row of a jobs table (``JOB_COLUMNS``), indented by its depth in a tree."""
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


def _clip(text: str, n: int = 10_000) -> str:
    return text if len(text) <= n else text[:n] + f" … ({len(text) - n} more characters)"
