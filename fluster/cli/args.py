"""Arguments the commands share: the parser class (one-line errors), value types that check what a person
typed, the NATS connection flags (natscli's names and variables) and the job options of ``submit`` and ``run``."""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
from typing import NoReturn

from fluster.bus.natscontext import ConnectionFlags, resolve
from fluster.bus.options import ConnectOptions
from fluster.cli.failures import USAGE
from fluster.environ import default_namespace
from fluster.errors import ClusterUnavailable
from fluster.protocol.ids import validate_name
from fluster.protocol.messages import JobState
from fluster.protocol.resources import parse_memory


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one ``error: ...`` line that points at ``--help``."""

    def error(self, message: str) -> NoReturn:
        hint = "" if "--help`)" in message else f" (see `{self.prog} --help`)"
        sys.stderr.write(f"error: {message}{hint}\n")
        sys.exit(USAGE)


# -- value types (argparse turns their ValueError/ArgumentTypeError into a usage error) -----------------------


def cpu(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"CPU count must be a number like 1 or 0.5, got {text!r}") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"CPU count must not be negative, got {text}")
    return value


def memory(text: str) -> str:
    try:
        parse_memory(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def positive(text: str) -> int:
    value = count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def address(text: str) -> str:
    """A host name or IP address (no port): what other hosts connect to."""
    if not text or len(text) > 255 or any(c.isspace() or c in ",/@" for c in text):
        raise argparse.ArgumentTypeError(f"expected a host name or IP address, like 10.0.0.5, got {text!r}")
    return text


def label_pair(text: str) -> tuple[str, str]:
    """``key=value`` (a worker label, or a job's constraint on one)."""
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(f"expected LABEL=VALUE, like zone=a, got {text!r}")
    return key, value


def seconds(text: str) -> float:
    """A duration: ``30``, ``30s``, ``5m``, ``2h``, ``1d``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected a duration like 30s, 5m or 2h, got {text!r}")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2) or "s"]
    return float(match.group(1)) * scale


def name(text: str) -> str:
    try:
        return validate_name(text, "name")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def env_pair(text: str) -> tuple[str, str]:
    key, eq, value = text.partition("=")
    if not eq or not key or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with a variable name as KEY, got {text!r}")
    return key, value


def job_state(text: str) -> JobState:
    try:
        return JobState(text.upper())
    except ValueError:
        states = ", ".join(s.value.lower() for s in JobState)
        raise argparse.ArgumentTypeError(f"unknown job state {text!r}: use one of {states}") from None


def port(text: str) -> int:
    value = count(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"a port is 1-65535, got {value}")
    return value


def default_worker_id() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()) or "worker"


# -- the connection -------------------------------------------------------------------------------------


def add_connection(p: argparse.ArgumentParser, url: bool = True) -> None:
    """The flags every connected command takes: the URL and namespace, and natscli's credential and TLS flags
    (each defaults to its ``NATS_*`` variable; ``--context`` reads natscli's context files)."""
    g = p.add_argument_group("connection (as natscli: flags, then NATS_* variables, then the context)")
    if url:
        g.add_argument(
            "--url",
            "-s",
            default=None,
            help="NATS server URL(s), comma-separated (default: $FLUSTER_URL, then $NATS_URL, then the context's)",
        )
    g.add_argument(
        "--namespace",
        default=default_namespace() or "default",
        help="fluster namespace, to share one NATS server (default: $FLUSTER_NAMESPACE or 'default')",
    )
    g.add_argument(
        "--context",
        default=None,
        metavar="NAME",
        help="natscli context to connect with (default: $NATS_CONTEXT, else the selected context when no URL is set)",
    )
    g.add_argument(
        "--user", default=None, help="user name (default: $NATS_USER; without --password it is a token, as in natscli)"
    )
    g.add_argument("--password", default=None, help="password (default: $NATS_PASSWORD)")
    g.add_argument("--token", default=None, help="authentication token (default: $NATS_TOKEN)")
    g.add_argument(
        "--creds", default=None, metavar="FILE", help="user credentials file, JWT and seed (default: $NATS_CREDS)"
    )
    g.add_argument("--nkey", default=None, metavar="FILE", help="file holding an nkey seed (default: $NATS_NKEY)")
    g.add_argument("--tlscert", default=None, metavar="FILE", help="TLS client certificate (default: $NATS_CERT)")
    g.add_argument("--tlskey", default=None, metavar="FILE", help="TLS client key (default: $NATS_KEY)")
    g.add_argument(
        "--tlsca", default=None, metavar="FILE", help="CA that signed the server's certificate (default: $NATS_CA)"
    )
    g.add_argument(
        "--tlsfirst",
        action="store_true",
        help="TLS handshake before the server's greeting (servers with handshake_first)",
    )


def connection(args: argparse.Namespace) -> tuple[str | None, ConnectOptions]:
    """The URL and options from the connection flags, the environment and the context.

    Raises:
        ConfigurationError: the context cannot be read.
    """
    flags = ConnectionFlags(
        url=getattr(args, "url", None),
        context=args.context,
        user=args.user,
        password=args.password,
        token=args.token,
        creds=args.creds,
        nkey=args.nkey,
        tls_cert=args.tlscert,
        tls_key=args.tlskey,
        tls_ca=args.tlsca,
        tls_first=args.tlsfirst,
    )
    return resolve(flags, os.environ)


def need_connection(args: argparse.Namespace) -> tuple[str, ConnectOptions]:
    """Like ``connection``, and a URL is required.

    Raises:
        ClusterUnavailable: nothing names a URL.
    """
    url, options = connection(args)
    if not url:
        raise ClusterUnavailable(
            "no cluster URL: pass --url, export FLUSTER_URL, or use a natscli --context "
            "(`fluster up` starts a local cluster and prints its URL)"
        )
    return url, options


# -- jobs -----------------------------------------------------------------------------------------------


def add_job_options(p: argparse.ArgumentParser) -> None:
    """What ``submit`` and ``run`` share: name, resources, environment, retries."""
    g = p.add_argument_group("job")
    g.add_argument(
        "--name",
        type=name,
        default=None,
        help="job name, unique in the namespace (default: the function or command name plus a random suffix)",
    )
    g.add_argument("--cpu", type=cpu, default=1.0, help="CPUs the job needs (default: %(default)g)")
    g.add_argument(
        "--memory",
        type=memory,
        default="1g",
        help="memory the job needs and may use, e.g. 512m, 8g (default: %(default)s)",
    )
    g.add_argument("--gpus", type=count, default=0, help="GPUs the job needs (default: none)")
    g.add_argument("--gpu-variant", default="auto", help="GPU type, e.g. A100; 'auto' takes any (default: %(default)s)")
    g.add_argument(
        "--env",
        type=env_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment variable for the job (repeatable)",
    )
    g.add_argument(
        "--pip",
        action="append",
        default=[],
        metavar="PKG",
        help="pip package to install for the job, e.g. 'numpy==2.1' (repeatable)",
    )
    g.add_argument(
        "--workspace",
        default=None,
        metavar="DIR",
        help="directory to ship with the job and run it in; '.' ships the working directory (default: none)",
    )
    g.add_argument(
        "--scheduling-timeout",
        type=seconds,
        default=None,
        metavar="DURATION",
        help="give up (UNSCHEDULABLE) when no worker can take the job within this long, e.g. 5m (default: wait)",
    )
    g.add_argument(
        "--max-retries-failure",
        type=count,
        default=0,
        metavar="N",
        help="run a failed job again up to N times (default: %(default)s)",
    )
    g.add_argument(
        "--replicas",
        type=positive,
        default=1,
        metavar="N",
        help="run N tasks of the job, each on its own worker slot (default: %(default)s)",
    )
    g.add_argument(
        "--coschedule",
        action="store_true",
        help="place all the tasks at once, and retry them together (a gang)",
    )
    g.add_argument(
        "--group-by",
        default=None,
        metavar="LABEL",
        help="with --coschedule: all tasks on workers that share this label's value (e.g. slice)",
    )
    g.add_argument(
        "--constraint",
        action="append",
        default=[],
        metavar="LABEL=VALUE",
        type=label_pair,
        help="only on workers whose LABEL is VALUE; repeat for more (default: any worker)",
    )
