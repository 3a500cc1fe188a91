"""The first code a job process runs: load the entrypoint, run it, write its result. Run by path, not as a module.

It imports only the standard library (and cloudpickle, through unpickling), so a job starts in tens of
milliseconds; fluster itself is imported only when a job fails, to describe the exception.
Usage: ``python bootstrap.py <workdir>``. What it reads and writes there is the channel of
``fluster.protocol.jobfiles``, whose constants it repeats (tests/worker/test_jobfiles.py checks them).
"""

import base64
import json
import os
import pickle
import signal
import sys

# as in fluster.protocol.jobfiles (this file imports nothing of fluster at start)
ENTRYPOINT_FILE = "entrypoint.pkl"
RESULT_FILE = "result.out"
LIFELINE_FILE = "lifeline"
LEASE_FORMAT = "!d"
LIFELINE_ENDED_FILE = "lifeline.ended"
CALL = "call"
EXEC = "exec"
OK = 0
ERROR = 1


def _write(workdir: str, outcome: tuple[int, object]) -> None:
    status, value = outcome
    tmp = os.path.join(workdir, RESULT_FILE + ".tmp")
    with open(tmp, "wb") as f:
        if status == OK:
            assert isinstance(value, bytes)
            f.write(json.dumps({"status": OK}).encode() + b"\n")
            f.write(value)
        else:
            f.write(json.dumps({"status": ERROR, "error": value}).encode() + b"\n")
    os.replace(tmp, os.path.join(workdir, RESULT_FILE))


def _error(exc: BaseException) -> tuple[int, object]:
    from fluster.errors import to_wire

    info = to_wire(exc).model_dump(mode="python")
    info["pickled"] = base64.b64encode(info["pickled"]).decode() if info.get("pickled") is not None else None
    return (ERROR, info)


class _Terminated(SystemExit):
    """SIGTERM, raised in the job so that its cleanup runs."""


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated(128 + signum)


def _hold_lifeline(workdir: str) -> None:
    """End the job's whole process group when the worker's end of the lifeline FIFO closes (the worker died),
    or when the attempt's lease runs out without a renewal (the worker is paused or cut off from the
    controller, which may soon start this job elsewhere). Works in containers too, where the worker is not
    our parent: the monotonic clock is the host's."""
    path = os.path.join(workdir, LIFELINE_FILE)
    if not os.path.exists(path):
        return
    import select
    import struct
    import threading
    import time

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # the worker holds the write end open
    size = struct.calcsize(LEASE_FORMAT)

    def end(why: str) -> None:
        try:
            # tells a live worker why its attempt died (a lease that ran out is a preemption, not a failure)
            with open(os.path.join(workdir, LIFELINE_ENDED_FILE), "w") as f:
                f.write(why)
            os.write(2, f"fluster: {why}: stopping the job\n".encode())
        finally:
            os.killpg(os.getpgid(0), signal.SIGKILL)

    def watch() -> None:
        until: float | None = None  # the lease: renewals arrive as 8-byte monotonic deadlines
        pending = b""
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            # A read after every wake, data or not: with no writer left it returns b"" (end of file). poll()
            # alone would not say so when the worker was gone before this process opened the FIFO.
            try:
                data = os.read(fd, 4096)
            except (BlockingIOError, InterruptedError):
                data = None
            if data == b"":
                end("the worker died")
            if data:
                pending += data
                while len(pending) >= size:
                    (until,) = struct.unpack(LEASE_FORMAT, pending[:size])
                    pending = pending[size:]
            wait_s = 1.0 if until is None else min(1.0, until - time.monotonic())
            if wait_s <= 0:
                end("the attempt's lease ran out (its worker is paused or lost contact with the controller)")
            try:
                poller.poll(int(wait_s * 1000) + 1)
            except InterruptedError:
                continue

    threading.Thread(target=watch, name="fluster-lifeline", daemon=True).start()


def _run_command(argv: list[str]) -> int:
    """Run a binary entrypoint as a child in this process group, so the lifeline (a thread of this process)
    keeps guarding it; SIGTERM reaches it with the group; the exit status is the child's."""
    import subprocess

    signal.signal(signal.SIGTERM, lambda signum, frame: None)  # the group's stop reaches the child too
    try:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    except OSError as exc:
        sys.stderr.write(f"fluster: cannot run {argv[0]!r}: {exc}\n")
        return 127
    while True:
        try:
            code = child.wait()
            break
        except InterruptedError:
            continue
    if code < 0:  # end as the child was ended, so the attempt's exit says which signal
        sys.stdout.flush()
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def main() -> int:
    workdir = sys.argv[1]
    try:
        with open(os.path.join(workdir, ENTRYPOINT_FILE), "rb") as f:
            entry = pickle.load(f)
    except Exception as exc:  # e.g. the callable's module is not importable where the job runs
        _write(workdir, _error(RuntimeError(f"cannot load the job's entrypoint: {type(exc).__name__}: {exc}")))
        sys.stderr.write(f"fluster: cannot load the job's entrypoint: {type(exc).__name__}: {exc}\n")
        return 1
    _hold_lifeline(workdir)
    if entry[0] == EXEC:
        return _run_command(list(entry[1]))
    _, fn, args, kwargs = entry
    # a stop (SIGTERM) becomes SystemExit in the job, so its finally blocks and context managers run (an actor
    # server withdraws its endpoints) before the grace period ends in SIGKILL
    signal.signal(signal.SIGTERM, _terminate)
    try:
        value = fn(*args, **kwargs)
    except _Terminated:
        # cleanup has run; end as the signal would have ended us, so the exit status says SIGTERM
        sys.stdout.flush()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return 143
    except BaseException as exc:  # noqa: B036 - SystemExit and KeyboardInterrupt from user code are results too
        import traceback  # the job's stderr log and its error hold its traceback, without this file's frame

        if exc.__traceback__ is not None:
            exc.with_traceback(exc.__traceback__.tb_next)
        sys.stdout.flush()
        traceback.print_exception(exc)
        _write(workdir, _error(exc))
        return 1
    try:
        import cloudpickle

        _write(workdir, (OK, cloudpickle.dumps(value)))
    except Exception as exc:
        _write(
            workdir,
            _error(TypeError(f"the job's return value of type {type(value).__name__} cannot be pickled: {exc}")),
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
