"""The text progress bar of WorkerPool.map(progress=True)."""

from __future__ import annotations

import io

from fluster.pool.progress import ProgressBar


def test_off_a_terminal_it_writes_a_line_per_tenth() -> None:
    out = io.StringIO()
    bar = ProgressBar("work", out)
    for done in range(1, 101):
        bar(done, 100)
    lines = out.getvalue().splitlines()
    assert len(lines) == 11  # the first one, then one per tenth
    assert lines[1].startswith("work [===>") and " 10/100 " in lines[1]
    assert lines[-1].startswith("work [==============================] 100/100 100%")


def test_on_a_terminal_it_redraws_one_line() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    bar = ProgressBar("t", out)
    for done in range(1, 4):
        bar(done, 3)
    text = out.getvalue()
    assert text.count("\r") == 3 and text.endswith("3/3 100% " + text.rsplit(" ", 1)[-1])
    assert text.count("\n") == 1
