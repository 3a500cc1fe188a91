"""The job commands: ``submit``, ``run``, ``result``, ``status JOB``, ``logs``, ``kill``, ``jobs``. Printing a
job's log lines (``logs``, and ``run`` as it waits) is ``job_logs``'."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fluster.cli import args as a
from fluster.cli import format as fmt
from fluster.cli import job_logs
from fluster.cli.failures import JOB_FAILED, UsageError
from fluster.cli.job_status import current_attempt, current_error, status_dict, usage_cell, usage_fields
from fluster.cli.session import connected, interruptible
from fluster.cli.shipping import load_function, parse_args, ship_by_value
from fluster.client.cluster import ClusterClient
from fluster.protocol.messages import JobState
from fluster.protocol.resources import CpuDevice, GpuDevice, ResourceSpec
from fluster.types import Entrypoint, Environment, JobStatus, create_environment

Sub = Callable[..., argparse.ArgumentParser]


def register(add: Sub) -> None:
    p = add("submit", "submit module:function as a job", _submit)
    p.add_argument("target", help="module:function to run, e.g. train:main (imported from the working directory)")
    p.add_argument("args", nargs="*", help="arguments for the function: strings, or JSON with --json-args")
    p.add_argument("--json-args", action="store_true", help="parse each argument as JSON (numbers, lists, ...)")
    p.add_argument("--wait", action="store_true", help="wait for the job and print its result")
    a.add_job_options(p)

    p = add("run", "run a command as a job and stream its logs until it ends: fluster run [options] -- CMD ARGS", _run)
    p.add_argument("command", nargs="+", metavar="CMD", help="the command and its arguments (after --)")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return at once")
    a.add_job_options(p)

    p = add("result", "print a job's return value (waits for it to finish)", _result)
    p.add_argument("job_id", metavar="JOB", help="job id")
    p.add_argument("--timeout", type=a.seconds, default=None, metavar="DURATION", help="give up after this long")
    p.add_argument("--json", action="store_true", help="print the value as JSON")

    p = add("logs", "print a job's logs", job_logs.logs)
    p.add_argument("job_id", metavar="JOB", help="job id")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    p.add_argument(
        "--since", type=a.seconds, default=None, metavar="DURATION", help="only lines from the last DURATION, e.g. 10m"
    )
    p.add_argument(
        "--tail", type=a.count, default=None, metavar="N", help="only the last N lines (then follow, with -f)"
    )
    p.add_argument("--grep", default=None, metavar="REGEX", help="only lines matching this regular expression")
    p.add_argument("--timestamps", action="store_true", help="prefix each line with its time")
    p.add_argument(
        "--task", type=a.count, default=None, metavar="N", help="only task N's lines (a job of several tasks)"
    )

    p = add("kill", "kill a job and its children", _kill)
    p.add_argument("job_id", metavar="JOB", help="job id")

    p = add("jobs", "list jobs (the current attempt of each)", _jobs, json_output=True)
    p.add_argument(
        "--state", type=a.job_state, default=None, help="only jobs in this state (any case: running, FAILED)"
    )
    p.add_argument("--prefix", default=None, help="only jobs whose id starts with this (e.g. a parent's 'train/')")


# -- submit / run ---------------------------------------------------------------------------------------


async def _submit(args: argparse.Namespace) -> int:
    workspace = _workspace(args.workspace)
    fn, module = load_function(args.target, workspace)
    if workspace is None:
        ship_by_value(module, Path.cwd())
    entrypoint = Entrypoint.from_callable(fn, *parse_args(args.args, args.json_args))
    name = args.name or unique_name(args.target.partition(":")[2].rsplit(".", 1)[-1])
    async with connected(args) as client:
        job_id = await _submit_job(client, args, name, entrypoint, workspace)
        print(job_id, flush=True)
        if args.wait:
            return await _print_result(client, job_id, None, as_json=False, traceback=False)
    return 0


async def _run(args: argparse.Namespace) -> int:
    command = [c for c in args.command]
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("no command to run: fluster run [options] -- CMD ARGS")
    workspace = _workspace(args.workspace)
    name = args.name or unique_name(Path(command[0]).name)
    async with connected(args) as client:
        job_id = await _submit_job(client, args, name, Entrypoint.from_binary(command[0], command[1:]), workspace)
        if args.no_wait:
            print(job_id)
            return 0
        print(f"job {job_id} submitted; its logs follow (Ctrl-C detaches)", file=sys.stderr, flush=True)
        tagged = args.replicas > 1
        if await interruptible(client, lambda: job_logs.print_logs(client, job_id, follow=True, tagged=tagged)):
            print(
                f"detached: job {job_id} keeps running; `fluster logs -f {job_id}` reattaches, "
                f"`fluster kill {job_id}` stops it",
                file=sys.stderr,
            )
            return 130
        status = await client.wait(job_id)
    if status.state == JobState.SUCCEEDED:
        return 0
    print(f"error: job {job_id} ended {status.state.value}{_error_suffix(status)}", file=sys.stderr)
    return job_exit_code(status)


async def _submit_job(
    client: ClusterClient, args: argparse.Namespace, name: str, entrypoint: Entrypoint, workspace: Path | None
) -> str:
    device = GpuDevice(variant=args.gpu_variant, count=args.gpus) if args.gpus else CpuDevice()
    return await client.submit(
        name,
        entrypoint,
        resources=ResourceSpec(cpu=args.cpu, memory=args.memory, device=device),
        environment=_environment(args, workspace),
        scheduling_timeout=args.scheduling_timeout,
        max_retries_failure=args.max_retries_failure,
        replicas=args.replicas,
        coschedule=args.coschedule,
        group_by=args.group_by,
        constraints=dict(args.constraint),
    )


def unique_name(base: str) -> str:
    """``base`` made a valid job name, with a random suffix so quick submits never collide."""
    clean = re.sub(r"[^A-Za-z0-9_-]+", "-", base).strip("-")[:40] or "job"
    return f"{clean}-{uuid.uuid4().hex[:8]}"


def _workspace(path: str | None) -> Path | None:
    if path is None:
        return None
    directory = Path(path).expanduser().resolve()
    if not directory.is_dir():
        raise UsageError(f"--workspace {path!r} is not a directory")
    return directory


def _environment(args: argparse.Namespace, workspace: Path | None) -> Environment | None:
    if not (args.env or args.pip or workspace):
        return None
    return create_environment(env_vars=dict(args.env), pip_packages=args.pip, workspace=workspace)


# -- result / status ------------------------------------------------------------------------------------


async def _result(args: argparse.Namespace) -> int:
    async with connected(args) as client:
        return await _print_result(client, args.job_id, args.timeout, as_json=args.json, traceback=True)


async def _print_result(
    client: ClusterClient, job_id: str, timeout: float | None, *, as_json: bool, traceback: bool
) -> int:
    status = await client.wait(job_id, timeout)
    if status.state == JobState.SUCCEEDED:
        value = await client.result(job_id)
        print(_json(value) if as_json else repr(value))
        return 0
    if traceback and status.error_traceback:
        sys.stderr.write(status.error_traceback.rstrip("\n") + "\n")
    hint = "" if traceback else f"; `fluster result {job_id}` shows its traceback"
    print(f"error: job {job_id} ended {status.state.value}{_error_suffix(status)}{hint}", file=sys.stderr)
    return job_exit_code(status)


def job_exit_code(status: JobStatus) -> int:
    """The job's own exit code when it failed with one (128+N for signal N), else 1."""
    code = status.exit_code
    if code is None or code == 0:
        return JOB_FAILED
    return 128 - code if code < 0 else min(code, 255)


