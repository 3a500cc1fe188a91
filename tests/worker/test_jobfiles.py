"""The worker <-> job-process channel: the stdlib-only bootstrap repeats the constants of
fluster.protocol.jobfiles, and what it writes is what read_outcome reads."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import cloudpickle

from fluster.errors import from_wire
from fluster.protocol import jobfiles, values
from fluster.protocol.codec import decode
from fluster.protocol.messages import ErrorInfo
from fluster.worker.runtime import BOOTSTRAP

SHARED = ("ENTRYPOINT_FILE", "RESULT_FILE", "LIFELINE_FILE", "LEASE_FORMAT", "LIFELINE_ENDED_FILE", "CALL", "EXEC")


def _bootstrap() -> object:
    spec = importlib.util.spec_from_file_location("fluster_bootstrap_under_test", BOOTSTRAP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_bootstrap_repeats_the_channels_constants() -> None:
    bootstrap = _bootstrap()
    for name in SHARED:
        assert getattr(bootstrap, name) == getattr(jobfiles, name), name
    assert (bootstrap.OK, bootstrap.ERROR) == (values.OK, values.ERROR)  # type: ignore[attr-defined]


def _run(workdir: Path, entry: bytes) -> values.Outcome | None:
    (workdir / jobfiles.ENTRYPOINT_FILE).write_bytes(entry)
    subprocess.run([sys.executable, str(BOOTSTRAP), str(workdir)], check=False, timeout=60, capture_output=True)
    return jobfiles.read_outcome(workdir / jobfiles.RESULT_FILE)


def _fails() -> None:
    raise KeyError("missing")


def test_what_the_bootstrap_writes_reads_back_as_an_outcome(tmp_path: Path) -> None:
    (tmp_path / "ok").mkdir()
    done = _run(tmp_path / "ok", jobfiles.call_entrypoint(sum, ([1, 2, 3],), {}))
    assert done is not None and done.status == values.OK and cloudpickle.loads(done.data) == 6
    (tmp_path / "err").mkdir()
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        failed = _run(tmp_path / "err", jobfiles.call_entrypoint(_fails, (), {}))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert failed is not None and failed.status == values.ERROR
    assert isinstance(from_wire(decode(failed.data, ErrorInfo), unpickle=False), KeyError)


def test_a_result_file_that_is_not_the_channels_format_is_no_outcome(tmp_path: Path) -> None:
    path = tmp_path / jobfiles.RESULT_FILE
    for junk in (b"", b"not json\n", b"[1]\n", b'{"status": 1, "error": "text"}\n', b'{"status": "ok"}\nxx'):
        path.write_bytes(junk)
        assert jobfiles.read_outcome(path) is None, junk
