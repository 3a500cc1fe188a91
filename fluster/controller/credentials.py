"""The controller's job-identity handler: sign the identity of an attempt for the worker it is assigned to.

The check is the one NATS cannot make (which attempts a worker runs); the signing is ``fluster.security``'s.
A controller without an issuer (an open cluster, or static users) answers that it mints none, and the worker
then hands its job its own connection settings (docs/security.md: static deployments).
"""

from __future__ import annotations

import logging

from fluster.controller import records
from fluster.controller.term import Term
from fluster.errors import PermissionDenied, ProtocolError
from fluster.protocol.messages import IssueJobIdentity, JobIdentityReply

log = logging.getLogger(__name__)


def on_issue(term: Term, msg: IssueJobIdentity, sender: str) -> JobIdentityReply:
    """O(1): look the attempt up, sign.

    Raises:
        ProtocolError: the message names another worker than its subject.
        PermissionDenied: the attempt is not (or no longer) assigned to the asking worker's incarnation.
    """
    if msg.worker_id != sender:
        raise ProtocolError(f"a message on worker {sender!r}'s subject cannot speak for worker {msg.worker_id!r}")
    issuer = term.settings.job_issuer
    if issuer is None:
        return JobIdentityReply(minting=False, reason="this controller mints no job identities")
    record = term.book.jobs.get(msg.job_id)
    known = record is not None and msg.task < record.request.replicas
    current = records.active_attempt(record, msg.task) if record is not None and known else None
    if (
        current is None
        or current.attempt != msg.attempt
        or current.worker_id != sender
        or current.incarnation != msg.incarnation
    ):
        log.warning(
            "refused a job identity job_id=%s task=%d attempt=%d to worker=%s: not its attempt",
            msg.job_id,
            msg.task,
            msg.attempt,
            sender,
        )
        raise PermissionDenied(
            f"attempt {msg.attempt} of task {msg.task} of job {msg.job_id!r} is not assigned to worker "
            f"{sender!r} (incarnation {msg.incarnation}): no identity for it"
        )
    issued = issuer.issue(msg.public_key, msg.job_id, msg.attempt, task=msg.task)
    return JobIdentityReply(jwt=issued.jwt, expires_at_ms=int(issued.expires_at * 1000))
