"""The identities of a cluster on one machine (``LocalCluster``, ``fluster up``): an identity store in the
cluster's store dir, credentials for its controller, workers and client written there (mode 0600), the
server config that requires them, and optional TLS.

The client's natscli context (``<store>/auth/creds/client-<name>.context.json``) is what other processes on
the machine connect with: ``fluster up`` records its path in its state file, where the CLI and
``ClusterClient.connect()`` find it for the cluster's URL (``fluster.bus.natscontext.local_cluster``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from fluster.bus.options import ConnectOptions
from fluster.errors import ConfigurationError
from fluster.protocol.permissions import Role
from fluster.security.issuer import DEFAULT_TTL_S, JobIssuer
from fluster.security.store import AuthStore, Issued
from fluster.security.tls import TlsFiles, make_tls_files

AUTH_DIR = "auth"
CREDS_DIR = "creds"
TLS_DIR = "tls"
CLIENT_NAME = "local"
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


@dataclass(frozen=True)
class LocalAuth:
    store: AuthStore
    namespace: str
    tls: TlsFiles | None
    job_issuer: JobIssuer
    controller: ConnectOptions
    client: ConnectOptions
    client_identity: Issued

    @property
    def server_config(self) -> str:
        """What the cluster's nats-server needs: operator mode trusting the store, and TLS when asked for."""
        return self.store.server_config() + (self.tls.server_config(verify_clients=False) if self.tls else "")

    def worker(self, worker_id: str) -> ConnectOptions:
        """Connection options for worker ``worker_id`` (its identity is issued now)."""
        issued = self.store.issue(Role.WORKER, worker_id, self.namespace)
        files = self.store.write_issued(issued, self.store.directory / CREDS_DIR, None, self._ca)
        return dataclasses.replace(self._tls_options, creds=str(files.creds))

    def write_client_context(self, url: str) -> Path:
        """The client's natscli context, now with the cluster's URL (known once its server listens)."""
        return self.store.write_issued(self.client_identity, self.store.directory / CREDS_DIR, url, self._ca).context

    @property
    def _ca(self) -> str | None:
        return str(self.tls.ca) if self.tls else None

    @property
    def _tls_options(self) -> ConnectOptions:
        return ConnectOptions(tls_ca=self._ca)


def local_auth(
    store_dir: Path,
    namespace: str,
    tls: bool = False,
    hosts: tuple[str, ...] = (),
    job_identity_ttl: float = DEFAULT_TTL_S,
) -> LocalAuth:
    """Create (on first start) or load the identities of the cluster whose store dir is ``store_dir``, and issue
    its controller's and client's credentials (TLS: a CA and a certificate for loopback and ``hosts``).

    Raises:
        ConfigurationError: the store cannot be read, or TLS was asked for without ``cryptography``.
    """
    store = AuthStore.open(store_dir / AUTH_DIR, (namespace,))
    tls_files = make_tls_files(store_dir / TLS_DIR, ("localhost", "127.0.0.1", *hosts)) if tls else None
    ca = str(tls_files.ca) if tls_files else None
    creds_dir = store.directory / CREDS_DIR
    controller = store.write_issued(store.issue(Role.CONTROLLER, "controller", namespace), creds_dir, None, ca)
    client_identity = store.issue(Role.CLIENT, CLIENT_NAME, namespace)
    client = store.write_issued(client_identity, creds_dir, None, ca)
    return LocalAuth(
        store=store,
        namespace=namespace,
        tls=tls_files,
        job_issuer=store.job_issuer(namespace, job_identity_ttl),
        controller=ConnectOptions(creds=str(controller.creds), tls_ca=ca),
        client=ConnectOptions(creds=str(client.creds), tls_ca=ca),
        client_identity=client_identity,
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback interface only."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def refuse_open_bind(host: str) -> None:
    """Refuse to serve a cluster without authentication on an address other machines can reach.

    Raises:
        ConfigurationError: ``host`` is not loopback.
    """
    if not is_loopback(host):
        raise ConfigurationError(
            f"refusing to listen on {host} without authentication: anyone who can reach that address could "
            "run code on this cluster's workers (cloudpickle). Drop --insecure (the cluster then requires the "
            "credentials it generates), or listen on 127.0.0.1"
        )


# -- finding a local cluster's credentials ---------------------------------------------------------------


def state_dir(env: Mapping[str, str]) -> Path:
    """Where ``fluster up`` records its clusters: ``$FLUSTER_STATE_DIR``, else ``$XDG_STATE_HOME/fluster``,
    else ``~/.local/state/fluster``."""
    explicit = env.get("FLUSTER_STATE_DIR")
    if explicit:
        return Path(explicit)
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "state")
    return Path(base) / "fluster"


def local_cluster_context(url: str, env: Mapping[str, str]) -> Path | None:
    """The client context of the cluster ``fluster up`` runs at ``url`` on this machine (its first server,
    when loopback), or None: how a process with no credentials of its own connects to the local cluster."""
    first = url.split(",")[0].strip()
    parsed = urlsplit(first if "://" in first else f"nats://{first}")
    try:
        port = parsed.port or 4222
    except ValueError:
        return None
    if not parsed.hostname or not is_loopback(parsed.hostname):
        return None
    path = state_dir(env) / f"up-{port}.json"
    try:
        state = json.loads(path.read_text())
        context, pid = state.get("context"), int(state.get("pid"))
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    if not isinstance(context, str) or not Path(context).is_file() or not _alive(pid):
        return None  # left behind by an `up` that was killed: its credentials are for a server that is gone
    return Path(context)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