def _error_suffix(status: JobStatus) -> str:
    code = f" (exit code {status.exit_code})" if status.exit_code not in (None, 0) else ""
    return f"{code}: {fmt.shorten(status.error, 200)}" if status.error else code


def _json(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"the result ({type(value).__name__}) is not JSON; leave out --json") from exc


# -- kill / jobs ----------------------------------------------------------------------------------------


async def _kill(args: argparse.Namespace) -> int:
    async with connected(args) as client:
        reply = await client.kill(args.job_id)
    print(reply.message)
    return 0


async def _jobs(args: argparse.Namespace) -> int:
    async with connected(args) as client:
        jobs = await client.list_jobs(state=args.state, prefix=args.prefix)
        usage = await client.list_usage()
    if args.json:
        print(json.dumps([usage_fields(status_dict(s), usage.get(s.job_id)) for s in jobs]))
        return 0
    now = time.time()
    rows = []
    for s in jobs:
        attempt = current_attempt(s)
        rows.append(
            [
                s.job_id,
                s.state.value,
                str(attempt.attempt) if attempt else "-",
                attempt.worker_id if attempt else "-",
                fmt.age(s.submitted_at_ms, now),
                fmt.span(s.started_at_ms, s.finished_at_ms, now),
                f"cpu={s.resources.cpu:g} mem={s.resources.memory}",
                usage_cell(usage.get(s.job_id), attempt),
                current_error(s, attempt),
            ]
        )
    print(fmt.table(["JOB", "STATE", "ATTEMPT", "WORKER", "SUBMITTED", "RAN", "RESOURCES", "USAGE", "ERROR"], rows))
    return 0
