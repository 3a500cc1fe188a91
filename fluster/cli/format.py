"""Human-readable output: tables, ages, durations, byte sizes, devices."""

from __future__ import annotations

import time

from fluster.protocol.resources import CpuDevice, GpuDevice, TpuDevice


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell (the last one is not padded)."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def size(n_bytes: int) -> str:
    """``512.0 MiB``, ``4.0 GiB``: binary units, one decimal."""
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def duration(seconds: float) -> str:
    """``850ms``, ``12.3s``, ``4m05s``, ``3h20m``, ``2d04h``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def age(at_ms: int | None, now: float | None = None) -> str:
    """How long ago ``at_ms`` was: ``12s ago``; ``-`` for None."""
    if at_ms is None:
        return "-"
    now = time.time() if now is None else now
    return f"{duration(max(0.0, now - at_ms / 1000))} ago"


def span(start_ms: int | None, end_ms: int | None, now: float | None = None) -> str:
    """The time from ``start_ms`` to ``end_ms`` (or to now while running); ``-`` when it has not started."""
    if start_ms is None:
        return "-"
    end = end_ms / 1000 if end_ms is not None else (time.time() if now is None else now)
    return duration(max(0.0, end - start_ms / 1000))


def timestamp(at_ms: int | None) -> str:
    if at_ms is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at_ms / 1000))


def device(dev: CpuDevice | GpuDevice | TpuDevice) -> str:
    return "cpu" if dev.type == "cpu" else f"{dev.count}x {dev.type}:{dev.variant}"


def shorten(text: str | None, width: int) -> str:
    """The first line of ``text``, cut to ``width`` characters."""
    if not text:
        return ""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= width else first[: width - 1] + "…"
