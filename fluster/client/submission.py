"""Sending a job's submission: the environment it asks for (its workspace uploaded to the object store), and
the submit request, retried until a controller answers or the submit deadline passes.

What a submission contains is ``ClusterClient.submit``'s; what the controller does with it is its own.
"""

from __future__ import annotations

import itertools
import logging

import anyio
from nats.aio.client import Client as NATS
from nats.js.object_store import ObjectStore

from fluster.bus.retry import backoff
from fluster.bus.rpc import request
from fluster.errors import ClusterUnavailable, FlusterTimeout, LeadershipLost
from fluster.protocol.messages import EnvironmentSpec, SubmitJob, SubmitJobReply
from fluster.protocol.subjects import Subjects
from fluster.types import Environment

log = logging.getLogger(__name__)

SUBMIT_DEADLINE_S = 30.0
REQUEST_TIMEOUT_S = 5.0


async def environment_spec(objects: ObjectStore, environment: Environment | None) -> EnvironmentSpec:
    """The wire form of ``environment``, its workspace (if any) uploaded first."""
    if environment is None:
        return EnvironmentSpec()
    digest, size = None, 0
    if environment.workspace is not None:
        from fluster.client.bundle import upload_workspace

        digest, size = await upload_workspace(objects, environment.workspace)
    return EnvironmentSpec(
        env_vars=dict(environment.env_vars),
        pip_packages=list(environment.pip_packages),
        extras=list(environment.extras),
        workspace=digest,
        workspace_size=size,
    )


async def send_submit(nc: NATS, subjects: Subjects, message: SubmitJob, url: str) -> SubmitJobReply:
    """The controller's reply to ``message``, sent again while no controller answers.

    Raises:
        ClusterUnavailable: no controller answered within ``SUBMIT_DEADLINE_S``.
    """
    with anyio.move_on_after(SUBMIT_DEADLINE_S):
        for failures in itertools.count():
            try:
                return await request(
                    nc, subjects.submit, message, SubmitJobReply, timeout=REQUEST_TIMEOUT_S, what="the controller"
                )
            except (ClusterUnavailable, FlusterTimeout, LeadershipLost) as exc:
                log.info("controller not answering, retrying: %s", exc)
                await anyio.sleep(backoff(failures))
    raise ClusterUnavailable(
        f"no controller answered for namespace {subjects.namespace!r} at {url} within {SUBMIT_DEADLINE_S:g}s: "
        "start one with `fluster controller` (or `fluster up` for a local cluster)"
    )
