"""fluster.run_async: SIGTERM cancels an async entrypoint, whose cleanup then runs with a live event loop."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = """
import asyncio, sys
from fluster import run_async

async def main(path):
    with open(path, "a") as f:
        f.write("started\\n")
    try:
        await asyncio.Event().wait()
    finally:
        await asyncio.sleep(0.05)  # needs the loop: it would fail if SIGTERM had stopped it
        with open(path, "a") as f:
            f.write("cleaned up\\n")

run_async(main, sys.argv[1])
"""


def test_sigterm_cancels_the_entrypoint_and_its_cleanup_runs(tmp_path: Path) -> None:
    log = tmp_path / "log"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(log)])
    try:
        deadline = time.monotonic() + 30
        while not (log.exists() and "started" in log.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, "the entrypoint did not start"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == -signal.SIGTERM  # ends as the signal would have ended it
        assert log.read_text().splitlines() == ["started", "cleaned up"]
    finally:
        proc.kill()
        proc.wait()


def test_a_normal_return_is_the_result() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import asyncio; from fluster import run_async\n"
            "async def f(x):\n    await asyncio.sleep(0)\n    return x * 2\nprint(run_async(f, 21))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "42"


def test_outside_the_main_thread_it_is_a_plain_run() -> None:
    import asyncio
    import concurrent.futures

    from fluster import run_async

    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert pool.submit(run_async, double, 21).result(timeout=30) == 42
