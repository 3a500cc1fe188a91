"""Connecting to NATS with the settings every fluster process wants (reconnect forever, fast ping, a name)."""

from __future__ import annotations

import logging
from typing import Any

import nats
from nats.aio.client import Client as NATS

from fluster.errors import ClusterUnavailable

log = logging.getLogger(__name__)

HOW_TO_START = (
    "start a local cluster with `fluster up` and export the URL it prints as FLUSTER_URL, "
    "or pass url='nats://host:4222'"
)


async def connect(url: str, name: str, **options: Any) -> NATS:
    """Connect to the NATS server(s) at ``url`` (comma-separated for a cluster).

    Raises:
        ClusterUnavailable: no server answered at ``url``.
    """
    servers = [part.strip() for part in url.split(",") if part.strip()]

    async def _error_cb(exc: Exception) -> None:
        log.info("nats error connection=%s: %s", name, exc)

    try:
        # the first connect gives up after a few tries per server (a wrong URL must fail, not hang); once
        # connected, reconnect forever: workers and controllers ride out server restarts
        nc = await nats.connect(
            servers=servers,
            name=name,
            connect_timeout=2,
            reconnect_time_wait=0.2,
            max_reconnect_attempts=3,
            allow_reconnect=True,
            ping_interval=10,
            max_outstanding_pings=3,
            error_cb=_error_cb,
            **options,
        )
    except Exception as exc:  # nats-py raises several unrelated types for "nothing there"
        raise ClusterUnavailable(f"cannot connect to NATS at {url!r} ({exc!r}); {HOW_TO_START}") from exc
    nc.options["max_reconnect_attempts"] = -1
    nc.options["reconnect_time_wait"] = 0.5
    return nc
