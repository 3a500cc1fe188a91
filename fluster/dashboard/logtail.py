"""A job's log for the dashboard: the last lines of a log of any size, and the lines that follow.

The tail is read with JetStream direct gets, never by replaying the log: the subject's line count comes
from the stream's per-subject state, a binary search over stream sequences (each step one direct get whose
``Nats-Num-Pending`` says how many of the job's lines follow) finds where the last ``n`` lines start, and one
batched direct get returns them. Following is an ordered consumer that starts after the last line shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from fluster.errors import ProtocolError
from fluster.protocol.codec import decode
from fluster.protocol.messages import LogLine

log = logging.getLogger(__name__)

MAX_TAIL = 5000  # lines one page may show
DIRECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Tail:
    lines: list[tuple[int, LogLine]]  # (stream sequence, line), oldest first; final markers left out
    total: int  # the job's stored lines, final markers included
    last_seq: int  # the stream sequence of its last stored line (0 when there is none)

    @property
    def truncated(self) -> bool:
        return self.total > len(self.lines)


async def read_tail(nc: NATS, stream: str, subject: str, n: int) -> Tail:
    """The last ``n`` (at most ``MAX_TAIL``) lines stored on ``subject``."""
    n = max(1, min(n, MAX_TAIL))
    js = nc.jetstream()
    try:
        info = await js.stream_info(stream, subjects_filter=subject)
        last = await js.get_last_msg(stream, subject)
    except NotFoundError:
        return Tail([], 0, 0)
    total = int((info.state.subjects or {}).get(subject, 0))
    last_seq = int(last.seq or 0)
    if total == 0 or last_seq == 0:
        return Tail([], 0, 0)
    start = 1 if total <= n else await _start_of_last(nc, js._prefix, stream, subject, n, last_seq)
    found = await _batch(nc, js._prefix, stream, {"seq": start, "next_by_subj": subject, "batch": n})
    lines = []
    for seq, _, data in found:
        try:
            line = decode(data, LogLine)
        except ProtocolError:
            continue
        if not line.final:
            lines.append((seq, line))
    return Tail(lines, total, last_seq)


@contextlib.asynccontextmanager
async def follow(nc: NATS, subject: str, after: int) -> AsyncIterator[asyncio.Queue[tuple[int, LogLine]]]:
    """A queue of every line stored on ``subject`` after stream sequence ``after``, filled as lines arrive
    while the context lasts (final markers included: they say an attempt's output has ended)."""
    js = nc.jetstream()
    lines: asyncio.Queue[tuple[int, LogLine]] = asyncio.Queue()

    async def received(msg: Msg) -> None:
        try:
            line = decode(msg.data, LogLine)
        except ProtocolError:
            return
        lines.put_nowait((msg.metadata.sequence.stream, line))

    sub = await js.subscribe(
        subject,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1),
        cb=received,
    )
    try:
        yield lines
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(1):
            try:
                await sub.unsubscribe()
            except Exception as exc:  # a closed connection has no subscriptions left
                log.debug("unsubscribe failed: %r", exc)


async def _start_of_last(nc: NATS, prefix: str, stream: str, subject: str, n: int, last_seq: int) -> int:
    """The largest stream sequence from which ``n`` lines of ``subject`` remain (O(log sequence) direct gets)."""
    lo, hi = 1, last_seq
    while lo < hi:
        mid = (lo + hi + 1) // 2
        found = await _batch(nc, prefix, stream, {"seq": mid, "next_by_subj": subject, "batch": 1})
        remaining = found[0][1] + 1 if found else 0
        if remaining >= n:
            lo = mid
        else:
            hi = mid - 1
    return lo


async def _batch(nc: NATS, prefix: str, stream: str, request: dict[str, object]) -> list[tuple[int, int, bytes]]:
    """One batched direct get: (sequence, pending after it, data) per message."""
    inbox = nc.new_inbox()
    replies: asyncio.Queue[Msg] = asyncio.Queue()
    sub = await nc.subscribe(inbox, cb=replies.put)
    found: list[tuple[int, int, bytes]] = []
    try:
        await nc.publish(f"{prefix}.DIRECT.GET.{stream}", json.dumps(request).encode(), reply=inbox)
        with anyio.fail_after(DIRECT_TIMEOUT_S):
            while True:
                msg = await replies.get()
                headers = msg.headers or {}
                if headers.get("Status"):  # 204: end of the batch; 404: nothing there
                    return found
                found.append((int(headers.get("Nats-Sequence", 0)), int(headers.get("Nats-Num-Pending", 0)), msg.data))
    finally:
        await sub.unsubscribe()
