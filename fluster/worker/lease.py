"""The attempt lease: how long a worker's attempts may keep running without the controller hearing from it.

The controller declares a worker dead ``worker_timeout`` after the last heartbeat it received, and may then
start the worker's jobs elsewhere. Each heartbeat reply grants a lease of ``lease_ms`` (a fraction of the
timeout) counted from when the heartbeat was *sent*, which is before the controller received it: so a lease
always ends before the controller may declare the worker dead, by ``worker_timeout - lease`` at least.

The worker writes the lease's end into every attempt's lifeline; the job's bootstrap kills the job's
process group when that moment passes without a newer one, or when the worker's end of the lifeline closes.
So an attempt of a worker that is paused (SIGSTOP), starved, or cut off from NATS stops itself before the
controller may start its next attempt, without the worker having to do anything.

A heartbeat that finds *no* controller subscribed (the server says so at once, which also proves the worker
reaches the server) extends the lease by the last grant: no controller exists that could declare the worker
dead, and one that takes over starts counting every worker's silence from its own start.
"""

from __future__ import annotations

import time


class Lease:
    def __init__(self) -> None:
        self.expires_at = 0.0  # monotonic seconds
        self.lease_s = 0.0  # the last grant

    def granted(self, sent: float, lease_ms: int) -> None:
        """A controller answered the request sent at ``sent`` with a grant of ``lease_ms``."""
        if lease_ms <= 0:
            return
        self.lease_s = lease_ms / 1000
        self.expires_at = max(self.expires_at, sent + self.lease_s)

    def no_controller(self, sent: float) -> None:
        """The request sent at ``sent`` found no controller subscribed: nobody can declare this worker dead."""
        if self.lease_s:
            self.expires_at = max(self.expires_at, sent + self.lease_s)

    def valid(self) -> bool:
        return time.monotonic() < self.expires_at

    def revoke(self) -> None:
        """The controller no longer counts this worker (told to re-register): nothing may run on the old grant."""
        self.expires_at = 0.0
