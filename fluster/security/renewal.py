"""A connection whose identity expires (a job's) moves to the renewed identity before the server cuts it off.

The worker rewrites the job's ``.creds`` file with a renewed JWT (``fluster.worker.job_identity``), and
nats-py reads that file at each connect; so shortly before the JWT in use expires, once the file holds a
later one, the connection reconnects (``force_reconnect``: subscriptions are restored, pending publishes
kept). A server closes a connection whose JWT expired, and nats-py then gives up on it for good, so this
must happen first. Timers on the loop, no task: a connection owns no task group.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from nats.aio.client import Client as NATS

from fluster.errors import ConfigurationError
from fluster.security.jwt import decode, parse_creds

log = logging.getLogger(__name__)

RECHECK_S = 1.0  # while the file holds no later identity, look again this often
LEAD_FRACTION = 0.25  # reconnect this far (of the identity's lifetime) before it expires
MAX_LEAD_S = 60.0


def follow_renewals(nc: NATS, creds: str | Path) -> None:
    """Reconnect ``nc`` to each renewal of the expiring identity in the ``creds`` file (no-op without ``exp``)."""
    path = Path(creds).expanduser()
    issued, expires = _times(path)
    if expires is None:
        return
    lead = _lead(issued, expires)
    loop = asyncio.get_running_loop()

    def check(current: float, lead: float) -> None:
        if nc.is_closed:
            return
        renewed_issued, renewed = _times(path)
        if renewed is not None and renewed > current:
            log.info("identity renewed (until %s): reconnecting with it", time.ctime(renewed))
            # force_reconnect only starts nats-py's own reconnect task; hold it so it is not collected early
            started = loop.create_task(nc.force_reconnect())
            _starting.add(started)
            started.add_done_callback(_starting.discard)
            lead = _lead(renewed_issued, renewed)
            loop.call_later(max(0.0, renewed - lead - time.time()), check, renewed, lead)
        elif time.time() < current:
            loop.call_later(min(RECHECK_S, lead / 5), check, current, lead)
        else:
            log.warning("this connection's identity expired without a renewal (is the worker cut off?)")

    loop.call_later(max(0.0, expires - lead - time.time()), check, expires, lead)


def _lead(issued: float | None, expires: float) -> float:
    """How long before ``expires`` to move to a renewal: a quarter of the identity's lifetime, at most a minute."""
    return min(MAX_LEAD_S, max(0.2, (expires - (issued or expires)) * LEAD_FRACTION))


_starting: set[asyncio.Task[None]] = set()


def _times(path: Path) -> tuple[float | None, float | None]:
    try:
        token, _ = parse_creds(path.read_text())
        claims = decode(token)
    except (OSError, UnicodeDecodeError, ConfigurationError):
        return None, None
    iat, exp = claims.get("iat"), claims.get("exp")
    return (float(iat) if isinstance(iat, int) else None), (float(exp) if isinstance(exp, int) else None)
