"""Running the ``fluster`` command as a user would: a real subprocess, its output and exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Run:
    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def ok(self) -> Run:
        assert self.code == 0, f"fluster {' '.join(self.args)} exited {self.code}:\n{self.err}"
        return self

    @property
    def error_line(self) -> str:
        """The one ``error: ...`` line a failing command prints (and nothing that looks like a traceback)."""
        assert "Traceback" not in self.err, self.err
        lines = [line for line in self.err.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1, self.err
        return lines[0]


def env(extra: Mapping[str, str] | None = None, cwd: Path | None = None) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FLUSTER_", "NATS_"))}
    base["PYTHONPATH"] = str(cwd or ".")
    return {**base, **(extra or {})}


def start(
    args: Sequence[str], cwd: Path | None = None, extra_env: Mapping[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fluster.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=cwd,
        env=env(extra_env, cwd),
        start_new_session=True,
    )


def finish(proc: subprocess.Popen[str], args: Sequence[str], timeout: float = 60) -> Run:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"fluster {' '.join(args)} did not finish in {timeout}s:\n{out}\n{err}") from None
    return Run(tuple(args), proc.returncode, out, err)


def fluster(
    *args: str, cwd: Path | None = None, extra_env: Mapping[str, str] | None = None, timeout: float = 60
) -> Run:
    return finish(start(args, cwd, extra_env), args, timeout)


def fluster_all(
    commands: Sequence[Sequence[str]], cwd: Path | None = None, extra_env: Mapping[str, str] | None = None
) -> list[Run]:
    """Run several commands at once (each is a separate process) and return their results in order."""
    procs = [(start(args, cwd, extra_env), args) for args in commands]
    return [finish(proc, args) for proc, args in procs]
