"""How a process authenticates to NATS and secures the link: ``ConnectOptions`` (user and password, token, a
``.creds`` file, an nkey seed, TLS), URLs with their credentials taken out, and the connection file a worker
hands each job.

The options are built once at the edge (``fluster/cli``, ``fluster.environ``, natscli contexts in
``fluster.bus.natscontext``) and passed explicitly; ``nats_kwargs`` is the one place they become nats-py's
``connect()`` arguments. Nothing here reads environment variables.
"""

from __future__ import annotations

import json
import os
import ssl
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from fluster.errors import ConfigurationError

CONNECTION_FILE = "connection.json"  # in an attempt's work dir: how the job reaches its cluster
CONNECTION_FILE_VERSION = 1
_TLS_FILES = {"tls_cert": "tls-cert.pem", "tls_key": "tls-key.pem", "tls_ca": "tls-ca.pem"}


@dataclass(frozen=True)
class ConnectOptions:
    """Credentials and TLS for a NATS connection. Secrets never appear in ``repr``.

    Credential sources, as in natscli, in this order of preference when several are set: ``user`` (with
    ``password``), a ``creds`` file (JWT + seed) or its content ``creds_data``, an ``nkey`` seed file or the seed
    itself ``nkey_seed``; a ``token`` may go with any of them. TLS is on when a CA, a client certificate or
    ``tls_first`` is set (or the URL says ``tls://``).
    """

    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    creds: str | None = None  # path of a .creds file, read at every (re)connect, so a rotated file is picked up
    creds_data: str | None = field(default=None, repr=False)
    nkey: str | None = None  # path of a file holding an nkey seed (SU...)
    nkey_seed: str | None = field(default=None, repr=False)
    tls_cert: str | None = None  # client certificate (PEM), with tls_key
    tls_key: str | None = None
    tls_ca: str | None = None  # CA bundle that signed the server's certificate
    tls_hostname: str | None = None  # the name to check the server's certificate against, when not the URL's host
    tls_first: bool = False  # TLS handshake before the server's greeting (server option handshake_first)
    inbox_prefix: str | None = None

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert or self.tls_key or self.tls_ca or self.tls_first)

    def describe(self) -> str:
        """What kind of authentication and TLS these options use, naming no secret (for messages and logs)."""
        parts = []
        if self.user is not None:
            parts.append(f"user {self.user!r}")
        elif self.creds or self.creds_data:
            parts.append(f"creds {self.creds}" if self.creds else "creds")
        elif self.nkey or self.nkey_seed:
            parts.append(f"nkey {self.nkey}" if self.nkey else "nkey")
        if self.token:
            parts.append("token")
        if self.tls:
            parts.append("TLS with a client certificate" if self.tls_cert else "TLS")
        return ", ".join(parts) or "no credentials"

    def merged(self, override: ConnectOptions) -> ConnectOptions:
        """These options with every field that ``override`` sets replaced by its value."""
        changes = {name: getattr(override, name) for name in _FIELDS if getattr(override, name) not in (None, False)}
        return replace(self, **changes)


_FIELDS = tuple(ConnectOptions.__dataclass_fields__)


def nats_kwargs(options: ConnectOptions) -> dict[str, Any]:
    """The keyword arguments of ``nats.connect`` that carry ``options``.

    Raises:
        ConfigurationError: a TLS file is missing or invalid, or a key comes without its certificate.
    """
    kwargs: dict[str, Any] = {}
    if options.user is not None:
        kwargs["user"] = options.user
        kwargs["password"] = options.password or ""
    elif options.creds:
        kwargs["user_credentials"] = _readable(options.creds, "creds file")
    elif options.creds_data:
        from nats.aio.client import RawCredentials

        kwargs["user_credentials"] = RawCredentials(options.creds_data)
    elif options.nkey:
        kwargs["nkeys_seed"] = _readable(options.nkey, "nkey seed file")
    elif options.nkey_seed:
        kwargs["nkeys_seed_str"] = options.nkey_seed
    if options.token:
        kwargs["token"] = options.token
    if options.tls:
        kwargs["tls"] = ssl_context(options)
        if options.tls_hostname:
            kwargs["tls_hostname"] = options.tls_hostname
        kwargs["tls_handshake_first"] = options.tls_first
    if options.inbox_prefix:
        kwargs["inbox_prefix"] = options.inbox_prefix
    if "user_credentials" in kwargs or "nkeys_seed" in kwargs or "nkeys_seed_str" in kwargs:
        _need_nkeys()
    return kwargs


def ssl_context(options: ConnectOptions) -> ssl.SSLContext:
    """A client TLS context that verifies the server against ``tls_ca`` (or the system CAs) and presents the
    client certificate when there is one.

    Raises:
        ConfigurationError: a file is missing or not PEM, or only one of certificate and key is given.
    """
    if bool(options.tls_cert) != bool(options.tls_key):
        raise ConfigurationError("a TLS client certificate needs both --tlscert and --tlskey (NATS_CERT and NATS_KEY)")
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=_readable(options.tls_ca, "TLS CA file") if options.tls_ca else None
        )
        if options.tls_cert and options.tls_key:
            cert, key = _readable(options.tls_cert, "TLS certificate"), _readable(options.tls_key, "TLS key")
            context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise ConfigurationError(f"cannot load the TLS files ({options.describe()}): {exc}") from exc
    return context


