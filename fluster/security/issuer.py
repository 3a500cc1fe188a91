"""Per-attempt job identities: the controller holds the job role's scoped signing key and signs, for an attempt
it assigned, a user JWT for the public key its worker generated (the seed never leaves the worker's host).

Each identity expires ``ttl_s`` after it was issued; the worker asks again before then while the attempt runs,
and the controller signs only for attempts that are still assigned to the asking worker. So an identity
outlives its attempt by at most one TTL, and nothing needs a server restart or reload. The key can mint only
the job role's rights: the template of its scope, which the server applies (docs/security.md).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from fluster.errors import ConfigurationError
from fluster.protocol.ids import validate_name
from fluster.protocol.permissions import Role
from fluster.security.claims import TAG_JOB, user_jwt
from fluster.security.jwt import KeyPair, keypair_from_seed

DEFAULT_TTL_S = 3600.0
MIN_TTL_S = 2.0
ISSUER_FILE_VERSION = 1


@dataclass(frozen=True)
class IssuedJob:
    jwt: str
    name: str
    expires_at: float  # epoch seconds


@dataclass(frozen=True)
class JobIssuer:
    """Signs job identities of one namespace with the job role's scoped signing key of the account."""

    namespace: str
    account: str  # the account's public key (the identities' issuer_account)
    key: KeyPair  # the job role's scoped signing key
    ttl_s: float = DEFAULT_TTL_S

    def __post_init__(self) -> None:
        validate_name(self.namespace, "namespace")
        if self.ttl_s < MIN_TTL_S:
            raise ConfigurationError(f"a job identity's TTL must be at least {MIN_TTL_S:g}s, got {self.ttl_s:g}s")

    def issue(self, user_public: str, job_id: str, attempt: int, name: str | None = None, task: int = 0) -> IssuedJob:
        """A JWT for ``user_public`` as the identity of ``job_id``'s attempt, valid for ``ttl_s`` from now.

        ``name`` keeps the identity's name (and so its inbox) across renewals; a new one is made when None.

        Raises:
            ConfigurationError: ``user_public`` is not a user public key.
        """
        if not (user_public.startswith("U") and len(user_public) == 56):
            raise ConfigurationError("a job identity's key must be a user public key (U...)")
        name = validate_name(name, "job identity name", 32) if name else f"j{uuid.uuid4().hex[:19]}"
        expires_at = time.time() + self.ttl_s
        token = user_jwt(
            self.key,
            self.account,
            user_public,
            name,
            self.namespace,
            Role.JOB,
            expires_at=int(expires_at),
            extra_tags=(f"{TAG_JOB}:{job_id}#{attempt}" + (f"@{task}" if task else ""),),
        )
        return IssuedJob(jwt=token, name=name, expires_at=expires_at)

    def write(self, path: Path) -> Path:
        """Write this issuer (its seed included) to ``path``, mode 0600, for ``fluster controller --job-issuer``."""
        content = {
            "version": ISSUER_FILE_VERSION,
            "namespace": self.namespace,
            "account": self.account,
            "seed": self.key.seed,
            "ttl_s": self.ttl_s,
        }
        write_private(path, json.dumps(content, indent=1))
        return path

    @classmethod
    def read(cls, path: str | Path) -> JobIssuer:
        """Read an issuer file.

        Raises:
            ConfigurationError: the file is missing or is not an issuer file.
        """
        try:
            content = json.loads(Path(path).expanduser().read_text())
            return cls(
                namespace=str(content["namespace"]),
                account=str(content["account"]),
                key=keypair_from_seed(str(content["seed"])),
                ttl_s=float(content.get("ttl_s", DEFAULT_TTL_S)),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(f"cannot read the job issuer file {path}: {exc}") from exc


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically with mode 0600 (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
