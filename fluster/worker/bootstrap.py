"""The first code a job process runs: load the entrypoint, run it, write its result. Run by path, not as a module.

It imports only the standard library (and cloudpickle, through unpickling), so a job starts in tens of
milliseconds; fluster itself is imported only when a job fails, to describe the exception.
Usage: ``python bootstrap.py <workdir>``; ``<workdir>/entrypoint.pkl`` holds ``("call", fn, args, kwargs)`` or
``("exec", argv)``; the outcome goes to ``<workdir>/result.pkl`` as ``("ok", value_bytes)`` or ``("err", info)``.
"""

import os
import pickle
import signal
import sys


def _write(workdir: str, outcome: tuple[object, ...]) -> None:
    tmp = os.path.join(workdir, "result.pkl.tmp")
    with open(tmp, "wb") as f:
        pickle.dump(outcome, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, os.path.join(workdir, "result.pkl"))


def _error(exc: BaseException) -> tuple[object, ...]:
    from fluster.errors import to_wire

    return ("err", to_wire(exc).model_dump(mode="python"))


class _Terminated(SystemExit):
    """SIGTERM, raised in the job so that its cleanup runs."""


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated(128 + signum)


def _die_with_worker() -> None:
    """Ask Linux to SIGKILL this (exec'd) job when its worker dies (set here, not in a preexec_fn, so the worker
    can spawn without fork). Callables use the lifeline instead, which also ends the job's own children."""
    if not sys.platform.startswith("linux"):
        return
    worker = int(os.environ.get("FLUSTER_WORKER_PID", "0") or 0)
    if not worker:
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != worker:  # the worker died before the request took effect
        os._exit(137)


def _hold_lifeline(workdir: str) -> None:
    """End the job's whole process group when the worker's end of the lifeline FIFO closes (the worker died):
    works in containers too, where the worker is not our parent."""
    path = os.path.join(workdir, "lifeline")
    if not os.path.exists(path):
        return
    import threading

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # the worker holds the write end open
    os.set_blocking(fd, True)

    def watch() -> None:
        while True:
            try:
                if os.read(fd, 1):
                    continue
            except InterruptedError:
                continue
            os.killpg(os.getpgid(0), signal.SIGKILL)

    threading.Thread(target=watch, name="fluster-lifeline", daemon=True).start()


def main() -> int:
    workdir = sys.argv[1]
    try:
        with open(os.path.join(workdir, "entrypoint.pkl"), "rb") as f:
            entry = pickle.load(f)
    except Exception as exc:  # e.g. the callable's module is not importable where the job runs
        _write(workdir, _error(RuntimeError(f"cannot load the job's entrypoint: {type(exc).__name__}: {exc}")))
        sys.stderr.write(f"fluster: cannot load the job's entrypoint: {type(exc).__name__}: {exc}\n")
        return 1
    if entry[0] == "exec":
        argv = list(entry[1])
        sys.stdout.flush()
        _die_with_worker()  # a lifeline thread does not survive exec; the death signal does
        os.execvp(argv[0], argv)
    _, fn, args, kwargs = entry
    _hold_lifeline(workdir)
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
        _write(workdir, _error(exc))
        sys.stdout.flush()
        sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
        return 1
    try:
        import cloudpickle

        _write(workdir, ("ok", cloudpickle.dumps(value)))
    except Exception as exc:
        _write(
            workdir,
            _error(TypeError(f"the job's return value of type {type(value).__name__} cannot be pickled: {exc}")),
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
