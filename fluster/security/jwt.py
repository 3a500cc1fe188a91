"""NATS JWTs as nats-server reads them: nkeys, the operator / account / user claims, ``.creds`` files.

A JWT is ``base64url(header).base64url(claims).base64url(signature)`` with header
``{"typ":"JWT","alg":"ed25519-nkey"}``, the claims signed by the issuer's nkey (nats-io/jwt v2). nsc makes the
same files; this module makes them without it. Nothing here talks to a server.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import nkeys

from fluster.errors import ConfigurationError

_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
_PREFIXES = {
    "operator": nkeys.PREFIX_BYTE_OPERATOR,
    "account": nkeys.PREFIX_BYTE_ACCOUNT,
    "user": nkeys.PREFIX_BYTE_USER,
}
_CREDS_JWT = ("-----BEGIN NATS USER JWT-----", "------END NATS USER JWT------")
_CREDS_SEED = ("-----BEGIN USER NKEY SEED-----", "------END USER NKEY SEED------")


@dataclass(frozen=True)
class KeyPair:
    """An nkey: its seed (the secret, ``S...``) and public key (``O...``, ``A...``, ``U...``)."""

    seed: str
    public: str

    def sign(self, data: bytes) -> bytes:
        kp = nkeys.from_seed(bytearray(self.seed.encode()))
        try:
            return bytes(kp.sign(data))
        finally:
            kp.wipe()

    def __repr__(self) -> str:  # the seed is a secret
        return f"KeyPair(public={self.public!r})"


def new_keypair(kind: str) -> KeyPair:
    """A fresh nkey of ``kind`` (operator, account or user)."""
    seed = nkeys.encode_seed(os.urandom(32), _PREFIXES[kind]).decode()
    return keypair_from_seed(seed)


def keypair_from_seed(seed: str) -> KeyPair:
    """The key pair of an nkey seed.

    Raises:
        ConfigurationError: ``seed`` is not an nkey seed.
    """
    try:
        kp = nkeys.from_seed(bytearray(seed.strip().encode()))
    except Exception as exc:  # nkeys raises its own error types, and binascii's
        raise ConfigurationError("not a valid nkey seed") from exc
    try:
        return KeyPair(seed=seed.strip(), public=kp.public_key.decode())
    finally:
        kp.wipe()


def verify(public: str, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``public``'s Ed25519 signature of ``data``."""
    import nacl.exceptions
    import nacl.signing

    try:
        raw = base64.b32decode(public.encode() + b"=" * (-len(public) % 8))
        # one prefix byte, 32 key bytes, a 2-byte CRC16 (nkeys' encoding)
        if len(raw) != 35 or nkeys.crc16_checksum(raw[:-2]) != raw[-2:]:
            return False
        nacl.signing.VerifyKey(raw[1:33]).verify(data, signature)
    except (ValueError, binascii.Error, nacl.exceptions.BadSignatureError):
        return False
    return True


def encode(issuer: KeyPair, subject: str, name: str, nats: dict[str, Any], expires_at: int | None = None) -> str:
    """A JWT with ``nats`` as its NATS claims, signed by ``issuer`` (``expires_at``: epoch seconds)."""
    claims: dict[str, Any] = {"iat": int(time.time()), "iss": issuer.public, "name": name, "sub": subject}
    if expires_at is not None:
        claims["exp"] = int(expires_at)
    claims["nats"] = {**nats, "version": 2}
    # nats-io/jwt: the id is the base32 (no padding) SHA-512/256 of the claims without it
    digest = hashlib.new("sha512_256", _json(claims)).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    head_and_claims = f"{_b64(_json(_HEADER))}.{_b64(_json(claims))}"
    return f"{head_and_claims}.{_b64(issuer.sign(head_and_claims.encode()))}"


def decode(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (a process reading its own credentials: the server verifies them).

    Raises:
        ConfigurationError: ``token`` is not a JWT.
    """
    try:
        _, body, _ = token.strip().split(".")
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, binascii.Error) as exc:
        raise ConfigurationError("not a NATS JWT") from exc
    if not isinstance(claims, dict):
        raise ConfigurationError("not a NATS JWT")
    return claims


def creds_text(jwt: str, seed: str) -> str:
    """A ``.creds`` file's text (the format nsc writes and nats-py reads)."""
    return (
        f"{_CREDS_JWT[0]}\n{jwt}\n{_CREDS_JWT[1]}\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        f"{_CREDS_SEED[0]}\n{seed}\n{_CREDS_SEED[1]}\n"
    )


def parse_creds(text: str) -> tuple[str, str]:
    """The JWT and the seed of a ``.creds`` file's text.

    Raises:
        ConfigurationError: it is not a creds file.
    """
    try:
        return _between(text, *_CREDS_JWT), _between(text, *_CREDS_SEED)
    except ValueError as exc:
        raise ConfigurationError("not a NATS .creds file (no user JWT and seed)") from exc


def _between(text: str, start: str, end: str) -> str:
    head, found, rest = text.partition(start)
    if not found:
        raise ValueError(start)
    value, found, _ = rest.partition(end)
    if not found or not value.strip():
        raise ValueError(end)
    return value.strip()


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")
