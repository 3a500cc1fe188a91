"""The identity store and the identities it issues: files private to their owner, keys kept across restarts,
a server config the real nats-server accepts, scoped users whose rights are their role's template, and every
subject each role uses inside its own allow-list."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest

from fluster.bus.options import ConnectOptions
from fluster.errors import ConfigurationError
from fluster.local.server import find_nats_server
from fluster.protocol.permissions import NAME, Role, Streams, inbox_prefix, role_permissions
from fluster.protocol.subjects import Subjects
from fluster.security.identity import apply_identity, identity_of, may_create_assets
from fluster.security.issuer import JobIssuer
from fluster.security.jwt import decode, keypair_from_seed, new_keypair, parse_creds, verify
from fluster.security.store import KEYS_FILE, SERVER_CONFIG, AuthStore


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_store_is_private_and_keeps_its_keys_across_restarts(tmp_path: Path) -> None:
    store = AuthStore.open(tmp_path / "auth", ("default",))
    assert _mode(store.directory) == 0o700
    assert _mode(store.directory / KEYS_FILE) == 0o600 and _mode(store.directory / SERVER_CONFIG) == 0o600
    again = AuthStore.open(tmp_path / "auth", ("default", "team-b"))
    assert again.account.public == store.account.public and again.operator.public == store.operator.public
    assert again.signing[("default", Role.WORKER)].public == store.signing[("default", Role.WORKER)].public
    assert again.namespaces == ("default", "team-b")
    files = again.write_issued(again.issue(Role.CLIENT, "ada"), tmp_path / "out", "nats://h:4222")
    assert _mode(files.creds) == 0o600 and _mode(files.context) == 0o600
    context = json.loads(files.context.read_text())
    assert context["inbox_prefix"] == "_INBOX_default.client.ada" and context["url"] == "nats://h:4222"


def test_the_server_config_is_valid_for_the_installed_nats_server(tmp_path: Path) -> None:
    AuthStore.open(tmp_path / "auth")
    main = tmp_path / "main.conf"
    main.write_text(f'listen: "127.0.0.1:4222"\ninclude "auth/{SERVER_CONFIG}"\n')  # relative to main.conf
    out = subprocess.run([find_nats_server(), "-t", "-c", str(main)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


def test_issued_users_carry_no_permissions_of_their_own_and_name_their_inbox(tmp_path: Path) -> None:
    store = AuthStore.open(tmp_path / "auth")
    issued = store.issue(Role.WORKER, "gpu-1")
    token, seed = parse_creds(issued.creds)
    claims = decode(token)
    signer = store.signing[("default", Role.WORKER)]
    assert claims["iss"] == signer.public and claims["nats"]["issuer_account"] == store.account.public
    assert not {"pub", "sub", "resp", "subs", "data", "payload"} & set(claims["nats"])  # the scope's template rules
    assert claims["sub"] == keypair_from_seed(seed).public and claims["name"] == "gpu-1"
    header, body, signature = token.split(".")
    import base64

    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    assert verify(signer.public, f"{header}.{body}".encode(), raw)
    identity = identity_of(ConnectOptions(creds_data=issued.creds))
    assert identity is not None and identity.role is Role.WORKER and identity.name == "gpu-1"
    assert apply_identity(ConnectOptions(creds_data=issued.creds)).inbox_prefix == "_INBOX_default.worker.gpu-1"
    assert apply_identity(ConnectOptions(creds_data=issued.creds, inbox_prefix="_MINE")).inbox_prefix == "_MINE"
    assert not may_create_assets(ConnectOptions(creds_data=issued.creds))
    controller = store.issue(Role.CONTROLLER, "controller")
    assert may_create_assets(ConnectOptions(creds_data=controller.creds)) and may_create_assets(ConnectOptions())


def test_job_identities_are_minted_only_by_the_controller_and_expire(tmp_path: Path) -> None:
    store = AuthStore.open(tmp_path / "auth")
    with pytest.raises(ConfigurationError, match="minted by the controller"):
        store.issue(Role.JOB, "j1")
    issuer = store.job_issuer("default", ttl_s=60)
    user = new_keypair("user")
    issued = issuer.issue(user.public, "train/step-1", 2)
    claims = decode(issued.jwt)
    assert claims["iss"] == store.signing[("default", Role.JOB)].public
    assert claims["exp"] - claims["iat"] == 60 and "fluster-job:train/step-1#2" in claims["nats"]["tags"]
    again = JobIssuer.read(issuer.write(tmp_path / "issuer.json"))
    assert again == issuer and _mode(tmp_path / "issuer.json") == 0o600
    with pytest.raises(ConfigurationError, match="user public key"):
        issuer.issue(store.account.public, "x", 0)


def _matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` one token, ``>`` the rest."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


def _allowed(role: Role, name: str, subject: str, publish: bool) -> bool:
    permissions = role_permissions(Subjects("default"), role)
    patterns = permissions.publish if publish else permissions.subscribe
    return any(_matches(p.replace(NAME, name), subject) for p in patterns)


def test_each_role_may_use_its_own_subjects_and_not_the_others() -> None:
    s = Subjects("default")
    streams = Streams.of(s)
    for verb in ("register", "deregister", "heartbeat", "update", "credentials"):
        own = f"{s.from_workers(verb)[:-1]}w1"
        assert _allowed(Role.WORKER, "w1", own, publish=True)
        assert not _allowed(Role.WORKER, "w1", f"{s.from_workers(verb)[:-1]}w2", publish=True)
    assert _allowed(Role.WORKER, "w1", s.worker_run("w1"), publish=False)
    assert not _allowed(Role.WORKER, "w1", s.worker_run("w2"), publish=False)
    assert _allowed(Role.WORKER, "w1", f"{inbox_prefix('default', Role.WORKER, 'w1')}.abc.1", publish=False)
    for role in Role:
        name = "x"
        assert not _allowed(role, name, "_INBOX.abc", publish=False)
        assert not _allowed(role, name, f"{inbox_prefix('default', Role.CLIENT, 'other')}.abc", publish=False)
        assert not _allowed(role, name, f"$JS.API.STREAM.DELETE.{streams.jobs}", publish=True)
        assert not _allowed(role, name, "$JS.API.STREAM.CREATE.evil", publish=True)
        assert not _allowed(role, name, Subjects("other").submit, publish=True)
        if role is not Role.CONTROLLER:
            assert not _allowed(role, name, f"$JS.API.STREAM.CREATE.{streams.logs}", publish=True)
            assert not _allowed(role, name, f"$JS.API.STREAM.PURGE.{streams.workers}", publish=True)
            assert not _allowed(role, name, s.worker_run("w1"), publish=True)
    for role in (Role.CLIENT, Role.JOB):
        assert _allowed(role, "x", s.submit, publish=True) and _allowed(role, "x", s.actor("model"), publish=False)
        assert not _allowed(role, "x", s.job_update("w1"), publish=True)
    for role in (Role.WORKER, Role.CONTROLLER):
        assert not _allowed(role, "x", s.submit, publish=True)
    assert _allowed(Role.CONTROLLER, "c", s.worker_run("w1"), publish=True)
    assert _allowed(Role.CONTROLLER, "c", f"$JS.API.STREAM.CREATE.{streams.jobs}", publish=True)
