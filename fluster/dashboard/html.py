"""HTML building blocks for the dashboard's pages: the layout, tables, links and formatted figures. Every
value is escaped here; pages never concatenate raw text."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from urllib.parse import quote

NAV = (("/", "Overview"), ("/jobs", "Jobs"), ("/workers", "Workers"), ("/actors", "Actors"), ("/pools", "Pools"))


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def layout(title: str, active: str, body: str, topics: Sequence[str], namespace: str, after: str = "") -> str:
    """A whole page: ``body`` goes in ``<main>``, which the page's script reloads when ``topics`` change;
    ``after`` follows it and is never reloaded (a live log)."""
    nav = "".join(
        f'<a href="{href}"{" class=active" if href == active else ""}>{esc(label)}</a>' for href, label in NAV
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · fluster</title>"
        '<link rel=stylesheet href="/static/style.css"></head><body>'
        f"<header><span class=brand>fluster</span><span class=ns>namespace {esc(namespace)}</span>"
        f'<nav>{nav}<a href="/metrics">Metrics</a></nav>'
        '<span id=live class=live title="live updates" data-live=0>●</span></header>'
        f'<main id=content data-topics="{esc(" ".join(topics))}">{body}</main>{after}'
        '<script src="/static/app.js" defer></script></body></html>'
    )


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "", empty: str = "none") -> str:
    """``rows`` hold HTML cells (escape values with ``esc`` or the helpers below)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    if not body:
        body = f"<tr><td colspan={len(headers)} class=empty>{esc(empty)}</td></tr>"
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def job_link(job_id: str, text: str | None = None) -> str:
    return f'<a class=job href="/jobs/{path(job_id)}">{esc(text or job_id)}</a>'


def worker_link(worker_id: str | None) -> str:
    if not worker_id:
        return "-"
    return f'<a class=worker href="/workers/{quote(worker_id, safe="")}">{esc(worker_id)}</a>'


def path(job_id: str) -> str:
    """A job id in a URL path (its ``/`` separators kept)."""
    return "/".join(quote(part, safe="") for part in job_id.split("/"))


def state(value: str | None) -> str:
    if not value:
        return "-"
    return f'<span class="state s-{esc(value.lower())}">{esc(value)}</span>'


def size(n_bytes: float | None) -> str:
    if n_bytes is None:
        return "-"
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return "-"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours < 24 else f"{hours // 24}d{hours % 24:02d}h"


def ago(at_ms: int | None, now: float) -> str:
    """A time as its age; the page's script keeps it current (``data-ms``)."""
    if at_ms is None:
        return "-"
    return f'<span class=ago data-ms="{at_ms}">{duration(max(0.0, now - at_ms / 1000))} ago</span>'


def bar(used: float, total: float) -> str:
    percent = 0 if total <= 0 else max(0, min(100, round(used / total * 100)))
    return f'<span class=bar title="{percent}%"><span style="width:{percent}%"></span></span>'


def cut(text: str | None, n: int = 80) -> str:
    if not text:
        return "-"
    line = text.strip().splitlines()[0] if text.strip() else ""
    return esc(line if len(line) <= n else line[: n - 1] + "…")
