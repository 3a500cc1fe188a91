"""The NATS claims of fluster's identities: the account (its scoped signing keys carry each role's permissions
as a template), users signed by those keys, and the tags by which a process recognises its own identity.

A user signed by a scoped key gets the key's template and nothing else (nats-server rejects a scoped user
whose JWT carries permissions of its own), so whoever holds a role's key can mint only that role's rights.
"""

from __future__ import annotations

from typing import Any

from fluster.protocol.permissions import Permissions, Role, inbox_prefix, role_permissions
from fluster.protocol.subjects import Subjects
from fluster.security.jwt import KeyPair, encode

UNLIMITED = -1
TAG_ROLE = "fluster-role"  # tags of every user fluster issues: its role, namespace and inbox prefix
TAG_NAMESPACE = "fluster-namespace"
TAG_INBOX = "fluster-inbox"
TAG_JOB = "fluster-job"  # job identities: the attempt they were minted for (for people reading /connz)


def account_claims(signing_keys: dict[tuple[str, Role], KeyPair]) -> dict[str, Any]:
    """The account's claims: JetStream enabled without limits, and one scoped signing key per (namespace, role)
    whose template is that role's permissions."""
    limits = {
        "subs": UNLIMITED,
        "data": UNLIMITED,
        "payload": UNLIMITED,
        "imports": UNLIMITED,
        "exports": UNLIMITED,
        "wildcards": True,
        "conn": UNLIMITED,
        "leaf": UNLIMITED,
        "mem_storage": UNLIMITED,
        "disk_storage": UNLIMITED,
        "streams": UNLIMITED,
        "consumer": UNLIMITED,
    }
    scopes = [
        {
            "kind": "user_scope",
            "key": key.public,
            "role": f"{role.value}@{namespace}",
            "template": _template(role_permissions(Subjects(namespace), role)),
            "description": f"fluster {role.value} identities of namespace {namespace}",
        }
        for (namespace, role), key in sorted(signing_keys.items())
    ]
    # users with no scope get nothing: every fluster user is signed by a scoped key
    nothing = {"pub": {"deny": [">"]}, "sub": {"deny": [">"]}}
    return {"type": "account", "limits": limits, "signing_keys": scopes, "default_permissions": nothing}


def user_jwt(
    signer: KeyPair,
    account: str,
    user_public: str,
    name: str,
    namespace: str,
    role: Role,
    expires_at: int | None = None,
    extra_tags: tuple[str, ...] = (),
) -> str:
    """A user JWT signed by the scoped key of ``role``: no permissions of its own (the key's template applies)."""
    tags = [
        f"{TAG_ROLE}:{role.value}",
        f"{TAG_NAMESPACE}:{namespace}",
        f"{TAG_INBOX}:{inbox_prefix(namespace, role, name)}",
        *extra_tags,
    ]
    return encode(
        signer,
        user_public,
        name,
        {"type": "user", "issuer_account": account, "tags": tags},
        expires_at=expires_at,
    )


def _template(permissions: Permissions) -> dict[str, Any]:
    return {
        "pub": {"allow": list(permissions.publish)},
        "sub": {"allow": list(permissions.subscribe)},
        # a responder may answer each request it received once (controller and worker replies, actor calls),
        # with no time limit: an actor call may run for hours
        "resp": {"max": 1, "ttl": 0},
        "subs": UNLIMITED,
        "data": UNLIMITED,
        "payload": UNLIMITED,
    }
