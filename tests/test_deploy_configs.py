"""The server configs in deploy/nats are valid for the nats-server the project installs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fluster.local.server import find_nats_server

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "nats"


@pytest.mark.parametrize("name", ["single.conf", "cluster-n1.conf", "cluster-n2.conf", "cluster-n3.conf"])
def test_server_config_is_valid(name: str, tmp_path: Path) -> None:
    config = tmp_path / name
    config.write_text((DEPLOY / name).read_text().replace("/var/lib/fluster", str(tmp_path)))
    out = subprocess.run([find_nats_server(), "-t", "-c", str(config)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


def test_auth_include_is_valid(tmp_path: Path) -> None:
    (tmp_path / "auth.conf").write_text((DEPLOY / "auth.conf").read_text())
    main = tmp_path / "main.conf"
    main.write_text('listen: "127.0.0.1:4222"\ninclude "auth.conf"\n')
    out = subprocess.run([find_nats_server(), "-t", "-c", str(main)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
