"""A text progress bar for ``WorkerPool.map(..., progress=True)``, without a dependency.

On a terminal it redraws one line in place; elsewhere (logs, CI) it writes a line at every tenth of the work,
so a long map leaves a readable trace rather than thousands of lines.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

WIDTH = 30


class ProgressBar:
    """``bar(done, total)`` draws ``label [=====>    ] done/total pct elapsed`` on ``stream`` (stderr)."""

    def __init__(self, label: str = "map", stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self._interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self._start = time.monotonic()
        self._last_tenth = -1
        self._lock = threading.Lock()

    def __call__(self, done: int, total: int) -> None:
        with self._lock:
            if self._interactive:
                self.stream.write("\r" + self.render(done, total) + ("\n" if done >= total else ""))
            else:
                tenth = done * 10 // max(total, 1)
                if tenth == self._last_tenth and done < total:
                    return
                self._last_tenth = tenth
                self.stream.write(self.render(done, total) + "\n")
            self.stream.flush()

    def render(self, done: int, total: int) -> str:
        fraction = done / total if total else 1.0
        filled = int(fraction * WIDTH)
        arrow = ">" if filled < WIDTH else ""
        bar = "=" * filled + arrow + " " * (WIDTH - filled - len(arrow))
        elapsed = time.monotonic() - self._start
        return f"{self.label} [{bar}] {done}/{total} {fraction:4.0%} {elapsed:.1f}s"
