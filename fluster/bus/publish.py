"""Publishing on the hot paths (actor calls and replies) without waiting a loop iteration for nats-py's flusher.

``nc.publish`` appends the command to the client's pending buffer and wakes its flusher task, which writes it
on the next event-loop iteration: one more iteration, and one more thread wake-up when the loop was idle,
before a lone request or reply leaves the process. ``Publisher.publish`` writes the first message of an
iteration to the socket at once, after whatever was pending, so the order on the connection is kept; the
rest of a burst goes through ``nc.publish``, so that many messages still leave in one write. It falls back to
``nc.publish`` whenever a direct write is not safe: not connected (nats-py buffers while reconnecting), or a
socket that is backed up (the flusher waits for it to drain).

This reads private attributes of nats-py's client (``_pending``, ``_transport``); ``tests/actor/test_publish.py``
pins the behaviour, and ``Publisher`` falls back to ``nc.publish`` when they are missing.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import nats.aio.client
from nats.aio.client import Client as NATS
from nats.protocol.command import pub_cmd

# nats-py's own check (whitespace and CR/LF, which could inject protocol commands); a plain one if it moves.
_INVALID = getattr(nats.aio.client, "_SUBJECT_INVALID_RE", re.compile(r"\s"))


class Publisher:
    """Publishes on one connection, writing the first message of each event-loop iteration at once."""

    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self._armed = True

    @property
    def armed(self) -> bool:
        """Whether this iteration may still write a message at once."""
        return self._armed

    async def publish(self, subject: str, payload: bytes, reply: str = "") -> None:
        """Publish ``payload`` on ``subject`` (with ``reply``).

        Raises:
            whatever ``nc.publish`` raises (closed connection, payload too large, bad subject).
        """
        if not self.publish_now(subject, payload, reply):
            await self._nc.publish(subject, payload, reply=reply)

    def publish_now(self, subject: str, payload: bytes, reply: str = "") -> bool:
        """Write the message (after whatever is pending) to the socket now; False, having done nothing, when
        this iteration already wrote one or it is not safe: the caller then uses ``nc.publish``."""
        if not self._armed:
            return False
        nc: Any = self._nc
        writer = getattr(getattr(nc, "_transport", None), "_io_writer", None)
        pending = getattr(nc, "_pending", None)
        if (
            writer is None
            or not isinstance(pending, list)
            or not nc.is_connected
            or nc.is_draining_pubs
            or len(payload) > nc.max_payload
            or not subject
            or _INVALID.search(subject)
            or (reply and _INVALID.search(reply))
            or writer.transport.get_write_buffer_size()  # backed up: the flusher waits for it to drain
        ):
            return False
        nc.stats["out_msgs"] += 1
        nc.stats["out_bytes"] += len(payload)
        command = pub_cmd(subject, reply, payload)
        if pending:
            pending.append(command)
            writer.writelines(pending)
            nc._pending = []
            nc._pending_data_size = 0
        else:
            writer.write(command)
        self._armed = False
        asyncio.get_running_loop().call_soon(self._rearm)
        return True

    def _rearm(self) -> None:
        self._armed = True
