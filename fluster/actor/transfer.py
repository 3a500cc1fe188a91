"""Actor arguments and results too large for one message: chunks in a per-namespace JetStream memory stream.

A transfer is the chunks of one value on its own subject (``Subjects...xfer.<id>``), published pipelined (the
stream's acks gathered on one inbox) and read back by one ordered push consumer. The reader purges the
subject as soon as it has the bytes (a fire-and-forget purge request, off the call's critical path), and the
stream's ``max_age`` reaps transfers whose reader never came. This is the general object store's job done
without its metadata, digest and per-chunk round trips, which cost more than the copy itself at these sizes.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS

from fluster.bus.blobs import NoStream, publish_chunks, read_chunks
from fluster.errors import ProtocolError
from fluster.protocol.subjects import Subjects, actor_transfer_stream, actor_transfer_subject

log = logging.getLogger(__name__)

TRANSFER_TIMEOUT_S = 60.0  # no progress for this long fails a transfer
FIRST_CHUNK_S = 10.0  # a transfer whose first chunk has not come within this does not exist
MAX_TRANSFER = 1 << 40
MAX_CHUNK = 4 * 1024 * 1024


class Transfers:
    """Puts and gets large values for one connection and namespace (the stream is one of ``ensure_assets``'s;
    when it is missing, a server restart having dropped it, ``repair`` puts it back and the write is retried)."""

    def __init__(self, nc: NATS, subjects: Subjects, repair: Callable[[], Awaitable[object]] | None = None) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._subjects = subjects
        self._stream = actor_transfer_stream(subjects)
        self._repair = repair

    async def reserve(self, size: int) -> str:
        """A reference for a ``size``-byte value, to send (``<id>:<chunks>:<size>``) before the value itself.

        The reader may start reading as soon as it has the reference: ``send`` then streams the chunks to
        it through the stream, so writing and reading overlap instead of adding up.
        """
        chunk = self._chunk()
        return f"{uuid.uuid4().hex}:{(size + chunk - 1) // chunk}:{size}"

    async def send(self, ref: str, data: bytes) -> None:
        """Publish the chunks of ``data`` for ``ref`` and wait until the stream has stored them all.

        Raises:
            FlusterError: the stream rejected a chunk.
            FlusterTimeout: the stream did not acknowledge every chunk in time.
        """
        transfer_id, count, size = _parse(ref)
        if size != len(data) or count != (size + self._chunk() - 1) // self._chunk():
            raise ValueError(f"transfer {ref!r} was reserved for another size than {len(data)}")
        subject = actor_transfer_subject(self._subjects, transfer_id)
        for attempt in range(2):
            try:
                await publish_chunks(
                    self._nc, subject, data, self._chunk(), timeout=TRANSFER_TIMEOUT_S, what="the transfer stream"
                )
                return
            except NoStream:
                if attempt or self._repair is None:
                    raise
                await self._repair()  # the stream is gone (a restarted server): put it back, send again

    async def put(self, data: bytes) -> str:
        """Store ``data`` and return its reference."""
        ref = await self.reserve(len(data))
        await self.send(ref, data)
        return ref

    async def get(self, ref: str) -> bytes:
        """Read the value behind ``ref`` and drop it from the stream.

        Raises:
            ProtocolError: ``ref`` is not a transfer reference.
            FlusterTimeout: its chunks did not start within ``FIRST_CHUNK_S`` (it does not exist), or stopped.
        """
        transfer_id, count, size = _parse(ref)
        subject = actor_transfer_subject(self._subjects, transfer_id)
        data = await read_chunks(
            self._js,
            subject,
            count,
            size,
            timeout=TRANSFER_TIMEOUT_S,
            first_timeout=FIRST_CHUNK_S,
            what=f"transfer {transfer_id}",
        )
        await self.drop(ref)
        return data

    async def drop(self, ref: str) -> None:
        """Purge a transfer without waiting for the answer (max_age reaps it if this is lost)."""
        transfer_id, _, _ = _parse(ref)
        request = json.dumps({"filter": actor_transfer_subject(self._subjects, transfer_id)}).encode()
        # The reply goes to an inbox nobody reads: the JetStream API ignores requests without a reply subject.
        await self._nc.publish(f"{self._js._prefix}.STREAM.PURGE.{self._stream}", request, reply=self._nc.new_inbox())

    def _chunk(self) -> int:
        return max(1, min(MAX_CHUNK, self._nc.max_payload - 1024))


def _parse(ref: str) -> tuple[str, int, int]:
    try:
        transfer_id, count, size = ref.split(":")
        parsed = transfer_id, int(count), int(size)
    except ValueError as exc:
        raise ProtocolError(f"not a transfer reference: {ref[:100]!r}") from exc
    if not 0 <= parsed[2] <= MAX_TRANSFER or not 0 <= parsed[1] <= parsed[2] + 1:
        raise ProtocolError(f"transfer reference {ref[:100]!r} names an impossible size")
    return parsed
