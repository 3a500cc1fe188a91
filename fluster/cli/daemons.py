"""The long-running daemons: ``controller`` and ``worker``, each in the foreground until a signal stops it
(``stopping``). ``up`` / ``down``, a whole local cluster, are ``up.py``'s."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import anyio

from fluster.bus.connection import connect
from fluster.bus.options import redact_url
from fluster.cli import args as a
from fluster.cli.dashboard import add_log_format
from fluster.cli.failures import INTERRUPTED
from fluster.cli.stopping import stop_signals
from fluster.controller.service import Controller, ControllerSettings
from fluster.environ import TRUSTED_KEYS_VAR, trusted_keys
from fluster.errors import ConfigurationError
from fluster.protocol.permissions import Role
from fluster.protocol.resources import CpuDevice, GpuDevice, TpuDevice
from fluster.security.identity import identity_of
from fluster.security.issuer import JobIssuer
from fluster.worker.agent import Worker
from fluster.worker.settings import WorkerSettings

Sub = Callable[..., argparse.ArgumentParser]


def register(add: Sub) -> None:
    p = add("controller", "run a controller in the foreground", _controller)
    p.add_argument(
        "--worker-timeout",
        type=a.seconds,
        default=10.0,
        help="seconds without a heartbeat before a worker is dead (default: %(default)g)",
    )
    p.add_argument(
        "--kill-grace",
        type=a.seconds,
        default=5.0,
        help="seconds between SIGTERM and SIGKILL when a job is killed (default: %(default)g)",
    )
    p.add_argument(
        "--replicas",
        type=a.count,
        default=None,
        help="JetStream replicas for fluster's buckets and streams (3 on a 3-node NATS cluster)",
    )
    p.add_argument(
        "--finished-job-retention",
        type=a.seconds,
        default=24 * 3600.0,
        help="seconds a finished job (record, result) is kept; 0 keeps them forever (default: a day)",
    )
    p.add_argument(
        "--reserve-after",
        type=a.seconds,
        default=180.0,
        help="a job waiting this long keeps the workers it needs as they free up, so smaller jobs cannot "
        "starve it; 0 never reserves (default: 3m)",
    )
    p.add_argument(
        "--job-issuer",
        default=os.environ.get("FLUSTER_JOB_ISSUER"),
        metavar="FILE",
        help="mint each job's identity with this key (`fluster creds controller` writes it; default: "
        "$FLUSTER_JOB_ISSUER)",
    )
    add_log_format(p)

    p = add("worker", "run a worker in the foreground", _worker)
    p.add_argument(
        "--worker-id",
        type=a.name,
        default=None,
        help="stable id of this worker, one per worker (default: its credentials' worker id, else the host name)",
    )
    p.add_argument("--cpu", type=a.cpu, default=None, help="CPUs offered (default: probe)")
    p.add_argument("--memory", type=a.memory, default=None, help="memory offered, e.g. 16g (default: probe)")
    p.add_argument("--gpus", type=a.count, default=None, help="GPUs offered (default: probe with nvidia-smi)")
    p.add_argument("--gpu-variant", default="auto", help="GPU type offered, e.g. A100 (default: %(default)s)")
    p.add_argument("--tpus", type=a.count, default=None, help="TPU chips offered (default: none)")
    p.add_argument("--tpu-variant", default="auto", help="TPU type offered (default: %(default)s)")
    p.add_argument(
        "--max-concurrent-jobs", type=a.count, default=10, help="jobs run at once at most (default: %(default)s)"
    )
    p.add_argument(
        "--label",
        action="append",
        default=[],
        type=a.label_pair,
        metavar="KEY=VALUE",
        help="a label jobs' constraints match (zone=a, slice=s7); repeat for more; device-type, "
        "device-variant and hostname are added",
    )
    p.add_argument(
        "--address",
        type=a.address,
        default=None,
        metavar="HOST",
        help="the address the other tasks of a multi-host job reach this host at, in FLUSTER_TASK_HOSTS "
        "(default: its host name)",
    )
    p.add_argument(
        "--runtime", choices=["process", "docker"], default="process", help="how jobs run (default: %(default)s)"
    )
    p.add_argument(
        "--image", default="fluster-base:py311", help="base image for the docker runtime (default: %(default)s)"
    )
    p.add_argument(
        "--heartbeat-interval", type=a.seconds, default=1.0, help="seconds between heartbeats (default: %(default)g)"
    )
    p.add_argument(
        "--drain-grace",
        type=a.seconds,
        default=10.0,
        help="on Ctrl-C/SIGTERM, seconds to let running jobs finish before stopping them (default: %(default)g)",
    )
    p.add_argument(
        "--kill-grace",
        type=a.seconds,
        default=5.0,
        help="seconds between SIGTERM and SIGKILL when a job is stopped (default: %(default)g)",
    )
    p.add_argument(
        "--job-env",
        action="append",
        default=[],
        metavar="VAR",
        help="a variable of this worker's environment that jobs inherit besides PATH, HOME, locale (repeatable)",
    )
    p.add_argument(
        "--trusted-key",
        action="append",
        default=sorted(trusted_keys(os.environ.get(TRUSTED_KEYS_VAR, ""))),
        metavar="KEY",
        help="run only jobs signed by this public key (repeatable; default: $FLUSTER_TRUSTED_KEYS; none: any job)",
    )
    add_log_format(p)


async def _controller(args: argparse.Namespace) -> int:
    url, options = a.need_connection(args)
    nc = await connect(url, name="fluster-controller", options=options)
    settings = ControllerSettings(
        namespace=args.namespace,
        worker_timeout=args.worker_timeout,
        kill_grace=args.kill_grace,
        replicas=args.replicas,
        finished_job_retention=args.finished_job_retention or None,
        reserve_after=args.reserve_after or None,
        job_issuer=JobIssuer.read(args.job_issuer) if args.job_issuer else None,
        owns_process=True,
    )
    try:
        async with stop_signals("the controller") as stop, anyio.create_task_group() as tg:
            await tg.start(Controller(nc, settings).run)
            print(f"controller serving namespace {args.namespace!r} at {redact_url(url)}", flush=True)
            await stop.requested.wait()
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await nc.close()
    return INTERRUPTED if stop.forced else 0


async def _worker(args: argparse.Namespace) -> int:
    url, options = a.need_connection(args)
    identity = identity_of(options)
    if args.worker_id is None:
        args.worker_id = identity.name if identity is not None else a.default_worker_id()
    if identity is not None and (identity.role is not Role.WORKER or identity.name != args.worker_id):
        raise ConfigurationError(
            f"these credentials are for {identity.role.value} {identity.name!r}, not worker {args.worker_id!r}: "
            f"use `--worker-id {identity.name}`, or credentials from `fluster creds worker --worker-id "
            f"{args.worker_id}`"
        )
    device: CpuDevice | GpuDevice | TpuDevice | None = None
    if args.gpus is not None:
        device = GpuDevice(variant=args.gpu_variant, count=args.gpus) if args.gpus > 0 else CpuDevice()
    elif args.tpus is not None:
        device = TpuDevice(variant=args.tpu_variant, count=args.tpus)
    settings = WorkerSettings(
        url=url,
        connect=options,
        namespace=args.namespace,
        worker_id=args.worker_id,
        cpu=args.cpu,
        memory=args.memory,
        device=device,
        max_concurrent_jobs=args.max_concurrent_jobs,
        labels=dict(args.label),
        address=args.address,
        heartbeat_interval=args.heartbeat_interval,
        runtime=args.runtime,
        docker_image=args.image,
        kill_grace=args.kill_grace,
        job_env_passthrough=frozenset(args.job_env),
        trusted_submitters=frozenset(args.trusted_key),
    )
    nc = await connect(url, name=f"fluster-worker-{args.worker_id}", options=options)
    worker = Worker(nc, settings)
    try:
        async with stop_signals(f"worker {worker.worker_id}") as stop, anyio.create_task_group() as tg:
            await tg.start(worker.run)
            print(f"worker {worker.worker_id} serving namespace {args.namespace!r}", flush=True)
            await stop.requested.wait()
            await _drain(worker, args.drain_grace)
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await nc.close()
    return INTERRUPTED if stop.forced else 0


async def _drain(worker: Worker, grace: float) -> None:
    running = len(worker.attempts)
    if running:
        print(
            f"draining: letting {running} job(s) finish for up to {grace:g}s, then stopping them "
            "(they are retried elsewhere)",
            flush=True,
        )
    await worker.drain(grace)