# -- URLs -----------------------------------------------------------------------------------------------


def split_url(url: str) -> tuple[str, ConnectOptions]:
    """``url`` (comma-separated servers) without user information, and the credentials it carried:
    ``nats://user:pass@host`` gives user and password, ``nats://token@host`` a token."""
    servers, found = [], ConnectOptions()
    for part in (p.strip() for p in url.split(",")):
        if not part:
            continue
        parsed = urlsplit(part if "://" in part else f"nats://{part}")
        if "@" in part and "@" in parsed.netloc:
            userinfo, _, host = parsed.netloc.rpartition("@")
            name, colon, secret = userinfo.partition(":")
            if found == ConnectOptions():
                found = (
                    ConnectOptions(user=unquote(name), password=unquote(secret))
                    if colon
                    else ConnectOptions(token=unquote(name))
                )
            part = urlunsplit(parsed._replace(netloc=host))
        servers.append(part)
    return ",".join(servers), found


def redact_url(url: str) -> str:
    """``url`` fit for a log line or a message: any user information becomes ``***``."""
    parts = []
    for part in (p.strip() for p in url.split(",")):
        parsed = urlsplit(part)
        if "@" in parsed.netloc:
            part = urlunsplit(parsed._replace(netloc="***@" + parsed.netloc.rpartition("@")[2]))
        parts.append(part)
    return ",".join(parts)


# -- the job's connection file --------------------------------------------------------------------------


def write_connection_file(directory: Path, url: str, options: ConnectOptions, identity: str | None = None) -> Path:
    """Write ``connection.json`` (mode 0600) into ``directory``: the URL (without credentials) and the
    credentials and TLS material themselves, so a job reaches its cluster without a secret in its environment
    and without access to the files the worker read them from. TLS files are copied beside it.

    ``identity``: the name of a ``.creds`` file in ``directory`` holding the job's own identity; the file
    then names it instead of carrying ``options``' credentials (which are the worker's), and a renewed
    identity written there is read at the job's next reconnect.

    Raises:
        ConfigurationError: a credentials or TLS file cannot be read.
    """
    clean_url, in_url = split_url(url)
    options = in_url.merged(options)
    content: dict[str, Any] = {"version": CONNECTION_FILE_VERSION, "url": clean_url}
    if identity is not None:
        options = replace(
            options, user=None, password=None, token=None, creds=None, creds_data=None, nkey=None, nkey_seed=None
        )
        content["creds"] = identity  # relative to the connection file, like the TLS files
    for name in ("user", "password", "token", "tls_hostname", "inbox_prefix"):
        if name == "inbox_prefix" and identity is not None:
            continue  # the job's identity has its own, which its creds file says
        if getattr(options, name) is not None:
            content[name] = getattr(options, name)
    if options.tls_first:
        content["tls_first"] = True
    if options.user is None:
        creds = _read_text(options.creds, "creds file") if options.creds else options.creds_data
        nkey = _read_text(options.nkey, "nkey seed file").strip() if options.nkey else options.nkey_seed
        if creds:
            content["creds_data"] = creds
        elif nkey:
            content["nkey_seed"] = nkey
    for name, filename in _TLS_FILES.items():
        source = getattr(options, name)
        if source:
            _write_private(directory / filename, _read_text(source, name.replace("_", " ")))
            content[name] = filename  # relative to the connection file: the same in a container
    path = directory / CONNECTION_FILE
    _write_private(path, json.dumps(content))
    return path


def read_connection_file(path: str | Path) -> tuple[str, ConnectOptions]:
    """The URL and options a worker wrote with ``write_connection_file``.

    Raises:
        ConfigurationError: the file is missing or not a connection file.
    """
    path = Path(path)
    try:
        content = json.loads(path.read_text())
        url = content.pop("url")
        content.pop("version", None)
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise ConfigurationError(f"cannot read the job's connection file {path}: {exc}") from exc
    for name in (*_TLS_FILES, "creds"):
        if content.get(name):
            content[name] = str(path.parent / content[name])
    unknown = set(content) - set(_FIELDS)
    if unknown:
        raise ConfigurationError(f"connection file {path} has unknown fields {sorted(unknown)}")
    return str(url), ConnectOptions(**content)


# -- helpers --------------------------------------------------------------------------------------------


def _readable(path: str, what: str) -> str:
    expanded = os.path.expanduser(path)
    if not os.path.isfile(expanded):
        raise ConfigurationError(f"{what} {path!r} does not exist or is not a file")
    if not os.access(expanded, os.R_OK):
        raise ConfigurationError(f"{what} {path!r} is not readable by this user")
    return expanded


def _read_text(path: str, what: str) -> str:
    try:
        return Path(_readable(path, what)).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read {what} {path!r}: {exc}") from exc


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _need_nkeys() -> None:
    try:
        import nkeys  # noqa: F401 - nats-py imports it lazily, at connect time, for creds and nkey seeds
    except ImportError as exc:
        raise ConfigurationError(
            "creds files and nkeys need the 'nkeys' package: pip install nkeys (it comes with fluster)"
        ) from exc
