"""A cluster's identity store: the operator, system account and account keys, one scoped signing key per
(namespace, role), the nats-server config that trusts them, and the credentials issued from them.

``fluster up`` and ``LocalCluster`` create one on first start in their store dir (``<store>/auth``) and load it
afterwards; ``fluster creds init DIR`` creates one for a cluster of machines. Every secret file is mode 0600
in a 0700 directory. The account JWT is rebuilt from the current permission templates at every load, so a
newer fluster's rights reach every identity without re-issuing credentials (after a server reload).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from fluster.errors import ConfigurationError
from fluster.protocol.ids import validate_name
from fluster.protocol.permissions import Role, inbox_prefix
from fluster.security.claims import account_claims, user_jwt
from fluster.security.issuer import DEFAULT_TTL_S, JobIssuer, write_private
from fluster.security.jwt import KeyPair, creds_text, encode, keypair_from_seed, new_keypair

KEYS_FILE = "keys.json"
SERVER_CONFIG = "server.conf"  # an include for nats-server: operator mode with the account preloaded
STORE_VERSION = 1
ISSUED_ROLES = (Role.CONTROLLER, Role.WORKER, Role.CLIENT)  # long-lived; job identities are minted at dispatch


@dataclass(frozen=True)
class Issued:
    """Credentials for one identity: the ``.creds`` text and the inbox prefix it may use."""

    role: Role
    namespace: str
    name: str
    creds: str
    inbox_prefix: str


@dataclass(frozen=True)
class IssuedFiles:
    creds: Path
    context: Path  # a natscli context: url, creds, inbox prefix (and TLS CA) for `--context FILE`


class AuthStore:
    """The keys of one cluster, in ``directory``. ``AuthStore.open(dir, namespaces)`` creates or loads it."""

    def __init__(
        self,
        directory: Path,
        operator: KeyPair,
        system: KeyPair,
        account: KeyPair,
        signing: dict[tuple[str, Role], KeyPair],
    ) -> None:
        self.directory = directory
        self.operator = operator
        self.system = system
        self.account = account
        self.signing = signing

    @classmethod
    def open(cls, directory: str | Path, namespaces: tuple[str, ...] = ("default",)) -> AuthStore:
        """Load the store in ``directory``, creating it (or the keys of a namespace it lacks) when missing, and
        write the server config that trusts it.

        Raises:
            ConfigurationError: the directory holds a store that cannot be read.
        """
        directory = Path(directory).expanduser()
        path = directory / KEYS_FILE
        if path.exists():
            store = cls._read(directory)
        else:
            store = cls(directory, new_keypair("operator"), new_keypair("account"), new_keypair("account"), {})
        added = store._add_namespaces(namespaces)
        if added or not path.exists():
            store._save()
        store.write_server_config()
        return store

    @property
    def namespaces(self) -> tuple[str, ...]:
        return tuple(sorted({namespace for namespace, _ in self.signing}))

    # -- the server's side ----------------------------------------------------------------------------

    def server_config(self) -> str:
        """The nats-server settings that trust this store's operator: the account and the system account
        preloaded in a memory resolver (no account server, no resolver directory)."""
        account = encode(self.operator, self.account.public, "fluster", account_claims(self.signing))
        system = encode(
            self.operator,
            self.system.public,
            "SYS",
            {"type": "account", "limits": {"subs": -1, "data": -1, "payload": -1, "conn": -1, "wildcards": True}},
        )
        operator = encode(
            self.operator, self.operator.public, "fluster", {"type": "operator", "system_account": self.system.public}
        )
        return (
            "# written by fluster (fluster.security.store); it is regenerated, do not edit\n"
            f'operator: "{operator}"\n'
            f'system_account: "{self.system.public}"\n'
            "resolver: MEMORY\n"
            "resolver_preload: {\n"
            f'  {self.account.public}: "{account}"\n'
            f'  {self.system.public}: "{system}"\n'
            "}\n"
        )

    def write_server_config(self) -> Path:
        path = self.directory / SERVER_CONFIG
        write_private(path, self.server_config())
        return path

    # -- identities -----------------------------------------------------------------------------------

    def issue(self, role: Role, name: str, namespace: str = "default") -> Issued:
        """New credentials for ``role`` named ``name`` (a worker's name is its worker id) in ``namespace``.

        Raises:
            ConfigurationError: the role is not issued this way, or the store has no such namespace.
        """
        if role not in ISSUED_ROLES:
            raise ConfigurationError(f"{role.value} identities are minted by the controller, not issued")
        key = self.signing.get((namespace, role))
        if key is None:
            raise ConfigurationError(
                f"the identity store {self.directory} has no namespace {namespace!r} "
                f"(it has {', '.join(self.namespaces)}); `fluster creds init --namespace {namespace}` adds it"
            )
        validate_name(name, f"{role.value} name")
        user = new_keypair("user")
        token = user_jwt(key, self.account.public, user.public, name, namespace, role)
        return Issued(role, namespace, name, creds_text(token, user.seed), inbox_prefix(namespace, role, name))

    def write_issued(self, issued: Issued, directory: Path, url: str | None, tls_ca: str | None = None) -> IssuedFiles:
        """Write ``issued`` as ``<role>-<name>.creds`` and a natscli context beside it, both mode 0600, with a
        copy of the TLS CA (``ca.pem``) when there is one. The context names its files relative to itself:
        copied together to another machine, they work from any directory (with fluster; natscli reads
        relative paths from the working directory)."""
        stem = f"{issued.role.value}-{issued.name}" if issued.role is not Role.CONTROLLER else "controller"
        creds = directory / f"{stem}.creds"
        write_private(creds, issued.creds)
        context: dict[str, str] = {
            "description": f"fluster {issued.role.value} {issued.name} (namespace {issued.namespace})",
            "creds": creds.name,
            "inbox_prefix": issued.inbox_prefix,
        }
        if url:
            context["url"] = url
        if tls_ca:
            ca = directory / "ca.pem"
            if Path(tls_ca).resolve() != ca.resolve():
                ca.write_bytes(Path(tls_ca).read_bytes())
            context["ca"] = ca.name
        path = directory / f"{stem}.context.json"
        write_private(path, json.dumps(context, indent=1))
        return IssuedFiles(creds=creds, context=path)

    def job_issuer(self, namespace: str = "default", ttl_s: float = DEFAULT_TTL_S) -> JobIssuer:
        """What the controller of ``namespace`` mints job identities with.

        Raises:
            ConfigurationError: the store has no such namespace.
        """
        key = self.signing.get((namespace, Role.JOB))
        if key is None:
            raise ConfigurationError(f"the identity store {self.directory} has no namespace {namespace!r}")
        return JobIssuer(namespace=namespace, account=self.account.public, key=key, ttl_s=ttl_s)

    # -- files ----------------------------------------------------------------------------------------

    def _add_namespaces(self, namespaces: tuple[str, ...]) -> bool:
        added = False
        for namespace in namespaces:
            validate_name(namespace, "namespace")
            for role in Role:
                if (namespace, role) not in self.signing:
                    self.signing[(namespace, role)] = new_keypair("account")
                    added = True
        return added

    def _save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)
        content = {
            "version": STORE_VERSION,
            "operator": self.operator.seed,
            "system": self.system.seed,
            "account": self.account.seed,
            "signing": {f"{role.value}@{namespace}": key.seed for (namespace, role), key in self.signing.items()},
        }
        write_private(self.directory / KEYS_FILE, json.dumps(content, indent=1))

    @classmethod
    def _read(cls, directory: Path) -> AuthStore:
        path = directory / KEYS_FILE
        try:
            content = json.loads(path.read_text())
            signing: dict[tuple[str, Role], KeyPair] = {}
            for scope, seed in content["signing"].items():
                role, _, namespace = str(scope).partition("@")
                signing[(namespace, Role(role))] = keypair_from_seed(seed)
            return cls(
                directory,
                keypair_from_seed(content["operator"]),
                keypair_from_seed(content["system"]),
                keypair_from_seed(content["account"]),
                signing,
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigurationError(f"cannot read the identity store {path}: {exc}") from exc
