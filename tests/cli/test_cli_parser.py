"""The command line itself, in process: every flag is explained, and `up` picks its port as documented."""

from __future__ import annotations

import argparse
import socket

import pytest

from fluster.cli import local_state
from fluster.cli.failures import UsageError
from fluster.cli.main import build_parser


def test_every_flag_of_every_command_has_help() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [
        f"{name} {action.option_strings or action.dest}"
        for name, sub in subparsers.choices.items()
        for action in sub._actions
        if not action.help
    ]
    assert missing == []


def test_up_takes_the_requested_port_or_says_it_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UsageError, match=f"port {port} is in use"):
            local_state.choose_port(port)
    assert local_state.choose_port(None) > 0
