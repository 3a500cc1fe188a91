"""Tracked calls, server side: a call that carries a call id runs once however often it arrives, its reply is
kept for a while, and a probe asks what became of it.

NATS core is at-most-once: a request or its reply can be lost (a reconnect, a slow consumer). A caller that
must not hang (a WorkerPool batch, a context actor call) tags its call with an id, and when no reply comes
it probes: ``RUNNING`` (keep waiting), the reply itself (it was lost on the way), or ``UNKNOWN`` (the
request never arrived: send it again). A duplicate of a running call joins it instead of running twice; a
duplicate of a finished one gets the kept reply. Replies are kept for ``KEEP_S`` or until ``KEEP_BYTES`` of
them are held (oldest dropped first): a call probed after that is ``UNKNOWN`` and runs again, so tracked
calls are at-least-once at worst, exactly-once while callers probe within the window (they probe every few
seconds).
"""

from __future__ import annotations

import time
from collections import OrderedDict

from fluster.protocol.values import Outcome

KEEP_S = 300.0
KEEP_BYTES = 64 * 1024 * 1024


class CallLog:
    """The tracked calls of one actor: those running (with every reply subject waiting for them) and the
    replies of those finished recently."""

    def __init__(self, keep_s: float = KEEP_S, keep_bytes: int = KEEP_BYTES) -> None:
        self._keep_s = keep_s
        self._keep_bytes = keep_bytes
        self._running: dict[str, list[str]] = {}
        self._done: OrderedDict[str, tuple[Outcome, float]] = OrderedDict()
        self._bytes = 0

    def running(self, call_id: str) -> bool:
        return call_id in self._running

    def finished(self, call_id: str) -> Outcome | None:
        """The kept outcome of a finished call, if it is still kept."""
        self._expire()
        found = self._done.get(call_id)
        return found[0] if found is not None else None

    def start(self, call_id: str, reply: str) -> None:
        self._running[call_id] = [reply] if reply else []

    def join(self, call_id: str, reply: str) -> None:
        """Another copy of a running call: answer ``reply`` too when it finishes."""
        if reply:
            self._running[call_id].append(reply)

    def finish(self, call_id: str, outcome: Outcome) -> list[str]:
        """Keep the call's outcome; the reply subjects waiting for it."""
        waiting = self._running.pop(call_id, [])
        self._done[call_id] = (outcome, time.monotonic() + self._keep_s)
        self._bytes += len(outcome.data)
        while self._bytes > self._keep_bytes and self._done:
            _, (dropped, _) = self._done.popitem(last=False)
            self._bytes -= len(dropped.data)
        return waiting

    def abandon(self, call_id: str) -> list[str]:
        """The call will not finish (its server is stopping): forget it; the subjects that waited for it."""
        return self._running.pop(call_id, [])

    def _expire(self) -> None:
        now = time.monotonic()
        while self._done:
            call_id, (outcome, until) = next(iter(self._done.items()))
            if until > now:
                return
            del self._done[call_id]
            self._bytes -= len(outcome.data)
