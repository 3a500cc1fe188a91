"""Every user mistake ends in one ``error: ...`` line, no traceback, and its own exit code (docs/cli.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import fluster_all

from fluster.cli import failures
from fluster.local.server import free_port

pytestmark = pytest.mark.timeout(120)


def test_mistakes_that_need_no_cluster_give_one_line_and_a_distinct_code(tmp_path: Path) -> None:
    (tmp_path / "mod.py").write_text("def fn():\n    return 1\n")
    dead = f"nats://127.0.0.1:{free_port()}"
    cases: list[tuple[list[str], int, str]] = [
        (["submit", "mod:fn", "--memory", "lots"], failures.USAGE, "invalid memory amount 'lots'"),
        (["submit", "mod:fn", "--cpu", "-1"], failures.USAGE, "CPU count must not be negative"),
        (["submit", "mod:fn", "--name", "bad name"], failures.USAGE, "invalid name 'bad name'"),
        (["submit", "nomod:fn", "--url", dead], failures.USAGE, "no module 'nomod'"),
        (["submit", "mod:nope", "--url", dead], failures.USAGE, "has no function 'nope'"),
        (["submit", "mod", "--url", dead], failures.USAGE, "must look like module:function"),
        (["up", "--memory", "lots"], failures.USAGE, "invalid memory amount"),
        (["worker", "--memory", "lots"], failures.USAGE, "invalid memory amount"),
        (["jobs", "--state", "bogus"], failures.USAGE, "unknown job state 'bogus'"),
        (["logs", "x", "--since", "banana"], failures.USAGE, "expected a duration"),
        (["run", "--url", dead], failures.USAGE, "arguments are required: CMD"),
        (["jobs"], failures.UNAVAILABLE, "fluster up"),
        (["jobs", "--url", dead], failures.UNAVAILABLE, "cannot connect to NATS at"),
        (["jobs", "--context", "nope"], failures.CONFIGURATION, "no NATS context 'nope'"),
        (["jobs", "--url", dead, "--tlsca", "/nope/ca.pem"], failures.CONFIGURATION, "TLS CA file '/nope/ca.pem'"),
        (["down"], failures.NOT_FOUND, "no cluster started by `fluster up` is running"),
    ]
    state = {"FLUSTER_STATE_DIR": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    runs = fluster_all([args for args, _, _ in cases], cwd=tmp_path, extra_env=state)
    for (args, code, message), run in zip(cases, runs, strict=True):
        assert (run.code, message in run.error_line) == (code, True), (args, run.code, run.err)
