"""Optional Ed25519 signatures on job submissions and actor calls, checked against an allowlist of submitter
keys before anything is unpickled: for teams that do not trust every identity that may publish in a namespace.

A submitter signs its job's request (entrypoint digest, arguments, environment, resources: everything the job
runs with) with an nkey seed (``fluster creds signing-key``); a worker with trusted keys runs only jobs signed
by one of them. A caller signs each call's method and pickled arguments for the actor it calls; a server with
trusted keys answers unsigned calls with an error, unpickling nothing. Signatures prove who sent what, not
when: a captured signed call or submission can be sent again (docs/security.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fluster.errors import ConfigurationError, UntrustedPayload
from fluster.protocol.codec import decode, encode
from fluster.protocol.message_base import PayloadSignature
from fluster.protocol.messages import JobRequest
from fluster.security.issuer import write_private
from fluster.security.jwt import KeyPair, keypair_from_seed, new_keypair, verify

_CALL = b"FLSIG1"  # a signed call's arguments start with this, the key (56 bytes) and the signature (64)
_KEY_LEN, _SIG_LEN = 56, 64


@dataclass(frozen=True)
class Signer:
    key: KeyPair

    @property
    def public(self) -> str:
        return self.key.public

    @classmethod
    def read(cls, path: str | Path) -> Signer:
        """A signer from an nkey seed file.

        Raises:
            ConfigurationError: the file is missing or holds no seed.
        """
        try:
            return cls(keypair_from_seed(Path(path).expanduser().read_text()))
        except OSError as exc:
            raise ConfigurationError(f"cannot read the signing key {path}: {exc}") from exc

    def sign_job(self, job_id: str, request: JobRequest) -> JobRequest:
        """``request`` with this signer's signature of it (for job ``job_id``)."""
        signature = self.key.sign(_job_bytes(job_id, request))
        return request.model_copy(update={"signature": PayloadSignature(key=self.public, sig=signature)})

    def seal_call(self, actor: str, method: str, args: bytes) -> bytes:
        """A call's pickled arguments, prefixed with this signer's key and signature of them."""
        return _CALL + self.public.encode() + self.key.sign(_call_bytes(actor, method, args)) + args


@dataclass(frozen=True)
class Verifier:
    """The submitter keys a worker or an actor server accepts."""

    trusted: frozenset[str]

    def check_job(self, job_id: str, request: JobRequest) -> None:
        """Raises:
        UntrustedPayload: the request is unsigned, signed by a key not trusted here, or altered."""
        signature = request.signature
        if signature is None:
            raise UntrustedPayload(f"job {job_id!r} is not signed, and this worker runs only signed jobs")
        if signature.key not in self.trusted:
            raise UntrustedPayload(f"job {job_id!r} is signed by {signature.key}, which this worker does not trust")
        if not verify(signature.key, _job_bytes(job_id, request), signature.sig):
            raise UntrustedPayload(f"job {job_id!r} does not match its signature: it was altered after signing")

    def open_call(self, actor: str, method: str, sealed: bytes) -> bytes:
        """The pickled arguments of a signed call, once its signature checks out.

        Raises:
            UntrustedPayload: the call is unsigned, signed by a key not trusted here, or altered.
        """
        head = len(_CALL) + _KEY_LEN + _SIG_LEN
        if not sealed.startswith(_CALL) or len(sealed) < head:
            raise UntrustedPayload(f"a call to {actor}.{method} is not signed, and this actor takes only signed calls")
        key = sealed[len(_CALL) : len(_CALL) + _KEY_LEN].decode(errors="replace")
        signature, args = sealed[len(_CALL) + _KEY_LEN : head], sealed[head:]
        if key not in self.trusted:
            raise UntrustedPayload(f"a call to {actor}.{method} is signed by {key}, which this actor does not trust")
        if not verify(key, _call_bytes(actor, method, args), signature):
            raise UntrustedPayload(f"a call to {actor}.{method} does not match its signature")
        return args


def new_signing_key(path: Path) -> Signer:
    """Make a signing key, its seed in ``path`` (mode 0600)."""
    key = new_keypair("user")
    write_private(path, key.seed + "\n")
    return Signer(key)


def _job_bytes(job_id: str, request: JobRequest) -> bytes:
    # as the worker will see it: after a trip through the codec (which makes an int CPU count a float, say)
    unsigned = decode(encode(request.model_copy(update={"signature": None})), JobRequest)
    return b"fluster-job\0" + job_id.encode() + b"\0" + encode(unsigned)


def _call_bytes(actor: str, method: str, args: bytes) -> bytes:
    return b"fluster-call\0" + actor.encode() + b"\0" + method.encode() + b"\0" + args
