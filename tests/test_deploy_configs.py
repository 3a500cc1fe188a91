"""The server configs in deploy/nats are valid for the nats-server the project installs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fluster.local.server import find_nats_server
from fluster.security.store import AuthStore
from fluster.security.tls import make_tls_files

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "nats"


@pytest.mark.parametrize("name", ["single.conf", "cluster-n1.conf", "cluster-n2.conf", "cluster-n3.conf"])
def test_server_config_is_valid(name: str, tmp_path: Path) -> None:
    config = tmp_path / name
    config.write_text((DEPLOY / name).read_text().replace("/var/lib/fluster", str(tmp_path)))
    out = subprocess.run([find_nats_server(), "-t", "-c", str(config)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize(
    "name", ["secure.conf", "secure-cluster-n1.conf", "secure-cluster-n2.conf", "secure-cluster-n3.conf"]
)
def test_secure_config_is_valid_with_an_identity_store_and_certificates(name: str, tmp_path: Path) -> None:
    """As docs/security.md sets them up: the config in /etc/fluster beside auth/ (from `fluster creds init`)
    and tls/ (here generated; in production certificates for the server's names)."""
    AuthStore.open(tmp_path / "auth")
    make_tls_files(tmp_path / "tls")
    config = tmp_path / name
    text = (DEPLOY / name).read_text().replace("/etc/fluster", str(tmp_path)).replace("/var/lib/fluster", str(tmp_path))
    config.write_text(text)
    out = subprocess.run([find_nats_server(), "-t", "-c", str(config)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


def test_every_shipped_config_is_tested() -> None:
    tested = {"single.conf", "tls.conf", *(f"cluster-n{i}.conf" for i in (1, 2, 3))}
    tested |= {"secure.conf", *(f"secure-cluster-n{i}.conf" for i in (1, 2, 3))}
    assert {path.name for path in DEPLOY.glob("*.conf")} == tested


def test_tls_include_is_valid(tmp_path: Path) -> None:
    make_tls_files(tmp_path / "tls")
    (tmp_path / "tls.conf").write_text((DEPLOY / "tls.conf").read_text().replace("/etc/fluster", str(tmp_path)))
    main = tmp_path / "main.conf"
    main.write_text('listen: "127.0.0.1:4222"\ninclude "tls.conf"\n')
    out = subprocess.run([find_nats_server(), "-t", "-c", str(main)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
