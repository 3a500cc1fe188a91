"""The ``fluster`` command: argument parsing and output only; everything else is the library."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import cloudpickle

from fluster.bus.connection import connect
from fluster.client.cluster import ClusterClient
from fluster.controller.service import Controller, ControllerSettings
from fluster.environ import default_namespace, default_url
from fluster.errors import FlusterError
from fluster.local.cluster import LocalCluster
from fluster.protocol.messages import JobState
from fluster.protocol.resources import CpuDevice, GpuDevice, ResourceSpec, TpuDevice
from fluster.types import Entrypoint, JobStatus
from fluster.worker.agent import Worker
from fluster.worker.settings import WorkerSettings


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get(
            "FLUSTER_LOG_LEVEL", "WARNING" if args.command not in ("controller", "worker", "up") else "INFO"
        ),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        result: int = anyio.run(args.func, args)
        return result
    except FlusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fluster", description="Distributed jobs, actors and tasks on NATS.")
    sub = parser.add_subparsers(dest="command", required=True)

    def connected(
        name: str,
        help_text: str,
        func: Callable[[argparse.Namespace], Awaitable[int]],
        json_output: bool = False,
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--url", default=default_url(), help="NATS URL (default: $FLUSTER_URL, then $NATS_URL)")
        p.add_argument(
            "--namespace",
            default=default_namespace() or "default",
            help="namespace (default: $FLUSTER_NAMESPACE or 'default')",
        )
        if json_output:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=func)
        return p

    p = sub.add_parser("up", help="run a local cluster (nats-server, controller, workers) in the foreground")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cpu", type=float, default=None, help="CPUs per worker (default: probe)")
    p.add_argument("--memory", default=None, help="memory per worker, e.g. 8g (default: probe)")
    p.add_argument("--namespace", default=default_namespace() or "default")
    p.add_argument("--runtime", choices=["process", "docker"], default="process")
    p.add_argument("--store-dir", default=None, help="JetStream directory (default: a temporary one)")
    p.set_defaults(func=_up)

    p = connected("controller", "run a controller in the foreground", _controller)
    p.add_argument(
        "--worker-timeout", type=float, default=10.0, help="seconds without heartbeat before a worker is dead"
    )
    p.add_argument("--kill-grace", type=float, default=5.0)
    p.add_argument(
        "--replicas",
        type=int,
        default=None,
        help="JetStream replicas for fluster's buckets and streams (3 on a 3-node NATS cluster)",
    )
    p.add_argument(
        "--finished-job-retention",
        type=float,
        default=24 * 3600.0,
        help="seconds a finished job (record, result) is kept before it is forgotten; 0 keeps them forever",
    )

    p = connected("worker", "run a worker in the foreground", _worker)
    p.add_argument(
        "--worker-id",
        default=_default_worker_id(),
        help="stable id of this worker (default: the host name); one per worker on a host",
    )
    p.add_argument("--cpu", type=float, default=None, help="CPUs offered (default: probe)")
    p.add_argument("--memory", default=None, help="memory offered, e.g. 16g (default: probe)")
    p.add_argument("--gpus", type=int, default=None, help="GPUs offered (default: probe with nvidia-smi)")
    p.add_argument("--gpu-variant", default="auto")
    p.add_argument("--tpus", type=int, default=None)
    p.add_argument("--tpu-variant", default="auto")
    p.add_argument("--max-concurrent-jobs", type=int, default=10)
    p.add_argument("--runtime", choices=["process", "docker"], default="process")
    p.add_argument("--image", default="fluster-base:py311", help="base image for the docker runtime")
    p.add_argument("--heartbeat-interval", type=float, default=1.0)
    p.add_argument(
        "--drain-grace",
        type=float,
        default=10.0,
        help="on SIGTERM, seconds to let running jobs finish before stopping them",
    )
    p.add_argument("--kill-grace", type=float, default=5.0)

    p = connected("submit", "submit module:function as a job", _submit)
    p.add_argument("target", help="module:function (the module must be importable on the workers)")
    p.add_argument("args", nargs="*", help="string arguments for the function")
    p.add_argument("--name", default=None)
    p.add_argument("--cpu", type=float, default=1)
    p.add_argument("--memory", default="1g")
    p.add_argument("--scheduling-timeout", type=float, default=None)
    p.add_argument("--max-retries-failure", type=int, default=0)
    p.add_argument("--wait", action="store_true", help="wait for the job and print its result")

    p = connected("status", "show a job", _status, json_output=True)
    p.add_argument("job_id")
    p = connected("jobs", "list jobs", _jobs, json_output=True)
    p.add_argument("--state", choices=[s.value for s in JobState], default=None)
    p.add_argument("--prefix", default=None)
    p = connected("logs", "print a job's logs", _logs)
    p.add_argument("job_id")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    p = connected("kill", "kill a job and its children", _kill)
    p.add_argument("job_id")
    connected("workers", "list workers", _workers, json_output=True)

    p = sub.add_parser("build-image", help="build the docker runtime's base image without a registry")
    p.add_argument("--image", default="fluster-base:py311", help="tag to build (default %(default)s)")
    p.add_argument("--force", action="store_true", help="rebuild even when the tag exists")
    p.set_defaults(func=_build_image)
    return parser


# -- long-running commands ------------------------------------------------------------------------------


async def _until_signal() -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            return


async def _up(args: argparse.Namespace) -> int:
    cluster = LocalCluster(
        workers=args.workers,
        cpu=args.cpu,
        memory=args.memory,
        namespace=args.namespace,
        runtime=args.runtime,
        store_dir=args.store_dir,
    )
    async with cluster:
        print(f"fluster is up: {args.workers} worker(s), namespace {args.namespace!r}")
        print(f"export FLUSTER_URL={cluster.url}")
        print("press Ctrl-C to stop", flush=True)
        await _until_signal()
    return 0


async def _controller(args: argparse.Namespace) -> int:
    nc = await connect(_need_url(args), name="fluster-controller")
    settings = ControllerSettings(
        namespace=args.namespace,
        worker_timeout=args.worker_timeout,
        kill_grace=args.kill_grace,
        replicas=args.replicas,
        finished_job_retention=args.finished_job_retention or None,
    )
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(Controller(nc, settings).run)
            print(f"controller serving namespace {args.namespace!r} at {args.url}", flush=True)
            await _until_signal()
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await nc.close()
    return 0


async def _worker(args: argparse.Namespace) -> int:
    url = _need_url(args)
    device: CpuDevice | GpuDevice | TpuDevice | None = None
    if args.gpus is not None:
        device = GpuDevice(variant=args.gpu_variant, count=args.gpus) if args.gpus > 0 else CpuDevice()
    elif args.tpus is not None:
        device = TpuDevice(variant=args.tpu_variant, count=args.tpus)
    settings = WorkerSettings(
        url=url,
        namespace=args.namespace,
        worker_id=args.worker_id,
        cpu=args.cpu,
        memory=args.memory,
        device=device,
        max_concurrent_jobs=args.max_concurrent_jobs,
        heartbeat_interval=args.heartbeat_interval,
        runtime=args.runtime,
        docker_image=args.image,
        kill_grace=args.kill_grace,
    )
    nc = await connect(url, name=f"fluster-worker-{args.worker_id or ''}")
    worker = Worker(nc, settings)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            print(f"worker {worker.worker_id} serving namespace {args.namespace!r}", flush=True)
            await _until_signal()
            await worker.drain(args.drain_grace)
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await nc.close()
    return 0


# -- client commands ------------------------------------------------------------------------------------


async def _submit(args: argparse.Namespace) -> int:
    module_name, _, func_name = args.target.partition(":")
    if not module_name or not func_name:
        raise FlusterError(f"target must look like module:function, got {args.target!r}")
    sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    fn = getattr(module, func_name)
    # ship the module's code with the job, so workers need not have it installed
    cloudpickle.register_pickle_by_value(module)
    async with ClusterClient.connect(_need_url(args), args.namespace) as client:
        job_id = await client.submit(
            args.name or f"{func_name.replace('_', '-')}-{int(time.time())}",
            Entrypoint.from_callable(fn, *args.args),
            resources=ResourceSpec(cpu=args.cpu, memory=args.memory),
            scheduling_timeout=args.scheduling_timeout,
            max_retries_failure=args.max_retries_failure,
        )
        print(job_id)
        if args.wait:
            print(repr(await client.result(job_id)))
    return 0


async def _status(args: argparse.Namespace) -> int:
    async with ClusterClient.connect(_need_url(args), args.namespace) as client:
        status = await client.status(args.job_id)
    if args.json:
        print(json.dumps(_status_dict(status)))
    else:
        for key, value in _status_dict(status).items():
            if key != "attempts":
                print(f"{key:>16}: {value}")
    return 0


async def _jobs(args: argparse.Namespace) -> int:
    async with ClusterClient.connect(_need_url(args), args.namespace) as client:
        jobs = await client.list_jobs(state=args.state, prefix=args.prefix)
    if args.json:
        print(json.dumps([_status_dict(s) for s in jobs]))
        return 0
    _table(
        ["JOB", "STATE", "ATTEMPT", "WORKER", "ERROR"],
        [[s.job_id, s.state.value, str(s.attempt), s.worker_id or "-", (s.error or "")[:60]] for s in jobs],
    )
    return 0


async def _logs(args: argparse.Namespace) -> int:
    async with ClusterClient.connect(_need_url(args), args.namespace) as client:
        async for line in client.logs(args.job_id, follow=args.follow):
            stream = sys.stderr if line.stream == "stderr" else sys.stdout
            print(line.line, file=stream, flush=True)
    return 0


async def _kill(args: argparse.Namespace) -> int:
    async with ClusterClient.connect(_need_url(args), args.namespace) as client:
        reply = await client.kill(args.job_id)
    print(reply.message)
    return 0


async def _workers(args: argparse.Namespace) -> int:
    async with ClusterClient.connect(_need_url(args), args.namespace) as client:
        workers = await client.list_workers()
    if args.json:
        print(json.dumps([w.model_dump(mode="json") for w in workers]))
        return 0
    _table(
        ["WORKER", "HOST", "RUNTIME", "CPU", "MEMORY", "DEVICE"],
        [
            [
                w.worker_id,
                w.hostname,
                w.runtime,
                f"{w.resources.cpu:g}",
                f"{w.resources.memory_bytes >> 20}MiB",
                _device(w.resources.device),
            ]
            for w in workers
        ],
    )
    return 0


async def _build_image(args: argparse.Namespace) -> int:
    from fluster.worker import image

    argv = ["--image", args.image] + (["--force"] if args.force else [])
    return await anyio.to_thread.run_sync(image.main, argv)


def _default_worker_id() -> str:
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()) or "worker"
    return host


def _device(device: CpuDevice | GpuDevice | TpuDevice) -> str:
    return "cpu" if device.type == "cpu" else f"{device.type}:{device.variant}x{device.count}"


def _need_url(args: argparse.Namespace) -> str:
    if not args.url:
        raise FlusterError(
            "no cluster URL: pass --url, or export FLUSTER_URL (run `fluster up` to start a local cluster)"
        )
    return str(args.url)


def _status_dict(status: JobStatus) -> dict[str, Any]:
    fields = dataclasses.asdict(status)
    fields["state"] = status.state.value
    fields["attempts"] = [a.model_dump(mode="json") for a in status.attempts]
    return fields


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    sys.exit(main())
