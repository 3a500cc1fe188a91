"""The ``fluster`` command: argument parsing and output only; everything else is the library.

Commands live in ``jobs.py`` (submit, run, result, logs, kill, jobs), ``cluster_view.py`` (status, workers,
actors), ``up.py`` (up, down) and ``daemons.py`` (controller, worker); ``failures.py`` turns errors into one
line and an exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from importlib import metadata

import anyio

from fluster.cli import cluster_view, creds, daemons, jobs, up
from fluster.cli import dashboard as dashboard_cli
from fluster.cli.args import Parser, add_connection
from fluster.cli.failures import report
from fluster.logs import configure_logging

Command = Callable[[argparse.Namespace], Awaitable[int]]
_LOUD = ("controller", "worker", "up", "dashboard")  # commands whose progress is worth logging at INFO


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # `submit mod:fn --wait a b`: argparse gives up on positionals after an option; they are the function's
        if args.command == "submit" and not any(e.startswith("--") for e in extra):
            args.args.extend(extra)
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)} (see `fluster {args.command} --help`)")
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    configure_logging(
        os.environ.get("FLUSTER_LOG_LEVEL", "INFO" if args.command in _LOUD else "ERROR"),
        getattr(args, "log_format", "text"),
    )
    try:
        result: int = anyio.run(args.func, args)
        return result
    except BaseException as exc:  # noqa: B036 - every failure, Ctrl-C included, becomes one line and a code
        return report(exc)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="fluster",
        description="Distributed jobs, actors and tasks on NATS. `fluster COMMAND --help` describes a command; "
        "docs/cli.md has example sessions and the exit codes.",
    )
    parser.add_argument("--version", action="version", version=f"fluster {_version()}", help="print the version")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    def plain(name: str, help_text: str, func: Command) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    def connected(name: str, help_text: str, func: Command, json_output: bool = False) -> argparse.ArgumentParser:
        p = plain(name, help_text, func)
        if json_output:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        add_connection(p)
        return p

    up.register(plain)
    daemons.register(connected)
    jobs.register(connected)
    cluster_view.register(connected)
    dashboard_cli.register(connected)
    creds.register(plain)

    p = plain("build-image", "build the docker runtime's base image without a registry", _build_image)
    p.add_argument("--image", default="fluster-base:py311", help="tag to build (default %(default)s)")
    p.add_argument("--force", action="store_true", help="rebuild even when the tag exists")
    return parser


async def _build_image(args: argparse.Namespace) -> int:
    from fluster.worker import image

    argv = ["--image", args.image] + (["--force"] if args.force else [])
    return await anyio.to_thread.run_sync(image.main, argv)


def _version() -> str:
    try:
        return metadata.version("fluster")
    except metadata.PackageNotFoundError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
