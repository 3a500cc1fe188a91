"""natscli's contexts, and how a URL plus ``ConnectOptions`` are resolved from flags, ``NATS_*`` variables and a
context, the way every NATS tool does it.

Context files are natscli's (ADR-21): ``$XDG_CONFIG_HOME/nats/context/<name>.json`` (default
``~/.config/nats``), the selected one named in ``nats/context.txt``. Credential fields may be paths, ``file://``,
``env://VAR`` or ``data:;base64,...`` references, as natscli resolves them. The environment is passed in as a
mapping: nothing here reads ``os.environ``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from fluster.bus.options import ConnectOptions, split_url
from fluster.errors import ConfigurationError
from fluster.security.local import local_cluster_context

# natscli's variable for each option (nats/main.go); FLUSTER_URL comes before NATS_URL
ENV_VARS = {
    "user": "NATS_USER",
    "password": "NATS_PASSWORD",
    "token": "NATS_TOKEN",
    "creds": "NATS_CREDS",
    "nkey": "NATS_NKEY",
    "tls_cert": "NATS_CERT",
    "tls_key": "NATS_KEY",
    "tls_ca": "NATS_CA",
}
URL_VARS = ("FLUSTER_URL", "NATS_URL")
CONTEXT_VAR = "NATS_CONTEXT"


@dataclass(frozen=True)
class ConnectionFlags:
    """What a command line said about the connection; None where it said nothing."""

    url: str | None = None
    context: str | None = None
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: str | None = None
    nkey: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    tls_first: bool = False


def resolve(flags: ConnectionFlags, env: Mapping[str, str]) -> tuple[str | None, ConnectOptions]:
    """The URL (None when nothing names one) and options, from the highest of: a flag, its ``NATS_*``
    variable, the context (``--context``, ``NATS_CONTEXT``, else natscli's selected context when neither a
    flag nor a variable names a URL), and the credentials written in the URL itself.

    Raises:
        ConfigurationError: the context does not exist or cannot be read.
    """
    url = flags.url or next((env[v] for v in URL_VARS if env.get(v)), None)
    context_name = flags.context or env.get(CONTEXT_VAR) or None
    context_url: str | None = None
    options = ConnectOptions()
    if context_name is None and url is None:
        context_name = selected_context(env)
    if context_name:
        context_url, options = load_context(context_name, env)
    url = url or context_url
    if url:
        url, in_url = split_url(url)
        options = options.merged(in_url)
    given: dict[str, Any] = {}
    for name, var in ENV_VARS.items():
        value = getattr(flags, name) or env.get(var) or None
        if value is not None:
            given[name] = value
    # natscli: a user without a password is a token
    if "user" in given and "password" not in given and not options.password:
        given["token"] = given.pop("user")
    if flags.tls_first:
        given["tls_first"] = True
    options = options.merged(ConnectOptions(**given))
    if url and not context_name and not _has_credentials(options):
        # a cluster `fluster up` runs on this machine: connect as its client, as its state file says
        local = local_cluster_context(url, env)
        if local is not None:
            _, found = load_context(str(local), env)
            options = found.merged(options)
    return url, options


def _has_credentials(options: ConnectOptions) -> bool:
    return any((options.user, options.token, options.creds, options.creds_data, options.nkey, options.nkey_seed))


def config_root(env: Mapping[str, str]) -> Path:
    """natscli's configuration directory: ``$XDG_CONFIG_HOME/nats``, else ``~/.config/nats``."""
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "nats"


def selected_context(env: Mapping[str, str]) -> str | None:
    """The context natscli has selected (``nats context select``), or None."""
    try:
        name = (config_root(env) / "context.txt").read_text().strip()
    except OSError:
        return None
    return name or None


def load_context(name: str, env: Mapping[str, str]) -> tuple[str | None, ConnectOptions]:
    """The URL and options of natscli context ``name`` (or of the context file ``name`` when it is a path
    to a ``.json`` file).

    Raises:
        ConfigurationError: no such context, or it cannot be read or uses what fluster cannot resolve.
    """
    path = Path(name).expanduser()
    if not (name.endswith(".json") and path.is_file()):
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
            raise ConfigurationError(f"invalid NATS context name {name!r}")
        path = config_root(env) / "context" / f"{name}.json"
    try:
        settings = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigurationError(
            f"no NATS context {name!r} (looked for {path}); `nats context ls` lists the contexts"
        ) from exc
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read NATS context {name!r} from {path}: {exc}") from exc
    if not isinstance(settings, dict):
        raise ConfigurationError(f"NATS context {path} is not a JSON object")
    url, options = _from_settings(name, settings, env)
    return url, _beside(options, path.parent)


