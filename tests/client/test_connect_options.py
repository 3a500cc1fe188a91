"""Connection settings resolved the natscli way: flags over NATS_* variables over a context over the URL's own
credentials; the connection file a worker writes for a job; URLs stripped of credentials."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from fluster.bus.natscontext import ConnectionFlags, resolve
from fluster.bus.options import (
    ConnectOptions,
    nats_kwargs,
    read_connection_file,
    redact_url,
    split_url,
    write_connection_file,
)
from fluster.errors import ConfigurationError


def test_credentials_are_taken_out_of_urls_and_redacted_in_logs() -> None:
    url, found = split_url("nats://ada:s3cret@h1:4222, nats://h2:4222")
    assert url == "nats://h1:4222,nats://h2:4222"
    assert (found.user, found.password) == ("ada", "s3cret")
    assert split_url("tls://tok@h:1")[1].token == "tok"
    assert split_url("127.0.0.1:4222") == ("127.0.0.1:4222", ConnectOptions())
    assert redact_url("nats://ada:s3cret@h1:4222,nats://h2") == "nats://***@h1:4222,nats://h2"
    assert "s3cret" not in repr(found)


def _context(root: Path, name: str, **settings: object) -> None:
    (root / "nats" / "context").mkdir(parents=True, exist_ok=True)
    (root / "nats" / "context" / f"{name}.json").write_text(json.dumps(settings))


def test_flags_beat_variables_beat_the_context_beats_the_url(tmp_path: Path) -> None:
    _context(
        tmp_path, "prod", url="nats://ctx-host:4222", user="ctx-user", password="env://PROD_PW", ca="$CERTS/ca.pem"
    )
    env = {"XDG_CONFIG_HOME": str(tmp_path), "NATS_CONTEXT": "prod", "PROD_PW": "from-env", "CERTS": "/etc/c"}
    url, options = resolve(ConnectionFlags(), env)
    assert url == "nats://ctx-host:4222"
    assert (options.user, options.password, options.tls_ca) == ("ctx-user", "from-env", "/etc/c/ca.pem")

    url, options = resolve(ConnectionFlags(url="nats://u:p@flag-host:1"), {**env, "NATS_USER": "env-user"})
    assert url == "nats://flag-host:1"
    assert (options.user, options.password) == ("env-user", "p")

    url, options = resolve(ConnectionFlags(user="flag-user", password="fp"), {**env, "NATS_USER": "env-user"})
    assert (options.user, options.password) == ("flag-user", "fp")


def test_the_selected_context_applies_only_when_nothing_names_a_url(tmp_path: Path) -> None:
    creds = "-----BEGIN NATS USER JWT-----\nJWT\n------END NATS USER JWT------\n"
    _context(tmp_path, "dev", url="nats://dev:4222", creds="data:;base64," + base64.b64encode(creds.encode()).decode())
    (tmp_path / "nats" / "context.txt").write_text("dev\n")
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    url, options = resolve(ConnectionFlags(), env)
    assert url == "nats://dev:4222" and options.creds_data == creds.rstrip()
    assert resolve(ConnectionFlags(), {**env, "FLUSTER_URL": "nats://other:1"}) == ("nats://other:1", ConnectOptions())


def test_a_missing_or_unusable_context_is_a_clear_error(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    with pytest.raises(ConfigurationError, match="no NATS context 'nope'.*nats context ls"):
        resolve(ConnectionFlags(context="nope"), env)
    _context(tmp_path, "nsc", nsc="nsc://op/acct/user")
    with pytest.raises(ConfigurationError, match="nsc"):
        resolve(ConnectionFlags(context="nsc"), env)


def test_a_user_without_password_is_a_token_as_in_natscli() -> None:
    _, options = resolve(ConnectionFlags(), {"NATS_USER": "t0ken", "NATS_URL": "nats://h:1"})
    assert options.token == "t0ken" and options.user is None
    assert nats_kwargs(options) == {"token": "t0ken"}


def test_missing_tls_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="TLS CA file '/nope/ca.pem' does not exist"):
        nats_kwargs(ConnectOptions(tls_ca="/nope/ca.pem"))
    with pytest.raises(ConfigurationError, match="--tlscert and --tlskey"):
        nats_kwargs(ConnectOptions(tls_cert=str(tmp_path / "c.pem")))


def test_the_connection_file_carries_secrets_privately_and_the_url_without_them(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("CA PEM")
    nkey = tmp_path / "seed.nk"
    nkey.write_text("SUAEXAMPLE\n")
    workdir = tmp_path / "attempt"
    workdir.mkdir()
    path = write_connection_file(workdir, "nats://ada:pw@h:1", ConnectOptions(tls_ca=str(ca)))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((workdir / "tls-ca.pem").stat().st_mode) == 0o600
    url, options = read_connection_file(path)
    assert url == "nats://h:1"
    assert (options.user, options.password) == ("ada", "pw")
    assert options.tls_ca == str(workdir / "tls-ca.pem") and Path(options.tls_ca).read_text() == "CA PEM"

    path = write_connection_file(workdir, "nats://h:1", ConnectOptions(nkey=str(nkey)))
    assert read_connection_file(path)[1] == ConnectOptions(nkey_seed="SUAEXAMPLE")


def test_jobs_inherit_only_what_programs_need_of_the_workers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from fluster.environ import inherited_job_environment

    monkeypatch.setenv("NATS_PASSWORD", "s3cret")
    monkeypatch.setenv("NATS_URL", "nats://ada:s3cret@h:1")
    monkeypatch.setenv("NATS_CREDS", "/etc/worker.creds")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cret")
    monkeypatch.setenv("MY_SETTING", "passed through")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    inherited = inherited_job_environment()
    assert not {"NATS_PASSWORD", "NATS_URL", "NATS_CREDS", "AWS_SECRET_ACCESS_KEY", "MY_SETTING"} & set(inherited)
    assert inherited["PATH"] and inherited["LC_ALL"] == "C.UTF-8"
    passed = inherited_job_environment(frozenset({"MY_SETTING", "NATS_PASSWORD"}))
    assert passed["MY_SETTING"] == "passed through" and "NATS_PASSWORD" not in passed  # never the credentials
