"""``fluster creds``: the identities of a cluster. ``init`` makes an identity store for a cluster of machines
(the nats-server config that trusts it, and the controller's credentials); ``controller``, ``worker`` and
``client`` issue credentials from a store, by default the one of the cluster ``fluster up`` runs here."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from fluster.cli import args as a
from fluster.cli import local_state
from fluster.cli.failures import NotFound, UsageError
from fluster.protocol.permissions import Role
from fluster.security.issuer import DEFAULT_TTL_S
from fluster.security.local import AUTH_DIR, TLS_DIR
from fluster.security.signing import new_signing_key
from fluster.security.store import SERVER_CONFIG, AuthStore

Sub = Callable[..., argparse.ArgumentParser]
JOB_ISSUER_FILE = "job-issuer.json"


def register(add_plain: Sub) -> None:
    p = add_plain("creds", "make an identity store, or issue credentials for a controller, worker or client", _usage)
    sub = p.add_subparsers(
        dest="creds_command", required=True, metavar="WHAT", parser_class=a.Parser, help="what to make or issue"
    )

    def command(name: str, help_text: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_text, description=help_text)
        c.set_defaults(func=_sync(func))
        return c

    c = command("init", "create an identity store for a cluster of machines (operator, account, role keys)", _init)
    c.add_argument("dir", metavar="DIR", help="where to keep it (created; its secrets are mode 0600)")
    c.add_argument(
        "--namespace", action="append", type=a.name, default=None, help="namespace to make keys for (repeatable)"
    )
    c.add_argument("--url", default=None, help="the cluster's URL, written into the controller's context")

    c = command("signing-key", "make a key to sign jobs and actor calls with (prints its public key)", _signing_key)
    c.add_argument("file", metavar="FILE", help="where to write its seed (mode 0600)")

    for role, what in (
        ("controller", "a controller (and its job issuer)"),
        ("worker", "a worker"),
        ("client", "a client"),
    ):
        c = command(role, f"issue credentials for {what}", _issue)
        c.set_defaults(role=Role(role))
        if role == "worker":
            c.add_argument("--worker-id", type=a.name, required=True, help="the worker's id (its identity's name)")
        if role == "client":
            c.add_argument("--name", type=a.name, required=True, help="who the credentials are for, e.g. ada")
        if role == "controller":
            c.add_argument(
                "--job-identity-ttl",
                type=a.seconds,
                default=DEFAULT_TTL_S,
                help="how long a job's identity lasts before its worker renews it (default: %(default)gs)",
            )
        c.add_argument(
            "--store", default=None, metavar="DIR", help="identity store (default: the `fluster up` cluster's)"
        )
        c.add_argument("--port", type=a.port, default=None, help="the `fluster up` cluster on this port (with several)")
        c.add_argument("--namespace", type=a.name, default="default", help="namespace (default: %(default)s)")
        c.add_argument("--url", default=None, help="the cluster's URL as the other machine reaches it, for the context")
        c.add_argument("--out", default=".", metavar="DIR", help="where to write the files (default: here)")


async def _usage(args: argparse.Namespace) -> int:  # argparse requires a sub-command; never reached
    return 2


def _sync(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], object]:
    async def run(args: argparse.Namespace) -> int:
        return func(args)

    return run


def _init(args: argparse.Namespace) -> int:
    directory = Path(args.dir).expanduser()
    namespaces = tuple(args.namespace or ["default"])
    store = AuthStore.open(directory, namespaces)
    written = [store.directory / SERVER_CONFIG]
    for namespace in namespaces:
        out = directory / "creds" / namespace
        written += _controller_files(store, namespace, out, args.url, DEFAULT_TTL_S)
    print(f"identity store in {store.directory} (namespaces {', '.join(store.namespaces)})")
    for path in written:
        print(f"  {path}")
    print(f'nats-server: `include "{store.directory / SERVER_CONFIG}"` in its config (deploy/nats/secure.conf)')
    print("then: `fluster creds worker --store DIR --worker-id ID` for each worker, `fluster creds client ...`")
    return 0


def _signing_key(args: argparse.Namespace) -> int:
    path = Path(args.file).expanduser()
    if path.exists():
        raise UsageError(f"{path} exists; pick another file (a signing key is never overwritten)")
    signer = new_signing_key(path)
    print(signer.public)
    print(f"sign with it: export FLUSTER_SIGNING_KEY={path}; trust it: fluster worker --trusted-key {signer.public}")
    return 0


def _issue(args: argparse.Namespace) -> int:
    store, tls_ca = _store(args)
    out = Path(args.out).expanduser()
    role: Role = args.role
    if role is Role.CONTROLLER:
        written = _controller_files(store, args.namespace, out, args.url, args.job_identity_ttl, tls_ca)
        print("\n".join(str(path) for path in written))
        print(f"run: fluster controller --context {written[1]} --job-issuer {written[2]}")
        return 0
    name = args.worker_id if role is Role.WORKER else args.name
    issued = store.issue(role, name, args.namespace)
    files = store.write_issued(issued, out, args.url, tls_ca)
    print(f"{files.creds}\n{files.context}")
    flags = f" --worker-id {name}" if role is Role.WORKER else ""
    command = "fluster worker" if role is Role.WORKER else "fluster status"
    print(f"on that machine: {command} --context {files.context.name}{flags} (or --creds {files.creds.name} --url ...)")
    return 0


def _controller_files(
    store: AuthStore, namespace: str, out: Path, url: str | None, ttl: float, tls_ca: str | None = None
) -> list[Path]:
    files = store.write_issued(store.issue(Role.CONTROLLER, "controller", namespace), out, url, tls_ca)
    issuer = store.job_issuer(namespace, ttl).write(out / JOB_ISSUER_FILE)
    return [files.creds, files.context, issuer]


def _store(args: argparse.Namespace) -> tuple[AuthStore, str | None]:
    """The store named by ``--store``, else the one of the ``fluster up`` cluster here (``--port``)."""
    if args.store:
        directory = Path(args.store).expanduser()
        if not (directory / "keys.json").exists() and (directory / AUTH_DIR / "keys.json").exists():
            directory = directory / AUTH_DIR  # a cluster's store dir, not its identity store
        if not (directory / "keys.json").exists():
            raise UsageError(f"no identity store in {directory}: `fluster creds init {directory}` makes one")
        return AuthStore.open(directory, ()), _ca(directory.parent)
    states = [s for s in local_state.running() if args.port is None or s.get("port") == args.port]
    auths = [s for s in states if s.get("auth")]
    if not auths:
        raise NotFound(
            "no `fluster up` cluster with credentials runs here: pass --store DIR (`fluster creds init` makes one)"
        )
    if len(auths) > 1:
        ports = ", ".join(str(s.get("port")) for s in auths)
        raise UsageError(f"several `fluster up` clusters run here (ports {ports}): pick one with --port")
    directory = Path(str(auths[0]["auth"]))
    return AuthStore.open(directory, ()), _ca(directory.parent)


def _ca(store_dir: Path) -> str | None:
    ca = store_dir / TLS_DIR / "ca.pem"
    return str(ca) if ca.exists() else None
