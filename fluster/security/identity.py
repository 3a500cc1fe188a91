"""What a process can tell about its own NATS identity from its credentials: the role, name, namespace and
private inbox prefix of a user fluster issued (read from the tags of its JWT, unverified: the server verifies).

``apply_identity`` gives a connection the inbox prefix its identity may subscribe to, so fluster credentials
need no extra setting; credentials fluster did not issue are left as they are.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

from fluster.bus.options import ConnectOptions
from fluster.errors import ConfigurationError
from fluster.protocol.permissions import Role
from fluster.security.claims import TAG_INBOX, TAG_NAMESPACE, TAG_ROLE
from fluster.security.jwt import decode, parse_creds


@dataclass(frozen=True)
class Identity:
    role: Role
    name: str
    namespace: str
    inbox_prefix: str
    expires_at: int | None  # epoch seconds


def identity_of(options: ConnectOptions) -> Identity | None:
    """The fluster identity in ``options``' creds, or None (no creds, unreadable, or not issued by fluster)."""
    if options.user is not None:
        return None
    if options.creds_data:
        return _from_text(options.creds_data)
    if options.creds:
        try:
            path = Path(options.creds).expanduser()
            return _from_text(path.read_text())
        except (OSError, UnicodeDecodeError):
            return None  # connect() reports the unreadable file
    return None


def apply_identity(options: ConnectOptions) -> ConnectOptions:
    """``options`` with the inbox prefix of their fluster identity, unless they name one already."""
    if options.inbox_prefix:
        return options
    identity = identity_of(options)
    if identity is None:
        return options
    return dataclasses.replace(options, inbox_prefix=identity.inbox_prefix)


def may_create_assets(options: ConnectOptions) -> bool:
    """Whether a process with these options may create its namespace's streams: only a controller may, in a
    cluster of fluster identities (anyone may in an open one)."""
    identity = identity_of(options)
    return identity is None or identity.role is Role.CONTROLLER


@functools.lru_cache(maxsize=64)
def _from_text(text: str) -> Identity | None:
    try:
        token, _ = parse_creds(text)
        claims = decode(token)
    except ConfigurationError:
        return None
    nats = claims.get("nats")
    tags = nats.get("tags") if isinstance(nats, dict) else None
    if not isinstance(tags, list):
        return None
    found = dict(str(tag).split(":", 1) for tag in tags if ":" in str(tag))
    try:
        role = Role(found[TAG_ROLE])
        expires = claims.get("exp")
        return Identity(
            role=role,
            name=str(claims.get("name", "")),
            namespace=found[TAG_NAMESPACE],
            inbox_prefix=found[TAG_INBOX],
            expires_at=int(expires) if isinstance(expires, int) else None,
        )
    except (KeyError, ValueError):
        return None