def _beside(options: ConnectOptions, directory: Path) -> ConnectOptions:
    """``options`` with relative file paths taken as relative to the context file (so a context and its creds
    file, copied together to another machine, work from any working directory)."""

    def near(value: str | None) -> str | None:
        return str(directory / value) if value and not Path(value).is_absolute() else value

    return dataclasses.replace(
        options,
        creds=near(options.creds),
        nkey=near(options.nkey),
        tls_cert=near(options.tls_cert),
        tls_key=near(options.tls_key),
        tls_ca=near(options.tls_ca),
    )


def _from_settings(name: str, s: dict[str, Any], env: Mapping[str, str]) -> tuple[str | None, ConnectOptions]:
    def text(key: str) -> str:
        value = s.get(key) or ""
        if not isinstance(value, str):
            raise ConfigurationError(f"NATS context {name!r}: {key} must be a string")
        return value

    if text("nsc"):
        raise ConfigurationError(
            f"NATS context {name!r} looks its credentials up with nsc, which fluster does not run: "
            "set its creds to the .creds file that `nsc generate creds` writes"
        )
    given: dict[str, Any] = {}
    if text("user"):
        given["user"] = text("user")
        given["password"] = _literal(name, "password", text("password"), env)
    elif text("creds"):
        given.update(_material(name, "creds", text("creds"), env, "creds", "creds_data"))
    elif text("nkey"):
        given.update(_material(name, "nkey", text("nkey"), env, "nkey", "nkey_seed"))
    elif text("user_jwt") and text("user_seed"):
        jwt = _literal(name, "user_jwt", text("user_jwt"), env)
        seed = _literal(name, "user_seed", text("user_seed"), env)
        given["creds_data"] = _creds_text(jwt, seed)
    if text("token"):
        given["token"] = _literal(name, "token", text("token"), env)
    for key, option in (("cert", "tls_cert"), ("key", "tls_key"), ("ca", "tls_ca")):
        if text(key):
            given[option] = _file_path(name, key, text(key), env)
    if text("inbox_prefix"):
        given["inbox_prefix"] = text("inbox_prefix")
    if s.get("tls_first"):
        given["tls_first"] = True
    known = {f.name for f in fields(ConnectOptions)}
    assert set(given) <= known
    return (text("url") or None), ConnectOptions(**given)


def _scheme(ref: str) -> str:
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]+):", ref)
    return match.group(1).lower() if match else ""


def _literal(context: str, field_name: str, ref: str, env: Mapping[str, str]) -> str:
    """A secret given inline or by reference (``env://VAR``, ``file://path``, ``data:;base64,...``)."""
    scheme = _scheme(ref)
    if scheme == "env":
        var = ref[len("env://") :]
        if not env.get(var):
            raise ConfigurationError(f"NATS context {context!r}: {field_name} names ${var}, which is not set")
        return env[var].rstrip("\r\n")
    if scheme == "file":
        return _read(context, field_name, _expand(ref[len("file://") :], env)).rstrip("\r\n")
    if scheme == "data":
        return _data(context, field_name, ref).rstrip("\r\n")
    if scheme in ("op", "nsc"):
        raise ConfigurationError(f"NATS context {context!r}: {field_name} uses {scheme}://, which fluster cannot read")
    return ref


def _material(
    context: str, field_name: str, ref: str, env: Mapping[str, str], path_option: str, data_option: str
) -> dict[str, str]:
    """A creds file or nkey seed: a path (read at connect time), or content from ``env://`` or ``data:``."""
    scheme = _scheme(ref)
    if scheme in ("", "file"):
        return {path_option: _expand(ref[len("file://") :] if scheme else ref, env)}
    return {data_option: _literal(context, field_name, ref, env)}


def _file_path(context: str, field_name: str, ref: str, env: Mapping[str, str]) -> str:
    scheme = _scheme(ref)
    if scheme not in ("", "file"):
        raise ConfigurationError(f"NATS context {context!r}: {field_name} must be a file path, got a {scheme}: URI")
    return _expand(ref[len("file://") :] if scheme else ref, env)


def _expand(path: str, env: Mapping[str, str]) -> str:
    """natscli's expansion of path fields: ``$VAR``/``${VAR}`` (unset → empty), then a leading ``~``."""
    path = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), path)
    if path.startswith("~"):
        path = str(Path(env.get("HOME") or Path.home())) + path[1:]
    return path


def _read(context: str, field_name: str, path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise ConfigurationError(f"NATS context {context!r}: cannot read {field_name} from {path}: {exc}") from exc


def _data(context: str, field_name: str, ref: str) -> str:
    header, comma, payload = ref[len("data:") :].partition(",")
    if not comma or "base64" not in header.split(";"):
        raise ConfigurationError(f"NATS context {context!r}: {field_name} data: URI must be ';base64,'")
    try:
        return base64.b64decode(payload, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"NATS context {context!r}: {field_name} is not valid base64") from exc


def _creds_text(jwt: str, seed: str) -> str:
    """A .creds file's text for a user JWT and its seed (the format nsc writes and nats-py reads)."""
    return (
        f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )
